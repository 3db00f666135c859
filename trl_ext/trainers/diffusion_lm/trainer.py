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
"""[`DiffusionLMGRPOTrainer`]: the group-policy update (GRPO) for discrete diffusion language models, over a family
adapter ([`~trl_ext.models.diffusion_lm.DiffusionLMAdapter`]) with the likelihood estimator as an option."""

import copy
import inspect
from collections.abc import Iterator

import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedModel, TrainerCallback

from ...hub import model_card_name
from ...models.diffusion_lm import (
    DiffusionGemmaAdapter,
    DiffusionLMAdapter,
    MaskedDiffusionLMAdapter,
    is_diffusion_gemma,
    load_diffusion_lm,
    mean_field_log_likelihood,
    trace_log_likelihood,
)
from ...rl.advantages import compute_advantages
from ...rl.kl import kl_divergence
from ...rl.scoring import RewardFunc
from ..group_update import GroupPolicyTrainer, PolicyTerm
from .config import DiffusionLMGRPOConfig


class DiffusionLMGRPOTrainer(GroupPolicyTrainer):
    r"""
    GRPO for discrete diffusion language models: masked diffusion LMs in the LLaDA / MDLM convention, and transformers'
    `DiffusionGemmaForBlockDiffusion` (recognised from its config; `"trace"` only).

    Rollouts come from the family's sampler conditioned on each prompt; the policy's log-likelihood of a completion is
    estimated by `args.estimator` (`"elbo"`: the family's ELBO; `"mean_field"`: d1's one-step estimate) on K draws
    that are drawn once per rollout and reused for the old policy, every epoch and the reference (common random
    numbers), so the ratio is exactly 1 before the first update.

    Args:
        model (`str` or `PreTrainedModel`): The policy: a bidirectional masked LM (any `AutoModelForMaskedLM`; LLaDA /
            Dream with `args.trust_remote_code=True`) or a `DiffusionGemmaForBlockDiffusion`, or a path / `trl_ext.hub`
            key / Hub id of one.
        reward_funcs (callable or list of callables): TRL-convention rewards
            `fn(prompts, completions, **columns) -> list[float | None]` (`None` masks a sample).
        args ([`DiffusionLMGRPOConfig`]): Configuration.
        train_dataset (`datasets.Dataset`): A `prompt` column (text) and any columns the rewards read.
        processing_class (tokenizer, *optional*): Encodes prompts, decodes completions; loaded from `model` when it
            is a path. Its pad token (else EOS) pads prompts on the left.
        ref_model (*optional*): The reference for `beta > 0`; defaults to a frozen copy of the initial policy.
        callbacks (list of `transformers.TrainerCallback`, *optional*): Called at the events of `transformers.Trainer`'s
            loop.
        adapter ([`~trl_ext.models.diffusion_lm.DiffusionLMAdapter`], *optional*): The family; defaults to a
            [`~trl_ext.models.diffusion_lm.MaskedDiffusionLMAdapter`] with the config's sampler settings, or for a
            DiffusionGemma model a [`~trl_ext.models.diffusion_lm.DiffusionGemmaAdapter`] with `sampling_steps /
            num_blocks` steps per block at the constant temperature `temperature` (pass your own adapter for
            `generate`'s 0.8 → 0.4 schedule).
    """

    _name = "DiffusionLM-GRPO"
    _method = "GRPO"  # in the model card
    metric_prefix = "diffusion_lm"

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: DiffusionLMGRPOConfig,
        train_dataset: Dataset,
        processing_class=None,
        ref_model: torch.nn.Module | None = None,
        callbacks: list[TrainerCallback] | None = None,
        adapter: DiffusionLMAdapter | None = None,
    ):
        super().__init__(args, callbacks)
        model, processing_class = self._load_model(model, processing_class)
        if "prompt" not in train_dataset.column_names or len(train_dataset) == 0:
            raise ValueError("train_dataset must have a non-empty 'prompt' column.")
        self._check_model_and_tokenizer(model, processing_class)
        self._set_reward_funcs(reward_funcs, args.reward_weights)
        self.train_dataset = train_dataset
        self.processing_class = processing_class
        self.adapter = adapter if adapter is not None else self._default_adapter(model)
        if args.estimator not in self.adapter.estimators:
            raise ValueError(
                f"estimator={args.estimator!r} is not available for {type(self.adapter).__name__} (it supports "
                f"{', '.join(self.adapter.estimators)})."
            )
        self.adapter.prepare_model(model)
        self._trace_steps: list[int] | None = None  # "trace": this rollout's trained sampler steps (None: all)
        self.base_model_name = model_card_name(getattr(model, "name_or_path", None))
        model, ref_model = self._policy_and_reference(model, ref_model)
        if ref_model is not None:
            ref_model = ref_model.to(self.accelerator.device).eval().requires_grad_(False)
        self.ref_model = ref_model
        model.eval()  # no dropout: the estimates of old and new policy must differ only through the weights
        rollout_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self._setup_data(len(train_dataset), rollout_size // args.num_generations)
        self._set_update_accumulation()
        self._prepare(model, [p for p in model.parameters() if p.requires_grad])

    # What a family's entry point (DiscreteDiffusionPPOTrainer for SEDD) overrides

    def _load_model(self, model, processing_class) -> tuple[torch.nn.Module, object]:
        """The policy and the tokenizer from the arguments (a path loads both)."""
        if isinstance(model, str):
            if processing_class is None:
                processing_class = AutoTokenizer.from_pretrained(model, trust_remote_code=self.args.trust_remote_code)
            model = load_diffusion_lm(model, trust_remote_code=self.args.trust_remote_code)
        if processing_class is None:
            raise ValueError("Pass processing_class (the tokenizer) when model is not a path.")
        return model, processing_class

    def _check_model_and_tokenizer(self, model, processing_class) -> None:
        """Raise a `ValueError` when the tokenizer cannot pad prompts."""
        if self._pad_token_id(processing_class) is None:
            raise ValueError("processing_class needs a pad_token_id or an eos_token_id (it pads the prompts).")

    def _pad_token_id(self, processing_class) -> int | None:
        """The token that left-pads prompts: the tokenizer's pad token, else its EOS."""
        pad = processing_class.pad_token_id
        return pad if pad is not None else processing_class.eos_token_id

    def _default_adapter(self, model) -> DiffusionLMAdapter:
        """The family adapter when none is given: DiffusionGemma's for a DiffusionGemma model, else a masked diffusion
        LM's, with the config's sampler settings."""
        args = self.args
        if is_diffusion_gemma(model):
            canvas_length = model.config.canvas_length
            if (args.block_length or canvas_length) != canvas_length:
                raise ValueError(
                    f"block_length must be the model's canvas_length ({canvas_length}) for DiffusionGemma."
                )
            if args.max_completion_length % canvas_length:
                raise ValueError(
                    f"max_completion_length ({args.max_completion_length}) must be a multiple of DiffusionGemma's "
                    f"canvas_length ({canvas_length})."
                )
            steps = args.sampling_steps // (args.max_completion_length // canvas_length)
            if steps < 1 or args.temperature <= 0:
                raise ValueError("DiffusionGemma needs sampling_steps >= the number of blocks and temperature > 0.")
            return DiffusionGemmaAdapter.from_model(model, steps=steps, t_min=args.temperature, t_max=args.temperature)
        mask_token_id = args.mask_token_id if args.mask_token_id is not None else self.processing_class.mask_token_id
        if mask_token_id is None:
            raise ValueError("The tokenizer has no mask token: set args.mask_token_id.")
        # left padding out of the attention (and positions from the first real token) where the network takes them
        accepts = inspect.signature(model.forward).parameters
        pad = self._pad_token_id(self.processing_class) if "attention_mask" in accepts else None
        return MaskedDiffusionLMAdapter(
            mask_token_id,
            args.sampling_steps,
            args.block_length,
            args.temperature,
            args.remasking,
            pad_token_id=pad,
            position_ids=pad is not None and "position_ids" in accepts,
        )

    def _policy_and_reference(self, model, ref_model) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        """The trained module (with LoRA adapters when `use_peft`) and the reference: `ref_model`, else, when `beta > 0`,
        a frozen copy of the initial policy (none under LoRA: the reference is the policy with its adapters off)."""
        args = self.args
        if args.use_peft:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=args.lora_target_modules)
            )
        elif args.beta > 0 and ref_model is None:
            ref_model = copy.deepcopy(model)
        return model, ref_model

    @property
    def estimator(self) -> str:
        """The likelihood estimator: `args.estimator`."""
        return self.args.estimator

    @property
    def num_likelihood_samples(self) -> int:
        """K, the draws per likelihood estimate: `args.num_likelihood_samples`."""
        return self.args.num_likelihood_samples

    def _likelihood_logs(self, old_per_draw: torch.Tensor) -> dict[str, float]:
        """What the rollout logs of the old policy's estimate (K, B): its mean and its spread across the K draws."""
        logs = {f"{self.metric_prefix}/old_log_likelihood": old_per_draw.mean(0).mean().item()}
        if old_per_draw.size(0) > 1:
            logs[f"{self.metric_prefix}/log_likelihood_draw_std"] = old_per_draw.std(0).mean().item()
        return logs

    def _term_metrics(self, new: torch.Tensor) -> dict[str, float]:
        """What each update logs of the new policy's estimate (B,)."""
        return {f"{self.metric_prefix}/log_likelihood": new.mean().item()}

    def _reference_log_likelihood(self, sequences, completion_mask, draws, trajectory=None) -> torch.Tensor:
        """The reference's estimate (K, B) on the same draws."""
        if self.ref_model is not None:
            return self.log_likelihood(self.ref_model, sequences, completion_mask, draws, trajectory)
        with self.accelerator.unwrap_model(self.model).disable_adapter():  # LoRA: the reference is the base model
            return self.log_likelihood(self.policy, sequences, completion_mask, draws, trajectory)

    # The algorithm

    @property
    def policy(self) -> torch.nn.Module:
        """The unwrapped policy (the base model, adapters included, under LoRA)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if self.args.use_peft else model

    def _encode_prompts(self, prompts: list[str], return_mask: bool = False):
        """Prompt ids (N, `max_prompt_length`): each prompt's last tokens, right-aligned, padding on the left; with
        `return_mask`, also the mask (N, `max_prompt_length`) of the real tokens (False on the padding)."""
        length, pad = self.args.max_prompt_length, self._pad_token_id(self.processing_class)
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            tokens = self.processing_class(prompt, add_special_tokens=False)["input_ids"][-length:]
            ids[row, length - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[row, length - len(tokens) :] = True
        return (ids, mask) if return_mask else ids

    def _decode(self, sequences: torch.Tensor) -> list[str]:
        """Decode the completion positions, stopping at the first EOS."""
        eos, texts = self.processing_class.eos_token_id, []
        for ids in sequences[:, self.args.max_prompt_length :].tolist():
            if eos is not None and eos in ids:
                ids = ids[: ids.index(eos)]
            texts.append(self.processing_class.decode(ids, skip_special_tokens=True))
        return texts

    def log_likelihood(self, model, sequences, completion_mask, draws, trajectory=None) -> torch.Tensor:
        """The estimate of [`estimator`] of log p(completion | prompt) per draw (K, B) (`"trace"`: (1, B), over this
        rollout's trained steps)."""
        if self.estimator == "elbo":
            return self.adapter.elbo(model, sequences, completion_mask, draws)
        if self.estimator == "trace":
            return trace_log_likelihood(self.adapter, model, sequences, trajectory, self._trace_steps)
        return mean_field_log_likelihood(
            self.adapter, model, sequences, completion_mask, draws, self.args.p_mask_prompt
        )

    def training_step(self) -> dict[str, float]:
        """One rollout batch and its GRPO epochs."""
        args, device = self.args, self.accelerator.device
        prompts, columns, group_ids = self._sample_prompts(self.train_dataset, args.num_generations)
        prompt_ids, prompt_mask = (t.to(device) for t in self._encode_prompts(prompts, return_mask=True))
        sample = self.adapter.sample(
            self.policy, prompt_ids, args.max_completion_length, self._generator, prompt_mask=prompt_mask
        )
        sequences, trajectory = sample.sequences, sample.trajectory
        rewards_per_func, rewards, unscored = self.scorer(prompts, **columns, completions=self._decode(sequences))
        advantages = compute_advantages(rewards, group_ids, scale=args.scale_rewards).to(device)

        completion_mask = torch.zeros_like(sequences, dtype=torch.bool)
        completion_mask[:, args.max_prompt_length :] = True
        draws = self.adapter.sample_draws(
            len(prompts),
            sequences.size(1),
            self.num_likelihood_samples,
            args.elbo_estimator,
            generator=self._generator,
            device=device,
        )
        self._trace_steps = None
        if self.estimator == "trace":
            if trajectory is None:
                raise ValueError(f"{type(self.adapter).__name__}'s sampler records no trajectory for 'trace'.")
            if getattr(args, "num_trace_steps", None):
                chosen = torch.randperm(trajectory.num_steps, generator=self._generator)
                self._trace_steps = sorted(chosen[: args.num_trace_steps].tolist())
        with torch.no_grad():
            old_per_draw = self.log_likelihood(self.policy, sequences, completion_mask, draws, trajectory)
            old = old_per_draw.mean(0)
            ref = None
            if args.beta > 0:
                ref = self._reference_log_likelihood(sequences, completion_mask, draws, trajectory).mean(0)
        normalizer = float(args.max_completion_length) if args.ratio_normalization == "token" else 1.0
        logs = {**self._likelihood_logs(old_per_draw), **self.scorer.logs(rewards_per_func, rewards)}
        if self.estimator == "trace":  # the sampler's recorded probabilities against their recomputation
            recorded = trajectory.recorded_log_probs(self._trace_steps)
            logs[f"{self.metric_prefix}/trace_recompute_error"] = (recorded - old).abs().max().item()
        if not self.any_process_scored(unscored):  # no reward anywhere: no update
            self.skipped_steps += 1
            return logs
        # a likelihood that calls the policy's submodules (SEDD's row-chunked head) runs on the unwrapped policy
        trained = self.policy if self._forward_bypasses_wrapper else self.model

        def policy_terms(micro_batch: torch.Tensor) -> Iterator[PolicyTerm]:
            new = self.log_likelihood(
                trained,
                sequences[micro_batch],
                completion_mask[micro_batch],
                draws.select(micro_batch),
                None if trajectory is None else trajectory.select(micro_batch),
            ).mean(0)
            kl = None
            if ref is not None:
                kl = kl_divergence(new / normalizer, ref[micro_batch] / normalizer, "k3")
            yield PolicyTerm((new - old[micro_batch]) / normalizer, kl, self._term_metrics(new))

        metrics = self.group_policy_update(policy_terms, advantages, unscored, device, args.num_iterations)
        return {**logs, **metrics}

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the policy (LoRA merged into the weights) and the tokenizer with `save_pretrained`, and write the model
        card."""
        output_dir = output_dir or self.args.output_dir
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        if self.args.use_peft:
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(output_dir)
        self.processing_class.save_pretrained(output_dir)
        likelihood = (
            "(the sampled trajectory's log-probability)"
            if self.estimator == "trace"
            else f"with {self.num_likelihood_samples} draws on common random numbers"
        )
        self._write_model_card(
            output_dir,
            self.base_model_name,
            summary=(
                f"A {self.adapter.card_description} fine-tuned with `trl_ext.{self.library_class_name}`: "
                f"{self._method} whose sequence log-likelihood is the `{self.estimator}` estimate {likelihood}."
            ),
            usage=self.adapter.card_usage,
            tags=["diffusion-lm", *self.adapter.card_tags, self._method.lower()],
        )
