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
"""Flow-matching policies: the SDE step with its Gaussian log-probability ([`~trl_ext.models.flow.sde`]) and one small
adapter per diffusers pipeline family ([`SD3Adapter`], [`FluxAdapter`], [`QwenImageAdapter`], [`QwenImageEditAdapter`]), chosen from the pipeline class by
[`flow_adapter`]."""

from .base import FlowAdapter
from .flux import FluxAdapter
from .qwen_image import QwenImageAdapter
from .qwen_image_edit import QwenImageEditAdapter
from .registry import FLOW_ADAPTERS, flow_adapter, load_flow_pipeline
from .sd3 import SD3Adapter
from .sde import (
    FlowSamplingConfig,
    FlowTrajectory,
    SDEStepOutput,
    sample_trajectories,
    sde_step_with_logprob,
    trajectory_step_log_prob,
)


__all__ = [
    "FLOW_ADAPTERS",
    "FlowAdapter",
    "FlowSamplingConfig",
    "FlowTrajectory",
    "FluxAdapter",
    "QwenImageAdapter",
    "QwenImageEditAdapter",
    "SD3Adapter",
    "SDEStepOutput",
    "flow_adapter",
    "load_flow_pipeline",
    "sample_trajectories",
    "sde_step_with_logprob",
    "trajectory_step_log_prob",
]
