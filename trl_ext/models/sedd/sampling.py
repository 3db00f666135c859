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
r"""Samplers of SEDD: Euler and analytic (Tweedie τ-leaping) predictors, each followed by a final denoising step.

Absorbing graph. From time t to t − Δt, a masked position with scores s_y = exp(log-score) and S = Σ_{y ≠ MASK} s_y
moves to token y with probability κ·s_y and stays masked with probability 1 − κ·S, where

- Euler (reference `EulerPredictor`): κ = Δt·σ̄'(t);
- analytic (reference `AnalyticPredictor`): κ = e^{Δσ̄} − 1 with Δσ̄ = σ̄(t) − σ̄(t − Δt). The reference computes
  `staggered_score(s, Δσ̄) * transp_transition(MASK, Δσ̄)` on the full (V + 1)-vector whose mask entry is s_MASK = 1
  (the log-score at the current token is 0): move to y: e^{Δσ̄}·s_y·(1 − e^{−Δσ̄}) = (e^{Δσ̄} − 1)·s_y; stay:
  (e^{Δσ̄} + (1 − e^{Δσ̄})·(S + 1))·1 = 1 − (e^{Δσ̄} − 1)·S. With the true score s_y = p_0(y)/(e^{σ̄(t)} − 1) the
  unmasking probability (e^{Δσ̄} − 1)/(e^{σ̄(t)} − 1) is the exact forward-process posterior
  P(unmasked at t − Δt | masked at t), so the chain's masked fraction tracks 1 − e^{−σ̄(t)}.

Unmasked positions never change. This is sampled as "unmask with probability min(1, κS), then y ~ s/S" (when κS > 1
the moves are renormalised, as the reference's categorical sampler does with a negative stay entry), which needs the
output layer at masked rows only. The last step is the reference's denoiser: every still-masked position draws
y ~ softmax(log-score over tokens), so no mask token survives (the seed's sampler left ~0.8 % of positions masked).

Uniform graph (V tokens, no mask): every free position moves, from uniform noise at t = 1,

- Euler: to y ≠ x with probability Δt·σ̄'(t)·s_y/V;
- analytic (reference `AnalyticPredictor` with `Uniform.staggered_score` and `transp_transition`): with the
  Tweedie law of [`uniform_denoise_probabilities`] at Δσ̄ for the scores taken at σ̄(t); with the true score it is
  the exact posterior P(x_{t−Δt} = y | x_t = x) of each position, so the chain's marginals are the forward
  process's p_{σ̄}(y) = e^{−σ̄}·p_0(y) + (1 − e^{−σ̄})/V;

then the reference's denoiser at σ̄(eps). Prompt positions are fixed throughout (inpainting).
"""

from typing import Literal

import torch
from tqdm.auto import tqdm

from .noise import GeometricNoise, LogLinearNoise


def masked_row_log_scores(model, x: torch.Tensor, sigma: torch.Tensor, chunk_size: int = 128):
    """Yield (rows, cols, log-scores (n, V − 1)) for chunks of the masked positions of `x` (mask column dropped)."""
    mask_index = model.config.mask_index
    hidden, c = model.trunk(x, sigma)
    rows, cols = (x == mask_index).nonzero(as_tuple=True)
    for start in range(0, rows.numel(), chunk_size):
        r, k = rows[start : start + chunk_size], cols[start : start + chunk_size]
        yield r, k, model.head(hidden[r, k], c[r], x[r, k], sigma[r])[:, :mask_index]


def predictor_kappa(
    noise: LogLinearNoise | GeometricNoise,
    t: torch.Tensor,
    t_next: torch.Tensor,
    predictor: Literal["analytic", "euler"],
) -> torch.Tensor:
    """κ of one absorbing-graph step from `t` to `t_next` < `t`: a masked row moves to y with probability κ·s_y.

    Euler: κ = (t − t_next)·σ̄'(t). Analytic: κ = e^{Δσ̄} − 1, Δσ̄ = σ̄(t) − σ̄(t_next).
    """
    if predictor == "euler":
        return (t - t_next) * noise.rate_noise(t)
    return torch.expm1(noise.total_noise(t) - noise.total_noise(t_next))


