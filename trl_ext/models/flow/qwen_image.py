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
"""[`QwenImageAdapter`]: Qwen-Image (`QwenImagePipeline`) for the flow SDE sampler.

What Qwen-Image does its own way, as diffusers' `QwenImagePipeline` does it:

- latents are packed 2x2 as FLUX's (one token of 4C channels per patch) and unpacked to the video VAE's
  (B, C, 1, h, w) layout to decode, with the VAE's per-channel `latents_mean` / `latents_std`;
- conditioning is the last hidden state of the Qwen2.5-VL text encoder over the prompt in its system template (the
  template's tokens dropped), padded within the batch, with its attention mask (`None` when nothing is padded);
- guidance is true classifier-free guidance: with `guidance_scale > 1` a second pass on the negative prompt `" "`,
  mixed as neg + s·(cond − neg) and rescaled to the conditional velocity's norm per token;
- the schedule is FLUX's (`linspace(1, 1/T, T)` sigmas shifted by μ from the image's token count) and the
  transformer takes the timestep divided by 1000 and the latent grid as `img_shapes`.
"""

import torch

from .base import PackedFlowAdapter
from .sde import FlowSamplingConfig


NEGATIVE_PROMPT = " "
"""The unconditional prompt of the true CFG (diffusers' documented way to enable it for Qwen-Image)."""


class QwenImageAdapter(PackedFlowAdapter):
    """What Qwen-Image does its own way (see the module doc)."""

    pipeline_class = "QwenImagePipeline"
    family_name = "Qwen-Image"
    negative_rows_apart = True

    def uses_true_cfg(self, config: FlowSamplingConfig) -> bool:
        return config.guidance_scale > 1.0

    def pipeline_call_kwargs(self, config: FlowSamplingConfig) -> dict:
        kwargs = super().pipeline_call_kwargs(config)
        del kwargs["guidance_scale"]  # the pipeline's guidance_scale is a guidance embedding's, which it has not
        if not self.uses_true_cfg(config):
            return {**kwargs, "true_cfg_scale": 1.0}
        return {**kwargs, "true_cfg_scale": config.guidance_scale, "negative_prompt": NEGATIVE_PROMPT}

    def lora_exclude_modules(self) -> list[str] | None:
        # every block is dual-stream and the last one's text output is discarded: its text projection is unused
        last = len(self.pipeline.transformer.transformer_blocks) - 1
        return [f"transformer_blocks.{last}.attn.to_add_out"]

    def _encode(self, prompts: list[str], prefix: str, config: FlowSamplingConfig, device) -> dict:
        embeds, mask = self.pipeline.encode_prompt(
            prompt=prompts, device=device, max_sequence_length=config.max_sequence_length
        )
        encoded = {f"{prefix}encoder_hidden_states": embeds}
        if mask is not None:
            encoded[f"{prefix}encoder_hidden_states_mask"] = mask
        return encoded

    def encode_prompts(
        self, prompts: list[str], config: FlowSamplingConfig, device: torch.device
    ) -> dict[str, torch.Tensor]:
        conditioning = self._encode(prompts, "", config, device)
        if self.uses_true_cfg(config):
            conditioning.update(self._encode([NEGATIVE_PROMPT] * len(prompts), "negative_", config, device))
        return conditioning

    def initial_noise(
        self,
        batch_size: int,
        config: FlowSamplingConfig,
        channels: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        return self.pipeline.prepare_latents(
            batch_size, channels, config.height, config.width, torch.float32, device, generator
        )

    def image_grids(self, config: FlowSamplingConfig, conditioning: dict[str, torch.Tensor]) -> list[tuple]:
        """The transformer's `img_shapes` entry of one sample: the (frames, rows, columns) of packed tokens of each
        image in its token sequence."""
        scale = self.pipeline.vae_scale_factor
        return [(1, config.height // scale // 2, config.width // scale // 2)]

    def model_input(self, latents: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        """The transformer's image tokens at `latents` (already in its dtype)."""
        return latents

    def predict_velocity(
        self,
        transformer: torch.nn.Module,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        config: FlowSamplingConfig,
    ) -> torch.Tensor:
        batch, tokens = latents.shape[:2]
        img_shapes = [self.image_grids(config, conditioning)] * batch
        guidance = self.guidance_input(transformer, config, batch, latents.device)
        timestep = self.row_timesteps(timestep, batch)
        model_input = self.model_input(latents.to(self.transformer_dtype(transformer)), conditioning)

        def velocity(prefix: str) -> torch.Tensor:
            return transformer(
                hidden_states=model_input,
                timestep=timestep.to(latents.dtype) / 1000,
                guidance=guidance,
                encoder_hidden_states=conditioning[f"{prefix}encoder_hidden_states"],
                encoder_hidden_states_mask=conditioning.get(f"{prefix}encoder_hidden_states_mask"),
                img_shapes=img_shapes,
                return_dict=False,
            )[0][:, :tokens]  # the noisy latents' tokens (an editor appends the condition image's)

        conditional = velocity("")
        if not self.uses_true_cfg(config):
            return conditional
        return self.mix_guidance(velocity("negative_"), conditional, config.guidance_scale, rescale=True)

    def decode(self, latents: torch.Tensor, config: FlowSamplingConfig) -> torch.Tensor:
        vae = self.pipeline.vae
        unpacked = self.unpack(latents, config).to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(unpacked.device, unpacked.dtype)
        std = torch.tensor(vae.config.latents_std).view(shape).to(unpacked.device, unpacked.dtype)
        decoded = vae.decode(unpacked * std + mean, return_dict=False)[0][:, :, 0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)
