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
"""Image editors for the benchmark: a small protocol ([`ImageEditor`]) and diffusers' image+prompt pipelines behind it.

[`DiffusersImageEditor`] runs `QwenImageEditPipeline` (or any diffusers pipeline called as
`pipe(image=..., prompt=..., negative_prompt=..., true_cfg_scale=..., num_inference_steps=..., generator=...)`), with
one `torch.Generator` per item seeded from the item's seed (results do not depend on batching or resume order), and
batches only images of one aspect ratio (the pipeline resizes a whole batch with the first image's ratio).
"""

import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from PIL import Image
from transformers.utils import logging


logger = logging.get_logger(__name__)


@runtime_checkable
class ImageEditor(Protocol):
    """What the benchmark runner needs from an editor: a `name`, the `settings` recorded in the run metadata (a resume
    must match them), and `edit(images, instructions, seeds)` returning one PIL image per input."""

    name: str

    def settings(self) -> dict[str, Any]: ...

    def edit(self, images: Sequence[Image.Image], instructions: Sequence[str], seeds: Sequence[int]) -> list: ...


def load_image_edit_pipeline(model: str, sources=None, dtype: str = "auto", device: str | None = None):
    """Load a diffusers editing pipeline through `trl_ext.hub`, passing a torchvision-free processor when the pipeline
    has one (the Qwen-Image-Edit text encoder's Qwen2-VL processor cannot be loaded without torchvision otherwise)."""
    from diffusers import DiffusionPipeline

    from ...hub import resolve_device_and_dtype, resolve_pretrained
    from ...models.processors import load_vlm_processor

    path = resolve_pretrained(model, sources).path
    device, torch_dtype = resolve_device_and_dtype(device, dtype)
    kwargs = {}
    with open(os.path.join(path, "model_index.json")) as f:
        index = json.load(f)
    if "processor" in index and os.path.isdir(os.path.join(path, "processor")):
        kwargs["processor"] = load_vlm_processor(os.path.join(path, "processor"))
    pipeline = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, **kwargs)
    return pipeline.to(device)


@contextlib.contextmanager
def _condition_area(pipeline, area: int | None):
    """Scoped: make the Qwen-Image-Edit pipelines size the condition image to `area` pixels instead of 1024²."""
    module = __import__(type(pipeline).__module__, fromlist=["calculate_dimensions"])
    original = getattr(module, "calculate_dimensions", None)
    if area is None or original is None:
        yield
        return
    module.calculate_dimensions = lambda target_area, ratio: original(area, ratio)
    try:
        yield
    finally:
        module.calculate_dimensions = original


class DiffusersImageEditor:
    r"""
    A diffusers image+prompt editing pipeline (e.g. `QwenImageEditPipeline`) as an [`ImageEditor`].

    Parameters:
        pipeline (`DiffusionPipeline`):
            The pipeline.
        name (`str`):
            Editor id recorded in the run metadata (e.g. `"Qwen/Qwen-Image-Edit"`).
        num_inference_steps (`int`, *optional*, defaults to `50`):
            Denoising steps.
        true_cfg_scale (`float`, *optional*, defaults to `4.0`):
            True classifier-free guidance scale (active only with a negative prompt).
        negative_prompt (`str`, *optional*, defaults to `" "`):
            Negative prompt; `None` turns true CFG off.
        batch_size (`int`, *optional*, defaults to `1`):
            Images per pipeline call (only images of one aspect ratio share a call).
        condition_area (`int`, *optional*):
            Pixel area the Qwen-Image-Edit pipelines resize the condition image to (default theirs, 1024²); small
            values make tiny CPU runs fast.
        device (`str`, *optional*):
            Device of the generators; defaults to the pipeline's.
    """

    def __init__(
        self,
        pipeline,
        name: str,
        num_inference_steps: int = 50,
        true_cfg_scale: float = 4.0,
        negative_prompt: str | None = " ",
        batch_size: int = 1,
        condition_area: int | None = None,
        device: str | None = None,
    ):
        self.pipeline = pipeline
        self.name = name
        self.num_inference_steps = num_inference_steps
        self.true_cfg_scale = true_cfg_scale
        self.negative_prompt = negative_prompt
        self.batch_size = batch_size
        self.condition_area = condition_area
        self.device = device or str(getattr(pipeline, "device", "cpu"))
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(cls, model: str, sources=None, dtype: str = "auto", device: str | None = None, **kwargs):
        """Load the pipeline with [`load_image_edit_pipeline`]; `kwargs` go to [`DiffusersImageEditor`]."""
        pipeline = load_image_edit_pipeline(model, sources, dtype=dtype, device=device)
        return cls(pipeline, name=kwargs.pop("name", None) or model, **kwargs)

    def settings(self) -> dict[str, Any]:
        return {
            "editor": self.name,
            "pipeline_class": type(self.pipeline).__name__,
            "num_inference_steps": self.num_inference_steps,
            "true_cfg_scale": self.true_cfg_scale,
            "negative_prompt": self.negative_prompt,
            "condition_area": self.condition_area,
            "dtype": str(getattr(self.pipeline, "dtype", "")),
        }

    def edit(self, images, instructions, seeds) -> list[Image.Image]:
        import torch

        outputs: list[Image.Image | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            width, height = image.size
            groups.setdefault((round(1000 * width / height), 1), []).append(i)  # equal aspect ratio (to 0.1 %)
        for index in groups.values():
            for start in range(0, len(index), self.batch_size):
                chunk = index[start : start + self.batch_size]
                generators = [torch.Generator(self.device).manual_seed(int(seeds[i])) for i in chunk]
                kwargs = {
                    "image": [images[i].convert("RGB") for i in chunk],
                    "prompt": [instructions[i] for i in chunk],
                    "num_inference_steps": self.num_inference_steps,
                    "true_cfg_scale": self.true_cfg_scale,
                    "generator": generators,
                }
                if self.negative_prompt is not None:
                    kwargs["negative_prompt"] = [self.negative_prompt] * len(chunk)
                with _condition_area(self.pipeline, self.condition_area):
                    result = self.pipeline(**kwargs).images
                for i, image in zip(chunk, result):
                    outputs[i] = image
        return outputs
