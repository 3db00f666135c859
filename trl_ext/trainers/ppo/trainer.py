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
"""[`PPOTrainer`]: token-level PPO for causal LMs with a value model and GAE, on the loop base (`RLLoopTrainer`)."""

import copy
import json
import math
import os
import time
from collections import defaultdict

import torch
from accelerate.utils import DistributedType
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.utils import logging

from ...hub import model_card_name
from ...rewards.reward_model import SequenceClassificationReward, fill_padding
from ...rl.advantages import masked_whiten, outcome_token_rewards
from ...rl.gae import compute_gae
from ...rl.kl import AdaptiveKLController, FixedKLController, kl_divergence
from ...rl.losses import clipped_surrogate_loss, clipped_value_loss
from ..loop import RLLoopTrainer
from .config import PPOBatchSizes, PPOConfig
from .data import (
    Rollout,
    check_prompt_dataset,
    encode_prompts,
    left_pad,
    sampling_config,
    score_completions,
    tokenize_prompts,
    truncate_after_stop,
)
from .modeling import (
    PolicyAndValueModel,
    build_value_model,
    check_vocabularies,
    drop_tied_weights,
    reward_functions,
    sequence_log_probs,
)


logger = logging.get_logger(__name__)

PPO_USAGE = """from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{model_name}")
policy = AutoModelForCausalLM.from_pretrained("{model_name}")
value_model = AutoModelForSequenceClassification.from_pretrained("{model_name}", subfolder="value_model")"""

VALUE_MODEL_DIR = "value_model"


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


class PPOTrainer(RLLoopTrainer):
    r"""
    Token-level PPO for causal language models (RLHF): a policy, a frozen reference, a value model and a score.

    One training step (one rollout batch of `batch_sizes.local_batch_size` prompts per process, see
    [`PPOBatchSizes`]):

    1. sample a response per prompt (temperature `T`, no top-k / top-p filtering), cut after the stop token;
    2. recompute log π (logits / T) and the values V_t by one forward of the policy-and-value module (with TRL's
       default layout, one micro-batch per update, it keeps its graph and is the first update's forward), and log π_ref
       with the reference (a frozen copy of the initial policy, or the policy with its LoRA adapter disabled);
    3. score prompt + response with the reward model(s) and reward functions; subtract `missing_eos_penalty` from
       responses without the stop token;
    4. per-token rewards r_t = −β·KL_t, plus the score on the **last response token** (the stop token when present);
       GAE (γ, λ) and returns; advantages whitened over the valid tokens;
    5. `num_ppo_epochs` passes over shuffled mini-batches; each mini-batch is one optimizer step (its micro-batches of
       `per_device_train_batch_size` accumulate) on L = L_clip + vf_coef · L_value, gradients clipped at
       `max_grad_norm`, policy and value at their own learning rates.

    The first mini-batch of the first epoch is on policy: its ratio is exactly 1 (logged as
    `policy/on_policy_ratio_dev`, the largest |ρ − 1| there); with `critic_warmup_steps` the first batches train the
    value model only.

    The constructor takes TRL's last `PPOTrainer` signature, so a TRL script ports by changing its import.

    Args:
        args ([`PPOConfig`]): Configuration.
        processing_class (tokenizer): The policy's tokenizer; it needs a pad token distinct from the stop token. The
            pad token may be one the embeddings lack (TRL's recipe adds `[PAD]` without resizing): padding never
            reaches a model.
        model (`str` or `PreTrainedModel`): The policy (a causal LM), or its path.
        ref_model (`str` or `PreTrainedModel`, *optional*): The reference; defaults to a frozen copy of the policy
            (with `peft_config`: the policy with its adapter disabled).
        reward_model (model, path, callable or list of them): `*ForSequenceClassification` reward models
            (`num_labels == 1`; one whose tokenizer has the policy's vocabulary scores the generated ids as TRL's
            PPOTrainer did, any other re-tokenised text with `reward_processing_class` or its own tokenizer, see
            [`~trl_ext.rewards.reward_model.SequenceClassificationReward`]) and/or TRL-convention reward functions
            `fn(prompts, completions, completion_ids, **columns) -> list[float | None]` (they also receive
            `prompt_completion_ids` / `prompt_completion_mask`, the (B, P + L) ids; `None` leaves a sample
            unscored: it stays out of every loss). Several are summed with `args.reward_weights`.
        train_dataset (`datasets.Dataset`): A `prompt` column (text or conversational messages) or TRL's
            pre-tokenised `input_ids`; other columns reach the reward functions.
        value_model (`str` or `PreTrainedModel`, *optional*): A `*ForSequenceClassification` model (one label) whose
            head is read at every token, or a causal LM (a zero head is added); defaults to the policy's backbone
            (`value_model_init="policy"`) or the reward model's (`"reward_model"`).
        data_collator, optimizers: TRL's arguments; only their defaults are supported.
        callbacks (list of `transformers.TrainerCallback`, *optional*): Called at the events of `transformers.Trainer`'s
            loop (`on_step_end`, `on_log`, `on_save`, ...); they can stop training through `control`.
        eval_dataset (`datasets.Dataset`, *optional*): Prompts for [`generate_completions`].
        peft_config (`peft.PeftConfig`, *optional*): Train a LoRA adapter of the policy.
        reward_processing_class (tokenizer, *optional*): The tokenizer of the reward model(s), when not their own.
    """

    _name = "PPO"

    def __init__(
        self,
        args: PPOConfig,
        processing_class,
        model,
        ref_model=None,
        reward_model=None,
        train_dataset: Dataset | None = None,
        value_model=None,
        data_collator=None,
        eval_dataset: Dataset | None = None,
        optimizers=(None, None),
        callbacks: list[TrainerCallback] | None = None,
        peft_config=None,
        reward_processing_class=None,
    ):
        if data_collator is not None or optimizers != (None, None):
            raise ValueError(
                "PPOTrainer builds its batches, optimizer (`optim`, `learning_rate`, `value_learning_rate`) and "
                "scheduler (`lr_scheduler_type`) from args; data_collator and optimizers are not supported."
            )
        super().__init__(args, callbacks)
        self._setup_tokenizer(processing_class)
        self.train_dataset = self._prepare_dataset(train_dataset, "train_dataset")
        self.eval_dataset = self._prepare_dataset(eval_dataset, "eval_dataset") if eval_dataset is not None else None
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model)
        self.base_model_name = model_card_name(getattr(model, "name_or_path", None))
        reward_funcs = reward_functions(
            reward_model, processing_class, reward_processing_class, args.local_rollout_forward_batch_size
        )
        value_model = build_value_model(value_model, model, reward_funcs, args.value_model_init)
        model = self._setup_policy_and_reference(model, ref_model, value_model, reward_funcs, peft_config)
        self._setup_batches()
        self.kl_controller = (
            AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon)
            if args.kl_controller == "adaptive"
            else FixedKLController(args.kl_coef)
        )
        self.generation_config = sampling_config(args.response_length, args.temperature, self.stop_token_id)
        self._setup_optimizer(model, value_model)

    # Set-up steps, in the order `__init__` runs them

    def _setup_tokenizer(self, tokenizer) -> None:
        """Keep the policy's tokenizer and the stop token (`stop_token_id`, else the EOS); the pad token must exist and
        differ from it."""
        if tokenizer is None:
            raise ValueError("processing_class (the policy's tokenizer) is required.")
        self.processing_class = tokenizer
        self.stop_token_id = self.args.stop_token_id if self.args.stop_token_id is not None else tokenizer.eos_token_id
        if self.stop_token_id is None:
            raise ValueError("The tokenizer has no eos_token_id: set stop_token_id.")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == self.stop_token_id:
            raise ValueError(
                f"The tokenizer's pad token ({tokenizer.pad_token!r}) must exist and differ from the stop token "
                f"({tokenizer.convert_ids_to_tokens(self.stop_token_id)!r}): with pad == eos, masks and the score "
                "position cannot be told from padding. Add one, e.g. tokenizer.add_special_tokens({'pad_token': "
                "'[PAD]'})."
            )

    def _prepare_dataset(self, dataset: Dataset | None, name: str) -> Dataset:
        """The checked prompt dataset, its `prompt` column tokenised with `dataset_num_proc` processes (the local main
        process first, so that the others read its cache)."""
        dataset = check_prompt_dataset(dataset, name)
        with self.accelerator.local_main_process_first():
            return tokenize_prompts(self.processing_class, dataset, self.args.dataset_num_proc)

    def _setup_policy_and_reference(self, model, ref_model, value_model, reward_funcs: list, peft_config):
        """Check the vocabularies (`check_vocabularies`), add the LoRA adapter (`peft_config`), make the reference (a
        frozen copy of the policy unless given; none with LoRA: the adapter is disabled), turn dropout off, freeze the
        reference and the reward models on the device, and register the reward functions. Returns the policy."""
        args = self.args
        self._num_embeddings = check_vocabularies(model, value_model, reward_funcs, self.stop_token_id)
        if value_model.config.pad_token_id is None:
            value_model.config.pad_token_id = self.processing_class.pad_token_id
        self.use_peft = peft_config is not None
        if self.use_peft:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config, adapter_name=args.model_adapter_name or "default")
        elif ref_model is None:
            ref_model = copy.deepcopy(model)
        if isinstance(ref_model, str):
            ref_model = AutoModelForCausalLM.from_pretrained(ref_model)
        from trl.trainer.utils import disable_dropout_in_model

        for m in (model, value_model, ref_model):
            if m is not None:
                disable_dropout_in_model(m)  # the ratio of the first mini-batch must be exactly 1
        self.ref_model = self._prepare_frozen(ref_model)
        for func in reward_funcs:
            if isinstance(func, SequenceClassificationReward):
                func.model = self._prepare_frozen(func.model)
        self._set_reward_funcs(reward_funcs, args.reward_weights)
        return model

    def _setup_batches(self) -> None:
        """Derive the batch sizes once, as TRL's last PPOTrainer did ([`PPOBatchSizes`], `trainer.batch_sizes`): one
        optimizer step per mini-batch, whose micro-batches accumulate (set before `_prepare`, which hands it to
        DeepSpeed); the rows per step, and `max_steps` from `total_episodes` when `max_steps` is not set."""
        self.batch_sizes = sizes = PPOBatchSizes.from_config(self.args, self.accelerator.num_processes)
        self.accelerator.gradient_accumulation_steps = sizes.micro_batches_per_mini_batch
        self._setup_data(len(self.train_dataset), sizes.local_batch_size)
        if self.args.total_episodes is not None and self.args.max_steps <= 0:
            self.max_steps = math.ceil(self.args.total_episodes / sizes.batch_size)

    def _setup_optimizer(self, model, value_model) -> None:
        """Wrap policy and value model in one module ([`PolicyAndValueModel`]) and prepare it with one optimizer of two
        parameter groups: the policy at `learning_rate`, the value model at `value_learning_rate`."""
        args = self.args
        wrapper = PolicyAndValueModel(model, value_model).to(self.accelerator.device)
        wrapper.train()  # dropout is off; training mode keeps gradient checkpointing active
        value_lr = args.value_learning_rate if args.value_learning_rate is not None else args.learning_rate
        groups = [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": args.learning_rate},
            {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": value_lr},
        ]
        self._prepare(wrapper, [g for g in groups if g["params"]])
        self.accelerator.register_save_state_pre_hook(drop_tied_weights)
        self._policy_params = set(groups[0]["params"])

    def _prepare_frozen(self, model):
        """A frozen model on this process's device (DeepSpeed: a ZeRO-3 inference engine)."""
        if model is None:
            return None
        model.eval().requires_grad_(False)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            from trl.models import prepare_deepspeed

            return prepare_deepspeed(model, self.accelerator)
        return model.to(self.accelerator.device)

    @property
    def policy(self):
        """The unwrapped policy (a `PeftModel` under LoRA)."""
        return self.accelerator.unwrap_model(self.model).policy

    @property
    def value_model(self):
        return self.accelerator.unwrap_model(self.model).value_model

    # Rollout

    def _encode(self, examples: Dataset) -> tuple[list, torch.Tensor, torch.Tensor]:
        """The prompts in their dataset form, and their token ids left-padded (B, P) with the attention mask."""
        prompts, ids = encode_prompts(self.processing_class, examples, self._num_embeddings)
        prompt_ids, prompt_mask = left_pad(ids, self.processing_class.pad_token_id)
        return prompts, prompt_ids.to(self.accelerator.device), prompt_mask.to(self.accelerator.device)

    @torch.no_grad()
    def _generate(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, generation_config
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample a response per prompt, cut after its stop token: responses (B, L) (padding after the stop token), the
        mask of their tokens and whether the stop token was generated."""
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(
            self.model, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation
        ) as unwrapped:
            sequences = unwrapped.policy.generate(
                input_ids=fill_padding(prompt_ids, prompt_mask),
                attention_mask=prompt_mask,
                generation_config=generation_config,
            )
        responses = sequences[:, prompt_ids.size(1) :]
        return truncate_after_stop(responses, self.stop_token_id, self.processing_class.pad_token_id)

    def _reference_log_probs(self, inputs: dict, responses: torch.Tensor, keep: int) -> torch.Tensor:
        if self.ref_model is not None:
            logits = self.ref_model(**inputs, logits_to_keep=keep, use_cache=False).logits[:, :-1]
            return sequence_log_probs(logits, responses, self.args.temperature)
        policy = self.policy
        if self.args.ref_adapter_name:
            policy.set_adapter(self.args.ref_adapter_name)
            try:
                logits = policy(**inputs, logits_to_keep=keep, use_cache=False).logits[:, :-1]
            finally:
                policy.set_adapter(self.args.model_adapter_name or "default")
        else:
            with policy.disable_adapter():
                logits = policy(**inputs, logits_to_keep=keep, use_cache=False).logits[:, :-1]
        return sequence_log_probs(logits, responses, self.args.temperature)

    def _rollout_forward(
        self,
        sequences: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        responses: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """log π, log π_ref and V_t of the response tokens (B, L), by forwards of `local_rollout_forward_batch_size`
        rows, and the policy-and-value forward with its graph when it is also the first update's (else `None`)."""
        args, keep = self.args, responses.size(1) + 1  # the logits at position P - 1 + t predict response token t
        logps, ref_logps, values, forward = [], [], [], None
        rows = torch.arange(len(sequences), device=sequences.device)
        for chunk in rows.split(args.local_rollout_forward_batch_size):
            inputs = {
                "input_ids": sequences[chunk],
                "attention_mask": attention_mask[chunk],
                "position_ids": position_ids[chunk],
            }
            with self.accelerator.autocast():
                with torch.set_grad_enabled(self._rollout_forward_trains):
                    logits, chunk_values = self.model(**inputs, logits_to_keep=keep)
                if self._rollout_forward_trains:
                    forward = (logits, chunk_values)
                    logits, chunk_values = logits.detach(), chunk_values.detach()
                logps.append(sequence_log_probs(logits[:, :-1], responses[chunk], args.temperature))
                values.append(chunk_values[:, :-1])
                ref_logps.append(self._reference_log_probs(inputs, responses[chunk], keep))
        return torch.cat(logps), torch.cat(ref_logps), torch.cat(values), forward

    @torch.no_grad()
    def _rollout(self, examples: Dataset) -> Rollout:
        """Generate, score and compute the advantages of one rollout batch (this process's rows)."""
        args, device = self.args, self.accelerator.device
        prompts, prompt_ids, prompt_mask = self._encode(examples)
        responses, mask, has_stop = self._generate(prompt_ids, prompt_mask, self.generation_config)
        attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
        sequences = fill_padding(torch.cat([prompt_ids, responses], dim=1), attention_mask)
        # the padding after a stop token is a pad id the model may not have (TRL's added "[PAD]"): log-probabilities
        # are gathered at the filled ids, and the mask drops them
        responses = sequences[:, prompt_ids.size(1) :]
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)

        logps, ref_logps, values, forward = self._rollout_forward(sequences, attention_mask, position_ids, responses)

        texts, rewards_per_func, scores, unscored = score_completions(
            self.scorer, self.processing_class, examples, prompts, sequences, attention_mask, mask
        )
        logs = self.scorer.logs(rewards_per_func, scores)
        scores = scores.to(device)
        if args.missing_eos_penalty is not None:
            scores = torch.where(has_stop, scores, scores - args.missing_eos_penalty)
        unscored = unscored.to(device)
        scored_tokens = mask & ~unscored[:, None]

        beta = self.kl_controller.coef
        kl = torch.where(mask, kl_divergence(logps, ref_logps, args.kl_estimator), 0.0)
        non_score_rewards = -beta * kl
        token_rewards = non_score_rewards + outcome_token_rewards(torch.nan_to_num(scores, nan=0.0), mask)
        if args.whiten_rewards:
            token_rewards = masked_whiten(token_rewards, scored_tokens, shift_mean=False)
        advantages, returns = compute_gae(token_rewards, values, mask, args.gamma, args.lam)
        advantages = masked_whiten(advantages, scored_tokens)

        scored = ~unscored
        mean_score = scores[scored].mean() if scored.any() else torch.tensor(float("nan"), device=device)
        token_kl_sum = self.accelerator.reduce(torch.stack([kl.sum(), mask.sum().float()]), reduction="sum")
        logs.update(
            {
                "objective/kl": kl.sum(1).mean().item(),
                "objective/entropy": torch.where(mask, -logps, 0.0).sum(1).mean().item(),
                "objective/non_score_reward": non_score_rewards.sum(1).mean().item(),
                "objective/rlhf_reward": (mean_score + non_score_rewards.sum(1).mean()).item(),
                "objective/scores": mean_score.item(),
                "objective/kl_coef": beta,
                "val/num_eos_tokens": self.accelerator.reduce(has_stop.sum(), reduction="sum").item(),
                "val/response_length": mask.sum(1).float().mean().item(),
                "episode": (self.state.global_step + 1) * self.batch_sizes.batch_size,
            }
        )
        self.kl_controller.update((token_kl_sum[0] / token_kl_sum[1].clamp(min=1)).item(), self.batch_sizes.batch_size)
        return Rollout(
            prompts=prompts,
            completions=texts,
            sequences=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids,
            responses=responses,
            mask=mask,
            weights=scored_tokens.float(),
            logps=logps,
            ref_logps=ref_logps,
            values=values,
            scores=scores,
            token_rewards=token_rewards,
            advantages=advantages,
            returns=returns,
            unscored=unscored,
            logs=logs,
            forward=forward,
        )

    @property
    def _rollout_forward_trains(self) -> bool:
        """Whether the rollout's policy-and-value forward, run with gradients, is also the first update's: when one
        micro-batch is the whole rollout batch (TRL's default layout: `gradient_accumulation_steps = num_mini_batches
        = 1`) in one rollout chunk, the first micro-batch backpropagates through it instead of running the same forward
        on the same weights again (its ratio is 1 by construction; the graph is what that forward would hold)."""
        sizes = self.batch_sizes
        return (
            sizes.per_device_train_batch_size >= sizes.local_batch_size == sizes.local_mini_batch_size
            and sizes.local_batch_size <= self.args.local_rollout_forward_batch_size
        )

    # Update

    def training_step(self) -> dict[str, float]:
        """One rollout batch, then `num_ppo_epochs` passes of mini-batch updates."""
        args, sizes, start = self.args, self.batch_sizes, time.perf_counter()
        examples = self.train_dataset.select(self.rows_for_step(self.state.global_step))
        rollout = self._rollout(examples)
        logs = rollout.logs
        logs["lr"] = self.lr_scheduler.get_last_lr()[0]  # TRL's name (the loop also logs learning_rate)
        self._maybe_log_completions(rollout)
        if not self.any_process_scored(rollout.unscored):  # no score anywhere: no update
            self.skipped_steps += 1
            return logs
        warmup = self.state.global_step < args.critic_warmup_steps
        keep = rollout.responses.size(1) + 1
        metrics = defaultdict(list)
        for epoch in range(args.num_ppo_epochs):
            order = torch.randperm(len(rollout.prompts), generator=self._generator).to(self.accelerator.device)
            for mini_batch_index, mini_batch in enumerate(order.split(sizes.local_mini_batch_size)):
                first = epoch == 0 and mini_batch_index == 0
                # TRL's micro-batches: at most per_device_train_batch_size rows, each one's token mean weighing
                # alike (not the loop base's `micro_batches`, whose per-sample weights make one mean over them)
                for index in mini_batch.split(sizes.per_device_train_batch_size):
                    with self.optimizer_update(metrics):  # the first takes the rollout's forward, if it trains
                        self._micro_batch_loss(rollout, index, keep, warmup, first, metrics, rollout.take_forward())
        logs.update({name: sum(values) / len(values) for name, values in metrics.items()})
        logs["eps"] = sizes.batch_size / (time.perf_counter() - start)  # episodes per second, as TRL
        return logs

    def _micro_batch_loss(
        self, rollout: Rollout, index: torch.Tensor, keep: int, warmup: bool, first: bool, metrics: dict, forward=None
    ) -> None:
        """Backpropagate L = L_clip + vf_coef · L_value (the policy term dropped in critic warm-up) on the rows `index`
        of `rollout`, through `forward` (the rollout's logits and values) when given; append the metrics' values."""
        args = self.args
        if forward is not None:  # the rollout's forward of every row, with its graph (`_rollout_forward_trains`)
            logits, values = forward[0][index], forward[1][index]
        else:
            with self.accelerator.autocast():
                logits, values = self.model(
                    input_ids=rollout.sequences[index],
                    attention_mask=rollout.attention_mask[index],
                    position_ids=rollout.position_ids[index],
                    logits_to_keep=keep,
                )
        logits, values = logits[:, :-1], values[:, :-1]
        logps = sequence_log_probs(logits, rollout.responses[index], args.temperature)
        weights, mask = rollout.weights[index], rollout.mask[index]
        log_ratio = logps - rollout.logps[index]
        policy_losses, clipped = clipped_surrogate_loss(
            log_ratio, rollout.advantages[index], args.cliprange, delta=args.delta
        )
        value_losses, value_clipped = clipped_value_loss(
            values, rollout.values[index], rollout.returns[index], args.cliprange_value
        )
        policy_loss, value_loss = _masked_mean(policy_losses, weights), _masked_mean(value_losses, weights)
        loss = (0.0 if warmup else 1.0) * policy_loss + args.vf_coef * value_loss
        self.accelerator.backward(loss)
        if warmup:  # critic warm-up: the policy's parameters get no update at all (no gradient, no weight decay)
            for param in self.trainable_params:
                if param in self._policy_params:
                    param.grad = None
        with torch.no_grad():
            from trl.trainer.utils import entropy_from_logits

            ratio = log_ratio.exp()
            if first:
                dev = torch.where(mask, (ratio - 1).abs(), 0.0).max()
                metrics["policy/on_policy_ratio_dev"].append(dev.item())
            metrics["policy/approxkl_avg"].append(_masked_mean(0.5 * log_ratio**2, mask).item())
            metrics["policy/clipfrac_avg"].append(_masked_mean(clipped.float(), mask).item())
            metrics["loss/policy_avg"].append(policy_loss.item())
            metrics["loss/value_avg"].append(value_loss.item())
            metrics["loss"].append(loss.item())
            metrics["val/clipfrac_avg"].append(_masked_mean(value_clipped.float(), mask).item())
            entropy = entropy_from_logits(logits.float() / args.temperature)
            metrics["policy/entropy_avg"].append(_masked_mean(entropy, mask).item())  # real tokens only
            metrics["val/ratio"].append(_masked_mean(ratio, mask).item())
            metrics["val/ratio_var"].append(_masked_mean((ratio - _masked_mean(ratio, mask)) ** 2, mask).item())

    # Completions

    def _maybe_log_completions(self, rollout: Rollout) -> None:
        args = self.args
        if not args.num_sample_generations or not self.accelerator.is_main_process:
            return
        every = max(1, self.max_steps // args.num_sample_generations)
        if self.state.global_step % every:
            return
        rows = [
            {"step": self.state.global_step, "prompt": p, "completion": c, "score": s}
            for p, c, s in zip(rollout.prompts, rollout.completions, rollout.scores.tolist())
        ][: args.num_completions_to_print]
        self._write_completions(rows)

    def _write_completions(self, rows: list[dict]) -> None:
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, "completions.jsonl"), "a") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
        if "wandb" in self.args.report_to:
            import wandb

            table = wandb.Table(columns=list(rows[0]), data=[[str(v) for v in row.values()] for row in rows])
            self.accelerator.get_tracker("wandb").log({"completions": table}, step=self.state.global_step)

    @torch.no_grad()
    def generate_completions(self, sampling: bool = False) -> list[dict]:
        """Complete the prompts of `eval_dataset` (else the first rollout batch of the training rows) greedily (or
        sampled with `sampling=True`), score them, write them to `output_dir/completions.jsonl` (and a wandb table)
        and return them; as TRL's PPOTrainer.generate_completions."""
        dataset = self.eval_dataset or self.train_dataset
        config = copy.deepcopy(self.generation_config)
        if not sampling:
            config.do_sample, config.temperature, config.top_k, config.top_p = False, None, None, None
        rows = []
        for start in range(0, len(dataset), self.args.local_rollout_forward_batch_size):
            examples = dataset.select(
                range(start, min(start + self.args.local_rollout_forward_batch_size, len(dataset)))
            )
            prompts, prompt_ids, prompt_mask = self._encode(examples)
            responses, mask, _ = self._generate(prompt_ids, prompt_mask, config)
            attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
            sequences = torch.cat([prompt_ids, responses], dim=1)
            texts, _, scores, _ = score_completions(
                self.scorer, self.processing_class, examples, prompts, sequences, attention_mask, mask
            )
            rows.extend(
                {"step": self.state.global_step, "prompt": p, "completion": c, "score": s}
                for p, c, s in zip(prompts, texts, scores.tolist())
            )
        if self.accelerator.is_main_process and rows:
            self._write_completions(rows)
        return rows

    # Checkpoints and outputs

    def _process_state(self) -> dict:
        # the key stays "kl_coef" (the attribute was `kl_ctl`), so that checkpoints of earlier releases resume
        return {**super()._process_state(), "kl_coef": self.kl_controller.coef}

    def _load_process_state(self, state: dict) -> None:
        super()._load_process_state(state)
        self.kl_controller.coef = state["kl_coef"]

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the policy (a LoRA adapter merged into its weights) and the tokenizer to `output_dir`, the value model
        to `output_dir/value_model` (both load with `from_pretrained`), and the model card."""
        output_dir = output_dir or self.args.output_dir
        state = self.accelerator.get_state_dict(self.model)  # every process takes part (ZeRO-3 gathers)
        if not self.accelerator.is_main_process:
            return
        wrapper = self.accelerator.unwrap_model(self.model)
        os.makedirs(output_dir, exist_ok=True)
        if self.use_peft:
            copy.deepcopy(wrapper.policy).merge_and_unload().save_pretrained(output_dir)
        else:
            policy_state = {k[len("policy.") :]: v for k, v in state.items() if k.startswith("policy.")}
            wrapper.policy.save_pretrained(output_dir, state_dict=policy_state)
        value_state = {k[len("value_model.") :]: v for k, v in state.items() if k.startswith("value_model.")}
        wrapper.value_model.save_pretrained(os.path.join(output_dir, VALUE_MODEL_DIR), state_dict=value_state)
        self.processing_class.save_pretrained(output_dir)
        self.processing_class.save_pretrained(os.path.join(output_dir, VALUE_MODEL_DIR))
        a = self.args
        self._write_model_card(
            output_dir,
            self.base_model_name,
            summary=(
                "A causal language model fine-tuned with `trl_ext.PPOTrainer`: token-level PPO (Ouyang et al. 2022) "
                f"with a value model and GAE (γ = {a.gamma}, λ = {a.lam}), a per-token KL penalty to the initial model "
                f"({a.kl_estimator}, β = {a.kl_coef}, {a.kl_controller}) and the score on the last response token. The "
                f"value model is in `{VALUE_MODEL_DIR}/`."
            ),
            usage=PPO_USAGE,
            tags=["ppo", "rlhf"],
        )
