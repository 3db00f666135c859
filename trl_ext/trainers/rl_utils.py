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
"""RL maths shared by the trainers: advantages, the clipped policy-gradient surrogate and KL estimators.

Every function here works on plain tensors so that it can be unit-tested against a reference formula and reused by
trainers that hold very different models (SEDD, SD3, VLMs).
"""

from typing import Literal

import torch


AdvantageScaling = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3", "abs"]


def compute_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    scale: AdvantageScaling = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Centre rewards per group (GRPO) and optionally divide by a standard deviation.

    With `group_ids`, each reward is centred on the mean of the rewards that share its id (samples of the same
    prompt); without, on the batch mean. The divisor is the group's standard deviation for `scale="group"`, the
    batch's for `scale="batch"`, and 1 for `scale="none"` (Dr. GRPO). Standard deviations are unbiased (`N - 1`),
    as in TRL's `GRPOTrainer`; a group of one sample gets advantage 0.

    A = (r - mean_g(r)) / (std + eps)

    Args:
        rewards (`torch.Tensor` of shape `(N,)`):
            Scalar rewards. NaN marks a sample without reward (a masked reward function); such a sample gets
            advantage 0 and does not count in any statistic.
        group_ids (`torch.Tensor` of shape `(N,)`, *optional*):
            Integer group label per sample; groups need not be contiguous.
        scale (`str`, *optional*, defaults to `"group"`):
            `"group"`, `"batch"` or `"none"`.
        eps (`float`, *optional*, defaults to `1e-4`):
            Added to the standard deviation.

    Returns:
        `torch.Tensor` of shape `(N,)`: the advantages.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    rewards = rewards.float()
    valid = ~torch.isnan(rewards)
    r = torch.where(valid, rewards, torch.zeros_like(rewards))
    if group_ids is None:
        group_ids = torch.zeros_like(rewards, dtype=torch.long)
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids shape {tuple(group_ids.shape)} does not match rewards {tuple(rewards.shape)}")
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups, device=r.device).index_add_(0, inverse, valid.float())
    total = torch.zeros(num_groups, device=r.device).index_add_(0, inverse, r)
    mean = total / count.clamp(min=1)
    centred = torch.where(valid, r - mean[inverse], torch.zeros_like(r))
    if scale == "group":
        sq = torch.zeros(num_groups, device=r.device).index_add_(0, inverse, centred**2)
        std = (sq / (count - 1).clamp(min=1)).sqrt()[inverse]
    elif scale == "batch":
        std = r[valid].std() if int(valid.sum()) > 1 else r.new_zeros(())
        std = std.expand_as(r)
    else:
        return centred
    return centred / (std + eps)


def clipped_surrogate_loss(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float | None = None,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, elementwise, with optional asymmetric (DAPO) and dual clipping.

    loss = -min(ρ·A, clip(ρ, 1 - ε_low, 1 + ε_high)·A), ρ = exp(log_ratio); with `dual_clip` = c > 1 the loss of
    samples with A < 0 is further capped at -c·A (Ye et al. 2020, arXiv 1912.09729).

    Args:
        log_ratio (`torch.Tensor`):
            log π_θ(x) - log π_old(x), any shape.
        advantages (`torch.Tensor`):
            Broadcastable to `log_ratio`.
        epsilon_low (`float`):
            Lower clipping range.
        epsilon_high (`float`, *optional*):
            Upper clipping range; defaults to `epsilon_low`.
        dual_clip (`float`, *optional*):
            Dual-clip constant c (> 1), or `None` for none.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the elementwise loss, and a boolean tensor marking where the clipped
        term was the active one.
    """
    if epsilon_high is None:
        epsilon_high = epsilon_low
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high) * advantages
    loss = -torch.min(unclipped, clipped)
    is_clipped = clipped < unclipped
    if dual_clip is not None:
        cap = -dual_clip * advantages
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        is_clipped = is_clipped | dual
    return loss, is_clipped


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
