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
"""Noise schedules σ̄(t) of SEDD (total noise and its rate), as in the reference `noise_lib.py`.

[`get_noise`] builds the schedule of a model config (`get_noise(model.config)`: `noise_type` with its
`sigma_min`/`sigma_max`), of a Hydra `config.json` dict, or of a bare type name (`get_noise("loglinear")`).
"""

import math
from collections.abc import Mapping
from typing import Any

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
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"GeometricNoise needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}.")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def total_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def rate_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.total_noise(t) * math.log(self.sigma_max / self.sigma_min)

    def __repr__(self) -> str:
        return f"GeometricNoise(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


def get_noise(config: Any, **kwargs) -> LogLinearNoise | GeometricNoise:
    """The noise schedule of a SEDD model.

    Args:
        config: A [`SEDDConfig`] (`model.config`): its `noise_type`, and for `"geometric"` its `sigma_min` and
            `sigma_max`; or a Hydra config dict with a `noise` section (`{"type", "sigma_min", "sigma_max"}`, the
            reference's `noise_lib.get_noise(config)` layout); or a type name `"loglinear"` / `"geometric"`, built
            with `kwargs` (or the defaults σ_min = 1e-4, σ_max = 20).
        kwargs: Constructor arguments that override the config's (e.g. `eps` of the log-linear schedule).

    The log-linear schedule ignores `sigma_min`/`sigma_max`, as the reference does.
    """
    if isinstance(config, str):
        noise_type, values = config, {}
    elif isinstance(config, Mapping):
        section = config.get("noise", config)
        if "type" not in section:
            raise ValueError("get_noise needs a config with noise.type (or a SEDDConfig, or a noise type name).")
        noise_type, values = section["type"], {k: section[k] for k in ("sigma_min", "sigma_max") if k in section}
    elif hasattr(config, "noise_type"):
        noise_type = config.noise_type
        values = {k: getattr(config, k) for k in ("sigma_min", "sigma_max") if hasattr(config, k)}
    else:
        raise TypeError(f"get_noise takes a SEDDConfig, a Hydra config dict or a noise type name, got {type(config)}.")
    if noise_type == "loglinear":
        return LogLinearNoise(**kwargs)
    if noise_type == "geometric":
        return GeometricNoise(**{**values, **kwargs})
    raise ValueError(f"Unknown SEDD noise type {noise_type!r}; choose 'loglinear' or 'geometric'.")
