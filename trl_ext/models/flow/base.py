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
"""[`FlowAdapter`]: what one diffusers flow-matching pipeline family does differently, behind one interface.

The SDE sampler ([`~trl_ext.models.flow.sde`]) and the flow trainers are written once; an adapter per family holds
exactly what differs: how prompts become the transformer's conditioning (and whether true classifier-free guidance
doubles it), how the initial latents are drawn and laid out (FLUX packs 2x2 patches), the scheduler's set-up (timestep
shift), the transformer's call signature, and how final latents are decoded to images.
"""

from typing import TYPE_CHECKING, ClassVar

import torch


if TYPE_CHECKING:
    from .sde import FlowSamplingConfig


class FlowAdapter:
    """The base of the per-family adapters; subclasses set `pipeline_class` and implement the hooks.

    Args:
        pipeline: A diffusers pipeline of the adapter's family.
    """

    pipeline_class: ClassVar[str] = ""
    """The name of the diffusers pipeline class the adapter serves (also in its LoRA model card)."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def uses_true_cfg(self, config: "FlowSamplingConfig") -> bool:
        """Whether each velocity mixes an unconditional and a conditional pass (classifier-free guidance)."""
        return False

    def lora_exclude_modules(self) -> list[str] | None:
        """Modules among the LoRA targets whose output never reaches the velocity: they get no adapter (a LoRA weight
        without gradient would make DDP wait for it forever). `None`: none."""
        return None

    def check_resolution(self, resolution: int) -> None:
        """Raise a `ValueError` when the transformer cannot render `resolution` x `resolution` images."""
        raise NotImplementedError

    def encode_prompts(
        self, prompts: list[str], config: "FlowSamplingConfig", device: torch.device
    ) -> dict[str, torch.Tensor]:
        """The transformer's conditioning keyword arguments for `prompts`, one row per prompt (under true CFG the
        unconditional rows first, then the conditional ones)."""
        raise NotImplementedError

    def prepare_latents(
        self,
        batch_size: int,
        config: "FlowSamplingConfig",
        transformer: torch.nn.Module,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Set the scheduler up and draw the initial noise: (latents, the T + 1 sigmas (float32), the T timesteps)."""
        raise NotImplementedError

    def predict_velocity(
        self,
        transformer: torch.nn.Module,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        config: "FlowSamplingConfig",
    ) -> torch.Tensor:
        """The (guided) velocity v_θ(x_t, t) at `latents`, in the latents' layout."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, config: "FlowSamplingConfig") -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from final latents."""
        raise NotImplementedError

    def select_conditioning(
        self,
        conditioning: dict[str, torch.Tensor],
        indices: torch.Tensor,
        batch_size: int,
        config: "FlowSamplingConfig",
    ) -> dict[str, torch.Tensor]:
        """The rows of `conditioning` (encoded for `batch_size` images) that belong to the images `indices`."""
        rows = torch.cat([indices, indices + batch_size]) if self.uses_true_cfg(config) else indices
        return {name: value[rows] for name, value in conditioning.items()}

    @staticmethod
    def transformer_dtype(transformer: torch.nn.Module) -> torch.dtype:
        """The dtype of a (possibly DDP-wrapped: it has no `dtype`) transformer."""
        return getattr(transformer, "module", transformer).dtype

    def decode_with_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from (B, C, h, w) latents: undo the VAE's scaling and shift, decode, map [-1, 1] to [0, 1]."""
        vae = self.pipeline.vae
        decoded = vae.decode(
            (latents / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype), return_dict=False
        )[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)
