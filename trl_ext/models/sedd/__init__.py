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
"""SEDD: score-entropy discrete diffusion language models (Lou et al. 2023, https://huggingface.co/papers/2310.16834)."""

from .configuration_sedd import SEDDConfig
from .likelihood import ElboDraws, dwdse, elbo, sample_elbo_draws, score_entropy_loss
from .modeling_sedd import SEDDModel
from .noise import GeometricNoise, LogLinearNoise, get_noise
from .sampling import generate, predictor_kappa, transition_probabilities, uniform_denoise_probabilities


__all__ = [
    "ElboDraws",
    "GeometricNoise",
    "LogLinearNoise",
    "SEDDConfig",
    "SEDDModel",
    "dwdse",
    "elbo",
    "generate",
    "get_noise",
    "predictor_kappa",
    "sample_elbo_draws",
    "score_entropy_loss",
    "transition_probabilities",
    "uniform_denoise_probabilities",
]
