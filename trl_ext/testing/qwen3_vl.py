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
"""A tiny random Qwen3-VL (the VLM-judge family of the image-edit benchmark) with an offline, torchvision-free processor.

The model is `Qwen3VLForConditionalGeneration` (text hidden 32, 2 layers, head_dim 8, interleaved M-RoPE; vision depth
2, patch 16, one deepstack layer), the tokenizer the offline byte-level one of [`build_tiny_tokenizer`] (every digit
is one token, as in Qwen's own tokenizers) and the image processor `Qwen2VLImageProcessorPil` with patch 16, resizing
to 4-16 image tokens. The saved directory loads with `AutoModelForImageTextToText.from_pretrained` and
[`trl_ext.models.processors.load_vlm_processor`] (which rebuilds the processor without its video slot, as
`AutoProcessor.from_pretrained` needs torchvision for it).
"""

import os

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..models.processors import without_video_processor
from .text import build_tiny_tokenizer, init_tiny_weights, save_with_tokenizer
from .vision_language import vision_special_token_ids


def build_tiny_qwen3_vl_processor(tokenizer=None):
    """The offline tiny Qwen3-VL processor: PIL image processor (patch 16, 4-16 merged patches), no video processor."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=32 * 32 * 4,
        max_pixels=32 * 32 * 16,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return without_video_processor(Qwen3VLProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=tokenizer.chat_template,
    )


def save_tiny_qwen3_vl(path: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random `Qwen3VLForConditionalGeneration` (78k parameters) and save it with its processor.

    Parameters:
        path (`str` or `os.PathLike`):
            Output directory (created if needed).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation.

    Returns:
        `str`: `path`.
    """
    path = os.fspath(path)
    tokenizer = build_tiny_tokenizer()
    special = dict(zip(["vision_start", "vision_end", "image", "video"], vision_special_token_ids(tokenizer)))
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
                "rope_theta": 10000.0,
            },
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 16,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=special["image"],
        video_token_id=special["video"],
        vision_start_token_id=special["vision_start"],
        vision_end_token_id=special["vision_end"],
    )
    torch.manual_seed(seed)  # the layers init_tiny_weights leaves alone (convolutions, norms) are reproducible too
    model = Qwen3VLForConditionalGeneration(config)
    init_tiny_weights(model, seed)
    save_with_tokenizer(model, tokenizer, path, suppress_tokens=vision_special_token_ids(tokenizer))
    build_tiny_qwen3_vl_processor(tokenizer).save_pretrained(path)
    return path
