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
  transformer without one, FLUX.1-schnell, ignores it), one pass per step; true classifier-free guidance is optional
  (`true_cfg_scale > 1`, as `FluxPipeline(true_cfg_scale=..., negative_prompt=...)`): a second pass on the negative
  prompt with the same guidance embedding, mixed as neg + s·(cond − neg) without rescaling;
- the schedule is `linspace(1, 1/T, T)` sigmas shifted by μ, which grows linearly with the number of image tokens
  (the scheduler's dynamic shifting), and the transformer takes the timestep divided by 1000.
"""

import torch

from .base import PackedFlowAdapter
from .sde import FlowSamplingConfig


class FluxAdapter(PackedFlowAdapter):
    """What FLUX.1 does its own way (see the module doc)."""

    pipeline_class = "FluxPipeline"
    family_name = "FLUX"

    takes_true_cfg_scale = True
    negative_rows_apart = True

    def uses_true_cfg(self, config: FlowSamplingConfig) -> bool:
        return config.true_cfg_scale > 1.0

    def pipeline_call_kwargs(self, config: FlowSamplingConfig) -> dict:
        kwargs = super().pipeline_call_kwargs(config)
        if self.uses_true_cfg(config):
            kwargs.update(true_cfg_scale=config.true_cfg_scale, negative_prompt=config.negative_prompt)
        return kwargs

    def encode_prompts(
        self, prompts: list[str], config: FlowSamplingConfig, device: torch.device
    ) -> dict[str, torch.Tensor]:
        def encode(texts: list[str], prefix: str) -> dict[str, torch.Tensor]:
            embeds, pooled, _ = self.pipeline.encode_prompt(
                prompt=texts, prompt_2=None, device=device, max_sequence_length=config.max_sequence_length
            )
            return {f"{prefix}encoder_hidden_states": embeds, f"{prefix}pooled_projections": pooled}

        conditioning = encode(prompts, "")
        if self.uses_true_cfg(config):
            conditioning.update(encode([config.negative_prompt] * len(prompts), "negative_"))
        return conditioning

    def initial_noise(
        self,
        batch_size: int,
        config: FlowSamplingConfig,
        channels: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        latents, _ = self.pipeline.prepare_latents(
            batch_size, channels, config.height, config.width, torch.float32, device, generator
        )
        return latents

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
        height, width = self.latent_size(config.height), self.latent_size(config.width)
        image_ids = self.pipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)
        timestep = self.row_timesteps(timestep, batch).to(latents.dtype) / 1000
        guidance = self.guidance_input(transformer, config, batch, device)

        def velocity(prefix: str) -> torch.Tensor:
            embeds = conditioning[f"{prefix}encoder_hidden_states"]
            return transformer(
                hidden_states=latents.to(dtype),
                timestep=timestep,
                guidance=guidance,
                pooled_projections=conditioning[f"{prefix}pooled_projections"],
                encoder_hidden_states=embeds,
                txt_ids=torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
                img_ids=image_ids,
                return_dict=False,
            )[0]

        conditional = velocity("")
        if not self.uses_true_cfg(config):
            return conditional
        return self.mix_guidance(velocity("negative_"), conditional, config.true_cfg_scale)

    def decode(self, latents: torch.Tensor, config: FlowSamplingConfig) -> torch.Tensor:
        return self.decode_with_vae(self.unpack(latents, config))
