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
"""The SEDD family as a [`DiffusionLMAdapter`], over the existing code in `trl_ext.models.sedd`: its sampler, its DWDSE
bound, and, for the absorbing graph, the conditionals of the clean tokens read off the score parameterisation."""

from typing import Literal

import torch

from ..sedd import ElboDraws, SEDDModel, elbo, generate, get_noise, sample_elbo_draws
from ..sedd.sampling import masked_row_log_scores, predictor_kappa, transition_probabilities
from .base import DiffusionLMAdapter, DiffusionLMSample, Trajectory


SEDD_USAGE = """from trl_ext import SEDDModel

model = SEDDModel.from_pretrained("{model_name}")"""


class SEDDAdapter(DiffusionLMAdapter):
    """SEDD (score-entropy discrete diffusion).

    Args:
        config ([`~trl_ext.SEDDConfig`]): The model's config (graph, noise schedule, vocabulary).
        steps (`int`): Sampler steps (then a denoising step), as [`~trl_ext.models.sedd.generate`].
        predictor (`Literal["analytic", "euler"]`): The sampler's predictor.
    """

    eps = 1e-5  # the sampler's last time (then the denoising step at σ̄(eps)), as generate's default
    card_description = (
        "SEDD discrete diffusion language model ([Score Entropy Discrete Diffusion]"
        "(https://huggingface.co/papers/2310.16834))"
    )
    card_usage = SEDD_USAGE
    card_tags = ("sedd", "discrete-diffusion")

    def __init__(self, config, steps: int = 128, predictor: Literal["analytic", "euler"] = "analytic"):
        self.config, self.steps, self.predictor = config, steps, predictor
        self.noise = get_noise(config)
        self.mask_token_id = config.mask_index if config.graph_type == "absorb" else -1
        if config.graph_type != "absorb":  # every position moves at every step: no trajectory, no conditionals
            self.estimators = ("elbo",)

    @torch.no_grad()
    def sample(
        self,
        model: SEDDModel,
        prompt_ids: torch.Tensor,
        completion_length: int,
        generator: torch.Generator | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> DiffusionLMSample:
        """SEDD's sampler with the prompt positions fixed (inpainting). For the absorbing graph the [`Trajectory`] holds
        the step at which each position was unmasked (`steps` for the final denoising step) and the probability of its
        token in that step's transition (the step's probability of moving there, over the row's total, stay included);
        the uniform graph moves every position at every step and records none (`None`)."""
        batch, prompt_length = prompt_ids.shape
        ids = torch.cat([prompt_ids, prompt_ids.new_zeros(batch, completion_length)], dim=1)
        fixed = torch.zeros_like(ids, dtype=torch.bool)
        fixed[:, :prompt_length] = True
        sequences = generate(
            model,
            self.noise,
            batch,
            ids.size(1),
            steps=self.steps,
            predictor=self.predictor,
            prompt_ids=ids,
            prompt_mask=fixed,
            generator=generator,
            show_progress=False,
            return_trajectory=True,
        )
        sequences, steps, probabilities = sequences
        return DiffusionLMSample(sequences, None if steps is None else Trajectory(steps, probabilities))

    def step_log_probs(self, model: SEDDModel, sequences: torch.Tensor, trajectory: Trajectory, step: int):
        r"""log of the probability, in the transition of sampler step s (`step`), of each token unmasked at that step
        (B, L), 0 elsewhere, recomputed with `model` on the sequence as it was before the step (positions unmasked at s
        or later masked again). For s < `steps` the analytic / Euler step from t_s to t_{s+1} (t = linspace(1, ε,
        `steps` + 1)): P(move to y) = κ_s·s_θ(x_s, σ̄(t_s))_y, renormalised as the sampler does when the moves exceed 1
        ([`~trl_ext.models.sedd.transition_probabilities`]); for s = `steps` the denoising step,
        softmax(log s_θ(x_s, σ̄(ε))). It leaves out the probabilities of staying masked (which positions move), as
        TraceRL leaves out the selection."""
        before = torch.where(trajectory.step >= step, torch.full_like(sequences, self.mask_token_id), sequences)
        batch, device = sequences.size(0), sequences.device
        times = torch.linspace(1.0, self.eps, self.steps + 1)
        if step < self.steps:
            sigma = self.noise.total_noise(times[step]).expand(batch).to(device)
            kappa = predictor_kappa(self.noise, times[step], times[step + 1], self.predictor).to(device)
        else:
            sigma = self.noise.total_noise(torch.tensor(self.eps)).expand(batch).to(device)
        log_probs = torch.zeros(sequences.shape, device=device)
        for rows, cols, log_scores in masked_row_log_scores(model, before, sigma):
            log_scores = log_scores.float()
            if step < self.steps:
                probs = transition_probabilities(log_scores, kappa).clamp(min=0)
                probs = probs / probs.sum(-1, keepdim=True)
                log_prob = probs.gather(-1, sequences[rows, cols].unsqueeze(-1))[:, 0].log()
            else:
                log_prob = torch.log_softmax(log_scores, -1).gather(-1, sequences[rows, cols].unsqueeze(-1))[:, 0]
            log_probs = log_probs.index_put((rows, cols), log_prob)
        return torch.where(trajectory.step == step, log_probs, torch.zeros_like(log_probs))

    def token_log_probs(self, model: SEDDModel, noisy: torch.Tensor, clean: torch.Tensor, t: torch.Tensor):
        """For the absorbing graph, the score at a masked position i is s_θ(x_t)_{i,y} = e^{−σ̄}/(1 − e^{−σ̄}) ·
        p_θ(x0^i = y | x_t), so p_θ(x0^i = · | x_t) is the softmax of the log-scores over the tokens (the mask column
        dropped); σ̄ = σ̄(t). Zero at unmasked positions. The uniform graph has no such reading (`NotImplementedError`)."""
        if self.config.graph_type != "absorb":
            raise NotImplementedError("Token conditionals are defined for the absorbing graph only.")
        sigma = self.noise.total_noise(t.float())
        log_probs = torch.zeros(noisy.shape, device=noisy.device)
        for rows, cols, log_scores in masked_row_log_scores(model, noisy, sigma):
            log_prob = torch.log_softmax(log_scores.float(), dim=-1)
            log_probs = log_probs.index_put((rows, cols), log_prob.gather(-1, clean[rows, cols].unsqueeze(-1))[:, 0])
        return log_probs

    def elbo(
        self, model: SEDDModel, sequences: torch.Tensor, completion_mask: torch.Tensor, draws: ElboDraws
    ) -> torch.Tensor:
        """SEDD's DWDSE bound on log p_θ(y | prompt) (the negative of [`~trl_ext.models.sedd.elbo`]) on `draws`, the
        prompt fixed; (1, B): the DWDSE code averages the K draws itself."""
        return -elbo(model, sequences, self.noise, prompt_mask=~completion_mask, draws=draws).unsqueeze(0)

    def sample_draws(
        self,
        batch_size: int,
        length: int,
        num_samples: int,
        pairing: str = "antithetic",
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> ElboDraws:
        """SEDD's draws ([`~trl_ext.models.sedd.sample_elbo_draws`]), with the uniform graph's replacement tokens."""
        uniform_vocab = None if self.config.graph_type == "absorb" else self.config.vocab_size
        return sample_elbo_draws(
            batch_size, length, num_samples, pairing, generator=generator, device=device, vocab_size=uniform_vocab
        )
