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
"""[`QwenImageEditAdapter`]: Qwen-Image-Edit (`QwenImageEditPipeline`) for the flow SDE sampler; the policy edits a
condition image per sample.

Everything of Qwen-Image ([`QwenImageAdapter`]) plus the condition image, as diffusers' `QwenImageEditPipeline`
handles it:

- the condition image is resized to about `condition_area` pixels (the pipeline's 1024², or
  [`FlowSamplingConfig.condition_area`]) at its aspect ratio, in multiples of 32; in a batch every image takes the
  first image's size, as in the pipeline (batch images of one aspect ratio);
- the Qwen2.5-VL text encoder sees the resized image with the instruction (and with the negative prompt under true
  CFG);
- the VAE encodes the image (the distribution's mode, normalised by `latents_mean` / `latents_std`) into packed
  latents that are appended to the noisy latents' tokens at every transformer call; the transformer's output is cut
  back to the noisy tokens, and `img_shapes` lists both grids.
"""

import torch

from .qwen_image import NEGATIVE_PROMPT, QwenImageAdapter
from .sde import FlowSamplingConfig


DEFAULT_CONDITION_AREA = 1024 * 1024
"""The pixel area `QwenImageEditPipeline` resizes the condition image to."""


class QwenImageEditAdapter(QwenImageAdapter):
    """What Qwen-Image-Edit does its own way (see the module doc). `encode_prompts` takes the condition images, one
    per prompt; their VAE latents (`image_latents`) and latent grid (`condition_grid`, (B, 2) rows and columns of
    packed tokens) travel in the conditioning, one row per sample."""

    pipeline_class = "QwenImageEditPipeline"
    family_name = "Qwen-Image-Edit"
    edits_images = True

    def condition_size(self, image, config: FlowSamplingConfig) -> tuple[int, int]:
        """(height, width) in pixels that the pipeline resizes the condition `image` (PIL) to."""
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

        area = config.condition_area or DEFAULT_CONDITION_AREA
        width, height, _ = calculate_dimensions(area, image.size[0] / image.size[1])
        return height, width

    def encode_prompts(
        self, prompts: list[str], config: FlowSamplingConfig, device: torch.device, images: list | None = None
    ) -> dict[str, torch.Tensor]:
        pipeline = self.pipeline
        if images is None or len(images) != len(prompts):
            raise ValueError(
                f"{self.pipeline_class} edits a condition image: pass one image per prompt "
                f"({len(prompts)} prompts, {'no' if images is None else len(images)} images)."
            )
        height, width = self.condition_size(images[0], config)  # the pipeline's batch rule: the first image's size
        resized = pipeline.image_processor.resize([image.convert("RGB") for image in images], height, width)
        conditioning = self._encode(prompts, "", config, device, resized)
        if self.uses_true_cfg(config):
            conditioning.update(self._encode([NEGATIVE_PROMPT] * len(prompts), "negative_", config, device, resized))
        vae = pipeline.vae
        pixels = pipeline.image_processor.preprocess(resized, height, width).unsqueeze(2)
        image_latents = pipeline._encode_vae_image(pixels.to(device, vae.dtype), generator=None)
        channels, rows, columns = image_latents.shape[1], image_latents.shape[3], image_latents.shape[4]
        conditioning["image_latents"] = pipeline._pack_latents(image_latents, len(prompts), channels, rows, columns)
        grid = torch.tensor([rows // 2, columns // 2], device=device)
        conditioning["condition_grid"] = grid.expand(len(prompts), 2)
        return conditioning

    def _encode(
        self, prompts: list[str], prefix: str, config: FlowSamplingConfig, device, images: list | None = None
    ) -> dict:
        embeds, mask = self.pipeline.encode_prompt(
            prompt=prompts, image=images, device=device, max_sequence_length=config.max_sequence_length
        )
        encoded = {f"{prefix}encoder_hidden_states": embeds}
        if mask is not None:
            encoded[f"{prefix}encoder_hidden_states_mask"] = mask
        return encoded

    def initial_noise(
        self,
        batch_size: int,
        config: FlowSamplingConfig,
        channels: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        latents, _ = self.pipeline.prepare_latents(
            None, batch_size, channels, config.height, config.width, torch.float32, device, generator
        )
        return latents

    def image_grids(self, config: FlowSamplingConfig, conditioning: dict[str, torch.Tensor]) -> list[tuple]:
        rows, columns = (int(n) for n in conditioning["condition_grid"][0])
        return [*super().image_grids(config, conditioning), (1, rows, columns)]

    def model_input(self, latents: torch.Tensor, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([latents, conditioning["image_latents"].to(latents.dtype)], dim=1)
