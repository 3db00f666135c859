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
"""[`SD3Adapter`]: Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`) for the flow SDE sampler.

Unpacked (B, C, h, w) latents, CLIP-L + CLIP-G + T5 conditioning (sequence embeddings and pooled projections), true
classifier-free guidance with the empty prompt when `guidance_scale > 1`, the scheduler's own static shift, and a
learned position embedding that bounds the resolution.
"""

import torch

from .base import FlowAdapter
from .sde import FlowSamplingConfig


class SD3Adapter(FlowAdapter):
    """What SD3 / SD3.5 does its own way (see the module doc)."""

    pipeline_class = "StableDiffusion3Pipeline"

    def uses_true_cfg(self, config: FlowSamplingConfig) -> bool:
        return config.guidance_scale > 1.0

    def check_resolution(self, resolution: int) -> None:
        pipeline = self.pipeline
        patch_size = pipeline.transformer.config.patch_size
        factor = pipeline.vae_scale_factor * patch_size
        if resolution % factor:
            raise ValueError(
                f"resolution={resolution} must be a multiple of {factor} (the VAE's downsampling factor "
                f"{pipeline.vae_scale_factor} times the transformer's patch size {patch_size})."
            )
        max_size = pipeline.transformer.config.pos_embed_max_size
        if max_size is not None and resolution // factor > max_size:
            raise ValueError(
                f"resolution={resolution} is {resolution // factor} patches a side, more than the "
                f"transformer's position embedding holds (pos_embed_max_size={max_size}): use resolution <= "
                f"{max_size * factor}."
            )

    def encode_prompts(
        self, prompts: list[str], config: FlowSamplingConfig, device: torch.device
    ) -> dict[str, torch.Tensor]:
        cfg = self.uses_true_cfg(config)
        embeds, negative, pooled, negative_pooled = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=cfg,
            max_sequence_length=config.max_sequence_length,
        )
        if cfg:
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def prepare_latents(
        self,
        batch_size: int,
        config: FlowSamplingConfig,
        transformer: torch.nn.Module,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scheduler = self.pipeline.scheduler
        scheduler.set_timesteps(config.num_inference_steps, device=device)
        latents = self.pipeline.prepare_latents(
            batch_size, transformer.config.in_channels, config.height, config.width, torch.float32, device, generator
        )
        return latents, scheduler.sigmas.float(), scheduler.timesteps

    def predict_velocity(
        self,
        transformer: torch.nn.Module,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        config: FlowSamplingConfig,
    ) -> torch.Tensor:
        cfg = self.uses_true_cfg(config)
        model_input = torch.cat([latents, latents]) if cfg else latents
        timestep = (
            timestep.reshape(-1).expand(model_input.size(0))
            if timestep.numel() == 1
            else timestep.repeat(model_input.size(0) // timestep.numel())
        )
        velocity = transformer(
            hidden_states=model_input.to(self.transformer_dtype(transformer)),
            timestep=timestep,
            **conditioning,
            return_dict=False,
        )[0]
        if cfg:
            velocity = self.mix_guidance(*velocity.chunk(2), config.guidance_scale)
        return velocity

    def decode(self, latents: torch.Tensor, config: FlowSamplingConfig) -> torch.Tensor:
        return self.decode_with_vae(latents)
