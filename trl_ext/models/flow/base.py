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
shift), the transformer's call signature, and how final latents are decoded to images. What several families share
lives here too: the timestep per row, the guidance embedding's input, the true-CFG mix, FLUX's shifted schedule
([`shifted_schedule`]) and the 2x2 latent packing of FLUX / Qwen-Image ([`PackedFlowAdapter`]).
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
    edits_images: ClassVar[bool] = False
    """Whether the family edits a condition image per sample (its `encode_prompts` takes `images`)."""
    takes_true_cfg_scale: ClassVar[bool] = False
    negative_rows_apart: ClassVar[bool] = False
    """Whether true CFG's unconditional inputs are conditioning entries of their own (`negative_...`, one row per
    image) rather than rows stacked before the conditional ones."""
    """Whether the family's true CFG is set by `true_cfg_scale` (FLUX.1, beside its guidance embedding's
    `guidance_scale`); the others' CFG scale is `guidance_scale`."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def uses_true_cfg(self, config: "FlowSamplingConfig") -> bool:
        """Whether each velocity mixes an unconditional and a conditional pass (classifier-free guidance)."""
        return False

    def pipeline_call_kwargs(self, config: "FlowSamplingConfig") -> dict:
        """The keyword arguments of the pipeline's own `__call__` that render as `config` does without SDE noise
        (steps, size, prompt length, guidance), for the model card's usage example."""
        return {
            "num_inference_steps": config.num_inference_steps,
            "height": config.height,
            "width": config.width,
            "max_sequence_length": config.max_sequence_length,
            "guidance_scale": config.guidance_scale,
        }

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

    def encode(
        self, prompts: list[str], config: "FlowSamplingConfig", device: torch.device, images: list | None = None
    ) -> dict[str, torch.Tensor]:
        """[`encode_prompts`], with the condition images (PIL, one per prompt) of a family that edits them.

        Raises:
            `ValueError`: Images given to a text-to-image family, or none to an editing family.
        """
        if images is None and not self.edits_images:
            return self.encode_prompts(prompts, config, device)
        if images is None or not self.edits_images:
            raise ValueError(
                f"{self.pipeline_class} edits a condition image: pass one image per prompt."
                if self.edits_images
                else f"{self.pipeline_class} generates from text: it takes no condition images."
            )
        return self.encode_prompts(prompts, config, device, images=images)

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
        stacked = self.uses_true_cfg(config) and not self.negative_rows_apart
        rows = torch.cat([indices, indices + batch_size]) if stacked else indices
        return {name: value[rows] for name, value in conditioning.items()}

    @staticmethod
    def transformer_dtype(transformer: torch.nn.Module) -> torch.dtype:
        """The dtype of a (possibly DDP-wrapped: it has no `dtype`) transformer."""
        return getattr(transformer, "module", transformer).dtype

    @staticmethod
    def row_timesteps(timestep: torch.Tensor, batch: int) -> torch.Tensor:
        """One timestep per latent row: a scalar timestep expanded to `batch` rows, a per-row (B,) one as it is."""
        return timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep

    @staticmethod
    def guidance_input(
        transformer: torch.nn.Module, config: "FlowSamplingConfig", batch: int, device: torch.device
    ) -> torch.Tensor | None:
        """The guidance embedding's input (`guidance_scale` per row, float32) of a guidance-distilled transformer
        (FLUX.1-dev), `None` for a transformer without one."""
        if getattr(transformer, "module", transformer).config.guidance_embeds:
            return torch.full((batch,), config.guidance_scale, device=device, dtype=torch.float32)
        return None

    @staticmethod
    def mix_guidance(
        unconditional: torch.Tensor, conditional: torch.Tensor, scale: float, rescale: bool = False
    ) -> torch.Tensor:
        """True classifier-free guidance, u + s·(c − u); with `rescale` the mix is rescaled to the conditional
        velocity's norm over the last (channel) dimension, as the Qwen-Image pipelines do per token."""
        mixed = unconditional + scale * (conditional - unconditional)
        if rescale:
            mixed = mixed * (torch.norm(conditional, dim=-1, keepdim=True) / torch.norm(mixed, dim=-1, keepdim=True))
        return mixed

    def decode_with_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from (B, C, h, w) latents: undo the VAE's scaling and shift, decode, map [-1, 1] to [0, 1]."""
        vae = self.pipeline.vae
        decoded = vae.decode(
            (latents / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype), return_dict=False
        )[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)


def shifted_schedule(
    scheduler, num_inference_steps: int, image_seq_len: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set `scheduler` up as FLUX / Qwen-Image do: `linspace(1, 1/T, T)` sigmas shifted by μ, which grows linearly
    with the image's token count between the scheduler's base and max shifts. Returns its T + 1 sigmas (float32) and
    T timesteps."""
    import numpy as np
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


class PackedFlowAdapter(FlowAdapter):
    """The base of families whose latents are packed 2x2 (FLUX.1, Qwen-Image, Qwen-Image-Edit): each 2x2 patch of the
    VAE latents is one token of 4C channels, the SDE runs on (B, h/2 · w/2, 4C), the latents are unpacked only to
    decode, and the schedule is [`shifted_schedule`]'s. Subclasses set `family_name` and implement [`initial_noise`].
    """

    family_name: ClassVar[str] = ""
    """The family's name in error messages."""

    def latent_size(self, pixels: int) -> int:
        """Height or width of the unpacked VAE latents for an image side of `pixels`."""
        return 2 * (pixels // (self.pipeline.vae_scale_factor * 2))

    def check_resolution(self, resolution: int) -> None:
        factor = self.pipeline.vae_scale_factor * 2
        if resolution % factor:
            raise ValueError(
                f"resolution={resolution} must be a multiple of {factor} (the VAE's downsampling factor "
                f"{self.pipeline.vae_scale_factor} times {self.family_name}'s 2x2 latent packing)."
            )

    def initial_noise(
        self,
        batch_size: int,
        config: "FlowSamplingConfig",
        channels: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The packed initial noise (B, L, 4C) in float32, drawn as the pipeline's own `prepare_latents` draws it."""
        raise NotImplementedError

    def prepare_latents(
        self,
        batch_size: int,
        config: "FlowSamplingConfig",
        transformer: torch.nn.Module,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latents = self.initial_noise(batch_size, config, transformer.config.in_channels // 4, device, generator)
        sigmas, timesteps = shifted_schedule(
            self.pipeline.scheduler, config.num_inference_steps, latents.shape[1], device
        )
        return latents, sigmas, timesteps

    def unpack(self, latents: torch.Tensor, config: "FlowSamplingConfig") -> torch.Tensor:
        """The VAE's layout of packed latents (as the pipeline's `_unpack_latents`)."""
        return self.pipeline._unpack_latents(latents, config.height, config.width, self.pipeline.vae_scale_factor)
