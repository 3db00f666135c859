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
The terms of the editor's reward (the semantic penalty α · max(0, τ − sim(p, p'))) and its update, including the
smoothing of σ_R², live with the trainer: `trl_ext.trainers.flow.editor`.

The policy is trained by policy gradient on log π(δ | e) with the same group advantages as the image generator. The
public Flow-RTPO code instead uses −½‖μ‖² of a deterministic μ computed under `no_grad` as the "log-prob", which has no
gradient path to the editor, so its editor never learns; here `log_prob` is the real Gaussian density, differentiable
in the editor's parameters.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class PromptEditorConfig:
    """Hyperparameters of the prompt editor (formulas in the module docstring); Flow-RTPO's values by default."""

    hidden_dim: int = field(default=512, metadata={"help": "Width of the MLP that gives the edit's mean."})
    perturbation_scale: float = field(default=0.01, metadata={"help": "s: scale of the raw mean s · MLP(ê)."})
    init_log_std: float = field(default=-4.0, metadata={"help": "Initial log σ of the Gaussian (learned)."})
    epsilon_min: float = field(default=0.04, metadata={"help": "ε_min: the smallest proximity radius."})
    gamma: float = field(default=0.1, metadata={"help": "γ: how much the reward variance widens the radius."})
    radius_constant: float = field(default=0.01, metadata={"help": "c in ε_t = ε_min + γ·σ_R²/(σ_R² + c)."})
    radius_smoothing: float = field(
        default=0.9, metadata={"help": "Exponential smoothing of the within-group reward variance σ_R²."}
    )
    semantic_alpha: float = field(default=1.0, metadata={"help": "α: weight of the semantic penalty."})
    semantic_tau: float = field(default=0.8, metadata={"help": "τ: similarity below which an edit is penalised."})

    def __post_init__(self):
        if self.hidden_dim < 1 or self.perturbation_scale <= 0 or self.epsilon_min <= 0 or self.radius_constant <= 0:
            raise ValueError("hidden_dim, perturbation_scale, epsilon_min and radius_constant must be positive.")
        if not 0.0 <= self.radius_smoothing < 1.0:
            raise ValueError(f"radius_smoothing must be in [0, 1), got {self.radius_smoothing}.")


@dataclass
class PromptEdits:
    """A batch of sampled edits: original and edited prompts, the directions ê (N, D), δ (N, D) and log π(δ | e)."""

    original: list[str]
    edited: list[str]
    embeddings: torch.Tensor
    deltas: torch.Tensor
    log_probs: torch.Tensor


class PromptEditorPolicy(nn.Module):
    """Gaussian edit policy on sentence embeddings (formulas in the module docstring).

    Args:
        encode (`Callable[[list[str]], torch.Tensor]`): Prompts → (N, D) embeddings, e.g.
            [`~trl_ext.models.vec2text_inversion.Vec2TextInverter.encode`].
        decode (`Callable[[torch.Tensor], list[str]]`): Edited embeddings → texts, e.g.
            [`~trl_ext.models.vec2text_inversion.Vec2TextInverter.decode`].
        embedding_dim (`int`): D (768 for GTR-T5-base).
        config ([`PromptEditorConfig`], *optional*): Hyperparameters; Flow-RTPO's by default.
        similarity (`Callable[[list[str], list[str]], torch.Tensor]`, *optional*): SBERT cosine of original and edited
            prompts, for the semantic penalty of the editor's reward (e.g. `SemanticSimilarityReward(...).similarity`);
            no penalty without it.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], torch.Tensor],
        decode: Callable[[torch.Tensor], list[str]],
        embedding_dim: int,
        config: PromptEditorConfig | None = None,
        similarity: Callable[[list[str], list[str]], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.encode, self.decode, self.similarity = encode, decode, similarity
        self.config = config = config or PromptEditorConfig()
        self.mean_head = nn.Sequential(
            nn.Linear(embedding_dim, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, embedding_dim)
        )
        self.log_std = nn.Parameter(torch.full((embedding_dim,), config.init_log_std))
        # σ_R², smoothed by the editor update (trl_ext.trainers.flow.editor); a buffer, so it is saved
        self.register_buffer("reward_variance", torch.tensor(0.0))

    @property
    def radius(self) -> float:
        """ε_t = ε_min + γ·σ_R²/(σ_R² + c)."""
        variance, config = float(self.reward_variance), self.config
        return config.epsilon_min + config.gamma * variance / (variance + config.radius_constant)

    def distribution(self, embeddings: torch.Tensor) -> torch.distributions.Normal:
        """N(μ(e), diag(σ²)) with the proximity projection applied to μ."""
        raw = self.config.perturbation_scale * self.mean_head(embeddings)
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
        return PromptEdits(list(prompts), edited, embeddings, deltas, distribution.log_prob(deltas).sum(-1))
