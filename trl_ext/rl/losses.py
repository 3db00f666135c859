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


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss, elementwise (TRL's PPOTrainer, OpenRLHF's `ValueLoss`).

    loss = ½·max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²); with `clip_range=None` it is ½·(V − R)².

    Args:
        values (`torch.Tensor`):
            V, the current value predictions, any shape.
        old_values (`torch.Tensor`):
            V_old, the predictions made at rollout time.
        returns (`torch.Tensor`):
            R, the value targets.
        clip_range (`float`, *optional*):
            ε_v.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the elementwise loss, and a boolean tensor marking where the clipped
        term was the larger one.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped
