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
"""A tiny random FLUX.1 pipeline (`FluxPipeline`, flow matching), built from configs, that renders 32×32 images on CPU."""

import os

import torch
from transformers import CLIPTextModel, T5EncoderModel

from .diffusion import TINY_SD3_MAX_SEQUENCE_LENGTH, fit_tiny_vae_decoder
from .encoders import build_tiny_clip_tokenizer, build_tiny_t5_tokenizer, tiny_clip_text_config, tiny_t5_config
from .text import init_tiny_weights


TINY_FLUX_MAX_SEQUENCE_LENGTH = TINY_SD3_MAX_SEQUENCE_LENGTH
"""T5 prompt length to pass as `max_sequence_length=` to the tiny pipeline (FLUX's default 512 is much slower)."""


def save_tiny_flux(
    path: str | os.PathLike,
    seed: int = 0,
    vae_fit_steps: int = 100,
    guidance_embeds: bool = True,
    published_geometry: bool = False,
) -> str:
    """Build a tiny random `FluxPipeline` and save it with `save_pretrained` to `path`.

    Components as in FLUX.1: a `FluxTransformer2DModel` (one double-stream and one single-stream block, rotary
    position embedding, a guidance embedding as FLUX.1-dev's), an `AutoencoderKL`, a `CLIPTextModel` (pooled prompt
    embedding) and a `T5EncoderModel` (sequence embeddings), their offline tokenizers (CLIP prompts are cut at 16
    tokens) and a `FlowMatchEulerDiscreteScheduler` with FLUX.1-dev's dynamic shifting. The transformer takes the
    VAE's 4 latent channels packed 2×2 (16 channels per token); `joint_attention_dim` is the T5 width and
    `pooled_projection_dim` the CLIP width, as in the real model.

    Load it with `DiffusionPipeline.from_pretrained(path)` (or `FluxPipeline`) and render with
    `pipe(prompt, height=32, width=32, num_inference_steps=4, max_sequence_length=TINY_FLUX_MAX_SEQUENCE_LENGTH)`.

    Args:
        path (`str` or `os.PathLike`):
            Output directory.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation.
        vae_fit_steps (`int`, *optional*, defaults to `100`):
            Steps of [`~trl_ext.testing.diffusion.fit_tiny_vae_decoder`] (about 1–3 s on CPU), so that image colour
            follows the latents; 0 keeps the decoder random.
        guidance_embeds (`bool`, *optional*, defaults to `True`):
            A guidance embedding as FLUX.1-dev's; `False`: none, as FLUX.1-schnell.
        published_geometry (`bool`, *optional*, defaults to `False`):
            FLUX.1's latent geometry instead: a 4-block VAE (8× downsampling), so a 512×512 image is 32×32 packed
            tokens as in the real model. Slower per image; otherwise a 2-block VAE (32×32 images → 16×16 latents →
            64 tokens).

    Returns:
        `str`: `path`.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    path = os.fspath(path)
    clip_tokenizer = build_tiny_clip_tokenizer(model_max_length=16)
    t5_tokenizer = build_tiny_t5_tokenizer(model_max_length=TINY_FLUX_MAX_SEQUENCE_LENGTH)
    clip_config = tiny_clip_text_config(len(clip_tokenizer), 16, hidden_act="gelu")
    t5_config = tiny_t5_config(len(t5_tokenizer))
    num_vae_blocks = 4 if published_geometry else 2
    latent_channels = 4
    torch.manual_seed(seed)
    text_encoder, text_encoder_2 = CLIPTextModel(clip_config), T5EncoderModel(t5_config)
    for index, encoder in enumerate([text_encoder, text_encoder_2]):
        init_tiny_weights(encoder, seed + index)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_config.d_model,
        pooled_projection_dim=clip_config.hidden_size,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 4) if published_geometry else (4, 8),
        down_block_types=("DownEncoderBlock2D",) * num_vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_vae_blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    if vae_fit_steps:
        fit_tiny_vae_decoder(vae, vae_fit_steps, seed)
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1-dev's: the shift grows with the image's token count
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipeline = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
    )
    pipeline.save_pretrained(path)
    return path
