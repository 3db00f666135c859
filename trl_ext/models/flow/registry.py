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
"""The registry of flow-matching pipeline families: [`flow_adapter`] picks a pipeline's adapter from its class, and
[`load_flow_pipeline`] loads any of them from a directory or Hub id."""

import os

import torch

from .base import FlowAdapter
from .flux import FluxAdapter
from .qwen_image import QwenImageAdapter
from .qwen_image_edit import QwenImageEditAdapter
from .sd3 import SD3Adapter


FLOW_ADAPTERS: dict[str, type[FlowAdapter]] = {
    adapter.pipeline_class: adapter for adapter in (SD3Adapter, FluxAdapter, QwenImageAdapter, QwenImageEditAdapter)
}
"""Adapter class per diffusers pipeline class name."""


def flow_adapter(pipeline) -> FlowAdapter:
    """The adapter of `pipeline`'s family, chosen from its class (or the nearest supported base class).

    Raises:
        `ValueError`: The pipeline's class is not a supported family; the message lists the supported ones.
    """
    for cls in type(pipeline).__mro__:
        if cls.__name__ in FLOW_ADAPTERS:
            return FLOW_ADAPTERS[cls.__name__](pipeline)
    raise ValueError(
        f"{type(pipeline).__name__} is not a supported flow-matching pipeline; the flow trainers support "
        f"{', '.join(sorted(FLOW_ADAPTERS))}."
    )


def load_flow_pipeline(name_or_path: str, dtype: torch.dtype = torch.float32):
    """`DiffusionPipeline.from_pretrained(name_or_path, dtype=dtype)`, with a torchvision-free processor for a pipeline
    that has one (Qwen-Image-Edit's Qwen2-VL processor does not load without torchvision otherwise).

    Raises:
        `ValueError`: The pipeline's class is not a supported family; the message lists the supported ones.
    """
    from diffusers import DiffusionPipeline

    from ..processors import load_vlm_processor

    kwargs = {}
    if "processor" in DiffusionPipeline.load_config(name_or_path):
        directory = name_or_path if os.path.isdir(name_or_path) else DiffusionPipeline.download(name_or_path)
        kwargs["processor"] = load_vlm_processor(os.path.join(directory, "processor"))
    pipeline = DiffusionPipeline.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    flow_adapter(pipeline)  # an unsupported class fails here, with the supported ones listed
    return pipeline
