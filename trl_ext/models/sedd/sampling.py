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
r"""Samplers of the absorbing SEDD: Euler and analytic (Tweedie τ-leaping) predictors with a final denoising step.

From time t to t − Δt, a masked position with scores s_y = exp(log-score) and S = Σ_{y ≠ MASK} s_y moves to token y
with probability κ·s_y and stays masked with probability 1 − κ·S (clamped at 0), where

- Euler (reference `EulerPredictor`): κ = Δt·σ̄'(t);
- analytic (reference `AnalyticPredictor`, normalised): κ = 1 − e^{−(σ̄(t) − σ̄(t − Δt))};

unmasked positions never change. This is sampled as "unmask with probability min(1, κS), then y ~ s/S", which needs
the output layer at masked rows only. The last step is the reference's denoiser: every still-masked position draws
y ~ softmax(log-score over tokens), so no mask token survives (the seed's sampler left ~0.8 % of positions masked).
Prompt positions are fixed throughout (inpainting).
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


def transition_probabilities(log_scores: torch.Tensor, kappa: torch.Tensor | float) -> torch.Tensor:
    """(N, V) probabilities of moving to each token, then (last column) of staying masked, for masked rows."""
    kappa = torch.as_tensor(kappa, dtype=log_scores.dtype, device=log_scores.device)
    move = (kappa[:, None] if kappa.dim() == 1 else kappa) * log_scores.exp()
    total = move.sum(-1, keepdim=True)
    scale = torch.where(total > 1, 1.0 / total, torch.ones_like(total))
    move = move * scale
    return torch.cat([move, 1 - move.sum(-1, keepdim=True)], dim=-1)


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
) -> torch.Tensor:
    """Sample `batch_size` sequences of `length` tokens.

    Args:
        model ([`SEDDModel`]): An absorbing-graph SEDD (in eval mode for sampling).
        noise: Its noise schedule.
        steps (`int`): Predictor steps from t = 1 to t = eps, followed by the denoising step.
        predictor (`str`): `"analytic"` (Tweedie τ-leaping, the reference's default) or `"euler"`.
        prompt_ids (`torch.Tensor` (B, L), *optional*): Tokens to keep fixed where `prompt_mask` is True (a prefix,
            infill positions, ...).
        prompt_mask (`torch.Tensor` (B, L) bool, *optional*): Which positions of `prompt_ids` are fixed.

    Returns:
        `torch.Tensor` (B, L) of token ids, with no mask token.
    """
    if predictor not in ("analytic", "euler"):
        raise ValueError(f"predictor must be 'analytic' or 'euler', got {predictor!r}")
    if model.config.graph_type == "uniform":
        if predictor != "euler":
            raise NotImplementedError("For the uniform graph generate() implements the Euler predictor only.")
        return _generate_uniform(model, noise, batch_size, length, steps, prompt_ids, prompt_mask, eps, generator, show_progress)
    if (prompt_ids is None) != (prompt_mask is None):
        raise ValueError("prompt_ids and prompt_mask go together.")
    device, mask_index = model.device, model.config.mask_index
    x = torch.full((batch_size, length), mask_index, dtype=torch.long, device=device)
    if prompt_ids is not None:
        if prompt_ids.shape != (batch_size, length) or prompt_mask.shape != (batch_size, length):
            raise ValueError(f"prompt_ids and prompt_mask must have shape {(batch_size, length)}.")
        x = torch.where(prompt_mask.bool().to(device), prompt_ids.to(device), x)
    times = torch.linspace(1.0, eps, steps + 1)
    for i in tqdm(range(steps), desc="SEDD sampling", disable=not show_progress):
        t, t_next = times[i], times[i + 1]
        sigma = noise.total_noise(t)
        if predictor == "euler":
            kappa = (t - t_next) * noise.rate_noise(t)
        else:
            kappa = -torch.expm1(-(sigma - noise.total_noise(t_next)))
        if not (x == mask_index).any():
            break
        updates = [
            (rows, cols, _categorical(transition_probabilities(log_scores, kappa.to(device)), generator, mask_index))
            for rows, cols, log_scores in masked_row_log_scores(model, x, sigma.expand(batch_size).to(device))
        ]
        for rows, cols, tokens in updates:
            x[rows, cols] = tokens
    final_sigma = noise.total_noise(torch.tensor(eps)).expand(batch_size).to(device)
    updates = [
        (rows, cols, _categorical(torch.softmax(log_scores, dim=-1), generator))
        for rows, cols, log_scores in masked_row_log_scores(model, x, final_sigma)
    ]
    for rows, cols, tokens in updates:
        x[rows, cols] = tokens
    return x


def _categorical(probabilities: torch.Tensor, generator: torch.Generator | None, stay_index: int | None = None) -> torch.Tensor:
    """Sample one index per row; with `stay_index`, the last column means "stay masked" and maps to it."""
    samples = torch.multinomial(probabilities.float().clamp(min=0).cpu(), 1, generator=generator).squeeze(-1).to(probabilities.device)
    if stay_index is not None:
        samples = torch.where(samples == probabilities.size(-1) - 1, torch.full_like(samples, stay_index), samples)
    return samples


def _generate_uniform(model, noise, batch_size, length, steps, prompt_ids, prompt_mask, eps, generator, show_progress):
    """Euler sampling for the uniform graph: from uniform noise, each free position moves to y ≠ x with probability
    κ·s_y/V (κ = Δt·σ̄'(t)) and stays otherwise. Every position can move, so the output layer runs on all of them."""
    device, vocab = model.device, model.config.vocab_size
    x = torch.randint(vocab, (batch_size, length), generator=generator).to(device)
    fixed = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    if prompt_ids is not None:
        fixed = prompt_mask.bool().to(device)
        x = torch.where(fixed, prompt_ids.to(device), x)
    rows, cols = (~fixed).nonzero(as_tuple=True)
    times = torch.linspace(1.0, eps, steps + 1)
    for i in tqdm(range(steps), desc="SEDD sampling", disable=not show_progress):
        t, t_next = times[i], times[i + 1]
        sigma = noise.total_noise(t).expand(batch_size).to(device)
        kappa = ((t - t_next) * noise.rate_noise(t) / vocab).to(device)
        hidden, c = model.trunk(x, sigma)
        new = x.clone()
        for start in range(0, rows.numel(), 128):
            r, k = rows[start : start + 128], cols[start : start + 128]
            log_scores = model.head(hidden[r, k], c[r], x[r, k], sigma[r])
            move = (kappa * log_scores.exp()).scatter(-1, x[r, k][:, None], 0.0)
            total = move.sum(-1, keepdim=True)
            move = move * torch.where(total > 1, 1.0 / total, torch.ones_like(total))
            stay = (1 - move.sum(-1)).clamp(min=0)
            probabilities = move.scatter(-1, x[r, k][:, None], stay[:, None])
            new[r, k] = _categorical(probabilities, generator)
        x = new
    return x
