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


def sampled_token_dependency(
    logp: torch.Tensor, perturbed_logp: torch.Tensor, max_value: float = 10.0
) -> torch.Tensor:
    """VPPO's one-sample estimate of KL(π(·|I) ‖ π(·|I′)) at the generated token (k3 estimator, clamped).

    s = clamp(eˣ − x − 1, 0, max_value), x = clamp(log π(o|I′) − log π(o|I), −20, 20).
    """
    x = (perturbed_logp.float() - logp.float()).clamp(-20, 20)
    return (torch.expm1(x) - x).clamp(0, max_value)


def group_keep_mask(
    rewards: torch.Tensor, group_size: int, low: float, high: float, inclusive: bool = False
) -> torch.Tensor:
    """Online difficulty filtering (DAPO dynamic sampling, EasyR1 `online_filtering`): keep prompt groups whose mean
    reward lies strictly inside (low, high) (or in [low, high] with `inclusive`).

    Args:
        rewards (`torch.Tensor` of shape `(N,)`):
            One reward per completion, groups contiguous (`N = num_groups · group_size`); NaN values are ignored.
        group_size (`int`):
            Completions per prompt.

    Returns:
        `torch.Tensor` of shape `(N,)`, boolean: whether each completion's group is kept.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    means = torch.nanmean(rewards.float().view(-1, group_size), dim=1)
    keep = (means >= low) & (means <= high) if inclusive else (means > low) & (means < high)
    return keep.repeat_interleave(group_size)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: each reward minus the mean of the other rewards of its group, R_i − (Σ_g R − R_i)/(n − 1)."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 completions per prompt")
    grouped = rewards.float().view(-1, group_size)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).view(-1)


def remax_advantages(rewards: torch.Tensor, greedy_rewards: torch.Tensor) -> torch.Tensor:
    """ReMax (Li et al. 2023, arXiv 2310.10505): each sampled completion's reward minus the reward of the greedy
    completion of the same prompt, A_i = R_i − R_greedy(prompt_i); NaN rewards give advantage 0."""
    return torch.nan_to_num(rewards.float() - greedy_rewards.float(), nan=0.0)


def reinforce_plus_plus_advantages(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, eps: float = 1e-8
) -> torch.Tensor:
    """REINFORCE++ (Hu 2025; EasyR1 `reinforce_plus_plus`): discounted return-to-go per token, whitened over all
    valid tokens of the batch.

    G_t = Σ_{t' ≥ t} γ^{t'−t} r_{t'} over valid tokens; A = (G − mean(G)) / (std(G) + eps) on valid tokens.

    Args:
        token_rewards (`torch.Tensor` of shape `(B, T)`):
            Per-token rewards: the outcome reward at the last valid token, minus any per-token KL penalty.
        mask (`torch.Tensor` of shape `(B, T)`):
            1 for valid tokens.

    Returns:
        `torch.Tensor` of shape `(B, T)`, zero on padding.
    """
    mask = mask.float()
    returns = torch.zeros_like(token_rewards, dtype=torch.float32)
    running = torch.zeros(token_rewards.size(0), device=token_rewards.device)
    for t in reversed(range(token_rewards.size(1))):
        running = token_rewards[:, t].float() * mask[:, t] + gamma * running * mask[:, t] + running * (1 - mask[:, t])
        returns[:, t] = running
    valid = mask.bool()
    values = returns[valid]
    mean, std = values.mean(), values.std() if values.numel() > 1 else values.new_ones(())
    return torch.where(valid, (returns - mean) / (std + eps), torch.zeros_like(returns))


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place each sequence's scalar reward on its last valid token, as (B, T) per-token rewards."""
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    positions = torch.arange(mask.size(1), device=mask.device)
    last = (positions * mask.long()).argmax(dim=1)
    has_tokens = mask.sum(dim=1) > 0
    token_rewards[has_tokens, last[has_tokens]] = rewards[has_tokens].float()
    return token_rewards


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
