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
"""The family-adapter interface of discrete diffusion language models: what a trainer needs from a family (its mask
token, its sampler with the trajectory it took, and the conditionals of the clean tokens given a noised sequence in
one forward), and the sampler's output types."""

from dataclasses import dataclass

import torch


@dataclass
class Trajectory:
    """The path a sampler took to a sequence.

    Args:
        step (`torch.Tensor` (B, L) long): The sampler step at which each position was committed (never revised
            afterwards); −1 for the prompt (fixed) positions.
        token_probs (`torch.Tensor` (B, L) float): The probability, in the distribution the sampler drew from (after
            temperature), of the token committed at each position; 1 at the prompt positions.
    """

    step: torch.Tensor
    token_probs: torch.Tensor

    def select(self, index: torch.Tensor) -> "Trajectory":
        """The trajectories of a subset of the sequences (for minibatches)."""
        return Trajectory(self.step[index], self.token_probs[index])

    @property
    def num_steps(self) -> int:
        """The sampler's steps (the last recorded step + 1)."""
        return int(self.step.max()) + 1

    def recorded_steps(self) -> list[int]:
        """The steps that committed at least one position, in order."""
        return sorted(int(s) for s in self.step.unique().tolist() if s >= 0)

    def recorded_log_probs(self, steps: list[int] | None = None) -> torch.Tensor:
        """Σ over `steps` (all by default) of the log of the recorded probabilities of the committed tokens (B,): the
        sampler's own trace log-probability."""
        in_trace = self.step >= 0
        if steps is not None:
            in_trace &= torch.isin(self.step, torch.tensor(steps, device=self.step.device))
        return torch.where(in_trace, self.token_probs.log(), torch.zeros_like(self.token_probs)).sum(1)


@dataclass
class DiffusionLMSample:
    """A sampler's result: `sequences` (B, L) (prompt and completion) and the `trajectory` that produced them (`None`
    for a family whose sampler does not record one)."""

    sequences: torch.Tensor
    trajectory: Trajectory | None = None


class DiffusionLMAdapter:
    """What differs per family of discrete diffusion LMs, behind one interface. A trainer holds one adapter and passes
    the model (policy, old policy or reference) to each call, so that the same adapter serves all of them.

    A subclass sets `mask_token_id` and implements [`sample`] and [`token_log_probs`]; a family with its own bound
    overrides [`elbo`].
    """

    mask_token_id: int
    estimators: tuple[str, ...] = ("elbo", "mean_field", "trace")  # the likelihood estimators the family supports
    # the model card of a trained policy: what the model is, how to load it ("{model_name}": the saved directory's
    # name or Hub id), and the family's tags
    card_description: str
    card_usage: str
    card_tags: tuple[str, ...]

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Set up a loaded policy for training (e.g. freeze parts text RL never runs); nothing by default."""

    def padding(self, sequences: torch.Tensor) -> torch.Tensor:
        """The positions (B, L) that are prompt padding, which no estimator masks; none by default."""
        return torch.zeros_like(sequences, dtype=torch.bool)

    def sample(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        completion_length: int,
        generator: torch.Generator | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> DiffusionLMSample:
        """Complete each row of `prompt_ids` (B, P) with `completion_length` tokens; the result's sequences are
        (B, P + `completion_length`), the prompt unchanged. `prompt_mask` (B, P) is False on left padding (a family
        whose network takes an attention mask uses it)."""
        raise NotImplementedError

    def token_log_probs(
        self, model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """log p_θ(x0^i = `clean`^i | x_t = `noisy`) at every position i (B, L), in one forward; `t` (B,) is the
        diffusion time of each row in [0, 1] (families whose network takes no time ignore it). Only the positions
        where `noisy` holds the mask token are meaningful."""
        raise NotImplementedError

    def step_log_probs(
        self, model: torch.nn.Module, sequences: torch.Tensor, trajectory: Trajectory, step: int
    ) -> torch.Tensor:
        """log of the probability, in the distribution the sampler drew from at `step`, of each token committed at
        `step` (B, L), recomputed with `model` on the sequence as it was before that step (one forward); 0 elsewhere.
        A family whose sampler records no trajectory raises `NotImplementedError`."""
        raise NotImplementedError(f"{type(self).__name__} has no trajectory log-probabilities.")

    def elbo(
        self, model: torch.nn.Module, sequences: torch.Tensor, completion_mask: torch.Tensor, draws
    ) -> torch.Tensor:
        """The family's evidence lower bound on log p_θ(completion | prompt), per draw (K, B): by default the
        masked-diffusion one, [`~trl_ext.models.diffusion_lm.masked_diffusion_elbo`]."""
        from .estimators import masked_diffusion_elbo

        return masked_diffusion_elbo(self, model, sequences, completion_mask, draws)

    def sample_draws(
        self,
        batch_size: int,
        length: int,
        num_samples: int,
        pairing: str = "antithetic",
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ):
        """The K (t, mask) draws of the likelihood estimators ([`~trl_ext.models.diffusion_lm.sample_likelihood_draws`]);
        a family whose noise needs more (SEDD's uniform graph: replacement tokens) overrides it."""
        from .estimators import sample_likelihood_draws

        return sample_likelihood_draws(batch_size, length, num_samples, pairing, generator, device)
