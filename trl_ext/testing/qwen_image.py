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
"""A tiny random Qwen-Image pipeline (`QwenImagePipeline`, flow matching), built from configs, that renders 32×32 images
on CPU; it shares its components' configs with [`~trl_ext.testing.save_tiny_qwen_image_edit`]."""

import os

import torch

from .qwen_image_edit import tiny_qwen_image_components


def fit_tiny_qwen_vae_decoder(vae, steps: int, seed: int = 0, size: int = 32) -> None:
    """Fit a tiny `AutoencoderKLQwenImage`'s decoder for `steps` Adam steps to decode latent channels 0–2 as RGB (tanh
    of the upsampled channels, on single-frame latents with random scale and per-channel offsets), so that image colour
    follows the latents as with a trained VAE (see [`~trl_ext.testing.diffusion.fit_tiny_vae_decoder`])."""
    generator = torch.Generator().manual_seed(seed)
    parameters = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    latent_size = size // 8
    for _ in range(steps):
        scale = 2 * torch.rand(8, 1, 1, 1, 1, generator=generator)
        latents = scale * torch.randn(8, vae.config.z_dim, 1, latent_size, latent_size, generator=generator)
        latents = latents + torch.randn(8, vae.config.z_dim, 1, 1, 1, generator=generator)
        target = torch.tanh(torch.nn.functional.interpolate(latents[:, :3, 0], size=size, mode="nearest"))
        loss = (vae.decode(latents).sample[:, :, 0] - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def save_tiny_qwen_image(path: str | os.PathLike, seed: int = 0, vae_fit_steps: int = 0) -> str:
    """Build a tiny random `QwenImagePipeline` and save it with `save_pretrained` to `path`.

    Components as in Qwen/Qwen-Image at toy sizes: a Qwen2.5-VL text encoder (hidden 16) with the offline byte-level
    tokenizer, a `QwenImageTransformer2DModel` (2 layers), an `AutoencoderKLQwenImage` (8× down, 4 latent channels)
    and the flow-matching Euler scheduler. Load it with `DiffusionPipeline.from_pretrained(path)` and render with
    `pipe(prompt, height=32, width=32, num_inference_steps=4, max_sequence_length=32)`.

    Args:
        path (`str` or `os.PathLike`):
            Output directory.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation.
        vae_fit_steps (`int`, *optional*, defaults to `0`):
            Steps of [`fit_tiny_qwen_vae_decoder`] (about 0.1 s a step on CPU; 60 are enough), so
            that image colour follows the latents; 0 keeps the decoder random.

    Returns:
        `str`: `path`.
    """
    from diffusers import QwenImagePipeline

    path = os.fspath(path)
    components = tiny_qwen_image_components(seed)
    if vae_fit_steps:
        fit_tiny_qwen_vae_decoder(components["vae"], vae_fit_steps, seed)
    QwenImagePipeline(**components).save_pretrained(path)
    return path
