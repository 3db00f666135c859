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
"""The masked-diffusion-LM family (LLaDA / MDLM convention): a bidirectional network maps token ids, some of them the
mask token, to logits over the vocabulary; any `AutoModelForMaskedLM`, and LLaDA / Dream checkpoints through their
remote code only when the user sets `trust_remote_code=True`. Its sampler is LLaDA's: the completion starts fully
masked and is unmasked block by block, each step committing the masked positions of the current block where the model
is most confident (low-confidence remasking)."""

import logging
from typing import Literal

import torch
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedModel

from ...hub import resolve_pretrained
from ..sedd.sampling import inverse_cdf_sample
from .base import DiffusionLMAdapter, DiffusionLMSample, Trajectory


logger = logging.getLogger(__name__)


def load_masked_diffusion_lm(name_or_path: str, trust_remote_code: bool = False, **kwargs) -> PreTrainedModel:
    """Load a masked diffusion LM: a directory, a `trl_ext.hub` key or a Hub id, through `AutoModelForMaskedLM`; with
    `trust_remote_code=True` (LLaDA, Dream: their code registers `AutoModel`), `AutoModel` when the masked-LM class does
    not know the config. `kwargs` go to `from_pretrained` (`dtype`, ...)."""
    path = resolve_pretrained(name_or_path).path
    try:
        return AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError:
        if not trust_remote_code:
            raise
        logger.info("%s has no AutoModelForMaskedLM class; loading it through AutoModel (remote code).", path)
        return AutoModel.from_pretrained(path, trust_remote_code=True, **kwargs)


