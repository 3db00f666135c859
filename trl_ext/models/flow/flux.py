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
"""[`FluxAdapter`]: FLUX.1 (`FluxPipeline`: FLUX.1-dev, FLUX.1-schnell) for the flow SDE sampler.

What FLUX does its own way, as diffusers' `FluxPipeline` does it:

- latents are packed: each 2x2 patch of the (B, C, h, w) VAE latents becomes one token of 4C channels, so the SDE
  runs on (B, h/2 · w/2, 4C) and the latents are unpacked only to decode;
- conditioning is T5's sequence embeddings plus CLIP-L's pooled embedding, with zero text position ids and (row,
  column) image position ids for the rotary embedding;
- guidance is distilled into the transformer: `guidance_scale` is fed to its guidance embedding (FLUX.1-dev; a
  transformer without one, FLUX.1-schnell, ignores it) and there is no true classifier-free guidance, so one pass
  per step;
- the schedule is `linspace(1, 1/T, T)` sigmas shifted by μ, which grows linearly with the number of image tokens
  (the scheduler's dynamic shifting), and the transformer takes the timestep divided by 1000.
"""

import numpy as np
import torch

from .base import FlowAdapter
from .sde import FlowSamplingConfig


def shifted_schedule(
    scheduler, num_inference_steps: int, image_seq_len: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set `scheduler` up as FLUX / Qwen-Image do: `linspace(1, 1/T, T)` sigmas shifted by μ, which grows linearly
    with the image's token count between the scheduler's base and max shifts. Returns its T + 1 sigmas (float32) and
    T timesteps."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    steps = num_inference_steps
    sigmas = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
    mu = calculate_shift(
        image_seq_len,
        scheduler.config.get("base_image_seq_len", 256),
        scheduler.config.get("max_image_seq_len", 4096),
        scheduler.config.get("base_shift", 0.5),
        scheduler.config.get("max_shift", 1.15),
    )
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    return scheduler.sigmas.float(), timesteps


class FluxAdapter(FlowAdapter):
    """What FLUX.1 does its own way (see the module doc)."""

    pipeline_class = "FluxPipeline"

    def _latent_size(self, pixels: int) -> int:
        """Height or width of the unpacked VAE latents for an image side of `pixels`."""
        return 2 * (pixels // (self.pipeline.vae_scale_factor * 2))

    def check_resolution(self, resolution: int) -> None:
        factor = self.pipeline.vae_scale_factor * 2
        if resolution % factor:
            raise ValueError(
                f"resolution={resolution} must be a multiple of {factor} (the VAE's downsampling factor "
                f"{self.pipeline.vae_scale_factor} times FLUX's 2x2 latent packing)."
            )

    def encode_prompts(
        self, prompts: list[str], config: FlowSamplingConfig, device: torch.device
    ) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=config.max_sequence_length
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def prepare_latents(
        self,
        batch_size: int,
        config: FlowSamplingConfig,
        transformer: torch.nn.Module,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pipeline = self.pipeline
        latents, _ = pipeline.prepare_latents(
            batch_size,
            transformer.config.in_channels // 4,
            config.height,
            config.width,
            torch.float32,
            device,
            generator,
        )
        sigmas, timesteps = shifted_schedule(pipeline.scheduler, config.num_inference_steps, latents.shape[1], device)
        return latents, sigmas, timesteps

    def predict_velocity(
        self,
        transformer: torch.nn.Module,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        config: FlowSamplingConfig,
    ) -> torch.Tensor:
        batch, device = latents.size(0), latents.device
        dtype = self.transformer_dtype(transformer)
        height, width = self._latent_size(config.height), self._latent_size(config.width)
        image_ids = self.pipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)
        text_ids = torch.zeros(conditioning["encoder_hidden_states"].shape[1], 3, device=device, dtype=dtype)
        guidance = None
        if getattr(transformer, "module", transformer).config.guidance_embeds:
            guidance = torch.full((batch,), config.guidance_scale, device=device, dtype=torch.float32)
        timestep = timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep
        return transformer(
            hidden_states=latents.to(dtype),
            timestep=timestep.to(latents.dtype) / 1000,
            guidance=guidance,
            txt_ids=text_ids,
            img_ids=image_ids,
            **conditioning,
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, config: FlowSamplingConfig) -> torch.Tensor:
        unpacked = self.pipeline._unpack_latents(latents, config.height, config.width, self.pipeline.vae_scale_factor)
        return self.decode_with_vae(unpacked)
