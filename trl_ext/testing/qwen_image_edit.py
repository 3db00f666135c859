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
"""A tiny random `QwenImageEditPipeline` (diffusers), built offline, for the image-edit benchmark's tests and demo.

Components as in Qwen/Qwen-Image-Edit at toy sizes: a Qwen2.5-VL text encoder (hidden 16), a
`QwenImageTransformer2DModel` (2 layers), an `AutoencoderKLQwenImage` (8x down, 4 latent channels), the
flow-matching Euler scheduler, the offline byte-level tokenizer and a torchvision-free Qwen2-VL processor. The
pipeline resizes the condition image to about 1024x1024 whatever the output size (minutes on CPU even for this toy):
run it through [`trl_ext.evaluation.image_edit.DiffusersImageEditor`] with a small `condition_area`.
"""

import json
import os

from .text import build_tiny_tokenizer, init_tiny_weights
from .vision_language import build_qwen_vl_processor, vision_special_token_ids


def tiny_qwen_image_components(seed: int = 0) -> dict:
    """The components Qwen-Image and Qwen-Image-Edit share, at toy sizes: `text_encoder` (Qwen2.5-VL), `tokenizer`,
    `transformer` (`QwenImageTransformer2DModel`), `vae` (`AutoencoderKLQwenImage`) and `scheduler`."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    special = dict(zip(["vision_start", "vision_end", "image", "video"], vision_special_token_ids(tokenizer)))
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_parameters": {"mrope_section": [1, 1, 2], "rope_type": "default", "rope_theta": 1e6},
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": None,
            },
            vision_config={
                "depth": 2,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
            image_token_id=special["image"],
            video_token_id=special["video"],
            vision_start_token_id=special["vision_start"],
            vision_end_token_id=special["vision_end"],
        )
    )
    init_tiny_weights(text_encoder, seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
    }


def save_tiny_qwen_image_edit(path: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random `QwenImageEditPipeline` and save it with `save_pretrained` (processor included).

    Load it with [`trl_ext.evaluation.image_edit.load_image_edit_pipeline`] (which passes the torchvision-free
    processor explicitly) or `QwenImageEditPipeline.from_pretrained(path, processor=...)`.

    Parameters:
        path (`str` or `os.PathLike`):
            Output directory (created if needed).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation.

    Returns:
        `str`: `path`.
    """
    from diffusers import QwenImageEditPipeline

    path = os.fspath(path)
    components = tiny_qwen_image_components(seed)
    tokenizer = components["tokenizer"]
    pipeline = QwenImageEditPipeline(**components, processor=build_qwen_vl_processor(tokenizer, "qwen2_vl"))
    pipeline.save_pretrained(path)
    # The offline processor subclass is recorded under its own module; record the real class, as Qwen-Image-Edit does.
    index_file = os.path.join(path, "model_index.json")
    with open(index_file) as f:
        index = json.load(f)
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    with open(index_file, "w") as f:
        json.dump(index, f, indent=2)
    return path