def transition_probabilities(log_scores: torch.Tensor, kappa: torch.Tensor | float) -> torch.Tensor:
    """(N, V) probabilities of moving to each token, then (last column) of staying masked, for masked rows:
    move to y: κ·s_y, stay: 1 − κ·Σ_y s_y (moves renormalised to sum to 1 when κ·Σ_y s_y > 1)."""
    kappa = torch.as_tensor(kappa, dtype=log_scores.dtype, device=log_scores.device)
    move = (kappa[:, None] if kappa.dim() == 1 else kappa) * log_scores.exp()
    total = move.sum(-1, keepdim=True)
    scale = torch.where(total > 1, 1.0 / total, torch.ones_like(total))
    move = move * scale
    return torch.cat([move, 1 - move.sum(-1, keepdim=True)], dim=-1)


def uniform_denoise_probabilities(
    log_scores: torch.Tensor, current: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    r"""Uniform-graph Tweedie step (reference `Denoiser` and `AnalyticPredictor` with `Uniform.staggered_score` and
    `transp_transition`): (N, V) probabilities of the token σ of noise earlier, given the current tokens `current`
    (N,): the clean token for the denoiser (σ = σ̄(eps)), the next state for the analytic predictor (σ = Δσ̄).

    With scores s_y (s_x = 1 at the current token x) and Σ = Σ_y s_y,

        p(y) = s̃_y·T_σ(x, y),   s̃_y = e^{σ}·s_y − (e^{σ} − 1)·Σ/V   (= Σ_z [e^{−σQ}]_{yz}·s_z),
        T_σ(x, y) = (1 − e^{−σ})/V + e^{−σ}·1[y = x],

    which sums to 1 and, with the true score, is the Bayes posterior p_0(y)·T_σ(y, x)/p_σ(x). Entries can be negative
    for an imperfect score; the sampler draws proportionally to the positive part, as the reference's
    `sample_categorical` (argmax of p/Exp(1)) does. Computed in at least fp32.
    """
    log_scores = log_scores.float() if log_scores.dtype in (torch.float16, torch.bfloat16) else log_scores
    vocab = log_scores.size(-1)
    sigma = sigma.to(log_scores)[:, None]
    scores = log_scores.exp()
    staggered = scores + torch.expm1(sigma) * (scores - scores.sum(-1, keepdim=True) / vocab)
    probabilities = staggered * (-torch.expm1(-sigma) / vocab)
    at_current = staggered.gather(-1, current[:, None]) * torch.exp(-sigma)
    return probabilities.scatter_add(-1, current[:, None], at_current)


@torch.no_grad()
def generate(
    model,
    noise: LogLinearNoise | GeometricNoise,
    batch_size: int,
    length: int,
    steps: int = 128,
    predictor: Literal["analytic", "euler"] = "analytic",
    prompt_ids: torch.Tensor | None = None,
    prompt_mask: torch.Tensor | None = None,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    show_progress: bool = True,
    chunk_size: int = 128,
    return_trajectory: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Sample `batch_size` sequences of `length` tokens.

    Args:
        model ([`SEDDModel`]): A SEDD (in eval mode for sampling).
        noise: Its noise schedule.
        steps (`int`): Predictor steps from t = 1 to t = eps, followed by the denoising step at σ̄(eps) (with
            `steps=0`, the denoiser alone, from the t = 1 limit).
        predictor (`str`): `"analytic"` (Tweedie τ-leaping, the reference's default) or `"euler"`.
        prompt_ids (`torch.Tensor` (B, L), *optional*): Tokens to keep fixed where `prompt_mask` is True (a prefix,
            infill positions, ...).
        prompt_mask (`torch.Tensor` (B, L) bool, *optional*): Which positions of `prompt_ids` are fixed.
        chunk_size (`int`): Rows per call of the output layer (peak memory ~ a few (chunk_size, V) tensors).
        return_trajectory (`bool`): Also return, for the absorbing graph, the step at which each position was unmasked
            (B, L) (0 … `steps` − 1, `steps` for the denoising step, −1 for fixed positions) and the probability its
            token had in the distribution drawn from at that step (B, L) (1 at fixed positions); unmasked positions
            never change. The uniform graph moves every position at every step: `None` for both.

    Returns:
        `torch.Tensor` (B, L) of token ids, with no mask token; with `return_trajectory`, a tuple (tokens, steps,
        probabilities).
    """
    if predictor not in ("analytic", "euler"):
        raise ValueError(f"predictor must be 'analytic' or 'euler', got {predictor!r}")
    if (prompt_ids is None) != (prompt_mask is None):
        raise ValueError("prompt_ids and prompt_mask go together.")
    if prompt_ids is not None and (
        prompt_ids.shape != (batch_size, length) or prompt_mask.shape != (batch_size, length)
    ):
        raise ValueError(f"prompt_ids and prompt_mask must have shape {(batch_size, length)}.")
    device, mask_index = model.device, model.config.mask_index
    fixed = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    if model.config.graph_type == "uniform":  # the t = 1 limit: uniform noise
        x = torch.randint(model.config.vocab_size, (batch_size, length), generator=generator).to(device)
    else:  # all masked
        x = torch.full((batch_size, length), mask_index, dtype=torch.long, device=device)
    if prompt_ids is not None:
        fixed = prompt_mask.bool().to(device)
        x = torch.where(fixed, prompt_ids.to(device), x)
    if model.config.graph_type == "uniform":
        x = _generate_uniform(model, noise, x, fixed, steps, predictor, eps, generator, show_progress, chunk_size)
        return (x, None, None) if return_trajectory else x
    step_of = torch.full_like(x, -1)
    token_probs = torch.ones(x.shape, device=device)

    def draw(rows, cols, probabilities, step, stay_index=None):
        tokens = _categorical(probabilities, generator, stay_index)
        if return_trajectory:
            moved = tokens != mask_index
            clamped = probabilities.float().clamp(min=0)
            chosen = clamped.gather(-1, tokens.clamp(max=clamped.size(-1) - 1).unsqueeze(-1)).squeeze(-1)
            step_of[rows[moved], cols[moved]] = step
            token_probs[rows[moved], cols[moved]] = (chosen / clamped.sum(-1))[moved]
        return rows, cols, tokens

    times = torch.linspace(1.0, eps, steps + 1)
    for i in tqdm(range(steps), desc="SEDD sampling", disable=not show_progress):
        t, t_next = times[i], times[i + 1]
        if not (x == mask_index).any():
            break
        sigma = noise.total_noise(t).expand(batch_size).to(device)
        kappa = predictor_kappa(noise, t, t_next, predictor).to(device)
        updates = [
            draw(rows, cols, transition_probabilities(log_scores, kappa), i, mask_index)
            for rows, cols, log_scores in masked_row_log_scores(model, x, sigma, chunk_size)
        ]
        for rows, cols, tokens in updates:
            x[rows, cols] = tokens
    final_sigma = noise.total_noise(torch.tensor(eps)).expand(batch_size).to(device)
    updates = [
        draw(rows, cols, torch.softmax(log_scores, dim=-1), steps)
        for rows, cols, log_scores in masked_row_log_scores(model, x, final_sigma, chunk_size)
    ]
    for rows, cols, tokens in updates:
        x[rows, cols] = tokens
    return (x, step_of, token_probs) if return_trajectory else x


def _categorical(
    probabilities: torch.Tensor, generator: torch.Generator | None, stay_index: int | None = None
) -> torch.Tensor:
    """Sample one index per row; with `stay_index`, the last column means "stay masked" and maps to it.

    With the generator on the rows' device, `torch.multinomial` draws there. Otherwise (the trainers seed a CPU
    generator; the model runs on a GPU) one uniform per row comes from the generator and the rows are sampled by
    inverting their CDF on their own device: copying (rows, V) probabilities to the CPU at every sampling step made a
    SEDD-small rollout on a GPU slower than on the CPU.
    """
    probabilities = probabilities.float().clamp(min=0)
    generator_device = generator.device if generator is not None else probabilities.device
    if generator_device == probabilities.device:
        samples = torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
    else:
        uniforms = torch.rand(probabilities.size(0), generator=generator).to(probabilities.device)
        samples = inverse_cdf_sample(probabilities, uniforms)
    if stay_index is not None:
        samples = torch.where(samples == probabilities.size(-1) - 1, torch.full_like(samples, stay_index), samples)
    return samples


def inverse_cdf_sample(probabilities: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index i of each row with F(i-1) <= u·F(V-1) < F(i), F the row's cumulative sum of `probabilities` (rows, V)
    (unnormalised, non-negative) and u the row's entry of `uniforms` (rows,) in [0, 1): a sample of the row's
    categorical distribution. Columns of probability 0 are never chosen."""
    cdf = probabilities.cumsum(-1)
    targets = uniforms.to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
    return torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp(max=probabilities.size(-1) - 1)


def _uniform_row_log_scores(
    model, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, sigma: torch.Tensor, chunk_size: int
):
    """Yield (rows, cols, log-scores (n, V)) for chunks of the positions (`rows`, `cols`) of `x`."""
    hidden, c = model.trunk(x, sigma)
    for start in range(0, rows.numel(), chunk_size):
        r, k = rows[start : start + chunk_size], cols[start : start + chunk_size]
        yield r, k, model.head(hidden[r, k], c[r], x[r, k], sigma[r])


def _uniform_euler_probabilities(log_scores: torch.Tensor, current: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """Euler step of the uniform graph: move to y ≠ x with probability κ·s_y (renormalised when the moves exceed 1)."""
    move = (kappa * log_scores.exp()).scatter(-1, current[:, None], 0.0)
    total = move.sum(-1, keepdim=True)
    move = move * torch.where(total > 1, 1.0 / total, torch.ones_like(total))
    stay = (1 - move.sum(-1)).clamp(min=0)
    return move.scatter(-1, current[:, None], stay[:, None])


def _generate_uniform(model, noise, x, fixed, steps, predictor, eps, generator, show_progress, chunk_size):
    """Sampling for the uniform graph from `x` (uniform noise, `fixed` positions kept): `steps` Euler or analytic steps
    on every free position (see the module docstring), then the denoiser at σ̄(eps) ([`uniform_denoise_probabilities`]).
    Every position can move, so the output layer runs on all free positions."""
    device, vocab, batch_size = model.device, model.config.vocab_size, x.size(0)
    rows, cols = (~fixed).nonzero(as_tuple=True)
    times = torch.linspace(1.0, eps, steps + 1)
    for i in tqdm(range(steps), desc="SEDD sampling", disable=not show_progress):
        t, t_next = times[i], times[i + 1]
        sigma = noise.total_noise(t).expand(batch_size).to(device)
        delta = (noise.total_noise(t) - noise.total_noise(t_next)).expand(batch_size).to(device)
        kappa = ((t - t_next) * noise.rate_noise(t) / vocab).to(device)
        new = x.clone()
        for r, k, log_scores in _uniform_row_log_scores(model, x, rows, cols, sigma, chunk_size):
            if predictor == "analytic":
                probabilities = uniform_denoise_probabilities(log_scores, x[r, k], delta[r])
            else:
                probabilities = _uniform_euler_probabilities(log_scores, x[r, k], kappa)
            new[r, k] = _categorical(probabilities, generator)
        x = new
    final_sigma = noise.total_noise(torch.tensor(eps)).expand(batch_size).to(device)
    new = x.clone()
    for r, k, log_scores in _uniform_row_log_scores(model, x, rows, cols, final_sigma, chunk_size):
        new[r, k] = _categorical(uniform_denoise_probabilities(log_scores, x[r, k], final_sigma[r]), generator)
    return new
