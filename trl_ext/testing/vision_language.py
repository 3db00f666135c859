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
"""Tiny random vision-language models: Qwen2-VL, Qwen2.5-VL and LLaVA-NeXT, with offline processors.

torchvision is not a dependency of `trl_ext` (its only wheel breaks transformers' VLM imports beside a CPU torch), so
every processor here uses the PIL image-processor backends. The Qwen-VL processors have a video slot whose processor
needs torchvision: `build_qwen_vl_processor` leaves it empty, and since `AutoProcessor.from_pretrained` would try to
build it, `load_qwen_vl_processor` rebuilds the processor from the saved tokenizer and image processor instead.

A random model samples vision special tokens (e.g. `<|image_pad|>`) inside its completions, which breaks the next
forward pass ("Image features and image tokens do not match"); every tiny VLM is saved with those ids as the
`suppress_tokens` of its generation config, which `generate` applies under any config a trainer passes, so a tiny
directory behaves as a trained checkpoint there. A model built in memory needs
`suppress_tokens=vision_special_token_ids(tokenizer)` passed to `generate`.
"""

import json
import os
from typing import Literal

from transformers import (
    CLIPVisionConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..models.processors import without_video_processor
from .text import VISION_SPECIAL_TOKENS, build_tiny_tokenizer, init_tiny_weights, save_with_tokenizer


QwenVLVariant = Literal["qwen2_vl", "qwen2_5_vl"]

_QWEN_VL_CLASSES = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor),
}
_QWEN_VISION_CONFIGS = {
    "qwen2_vl": {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2, "patch_size": 14},
    "qwen2_5_vl": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "out_hidden_size": 64,
        "window_size": 56,
        "fullatt_block_indexes": [1],
        "patch_size": 14,
    },
}
_VARIANT_FILE = "trl_ext_qwen_vl_variant.json"

# Mistral-instruct style template of llava-hf/llava-v1.6-mistral-7b-hf, simplified.
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' [/INST]' }}{% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _check_variant(variant: str) -> None:
    if variant not in _QWEN_VL_CLASSES:
        raise ValueError(f"Unknown Qwen-VL variant {variant!r}; choose one of {sorted(_QWEN_VL_CLASSES)}.")


def vision_special_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the Qwen-VL vision special tokens, to pass as `suppress_tokens` when generating with a random model."""
    return tokenizer.convert_tokens_to_ids(VISION_SPECIAL_TOKENS)


def build_qwen_vl_processor(
    tokenizer: PreTrainedTokenizerFast | None = None,
    variant: QwenVLVariant = "qwen2_5_vl",
    image_processor: Qwen2VLImageProcessorPil | None = None,
):
    """An offline Qwen2-VL / Qwen2.5-VL processor: PIL image processor, no video processor.

    The image processor resizes to between 2×2 and 4×4 merged patches of 28 pixels (4 to 16 image tokens), so tiny
    models stay fast.

    Args:
        tokenizer (`PreTrainedTokenizerFast`, *optional*):
            Defaults to [`build_tiny_tokenizer`].
        variant (`str`, *optional*, defaults to `"qwen2_5_vl"`):
            `"qwen2_vl"` or `"qwen2_5_vl"`.
        image_processor (`Qwen2VLImageProcessorPil`, *optional*):
            Defaults to the tiny settings above.
    """
    _check_variant(variant)
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    if image_processor is None:
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16
        )
    processor_class = without_video_processor(_QWEN_VL_CLASSES[variant][2])
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=tokenizer.chat_template,
    )


def save_tiny_qwen_vl(path: str | os.PathLike, variant: QwenVLVariant = "qwen2_5_vl", seed: int = 0) -> str:
    """Build a tiny random Qwen2-VL or Qwen2.5-VL model and save it with its tokenizer and image processor.

    Load the model with `AutoModelForImageTextToText.from_pretrained(path)` and the processor with
    [`load_qwen_vl_processor`]. `config._name_or_path` is the directory, so TRL can reload the reference model.

    Returns:
        `str`: `path`.
    """
    _check_variant(variant)
    path = os.fspath(path)
    config_class, model_class, _ = _QWEN_VL_CLASSES[variant]
    tokenizer = build_tiny_tokenizer()
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "layer_types": None,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
    }
    special_ids = dict(zip(["vision_start", "vision_end", "image", "video"], vision_special_token_ids(tokenizer)))
    config = config_class(
        text_config=text_config,
        vision_config=_QWEN_VISION_CONFIGS[variant],
        image_token_id=special_ids["image"],
        video_token_id=special_ids["video"],
        vision_start_token_id=special_ids["vision_start"],
        vision_end_token_id=special_ids["vision_end"],
    )
    model = model_class(config)
    init_tiny_weights(model, seed)
    save_with_tokenizer(model, tokenizer, path, suppress_tokens=vision_special_token_ids(tokenizer))
    build_qwen_vl_processor(tokenizer, variant).image_processor.save_pretrained(path)
    with open(os.path.join(path, _VARIANT_FILE), "w") as f:
        json.dump({"variant": variant}, f)
    return path


def load_qwen_vl_processor(path: str | os.PathLike, variant: QwenVLVariant | None = None):
    """Rebuild the offline processor of a model saved by [`save_tiny_qwen_vl`] from its tokenizer and image processor.

    Args:
        path (`str` or `os.PathLike`):
            The saved directory.
        variant (`str`, *optional*):
            `"qwen2_vl"` or `"qwen2_5_vl"`; read from the directory when omitted.
    """
    from transformers import AutoTokenizer

    path = os.fspath(path)
    if variant is None:
        variant_file = os.path.join(path, _VARIANT_FILE)
        if not os.path.isfile(variant_file):
            raise ValueError(f"{path} was not written by save_tiny_qwen_vl: pass `variant` explicitly.")
        with open(variant_file) as f:
            variant = json.load(f)["variant"]
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    return build_qwen_vl_processor(AutoTokenizer.from_pretrained(path), variant, image_processor)


def save_tiny_llava_next(path: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random LLaVA-NeXT (CLIP vision tower + Mistral LM) and save it with its processor.

    Images are 32×32 (patch 8) with grid pinpoints up to 64×64. The processor uses `num_additional_image_tokens=1`
    with the `"default"` feature strategy, as llava-hf's real processors do (with 0 the image-token count does not
    match the features). Both reload with `LlavaNextForConditionalGeneration.from_pretrained(path)` and
    `LlavaNextProcessor.from_pretrained(path)` (or the Auto classes).

    Returns:
        `str`: `path`.
    """
    path = os.fspath(path)
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = LLAVA_NEXT_CHAT_TEMPLATE
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=32,
        ),
        text_config=MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaNextForConditionalGeneration(config)
    init_tiny_weights(model, seed)
    save_with_tokenizer(model, tokenizer, path, suppress_tokens=[config.image_token_index])
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path
