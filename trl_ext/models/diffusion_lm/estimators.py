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
"""Sequence log-likelihood estimators of discrete diffusion LMs, over any family adapter: the masked-diffusion ELBO
(MDLM / LLaDA), d1's one-step mean-field estimate and the sampled trajectory's log-probability (trace). Each returns one estimate per draw (K, B): the estimate is their
mean over the K draws, their spread the estimator's noise. The draws ([`ElboDraws`]: times t (K, B) and uniforms u
(K, B, L)) are drawn once and reused for the old, the new and the reference policy (common random numbers: the
log-ratio is exactly 0 before an update)."""

from typing import Literal

import torch

from ..sedd.likelihood import ElboDraws, sample_elbo_draws
from .base import DiffusionLMAdapter, Trajectory
from .diffusion_gemma import CanvasTrajectory


def sample_likelihood_draws(
    batch_size: int,
    length: int,
    num_samples: int,
    pairing: Literal["antithetic", "iid"] = "antithetic",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    sampling_eps: float = 1e-3,
) -> ElboDraws:
    """K draws (t, u) per sequence, SEDD's ([`~trl_ext.models.sedd.sample_elbo_draws`]): t ~ U(ε, 1) iid, or with
    `"antithetic"` one t per K-quantile and the uniforms of draw 2j+1 equal to 1 − those of draw 2j (a position masked
    in one draw of a pair is unmasked in the other, at matched times)."""
    return sample_elbo_draws(batch_size, length, num_samples, pairing, sampling_eps, generator, device)


def masked_diffusion_elbo(
    adapter: DiffusionLMAdapter,
    model: torch.nn.Module,
    sequences: torch.Tensor,
    completion_mask: torch.Tensor,
    draws: ElboDraws,
    block_length: int | None = None,
) -> torch.Tensor:
    r"""The masked-diffusion (MDLM / LLaDA) evidence lower bound on log p_θ(y | prompt), one estimate per draw.

    With the linear schedule (a completion token is masked with probability t at time t; the prompt stays clean),

        log p_θ(y | c) ≥ E_{t~U(0,1)} E_{y_t} [ (1/t) Σ_{i : y_t^i = M} log p_θ(y^i | y_t, c) ],

    and draw k of (t_k, u_k) gives the estimate (1/t_k) Σ_{i ∈ completion, u_k^i < t_k} log p_θ(y^i | y_{t_k}, c), one
    forward each. Its expectation over draws is the bound (tight when p_θ's conditionals are the data's posteriors).

    With `block_length` (block diffusion, LLaDA's semi-autoregressive sampler), the bound is the sum over the blocks
    y^1, …, y^n of the completion of each block's MDLM bound given the clean previous blocks, the later blocks all
    masked (as the block sampler sees them):

        log p_θ(y | c) = Σ_b log p_θ(y^b | c, y^{<b}) ≥ Σ_b E_t E_{y^b_t} [ (1/t) Σ_{i ∈ b : y_t^i = M}
            log p_θ(y^i | c, y^{<b}, y^b_t, M…M) ],

    one forward per block and draw (the draw's t and uniforms serve every block).

    Args:
        adapter ([`DiffusionLMAdapter`]): The family (mask token, conditionals).
        model: The network (policy, old policy or reference).
        sequences (`torch.Tensor` (B, L)): Prompt and completion.
        completion_mask (`torch.Tensor` (B, L) bool): The completion positions (the only ones ever masked).
        draws ([`ElboDraws`]): K draws: `t` (K, B), `u` (K, B, L).
        block_length (`int`, *optional*): Positions per block (the completion one block when unset).

    Returns:
        `torch.Tensor` (K, B): the per-draw estimates of log p_θ(y | c).
    """
    offset = completion_mask.long().cumsum(1) - 1  # index within the completion
    block = torch.where(completion_mask, offset // (block_length or sequences.size(1)), torch.full_like(offset, -1))
    mask_ids = torch.full_like(sequences, adapter.mask_token_id)
    estimates = []
    for t, u in zip(draws.t, draws.u):
        estimate = torch.zeros(sequences.size(0), device=sequences.device)
        for b in range(int(block.max()) + 1):
            masked = (block == b) & (u < t.unsqueeze(1))
            noisy = torch.where(masked | (block > b), mask_ids, sequences)
            log_probs = adapter.token_log_probs(model, noisy, sequences, t)
            estimate = estimate + (log_probs * masked).sum(1) / t
        estimates.append(estimate)
    return torch.stack(estimates)


def mean_field_log_likelihood(
    adapter: DiffusionLMAdapter,
    model: torch.nn.Module,
    sequences: torch.Tensor,
    completion_mask: torch.Tensor,
    draws: ElboDraws,
    p_mask_prompt: float = 0.3,
) -> torch.Tensor:
    r"""d1's (diffu-GRPO's) one-step mean-field estimate of log p_θ(y | prompt), one estimate per draw.

    Every completion token is masked, each prompt token (never the adapter's padding) is masked with probability
    `p_mask_prompt` (positions with u_k^i < `p_mask_prompt`), and one forward gives

        log p_θ(y | c) ≈ Σ_{i ∈ completion} log p_θ(y^i | c̃_k, M, …, M),

    the completion tokens treated as independent given the (partly masked) prompt c̃_k. Cheap (one forward) and
    biased: it ignores the dependence between completion tokens (exact only for a model whose conditionals factorise).

    Returns:
        `torch.Tensor` (K, B): the per-draw estimates.
    """
    estimates, padding = [], adapter.padding(sequences)
    ones = torch.ones(sequences.size(0), device=sequences.device)
    for u in draws.u:
        masked = completion_mask | (~completion_mask & ~padding & (u < p_mask_prompt))
        noisy = torch.where(masked, torch.full_like(sequences, adapter.mask_token_id), sequences)
        log_probs = adapter.token_log_probs(model, noisy, sequences, ones)
        estimates.append((log_probs * completion_mask).sum(1))
    return torch.stack(estimates)


def trace_log_likelihood(
    adapter: DiffusionLMAdapter,
    model: torch.nn.Module,
    sequences: torch.Tensor,
    trajectory: Trajectory | CanvasTrajectory,
    steps: list[int] | None = None,
) -> torch.Tensor:
    r"""The log-probability of the sampled trajectory under the sampler (TraceRL's; Flow-GRPO's for images), (1, B).

    With D_s the positions committed at sampler step s and x_s the sequence before step s,

        log π_θ(trajectory) = Σ_s Σ_{i ∈ D_s} log p_θ^T(y^i | x_s, c),

    p^T the distribution the sampler drew from (softmax(logits / temperature)); one forward per step in `steps` (all
    recorded steps by default; a subset, kept for the old, new and reference policies alike, is the partial sum over
    those steps, as Flow-GRPO's SDE window). No draw noise. It leaves out the probability of *which* positions each
    step committed (a deterministic function of the logits under low-confidence remasking, as TraceRL does), so it
    is not log p_θ(y | c): exact only for one token per step with the model's exact conditionals (the chain rule in
    the sampled order), mean-field within a step otherwise.
    """
    if steps is None:
        steps = trajectory.recorded_steps()
    total = torch.zeros(sequences.size(0), device=sequences.device)
    for step in steps:
        total = total + adapter.step_log_probs(model, sequences, trajectory, step).sum(1)
    return total.unsqueeze(0)


ESTIMATORS = {"elbo": masked_diffusion_elbo, "mean_field": mean_field_log_likelihood, "trace": trace_log_likelihood}