def num_transfer_tokens(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many positions each of `steps` steps commits (B, steps), for `num_masked` (B,) masked positions: ⌊n/steps⌋
    each, the remainder one more on the first steps (LLaDA's `get_num_transfer_tokens`)."""
    base = num_masked.div(steps, rounding_mode="floor").unsqueeze(1)
    remainder = (num_masked % steps).unsqueeze(1)
    return base + (torch.arange(steps, device=num_masked.device).unsqueeze(0) < remainder).long()


MASKED_USAGE = """from transformers import AutoModelForMaskedLM, AutoTokenizer

model = AutoModelForMaskedLM.from_pretrained("{model_name}")
tokenizer = AutoTokenizer.from_pretrained("{model_name}")"""


class MaskedDiffusionLMAdapter(DiffusionLMAdapter):
    """The masked-diffusion-LM family.

    Args:
        mask_token_id (`int`): The mask token (the tokenizer's `mask_token_id`; LLaDA's is 126336).
        steps (`int`): Sampler steps over the whole completion (split equally between the blocks).
        block_length (`int`, *optional*): Positions per block, unmasked left to right; the whole completion when
            unset.
        temperature (`float`): Tokens are drawn from softmax(logits / temperature); 0 takes the argmax.
        remasking (`Literal["low_confidence", "random"]`): Which masked positions of the block a step commits: those
            with the highest model probability (at temperature 1) of their drawn token, or random ones (LLaDA's two).
        pad_token_id (`int`, *optional*): The token that left-pads prompts. When set, each row's leading run of it is
            padding: the network gets an `attention_mask` without it (and, with `position_ids=True`, positions counted
            from the first real token, so a padded prompt is the unpadded one), and no estimator ever masks it. Unset,
            padding tokens are ordinary tokens the network sees: LLaDA's and d1's convention (their prompts are padded
            with EOS, which LLaDA's SFT data also pads with).
        position_ids (`bool`): Pass `position_ids` too (the network's forward takes them, e.g. BERT's absolute
            positions); needs `pad_token_id`.

    The mask token's own logit is excluded (−∞) from the sampler and from [`token_log_probs`] alike: a committed
    position never holds the mask token, and the likelihood is that of the distribution sampled from. (d1's
    diffu-GRPO takes its log-softmax over the whole vocabulary, the mask token included, so its log-probabilities are
    lower by log(1 − p(mask)) at each position.)
    """

    card_description = "masked diffusion language model"
    card_usage = MASKED_USAGE
    card_tags = ("masked-diffusion",)

    def __init__(
        self,
        mask_token_id: int,
        steps: int = 64,
        block_length: int | None = None,
        temperature: float = 1.0,
        remasking: Literal["low_confidence", "random"] = "low_confidence",
        pad_token_id: int | None = None,
        position_ids: bool = False,
    ):
        if remasking not in ("low_confidence", "random"):
            raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        self.mask_token_id = mask_token_id
        self.steps, self.block_length = steps, block_length
        self.temperature, self.remasking = temperature, remasking
        self.pad_token_id, self.position_ids = pad_token_id, position_ids

    def padding(self, sequences: torch.Tensor) -> torch.Tensor:
        """The left padding (B, L): each row's leading run of `pad_token_id` (none when it is unset)."""
        if self.pad_token_id is None:
            return torch.zeros_like(sequences, dtype=torch.bool)
        return (sequences == self.pad_token_id).long().cumprod(1).bool()

    def logits(self, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """The network's logits (B, L, V) in float32, the mask token's set to −∞."""
        kwargs = {}
        if self.pad_token_id is not None:
            real = ~self.padding(ids)
            kwargs["attention_mask"] = real.long()
            if self.position_ids:
                kwargs["position_ids"] = (real.long().cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, **kwargs).logits.float()
        logits[..., self.mask_token_id] = float("-inf")
        return logits

    def elbo(self, model: torch.nn.Module, sequences: torch.Tensor, completion_mask: torch.Tensor, draws):
        """The masked-diffusion bound ([`~trl_ext.models.diffusion_lm.masked_diffusion_elbo`]), per block of
        `block_length` when the sampler has blocks (the bound of the factorisation the block sampler draws from)."""
        from .estimators import masked_diffusion_elbo

        return masked_diffusion_elbo(self, model, sequences, completion_mask, draws, self.block_length)

    def token_log_probs(
        self, model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """log softmax(logits(`noisy`))[i, `clean`^i] (B, L); the network takes no time, `t` is unused."""
        log_probs = torch.log_softmax(self.logits(model, noisy), dim=-1)
        return log_probs.gather(-1, clean.unsqueeze(-1)).squeeze(-1)

    def step_log_probs(
        self, model: torch.nn.Module, sequences: torch.Tensor, trajectory: Trajectory, step: int
    ) -> torch.Tensor:
        """log softmax(logits(x_s) / temperature)[i, y_i] at the positions committed at `step`, where x_s is the
        sequence before the step (positions committed at `step` or later masked); 0 elsewhere."""
        if self.temperature == 0:
            raise ValueError("A trajectory sampled at temperature 0 (argmax) has no log-probability to train.")
        before = torch.where(trajectory.step >= step, torch.full_like(sequences, self.mask_token_id), sequences)
        before = torch.where(trajectory.step < 0, sequences, before)  # the prompt stays
        log_probs = torch.log_softmax(self.logits(model, before) / self.temperature, dim=-1)
        log_probs = log_probs.gather(-1, sequences.unsqueeze(-1)).squeeze(-1)
        return torch.where(trajectory.step == step, log_probs, torch.zeros_like(log_probs))

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        completion_length: int,
        generator: torch.Generator | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> DiffusionLMSample:
        """LLaDA's sampler: the completion starts as `completion_length` mask tokens; block b (left to right) gets
        `steps / num_blocks` steps; each step runs the network on the whole sequence, draws a token x̂^i ~
        softmax(logits^i / temperature) at every masked position of the block (one uniform per position from
        `generator`, by inverting the CDF), and commits the k of them with the highest confidence p_θ(x̂^i) at
        temperature 1 (or random scores), k from [`num_transfer_tokens`]. Committed tokens are never revised.

        Returns the sequences and the [`Trajectory`]: each position's step and the probability its token had in the
        distribution drawn from.
        """
        batch, prompt_length = prompt_ids.shape
        block_length = self.block_length or completion_length
        if completion_length % block_length:
            raise ValueError(
                f"completion_length {completion_length} is not a multiple of block_length {block_length}."
            )
        num_blocks = completion_length // block_length
        if self.steps % num_blocks:
            raise ValueError(f"steps {self.steps} is not a multiple of the number of blocks {num_blocks}.")
        steps_per_block = self.steps // num_blocks
        device = prompt_ids.device
        masks = torch.full((batch, completion_length), self.mask_token_id, dtype=torch.long, device=device)
        x = torch.cat([prompt_ids, masks], dim=1)
        step_of = torch.full_like(x, -1)
        token_probs = torch.ones(x.shape, dtype=torch.float32, device=device)
        step = 0
        for block in range(num_blocks):
            start = prompt_length + block * block_length
            end = start + block_length
            counts = num_transfer_tokens((x[:, start:end] == self.mask_token_id).sum(1), steps_per_block)
            for block_step in range(steps_per_block):
                logits = self.logits(model, x)[:, start:end]  # (B, b, V)
                masked = x[:, start:end] == self.mask_token_id
                probs = torch.softmax(logits, dim=-1)
                if self.temperature == 0:
                    drawn = logits.argmax(-1)
                    drawn_probs = torch.ones(drawn.shape, device=device)
                else:
                    tempered = torch.softmax(logits / self.temperature, dim=-1)
                    uniforms = torch.rand(batch * block_length, generator=generator).to(device)
                    drawn = inverse_cdf_sample(tempered.reshape(-1, tempered.size(-1)), uniforms).view(batch, -1)
                    drawn_probs = tempered.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
                if self.remasking == "low_confidence":
                    confidence = probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
                else:
                    confidence = torch.rand(batch, block_length, generator=generator).to(device)
                confidence = confidence.masked_fill(~masked, float("-inf"))
                rank = confidence.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
                commit = masked & (rank < counts[:, block_step : block_step + 1])
                x[:, start:end] = torch.where(commit, drawn, x[:, start:end])
                step_of[:, start:end] = torch.where(commit, step, step_of[:, start:end])
                token_probs[:, start:end] = torch.where(commit, drawn_probs, token_probs[:, start:end])
                step += 1
        return DiffusionLMSample(x, Trajectory(step_of, token_probs))
