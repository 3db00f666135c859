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
"""Advantages from rewards: group / batch normalisation (GRPO), RLOO, ReMax, REINFORCE++, online difficulty
filtering, the placement of an outcome reward on the last token, and masked whitening."""

from typing import Literal

import torch


AdvantageScaling = Literal["group", "batch", "none"]


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


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Whiten `values` with the mean and unbiased variance of its valid entries (TRL's PPO `masked_whiten`).

    x̂ = (x − μ) / sqrt(σ² + eps), with μ and σ² = Σ(x − μ)² / (n − 1) over the n valid entries; with
    `shift_mean=False` the mean is added back, x̂ + μ (TRL's reward whitening). Invalid entries are 0.

    Args:
        values (`torch.Tensor`):
            Any shape.
        mask (`torch.Tensor`):
            Same shape, 1 (or `True`) for valid entries.
        shift_mean (`bool`, *optional*, defaults to `True`):
            Whether the result is centred.
        eps (`float`, *optional*, defaults to `1e-8`):
            Added to the variance.

    Returns:
        `torch.Tensor`: float32, the shape of `values`.
    """
    valid = mask.bool()
    values = values.float()
    count = valid.sum()
    if count == 0:
        return torch.zeros_like(values)
    mean = values[valid].mean()
    variance = ((values[valid] - mean) ** 2).sum() / (count - 1) if count > 1 else values.new_zeros(())
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(valid, whitened, torch.zeros_like(whitened))
