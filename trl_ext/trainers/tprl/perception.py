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
"""Token Perception maths of TPRL (VPPO): per-response top-k token selection, the sampled-token visual dependency
and Trajectory Advantage Shaping factors."""

from typing import Literal

import torch


def top_k_per_row_mask(scores: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep, in each row, the ⌈n·fraction⌉ valid positions with the highest scores (n = valid positions of the row).

    This is VPPO's / the 80/20 paper's per-response rule. It differs from TRL's `top_entropy_quantile`, which applies
    one quantile threshold to all tokens of the batch (so long or uniformly high-entropy responses keep more tokens).
    Ties are broken by position (earlier first).

    Args:
        scores (`torch.Tensor` of shape `(B, T)`):
            Score per token (entropy, visual dependency).
        mask (`torch.Tensor` of shape `(B, T)`):
            1 for valid tokens, 0 for padding.
        fraction (`float`):
            Fraction k in (0, 1] of each row's valid tokens to keep.

    Returns:
        `torch.Tensor` of shape `(B, T)`, boolean.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    valid = mask.bool()
    masked = scores.float().masked_fill(~valid, float("-inf"))
    k = torch.ceil(valid.sum(dim=1) * fraction).long()
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    keep_sorted = torch.arange(scores.size(1), device=scores.device).expand_as(masked) < k[:, None]
    keep = torch.zeros_like(valid).scatter(1, order, keep_sorted)
    return keep & valid


def sampled_token_dependency(
    logp: torch.Tensor, perturbed_logp: torch.Tensor, max_value: float = 10.0
) -> torch.Tensor:
    """VPPO's one-sample estimate of KL(π(·|I) ‖ π(·|I′)) at the generated token (k3 estimator, clamped).

    s = clamp(eˣ − x − 1, 0, max_value), x = clamp(log π(o|I′) − log π(o|I), −20, 20).
    """
    x = (perturbed_logp.float() - logp.float()).clamp(-20, 20)
    return (torch.expm1(x) - x).clamp(0, max_value)


def trajectory_scaling_factors(
    dependency: torch.Tensor,
    mask: torch.Tensor,
    scaling_min: float,
    rule: Literal["mean_preserving", "bounded"] = "mean_preserving",
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trajectory Advantage Shaping factors α from each response's mean token dependency (VPPO).

    With S_i the mean dependency of response i over its valid tokens and n_i = (S_i − min S)/(max S − min S) its
    min-max normalisation over the batch:

    - `"mean_preserving"` (VPPO's rule): α_i = β_min + n_i·(β_max − β_min) with β_max = β_min + (1 − β_min)/mean(n),
      so that mean(α) = 1; β_max is unbounded when one response dominates.
    - `"bounded"`: α_i = β_min + n_i·(1 − β_min) ∈ [β_min, 1]: responses that depend least on the image are
      down-weighted, none is up-weighted.

    When fewer than two responses have tokens, or all S are equal (within 1e-6), every α is 1.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: S and α, both of shape `(B,)`.
    """
    if not 0.0 <= scaling_min <= 1.0:
        raise ValueError(f"scaling_min must be in [0, 1], got {scaling_min}")
    mask = mask.float()
    counts = mask.sum(dim=1)
    mean_dependency = (dependency.float() * mask).sum(dim=1) / counts.clamp(min=1)
    alpha = torch.ones_like(mean_dependency)
    has_tokens = counts > 0
    if int(has_tokens.sum()) < 2:
        return mean_dependency, alpha
    s = mean_dependency[has_tokens]
    spread = s.max() - s.min()
    if spread <= 1e-6:
        return mean_dependency, alpha
    normalised = ((s - s.min()) / spread).clamp(0, 1)
    if rule == "mean_preserving":
        scaling_max = scaling_min + (1 - scaling_min) / (normalised.mean() + eps)
    elif rule == "bounded":
        scaling_max = torch.tensor(1.0)
    else:
        raise ValueError(f"Unknown trajectory scaling rule {rule!r}; choose 'mean_preserving' or 'bounded'.")
    alpha[has_tokens] = scaling_min + normalised * (scaling_max - scaling_min)
    return mean_dependency, alpha
