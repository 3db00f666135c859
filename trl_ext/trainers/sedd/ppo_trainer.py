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
"""[`DiscreteDiffusionPPOTrainer`]: PPO for SEDD discrete diffusion language models on an ELBO likelihood."""

import copy
from collections.abc import Iterator

import torch
from datasets import Dataset
from transformers import TrainerCallback

from ...hub import model_card_name
from ...models.sedd import SEDDModel, elbo, generate, get_noise, sample_elbo_draws
from ...rl.advantages import compute_advantages
from ...rl.kl import kl_divergence
from ...rl.scoring import RewardFunc
from ..group_update import GroupPolicyTrainer, PolicyTerm
from .ppo_config import DiscreteDiffusionPPOConfig
from .sft_trainer import SEDD_USAGE


class DiscreteDiffusionPPOTrainer(GroupPolicyTrainer):
    r"""
    PPO for SEDD discrete diffusion language models.

    Rollouts come from the SEDD sampler conditioned on each prompt (the prompt positions are fixed, inpainting-style).
    The policy's log-likelihood of a completion is the negative of its DWDSE bound, estimated with K noise draws that
    are drawn once per rollout and reused for the old policy, every PPO epoch and the reference (common random
    numbers; with independent draws the log-ratio's noise is hundreds of nats and every sample is clipped).

    Args:
        model (`str` or [`SEDDModel`]): The policy, or a path / `trl_ext.hub` key / Hub id.
        reward_funcs (callable or list of callables): TRL-convention rewards
            `fn(prompts, completions, **columns) -> list[float | None]` (`None` masks a sample).
        args ([`DiscreteDiffusionPPOConfig`]): Configuration.
        train_dataset (`datasets.Dataset`): A `prompt` column (text) and any columns the rewards read.
        processing_class (tokenizer): Encodes prompts and decodes completions (GPT-2's for the published models);
            its `eos_token_id` pads prompts on the left.
        ref_model ([`SEDDModel`], *optional*): The reference for `beta > 0`; defaults to a frozen copy of the
            initial policy (or the policy with LoRA disabled when `use_peft`).
        callbacks (list of `transformers.TrainerCallback`, *optional*): Called at the events of `transformers.Trainer`'s
            loop (`on_step_end`, `on_log`, `on_save`, ...); they can stop training through `control`.
    """

    _name = "SEDD-PPO"
    metric_prefix = "sedd"
    _forward_bypasses_wrapper = True  # the ELBO calls the policy's submodules (row-chunked head)

    def __init__(
        self,
        model: str | SEDDModel,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: DiscreteDiffusionPPOConfig,
        train_dataset: Dataset,
        processing_class,
        ref_model: SEDDModel | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ):
        super().__init__(args, callbacks)
        model = SEDDModel.from_pretrained(model) if isinstance(model, str) else model
        if "prompt" not in train_dataset.column_names or len(train_dataset) == 0:
            raise ValueError("train_dataset must have a non-empty 'prompt' column.")
        if processing_class.eos_token_id is None:
            raise ValueError("processing_class needs an eos_token_id (it pads the prompts).")
        if len(processing_class) > model.config.tokens:
            raise ValueError(
                f"The tokenizer has {len(processing_class)} tokens but the model only {model.config.tokens}."
            )
        self._set_reward_funcs(reward_funcs, args.reward_weights)
        self.train_dataset = train_dataset
        self.processing_class = processing_class
        self.noise = get_noise(model.config)
        self.base_model_name = model_card_name(getattr(model, "name_or_path", None))

        if args.use_peft:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=args.lora_target_modules)
            )
        elif args.beta > 0 and ref_model is None:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model = ref_model.to(self.accelerator.device).eval().requires_grad_(False)
        self.ref_model = ref_model
        model.eval()  # no dropout: the ELBO of old and new policy must differ only through the weights
        rollout_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self._setup_data(len(train_dataset), rollout_size // args.num_generations)
        self._set_update_accumulation()
        self._prepare(model, [p for p in model.parameters() if p.requires_grad])

    @property
    def policy(self) -> SEDDModel:
        """The unwrapped SEDD model (the base model under LoRA)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if self.args.use_peft else model

    def _encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (N, `max_prompt_length + max_completion_length`) with each prompt's last `max_prompt_length`
        tokens right-aligned before the response, EOS padding on the left, and the mask of fixed (prompt) positions."""
        args, eos = self.args, self.processing_class.eos_token_id
        total = args.max_prompt_length + args.max_completion_length
        ids = torch.full((len(prompts), total), eos, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = self.processing_class(prompt, add_special_tokens=False)["input_ids"][-args.max_prompt_length :]
            ids[row, args.max_prompt_length - len(tokens) : args.max_prompt_length] = torch.tensor(
                tokens, dtype=torch.long
            )
        prompt_mask = torch.zeros_like(ids, dtype=torch.bool)
        prompt_mask[:, : args.max_prompt_length] = True
        return ids, prompt_mask

    def _decode(self, sequences: torch.Tensor) -> list[str]:
        """Decode the response positions, stopping at the first EOS."""
        texts = []
        for ids in sequences[:, self.args.max_prompt_length :].tolist():
            if self.processing_class.eos_token_id in ids:
                ids = ids[: ids.index(self.processing_class.eos_token_id)]
            texts.append(self.processing_class.decode(ids, skip_special_tokens=True))
        return texts

    def _reference_nll(self, sequences, prompt_mask, draws) -> torch.Tensor:
        if self.ref_model is not None:
            return elbo(self.ref_model, sequences, self.noise, prompt_mask=prompt_mask, draws=draws)
        with self.accelerator.unwrap_model(self.model).disable_adapter():  # LoRA: the reference is the base model
            return elbo(self.policy, sequences, self.noise, prompt_mask=prompt_mask, draws=draws)

    def training_step(self) -> dict[str, float]:
        """One rollout batch and its PPO epochs."""
        args, device = self.args, self.accelerator.device
        prompts, columns, group_ids = self._sample_prompts(self.train_dataset, args.num_generations)
        prompt_ids, prompt_mask = self._encode_prompts(prompts)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        sequences = generate(
            self.policy,
            self.noise,
            len(prompts),
            prompt_ids.size(1),
            steps=args.sampling_steps,
            predictor=args.predictor,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            generator=self._generator,
            show_progress=False,
        )
        rewards_per_func, rewards, unscored = self.scorer(prompts, **columns, completions=self._decode(sequences))
        advantages = compute_advantages(rewards, group_ids, scale=args.scale_rewards).to(device)

        uniform_vocab = None if self.policy.config.graph_type == "absorb" else self.policy.config.vocab_size
        draws = sample_elbo_draws(
            len(prompts),
            sequences.size(1),
            args.num_sigma_samples,
            args.elbo_estimator,
            generator=self._generator,
            device=device,
            vocab_size=uniform_vocab,
        )
        with torch.no_grad():
            old_nll = elbo(self.policy, sequences, self.noise, prompt_mask=prompt_mask, draws=draws)
            ref_nll = self._reference_nll(sequences, prompt_mask, draws) if args.beta > 0 else None
        normalizer = float(args.max_completion_length) if args.ratio_normalization == "token" else 1.0
        logs = {"sedd/old_elbo_nll": old_nll.mean().item(), **self.scorer.logs(rewards_per_func, rewards)}
        if not self.any_process_scored(unscored):  # no reward anywhere: no update
            self.skipped_steps += 1
            return logs

        def policy_terms(micro_batch: torch.Tensor) -> Iterator[PolicyTerm]:
            nll = elbo(
                self.policy,
                sequences[micro_batch],
                self.noise,
                prompt_mask=prompt_mask[micro_batch],
                draws=draws.select(micro_batch),
            )
            kl = None
            if ref_nll is not None:
                kl = kl_divergence(-nll / normalizer, -ref_nll[micro_batch] / normalizer, "k3")
            yield PolicyTerm((old_nll[micro_batch] - nll) / normalizer, kl, {"sedd/elbo_nll": nll.mean().item()})

        metrics = self.group_policy_update(policy_terms, advantages, unscored, device, args.num_iterations)
        return {**logs, **metrics}

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the policy (LoRA merged into the weights) as a SEDD checkpoint and write the model card."""
        output_dir = output_dir or self.args.output_dir
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        if self.args.use_peft:
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(output_dir)
        self._write_model_card(
            output_dir,
            self.base_model_name,
            summary=(
                "A SEDD discrete diffusion language model ([Score Entropy Discrete Diffusion]"
                "(https://huggingface.co/papers/2310.16834)) fine-tuned with `trl_ext.DiscreteDiffusionPPOTrainer`: PPO "
                f"whose sequence log-likelihood is a {self.args.num_sigma_samples}-sample ELBO estimate evaluated on "
                "common random numbers."
            ),
            usage=SEDD_USAGE,
            tags=["sedd", "discrete-diffusion", "ppo"],
        )
