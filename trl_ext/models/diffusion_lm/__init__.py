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
"""Discrete diffusion language models behind one interface: a [`DiffusionLMAdapter`] per family (SEDD, masked
diffusion LMs in the LLaDA / MDLM convention, transformers' DiffusionGemma) and the likelihood estimators the RL trainers use (`"elbo"`,
`"mean_field"`, `"trace"`)."""

from .base import DiffusionLMAdapter, DiffusionLMSample, Trajectory
from .diffusion_gemma import (
    CanvasTrajectory,
    DiffusionGemmaAdapter,
    entropy_bound_acceptance,
    is_diffusion_gemma,
    load_diffusion_lm,
)
from .estimators import (
    ESTIMATORS,
    masked_diffusion_elbo,
    mean_field_log_likelihood,
    sample_likelihood_draws,
    trace_log_likelihood,
)
from .masked import MaskedDiffusionLMAdapter, load_masked_diffusion_lm, num_transfer_tokens
from .sedd import SEDDAdapter


__all__ = [
    "ESTIMATORS",
    "CanvasTrajectory",
    "DiffusionGemmaAdapter",
    "DiffusionLMAdapter",
    "DiffusionLMSample",
    "MaskedDiffusionLMAdapter",
    "SEDDAdapter",
    "Trajectory",
    "entropy_bound_acceptance",
    "is_diffusion_gemma",
    "load_diffusion_lm",
    "load_masked_diffusion_lm",
    "masked_diffusion_elbo",
    "mean_field_log_likelihood",
    "num_transfer_tokens",
    "sample_likelihood_draws",
    "trace_log_likelihood",
]
