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
"""The DiffusionGemma family (transformers' `DiffusionGemmaForBlockDiffusion`) as a [`DiffusionLMAdapter`]: our sampler
over its forward, recording the trajectory it took ([`CanvasTrajectory`]), and that trajectory's log-probability for the
`"trace"` estimator.

DiffusionGemma is not a masked diffusion model. Each block ("canvas") of the completion starts as uniform random
tokens; at each denoising step the decoder reads the canvas (with the prompt and the previous blocks through the
encoder's cache) and the previous step's temperature-scaled logits (self-conditioning), a token is drawn at every
position, the positions of lowest entropy are accepted (an entropy bound), and every other position is re-drawn
uniformly. Accepted tokens are not committed: the next step decides again. There is no mask token and the network
takes no time, so the masked-diffusion ELBO and d1's mean-field estimate do not apply."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ...hub import resolve_pretrained
from ..sedd.sampling import inverse_cdf_sample
from .base import DiffusionLMAdapter, DiffusionLMSample
from .masked import load_masked_diffusion_lm


NO_ELBO = (
    "DiffusionGemma has no 'elbo' here: its noise is uniform (a random canvas, re-drawn where not accepted), its "
    "network takes no time or noise level, and transformers ships neither its forward process nor its schedule, so a "
    "uniform-noise bound (SEDD's uniform graph, UDLM) cannot be written for it without the training recipe. Use "
    "estimator='trace' (the sampled trajectory's log-probability)."
)
NO_CONDITIONALS = (
    "DiffusionGemma has no mask token, so there are no conditionals p(x0 | masked x) for 'mean_field'; use "
    "estimator='trace'."
)


def is_diffusion_gemma(model) -> bool:
    """Whether `model` (possibly under peft) is a `DiffusionGemmaForBlockDiffusion`."""
    return getattr(getattr(model, "config", None), "model_type", None) == "diffusion_gemma"


def load_diffusion_lm(name_or_path: str, trust_remote_code: bool = False, **kwargs) -> PreTrainedModel:
    """Load a diffusion LM of any family but SEDD: a DiffusionGemma checkpoint (`model_type` `"diffusion_gemma"`)
    through `DiffusionGemmaForBlockDiffusion`, any other through
    [`~trl_ext.models.diffusion_lm.load_masked_diffusion_lm`]. `kwargs` go to `from_pretrained`."""
    from transformers import AutoConfig

    path = resolve_pretrained(name_or_path).path
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if config.model_type == "diffusion_gemma":
        from transformers import DiffusionGemmaForBlockDiffusion

        return DiffusionGemmaForBlockDiffusion.from_pretrained(path, **kwargs)
    return load_masked_diffusion_lm(path, trust_remote_code=trust_remote_code, **kwargs)


@dataclass
class CanvasTrajectory:
    """The path DiffusionGemma's sampler took, per denoising step g (G = blocks × steps per block, block-major).

    Args:
        canvases (`torch.Tensor` (B, G, C) long): The canvas the decoder read at step g.
        tokens (`torch.Tensor` (B, G, C) long): The tokens drawn at step g from the tempered distribution.
        accepted (`torch.Tensor` (B, G, C) bool): The positions accepted at step g (their drawn token enters the next
            canvas; the others are re-drawn uniformly, a θ-free draw).
        token_probs (`torch.Tensor` (B, G, C) float): The probability of each drawn token in the distribution it was
            drawn from (softmax of the logits over the step's temperature).
        self_conditioning (`torch.Tensor` (B, G, C, V)): The self-conditioning logits the decoder read at step g (the
            previous step's tempered logits, in the embeddings' dtype, as `generate` passes them); zeros at the first
            step of a block, where the decoder reads none.
        prompt_mask (`torch.Tensor` (B, P) bool): The prompt's real tokens (False on left padding).
        steps_per_block (`int`): Denoising steps per block.
    """

    canvases: torch.Tensor
    tokens: torch.Tensor
    accepted: torch.Tensor
    token_probs: torch.Tensor
    self_conditioning: torch.Tensor
    prompt_mask: torch.Tensor
    steps_per_block: int

    def select(self, index: torch.Tensor) -> "CanvasTrajectory":
        """The trajectories of a subset of the sequences (for minibatches)."""
        tensors = (self.canvases, self.tokens, self.accepted, self.token_probs, self.self_conditioning)
        return CanvasTrajectory(*(t[index] for t in tensors), self.prompt_mask[index], self.steps_per_block)

    @property
    def num_steps(self) -> int:
        """G, the recorded steps."""
        return self.canvases.size(1)

    def recorded_steps(self) -> list[int]:
        """Every recorded step, in order."""
        return list(range(self.num_steps))

    def recorded_log_probs(self, steps: list[int] | None = None) -> torch.Tensor:
        """Σ over `steps` (all by default) of the log of the recorded probabilities of the accepted tokens (B,): the
        sampler's own trace log-probability."""
        steps = self.recorded_steps() if steps is None else steps
        log_probs = torch.where(self.accepted, self.token_probs.log(), torch.zeros_like(self.token_probs))
        return log_probs[:, steps].sum((1, 2))


def entropy_bound_acceptance(logits: torch.Tensor, entropy_bound: float) -> torch.Tensor:
    r"""The positions DiffusionGemma's entropy-bound sampler accepts (B, C) from the step's tempered `logits`: with the
    token entropies H sorted ascending, the longest prefix with Σ_{j≤k} H_j − H_k ≤ `entropy_bound` (at least one
    position), as transformers' `EntropyBoundSampler.accept_canvas`."""
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    sorted_entropy, order = torch.sort(entropy, dim=-1, descending=False)
    selected = sorted_entropy.cumsum(-1) - sorted_entropy <= entropy_bound
    return torch.scatter(torch.zeros_like(selected), -1, order, selected)


class DiffusionGemmaAdapter(DiffusionLMAdapter):
    """The DiffusionGemma family (`DiffusionGemmaForBlockDiffusion`).

    Args:
        canvas_length (`int`): Positions per block (the model's `config.canvas_length`).
        vocab_size (`int`): The vocabulary the canvas is drawn from (`config.text_config.vocab_size`).
        steps (`int`): Denoising steps per block (`generate`'s `max_denoising_steps`; no early stopping here).
        t_min, t_max (`float`): The linear temperature schedule: at the step with r of `steps` steps remaining the
            logits are divided by t_min + (t_max − t_min)·r/`steps` (`generate`'s defaults: 0.4, 0.8).
        entropy_bound (`float`): The acceptance bound ([`entropy_bound_acceptance`]; `generate`'s default 0.1).
        output (`Literal["sample", "argmax"]`): `"sample"`: the last step of a block accepts every position, so a
            block is a draw of the trajectory and the next block reads it; `"argmax"`: `generate`'s rule, a block is
            the last step's argmax (no trajectory: nothing to train with `"trace"`).
    """

    mask_token_id = -1  # no mask token: the canvas is noised uniformly
    estimators = ("trace",)
    card_description = "DiffusionGemma block diffusion language model"
    card_usage = """from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

model = DiffusionGemmaForBlockDiffusion.from_pretrained("{model_name}")
tokenizer = AutoTokenizer.from_pretrained("{model_name}")"""
    card_tags = ("diffusion-gemma",)

    def __init__(
        self,
        canvas_length: int,
        vocab_size: int,
        steps: int = 48,
        t_min: float = 0.4,
        t_max: float = 0.8,
        entropy_bound: float = 0.1,
        output: str = "sample",
    ):
        if output not in ("sample", "argmax"):
            raise ValueError(f"output must be 'sample' or 'argmax', got {output!r}.")
        if not 0 < t_min <= t_max:
            raise ValueError(f"The temperatures must satisfy 0 < t_min <= t_max, got {t_min}, {t_max}.")
        self.canvas_length, self.vocab_size, self.steps = canvas_length, vocab_size, steps
        self.t_min, self.t_max, self.entropy_bound, self.output = t_min, t_max, entropy_bound, output

    @classmethod
    def from_model(cls, model, **kwargs) -> "DiffusionGemmaAdapter":
        """The adapter of `model`'s canvas length and vocabulary; `kwargs` set the sampler."""
        config = model.config
        return cls(config.canvas_length, config.text_config.vocab_size, **kwargs)

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Freeze the vision tower and its projection: text RL never runs them (and DDP refuses parameters that get no
        gradient)."""
        encoder = model.model.encoder
        for name in ("vision_tower", "embed_vision"):
            if getattr(encoder, name, None) is not None:
                getattr(encoder, name).requires_grad_(False)

    def temperature(self, step: int) -> float:
        """The temperature of global step `step` (`generate`'s linear schedule over the remaining steps)."""
        remaining = self.steps - step % self.steps
        return self.t_min + (self.t_max - self.t_min) * remaining / self.steps

    @staticmethod
    def _masks(prompt_mask: torch.Tensor, prefix_length: int, canvas_length: int):
        """The encoder's and the decoder's 2D attention masks (None without padding, as `generate` needs none)."""
        if prompt_mask.all():
            return None, None
        ones = prompt_mask.new_ones(prompt_mask.size(0), prefix_length - prompt_mask.size(1))
        encoder_mask = torch.cat([prompt_mask, ones], dim=1)
        return encoder_mask, torch.nn.functional.pad(encoder_mask, (0, canvas_length), value=True)

    def _draw_uniform(self, shape, generator, device) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randint(0, self.vocab_size, shape, generator=generator, device=gen_device).to(device)

    @staticmethod
    def _draw(probs: torch.Tensor, generator) -> torch.Tensor:
        flat = probs.reshape(-1, probs.size(-1))
        gen_device = generator.device if generator is not None else flat.device
        if gen_device == flat.device:
            drawn = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
        else:
            drawn = inverse_cdf_sample(flat, torch.rand(flat.size(0), generator=generator).to(flat.device))
        return drawn.view(probs.shape[:-1])

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        completion_length: int,
        generator: torch.Generator | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> DiffusionLMSample:
        """DiffusionGemma's denoising loop, block by block: the prompt and the previous blocks through the encoder (one
        cache per block), then `steps` decoder steps on a canvas that starts uniform: tokens drawn from
        softmax(logits / T_step) at every position (`torch.multinomial` with `generator`), the entropy-bound
        positions accepted, the others re-drawn uniformly, the step's tempered logits fed to the next step
        (self-conditioning). The random draws come in `generate`'s order (canvas, then per step the tokens and the
        re-noising), so with `output="argmax"` and `generator` in the state of the global generator the result is
        `generate`'s (without its early stop on stable and confident canvases).

        Returns the sequences (B, P + `completion_length`) and, with `output="sample"`, the [`CanvasTrajectory`].
        """
        batch, prompt_length = prompt_ids.shape
        length, device = self.canvas_length, prompt_ids.device
        if completion_length % length:
            raise ValueError(f"completion_length {completion_length} is not a multiple of canvas_length {length}.")
        if prompt_mask is None:
            prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool)
        from transformers import DynamicCache

        records = {key: [] for key in ("canvases", "tokens", "accepted", "token_probs", "self_conditioning")}
        sequences = prompt_ids
        embed_dtype = model.get_input_embeddings().weight.dtype
        for _ in range(completion_length // length):
            encoder_mask, decoder_mask = self._masks(prompt_mask, sequences.size(1), length)
            cache = DynamicCache(config=model.config.get_text_config(decoder=True))
            model.model.encoder(input_ids=sequences, attention_mask=encoder_mask, cache=cache)
            canvas = self._draw_uniform((batch, length), generator, device)
            self_conditioning = None
            for step in range(self.steps):
                logits = model(
                    cache=cache,
                    decoder_input_ids=canvas,
                    self_conditioning_logits=self_conditioning,
                    decoder_attention_mask=decoder_mask,
                ).logits
                tempered = logits / self.temperature(step)
                probs = torch.softmax(tempered, dim=-1, dtype=torch.float32)
                drawn = self._draw(probs, generator)
                argmax = tempered.argmax(-1)
                accepted = entropy_bound_acceptance(tempered, self.entropy_bound)
                if step == self.steps - 1 and self.output == "sample":
                    accepted = torch.ones_like(accepted)
                records["canvases"].append(canvas)
                records["tokens"].append(drawn)
                records["accepted"].append(accepted)
                records["token_probs"].append(probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1))
                records["self_conditioning"].append(
                    torch.zeros_like(tempered, dtype=embed_dtype) if self_conditioning is None else self_conditioning
                )
                renoised = self._draw_uniform((batch, length), generator, device)
                canvas = torch.where(accepted, drawn, renoised)
                self_conditioning = tempered.to(embed_dtype)
            block = canvas if self.output == "sample" else argmax
            sequences = torch.cat([sequences, block], dim=1)
        if self.output == "argmax":
            return DiffusionLMSample(sequences, None)
        trajectory = CanvasTrajectory(
            **{key: torch.stack(values, dim=1) for key, values in records.items()},
            prompt_mask=prompt_mask,
            steps_per_block=self.steps,
        )
        return DiffusionLMSample(sequences, trajectory)

    def step_logits(
        self, model: torch.nn.Module, sequences: torch.Tensor, trajectory: CanvasTrajectory, step: int
    ) -> torch.Tensor:
        """The tempered logits (B, C, V) of `step`, recomputed with `model` in one forward (encoder on the prompt and
        the previous blocks, decoder on the recorded canvas with the recorded self-conditioning logits)."""
        block, within = divmod(step, trajectory.steps_per_block)
        prefix = sequences[:, : trajectory.prompt_mask.size(1) + block * self.canvas_length]
        encoder_mask, decoder_mask = self._masks(trajectory.prompt_mask, prefix.size(1), self.canvas_length)
        logits = model(
            input_ids=prefix,
            attention_mask=encoder_mask,
            decoder_input_ids=trajectory.canvases[:, step],
            self_conditioning_logits=None if within == 0 else trajectory.self_conditioning[:, step],
            decoder_attention_mask=decoder_mask,
        ).logits
        return logits.float() / self.temperature(step)

    def step_log_probs(
        self, model: torch.nn.Module, sequences: torch.Tensor, trajectory: CanvasTrajectory, step: int
    ) -> torch.Tensor:
        r"""log softmax(logits_θ(canvas_g, self-conditioning_g, prefix) / T_g)[i, token_g^i] at the positions accepted at
        step g (B, C); 0 elsewhere. The re-drawn positions (uniform, probability 1/V whatever θ) and the choice of the
        accepted set (a function of the entropies) are left out, as TraceRL leaves out the selection; the
        self-conditioning input is the recorded one (the rollout policy's logits of the previous step), part of the
        state like the canvas, so no gradient flows through it."""
        log_probs = torch.log_softmax(self.step_logits(model, sequences, trajectory, step), dim=-1)
        tokens = trajectory.tokens[:, step]
        log_probs = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return torch.where(trajectory.accepted[:, step], log_probs, torch.zeros_like(log_probs))

    def token_log_probs(self, model, noisy, clean, t):
        raise NotImplementedError(NO_CONDITIONALS)

    def elbo(self, model, sequences, completion_mask, draws):
        raise NotImplementedError(NO_ELBO)
