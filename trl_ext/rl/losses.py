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
"""Policy-gradient losses: the clipped surrogate of PPO with asymmetric (DAPO) and dual clipping, and the clipped
value loss."""

import torch


def clipped_surrogate_loss(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float | None = None,
    delta: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, elementwise, with optional asymmetric (DAPO) and dual clipping.

    loss = -min(ρ·A, clip(ρ, 1 - ε_low, 1 + ε_high)·A), ρ = exp(log_ratio); with `delta` = δ > 1 the loss of
    samples with A < 0 is further capped at -δ·A (dual clip, Ye et al. 2020, arXiv 1912.09729). The names are TRL's GRPO
    ones (`epsilon_low` / `epsilon_high` as GRPOTrainer has them, `delta` as GRPOConfig): for δ >= 1 + ε_high this is
    the loss of GRPOConfig's `delta` (INTELLECT-2's two-sided clipping).

    Args:
        log_ratio (`torch.Tensor`):
            log π_θ(x) - log π_old(x), any shape.
        advantages (`torch.Tensor`):
            Broadcastable to `log_ratio`.
        epsilon_low (`float`):
            Lower clipping range.
        epsilon_high (`float`, *optional*):
            Upper clipping range; defaults to `epsilon_low`.
        delta (`float`, *optional*):
            Dual-clip constant δ (> 1), or `None` for none.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the elementwise loss, and a boolean tensor marking where the clipped
        term was the active one.
    """
    if epsilon_high is None:
        epsilon_high = epsilon_low
    if delta is not None and delta <= 1.0:
        raise ValueError(f"delta (dual clip) must be > 1, got {delta}")
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high) * advantages
    loss = -torch.min(unclipped, clipped)
    is_clipped = clipped < unclipped
    if delta is not None:
        cap = -delta * advantages
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        is_clipped = is_clipped | dual
    return loss, is_clipped


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, cliprange_value: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss, elementwise (TRL's PPOTrainer, OpenRLHF's `ValueLoss`).

    loss = ½·max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²); with `cliprange_value=None` it is ½·(V − R)².

    Args:
        values (`torch.Tensor`):
            V, the current value predictions, any shape.
        old_values (`torch.Tensor`):
            V_old, the predictions made at rollout time.
        returns (`torch.Tensor`):
            R, the value targets.
        cliprange_value (`float`, *optional*):
            ε_v (the name of TRL's PPOConfig).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the elementwise loss, and a boolean tensor marking where the clipped
        term was the larger one.
    """
    unclipped = (values - returns) ** 2
    if cliprange_value is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped
