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
"""Generalised advantage estimation (GAE) and the value targets (returns) of token-level PPO."""

import torch


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, arXiv 1506.02438) over the valid tokens of each sequence, and the returns.

    Backwards over the valid positions t of a row (the value after the last valid token is 0):

    δ_t = r_t + γ·V_{t+1} − V_t,   A_t = δ_t + γ·λ·A_{t+1},   R_t = A_t + V_t.

    Invalid positions (padding after the stop token) are skipped: they hold A = R = 0 and neither their reward nor
    their value enters the recursion (the value of a padding token is never bootstrapped from).

    Args:
        rewards (`torch.Tensor` of shape `(B, T)`):
            Per-token rewards (e.g. −β·KL on every token plus the score on the last one).
        values (`torch.Tensor` of shape `(B, T)`):
            V_t, the value of the state before token t is generated.
        mask (`torch.Tensor` of shape `(B, T)`):
            1 (or `True`) for valid tokens.
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount factor γ.
        lam (`float`, *optional*, defaults to `0.95`):
            GAE λ.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the advantages and the returns, `(B, T)` float32, zero where invalid.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards, values and mask must share one (B, T) shape, got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}."
        )
    valid = mask.bool()
    rewards = torch.where(valid, rewards.float(), 0.0)
    values = torch.where(valid, values.float(), 0.0)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.size(0), device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(valid[:, t], advantage, 0.0)
        next_value = torch.where(valid[:, t], values[:, t], next_value)
        next_advantage = torch.where(valid[:, t], advantage, next_advantage)
    return advantages, torch.where(valid, advantages + values, 0.0)
