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
r"""The prompt editor of Flow-RTPO: a Gaussian policy over edits of a prompt's sentence embedding.

For a prompt p with GTR-T5 embedding e = GTR(p) ∈ ℝ^D and its direction ê = e/‖e‖:

    μ̃ = s · MLP(ê)                                                  (s = `perturbation_scale`)
    μ = μ̃ · min(1, ε_t/‖μ̃‖) · (0.1 + 0.9·exp(−‖μ̃‖/ε_t))            (proximity projection)
    ε_t = ε_min + γ · σ_R² / (σ_R² + c)                               (adaptive radius; σ_R² the mean within-group
                                                                       reward variance, smoothed by `update_radius`)
    δ ~ N(μ, diag(σ²)),   log π(δ | ê) = Σ_d log N(δ_d; μ_d, σ_d)      (σ = exp(learned log σ))
    e' = ‖e‖ · normalize(ê + δ),   p' = decode(e')                    (vec2text's GTR inverter in Flow-RTPO)

The edit acts on the unit sphere (so the radius ε is scale-free) and e' keeps the norm of e, which keeps it in the
distribution of embeddings the decoder was trained to invert (vec2text inverts unnormalised mean-pooled GTR states).
    penalty = α · max(0, τ − sim(p, p'))                              (SBERT cosine; subtracted from the reward)

The policy is trained by policy gradient on log π(δ | e) with the same group advantages as the image generator. The
public Flow-RTPO code instead uses −½‖μ‖² of a deterministic μ computed under `no_grad` as the "log-prob", which has no
gradient path to the editor, so its editor never learns; here `log_prob` is the real Gaussian density, differentiable
in the editor's parameters.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PromptEdits:
    """A batch of sampled edits: original and edited prompts, e, δ, log π(δ | e) and the semantic penalty."""

    original: list[str]
    edited: list[str]
    embeddings: torch.Tensor  # the directions ê, (N, D)
    deltas: torch.Tensor
    log_probs: torch.Tensor
    semantic_penalty: torch.Tensor


class PromptEditorPolicy(nn.Module):
    """Gaussian edit policy on sentence embeddings (formulas in the module docstring).

    Args:
        encode (`Callable[[list[str]], torch.Tensor]`): Prompts → (N, D) embeddings, e.g.
            [`~trl_ext.models.vec2text_inversion.Vec2TextInverter.encode`].
        decode (`Callable[[torch.Tensor], list[str]]`): Edited embeddings → texts, e.g.
            [`~trl_ext.models.vec2text_inversion.Vec2TextInverter.decode`].
        embedding_dim (`int`): D (768 for GTR-T5-base).
        similarity (`Callable[[list[str], list[str]], torch.Tensor]`, *optional*): SBERT cosine of original and edited
            prompts, for the semantic penalty (e.g. `SemanticSimilarityReward(...).similarity`); no penalty without it.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], torch.Tensor],
        decode: Callable[[torch.Tensor], list[str]],
        embedding_dim: int,
        similarity: Callable[[list[str], list[str]], torch.Tensor] | None = None,
        hidden_dim: int = 512,
        perturbation_scale: float = 0.01,
        init_log_std: float = -4.0,
        epsilon_min: float = 0.04,
        gamma: float = 0.1,
        radius_constant: float = 0.01,
        radius_smoothing: float = 0.9,
        alpha: float = 1.0,
        tau: float = 0.8,
    ):
        super().__init__()
        self.encode, self.decode, self.similarity = encode, decode, similarity
        self.mean_head = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embedding_dim)
        )
        self.log_std = nn.Parameter(torch.full((embedding_dim,), init_log_std))
        self.perturbation_scale = perturbation_scale
        self.epsilon_min, self.gamma, self.radius_constant, self.radius_smoothing = (
            epsilon_min,
            gamma,
            radius_constant,
            radius_smoothing,
        )
        self.alpha, self.tau = alpha, tau
        self.register_buffer("reward_variance", torch.tensor(0.0))

    @property
    def radius(self) -> float:
        """ε_t = ε_min + γ·σ_R²/(σ_R² + c)."""
        variance = float(self.reward_variance)
        return self.epsilon_min + self.gamma * variance / (variance + self.radius_constant)

    def update_radius(self, group_reward_variance: float) -> float:
        """Smooth the mean within-group reward variance σ_R² (exponential moving average) and return the new ε_t."""
        self.reward_variance.mul_(self.radius_smoothing).add_((1 - self.radius_smoothing) * group_reward_variance)
        return self.radius

    def distribution(self, embeddings: torch.Tensor) -> torch.distributions.Normal:
        """N(μ(e), diag(σ²)) with the proximity projection applied to μ."""
        raw = self.perturbation_scale * self.mean_head(embeddings)
        norm = raw.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        radius = self.radius
        mean = raw * torch.clamp(radius / norm, max=1.0) * (0.1 + 0.9 * torch.exp(-norm / radius))
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def log_prob(self, embeddings: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """log π(δ | e) summed over dimensions (N,), differentiable in the editor's parameters."""
        return self.distribution(embeddings).log_prob(deltas).sum(-1)

    def forward(self, embeddings: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """log π(δ | e), as [`log_prob`]; training calls the module so that wrappers (DDP) see the forward."""
        return self.log_prob(embeddings, deltas)

    def sample(self, prompts: list[str]) -> PromptEdits:
        """Sample one edit per prompt (repeat a prompt for several edits)."""
        with torch.no_grad():
            raw = self.encode(list(prompts)).float().to(self.log_std.device)
        norms = raw.norm(dim=-1, keepdim=True)
        embeddings = raw / norms.clamp(min=1e-12)
        distribution = self.distribution(embeddings)
        deltas = distribution.sample()
        edited = self.decode(norms * nn.functional.normalize(embeddings + deltas, dim=-1))
        if self.similarity is not None:
            penalty = self.alpha * (self.tau - self.similarity(list(prompts), edited).to(deltas.device)).clamp(min=0)
        else:
            penalty = torch.zeros(len(prompts), device=deltas.device)
        return PromptEdits(list(prompts), edited, embeddings, deltas, distribution.log_prob(deltas).sum(-1), penalty)
