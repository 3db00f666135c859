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
"""Noise schedules σ̄(t) of SEDD (total noise and its rate), as in the reference `noise_lib.py`."""

import math

import torch


class LogLinearNoise:
    """σ̄(t) = −log(1 − (1 − ε)·t): with the absorbing graph, a token is masked with probability (1 − ε)·t."""

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def total_noise(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log1p(-(1 - self.eps) * t)

    def rate_noise(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) / (1 - (1 - self.eps) * t)


class GeometricNoise:
    """σ̄(t) = σ_min^{1−t}·σ_max^t, σ̄'(t) = σ̄(t)·log(σ_max/σ_min)."""

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def total_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def rate_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.total_noise(t) * math.log(self.sigma_max / self.sigma_min)


def get_noise(noise_type: str, **kwargs) -> LogLinearNoise | GeometricNoise:
    """The schedule named by a SEDD config's `noise.type`."""
    if noise_type == "loglinear":
        return LogLinearNoise(**kwargs)
    if noise_type == "geometric":
        return GeometricNoise(**kwargs)
    raise ValueError(f"Unknown SEDD noise type {noise_type!r}; choose 'loglinear' or 'geometric'.")
