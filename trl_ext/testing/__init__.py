# Copyright 2026 The trl_ext Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tiny random models of the real families, with offline tokenizers and processors, for tests and `--tiny` demos.

Each `save_tiny_*` factory builds a model from a scaled-down config of the real architecture, writes it with
`save_pretrained` to a directory and returns the path, so that tests exercise the same loaders as real checkpoints.
Nothing here touches the network.
"""

from typing import TYPE_CHECKING

from ..import_utils import lazy_getattr


_import_structure = {
    "diffusion": ["TINY_SD3_MAX_SEQUENCE_LENGTH", "save_tiny_sd3"],
    "diffusion_lm": ["save_tiny_diffusion_gemma", "save_tiny_masked_diffusion_lm"],
    "encoders": [
        "DETOXIFY_ORIGINAL_CLASSES",
        "TinyDetoxify",
        "build_tiny_bert_tokenizer",
        "build_tiny_clip_tokenizer",
        "build_tiny_t5_tokenizer",
        "save_tiny_clip",
        "save_tiny_detoxify",
        "save_tiny_gtr_t5",
    ],
    "flux": ["TINY_FLUX_MAX_SEQUENCE_LENGTH", "save_tiny_flux"],
    "inversion": ["TinyVec2Text", "save_tiny_vec2text"],
    "qwen3_vl": ["build_tiny_qwen3_vl_processor", "save_tiny_qwen3_vl"],
    "qwen_image": ["save_tiny_qwen_image"],
    "qwen_image_edit": ["save_tiny_qwen_image_edit"],
    "sedd": ["save_tiny_sedd"],
    "text": ["build_tiny_tokenizer", "save_tiny_qwen2", "save_tiny_qwen2_reward_model"],
    "vision_language": [
        "build_qwen_vl_processor",
        "load_qwen_vl_processor",
        "save_tiny_llava_next",
        "save_tiny_qwen_vl",
        "vision_special_token_ids",
    ],
}

if TYPE_CHECKING:
    from .diffusion import TINY_SD3_MAX_SEQUENCE_LENGTH, save_tiny_sd3
    from .diffusion_lm import save_tiny_diffusion_gemma, save_tiny_masked_diffusion_lm
    from .encoders import (
        DETOXIFY_ORIGINAL_CLASSES,
        TinyDetoxify,
        build_tiny_bert_tokenizer,
        build_tiny_clip_tokenizer,
        build_tiny_t5_tokenizer,
        save_tiny_clip,
        save_tiny_detoxify,
        save_tiny_gtr_t5,
    )
    from .flux import TINY_FLUX_MAX_SEQUENCE_LENGTH, save_tiny_flux
    from .inversion import TinyVec2Text, save_tiny_vec2text
    from .qwen3_vl import build_tiny_qwen3_vl_processor, save_tiny_qwen3_vl
    from .qwen_image import save_tiny_qwen_image
    from .qwen_image_edit import save_tiny_qwen_image_edit
    from .sedd import save_tiny_sedd
    from .text import build_tiny_tokenizer, save_tiny_qwen2, save_tiny_qwen2_reward_model
    from .vision_language import (
        build_qwen_vl_processor,
        load_qwen_vl_processor,
        save_tiny_llava_next,
        save_tiny_qwen_vl,
        vision_special_token_ids,
    )
else:
    __getattr__, __all__ = lazy_getattr(__name__, _import_structure)
