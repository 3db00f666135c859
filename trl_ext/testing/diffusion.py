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
from transformers import CLIPTextModelWithProjection, T5EncoderModel

from .encoders import build_tiny_clip_tokenizer, build_tiny_t5_tokenizer, tiny_clip_text_config, tiny_t5_config
from .text import init_tiny_weights


TINY_SD3_MAX_SEQUENCE_LENGTH = 32
"""T5 prompt length to pass as `max_sequence_length=` to the tiny pipeline (the default 256 is 8× slower)."""


def fit_tiny_vae_decoder(vae, steps: int, seed: int = 0) -> None:
    """Fit a tiny VAE's decoder for `steps` Adam steps to decode latent channels 0–2 as RGB (tanh of the upsampled
    channels, on latents with random scale and per-channel offsets).

    A random decoder's group norms remove most of what the latents say about global image statistics (the mean pixel
    of a random tiny decoder moves by about 0.01 across latents), so no policy could change them; after fitting, image
    colour follows the latents as with a trained VAE and an image reward such as brightness is learnable.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.decoder.parameters(), lr=1e-2)
    channels = vae.config.latent_channels
    size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    for _ in range(steps):
        scale = 2 * torch.rand(16, 1, 1, 1, generator=generator)
        latents = scale * torch.randn(16, channels, size, size, generator=generator) + torch.randn(
            16, channels, 1, 1, generator=generator
        )
        target = torch.tanh(
            torch.nn.functional.interpolate(latents[:, :3], size=vae.config.sample_size, mode="nearest")
        )
        loss = (vae.decode(latents).sample - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def save_tiny_sd3(
    path: str | os.PathLike,
    fast: bool = True,
    seed: int = 0,
    vae_fit_steps: int = 100,
    published_geometry: bool = False,
) -> str:
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
        vae_fit_steps (`int`, *optional*, defaults to `100`):
            Steps of [`fit_tiny_vae_decoder`] (about 1–3 s on CPU); 0 keeps the decoder random.
        published_geometry (`bool`, *optional*, defaults to `False`):
            SD3.5's latent geometry instead: a 4-block VAE (8× downsampling, 4-channel blocks) and patch size 2, so a
            512×512 image is 32×32 image tokens, as in the real model, and any resolution the real model takes (up to
            its `pos_embed_max_size=96` patches a side) works. Slower per image; use it where a run at the published
            resolution must work as written.

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
    clip_config = tiny_clip_text_config(len(clip_tokenizer), 16, projection_dim=32, hidden_act="gelu")
    t5_config = tiny_t5_config(len(t5_tokenizer))
    num_vae_blocks = 4 if published_geometry else 2 if fast else 1
    torch.manual_seed(seed)
    text_encoders = [CLIPTextModelWithProjection(clip_config), CLIPTextModelWithProjection(clip_config)]
    text_encoder_3 = T5EncoderModel(t5_config)
    for index, encoder in enumerate([*text_encoders, text_encoder_3]):
        init_tiny_weights(encoder, seed + index)
    transformer = SD3Transformer2DModel(
        sample_size=32 // 2 ** (num_vae_blocks - 1) if not published_geometry else 64,
        patch_size=2 if fast or published_geometry else 1,
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
        block_out_channels=(4, 4, 4, 4) if published_geometry else (4, 8)[:num_vae_blocks],
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
    if vae_fit_steps:
        fit_tiny_vae_decoder(vae, vae_fit_steps, seed)
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
