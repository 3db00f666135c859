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

import torch

from .base import PackedFlowAdapter
from .sde import FlowSamplingConfig


class FluxAdapter(PackedFlowAdapter):
    """What FLUX.1 does its own way (see the module doc)."""

    pipeline_class = "FluxPipeline"
    family_name = "FLUX"

    def encode_prompts(
        self, prompts: list[str], config: FlowSamplingConfig, device: torch.device
    ) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=config.max_sequence_length
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

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
        text_ids = torch.zeros(conditioning["encoder_hidden_states"].shape[1], 3, device=device, dtype=dtype)
        return transformer(
            hidden_states=latents.to(dtype),
            timestep=self.row_timesteps(timestep, batch).to(latents.dtype) / 1000,
            guidance=self.guidance_input(transformer, config, batch, device),
            txt_ids=text_ids,
            img_ids=image_ids,
            **conditioning,
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, config: FlowSamplingConfig) -> torch.Tensor:
        return self.decode_with_vae(self.unpack(latents, config))
