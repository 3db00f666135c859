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
"""A tiny random Stable Diffusion 3 pipeline (flow matching), built from configs, that renders 32×32 images on CPU."""

import os

import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from .encoders import build_tiny_clip_tokenizer, build_tiny_t5_tokenizer
from .text import init_tiny_weights


TINY_SD3_MAX_SEQUENCE_LENGTH = 32
"""T5 prompt length to pass as `max_sequence_length=` to the tiny pipeline (the default 256 is 8× slower)."""


def save_tiny_sd3(path: str | os.PathLike, fast: bool = True, seed: int = 0) -> str:
    """Build a tiny random `StableDiffusion3Pipeline` and save it with `save_pretrained` to `path`.

    Components as in SD3/SD3.5: an `SD3Transformer2DModel` (one joint block), an `AutoencoderKL`, two
    `CLIPTextModelWithProjection` text encoders, a `T5EncoderModel`, their tokenizers (CLIP prompts are cut at 16
    tokens) and a `FlowMatchEulerDiscreteScheduler` with SD3.5-Medium's shift of 3.0. The shapes line up as in the
    real model: `joint_attention_dim` is the T5 width, `pooled_projection_dim` twice the CLIP projection width.

    Load it with `StableDiffusion3Pipeline.from_pretrained(path)` and render with
    `pipe(prompt, height=32, width=32, num_inference_steps=4, max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH)`.

    Args:
        path (`str` or `os.PathLike`):
            Output directory.
        fast (`bool`, *optional*, defaults to `True`):
            A 2-block VAE (32×32 images → 16×16 latents) and patch size 2, i.e. 64 image tokens; otherwise a 1-block
            VAE and patch size 1 (1024 image tokens, about 10× slower).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation.

    Returns:
        `str`: `path`.
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    path = os.fspath(path)
    clip_tokenizer = build_tiny_clip_tokenizer(model_max_length=16)
    t5_tokenizer = build_tiny_t5_tokenizer(model_max_length=TINY_SD3_MAX_SEQUENCE_LENGTH)
    clip_config = CLIPTextConfig(
        vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, projection_dim=32, hidden_act="gelu",
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    t5_config = T5Config(
        vocab_size=len(t5_tokenizer), d_model=64, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    num_vae_blocks = 2 if fast else 1
    torch.manual_seed(seed)
    text_encoders = [CLIPTextModelWithProjection(clip_config), CLIPTextModelWithProjection(clip_config)]
    text_encoder_3 = T5EncoderModel(t5_config)
    for index, encoder in enumerate([*text_encoders, text_encoder_3]):
        init_tiny_weights(encoder, seed + index)
    transformer = SD3Transformer2DModel(
        sample_size=32 // 2 ** (num_vae_blocks - 1),
        patch_size=2 if fast else 1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=t5_config.d_model,
        pooled_projection_dim=2 * clip_config.projection_dim,
        out_channels=4,
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8)[:num_vae_blocks],
        down_block_types=("DownEncoderBlock2D",) * num_vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_vae_blocks,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoders[0],
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoders[1],
        tokenizer_2=clip_tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )
    pipeline.save_pretrained(path)
    return path
