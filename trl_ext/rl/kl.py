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
"""KL divergence: the k1 / k2 / k3 / abs estimators, and fixed and adaptive KL coefficient controllers."""

from typing import Literal

import torch


KLEstimator = Literal["k1", "k2", "k3", "abs"]


def kl_divergence(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k3") -> torch.Tensor:
    """Per-sample estimate of KL(π ‖ π_ref) from log-probabilities of samples drawn from π.

    With d = log π_ref(x) - log π(x) (Schulman, "Approximating KL divergence", 2020):

    - `"k1"`: -d (unbiased, high variance, can be negative);
    - `"k2"`: ½·d² (EasyR1's `mse`);
    - `"k3"`: exp(d) - d - 1 (unbiased, non-negative; EasyR1's `low_var_kl` and TRL's GRPO penalty);
    - `"abs"`: |d|.

    Log-probabilities are promoted to float32 first, as in EasyR1.

    Args:
        logp (`torch.Tensor`):
            log π(x) of the sampled tokens / sequences.
        ref_logp (`torch.Tensor`):
            log π_ref(x), same shape.
        estimator (`str`, *optional*, defaults to `"k3"`):
            One of `"k1"`, `"k2"`, `"k3"`, `"abs"`.

    Returns:
        `torch.Tensor`: the estimate, same shape as `logp`.
    """
    d = ref_logp.float() - logp.float()
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        return torch.expm1(d) - d
    if estimator == "abs":
        return d.abs()
    raise ValueError(f"Unknown KL estimator {estimator!r}; choose one of 'k1', 'k2', 'k3', 'abs'.")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, coef: float):
        self.coef = coef

    def update(self, current_kl: float, n_steps: int) -> float:
        """Return the (unchanged) coefficient."""
        return self.coef


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593; TRL ≤ 0.11 and EasyR1):

    e = clip(KL / target − 1, −0.2, 0.2);  coef ← coef · (1 + e · n_steps / horizon).

    `target` is in the units of the KL passed to `update`: trl_ext passes the per-token mean KL, for which targets
    around 0.01–0.1 are typical (a target of 6, TRL's old default for a sequence-summed KL, pins e at −0.2).
    """

    def __init__(self, coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target} and {horizon}")
        self.coef = coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update the coefficient from the KL measured on `n_steps` samples and return it."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef
