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
"""`ExtendedGRPOTrainer`: TRL's `GRPOTrainer` with the RL controls TRL lacks, for any model `GRPOTrainer` trains.

The trainer overrides the fewest `GRPOTrainer` hooks it can (`_generate_and_score_completions`, `_calculate_rewards`,
`_compute_loss` and the checkpoint hooks) and folds everything it adds into per-token advantages of shape (B, T),
which TRL's loss accepts as they are.
"""

import copy
import json
import logging
import os
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from huggingface_hub import ModelCard
from safetensors import safe_open
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
from trl import GRPOTrainer
from trl.data_utils import prepare_multimodal_messages
from trl.trainer.utils import get_config_model_id

from ...hub import model_card_name
from ...rl.advantages import (
    compute_advantages,
    group_keep_mask,
    outcome_token_rewards,
    reinforce_plus_plus_advantages,
    remax_advantages,
    rloo_advantages,
)
from ...rl.kl import AdaptiveKLController, FixedKLController, kl_divergence
from ...rl.scoring import reward_component_values
from .config import ExtendedGRPOConfig


logger = logging.getLogger(__name__)

# Forward kwargs of GRPOTrainer's batches that hold image data.
_VISION_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "image_sizes",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_position_ids",
)
# Per-process file (in every checkpoint) with the state the trainer keeps outside the model (the KL controller's, and
# what subclasses add: see `ExtendedGRPOTrainer._checkpoint_state`).
EXTRA_STATE_NAME = "trl_ext_state_{process_index}.json"


class ExtendedGRPOTrainer(GRPOTrainer):
    r"""
    [`~trl.GRPOTrainer`] with the RL controls that TRL lacks, for any model `GRPOTrainer` trains (text-only language
    models and VLMs alike): the KL to the reference in the reward with the k1 / k2 / k3 / abs estimators, an adaptive
    KL controller, RLOO / REINFORCE++ / ReMax advantages and online difficulty filtering. Dual clipping is TRL's own
    `delta`.

    After each rollout batch is generated and scored by `GRPOTrainer`, the trainer

    1. drops, with online filtering, the prompt groups whose mean `filter_reward` lies outside (`filter_low`,
       `filter_high`): they leave the loss, its token normaliser and every statistic below;
    2. measures the rollout KL to the reference (`kl_penalty="reward"` or `kl_controller="adaptive"`), logs it and
       updates the KL controller, which alone holds β (`trainer.beta` reads it; TRL's loss uses it);
    3. recomputes the advantages with `advantage_estimator` from the rewards, less β·Σ_t KL_t with
       `kl_penalty="reward"` (ReMax generates one greedy completion per prompt as its baseline);

    and folds all of it into per-token advantages of shape (B, T). With every option off (the default) it is exactly
    `GRPOTrainer`, TRL's own options included. A reward function may expose `last_components` (a dict of per-sample
    lists or scalars, set at each call); each part is logged as `rewards/<name>/<part>`, averaged over all processes.

    Every checkpoint also holds `trl_ext_state_<process>.json` per process (the KL controller's coefficient), so that a
    resumed run continues β exactly. Two fixes of TRL / transformers apply whatever the options: a resumed model whose
    keys transformers renames on load (Qwen2-VL, Qwen2.5-VL) really gets its checkpoint's weights, and the model card
    names the base model by its Hub id (also from the Hugging Face cache), never by a local directory.

    Example:

    ```python
    >>> from trl_ext import ExtendedGRPOConfig, ExtendedGRPOTrainer
    >>> args = ExtendedGRPOConfig(
    ...     output_dir="out", advantage_estimator="rloo", beta=0.04, kl_penalty="reward", kl_estimator="k1"
    ... )
    >>> trainer = ExtendedGRPOTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=accuracy, args=args, train_dataset=dataset
    ... )
    >>> trainer.train()
    ```

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            As for [`~trl.GRPOTrainer`].
        reward_funcs:
            As for [`~trl.GRPOTrainer`].
        args ([`ExtendedGRPOConfig`], *optional*):
            Defaults to `ExtendedGRPOConfig("<model name>-GRPO")`, as [`~trl.GRPOTrainer`] builds its default.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`], *optional*):
            Must hold a `prompt` column (unless `environment_factory` supplies the prompts) and at least one row.
        **kwargs:
            Every other argument of [`~trl.GRPOTrainer`] (`eval_dataset`, `processing_class`, `peft_config`, ...).
    """

    _tag_names = ["trl", "grpo", "trl_ext"]
    _config_class = ExtendedGRPOConfig

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: Any = None,
        args: ExtendedGRPOConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        *extra_args,
        **kwargs,
    ):
        if args is None:
            args = self._default_args(model)
        elif not isinstance(args, self._config_class):
            raise TypeError(f"args must be a {self._config_class.__name__}, got {type(args).__name__}.")
        _check_train_dataset(train_dataset, prompts_from_environment=kwargs.get("environment_factory") is not None)
        super().__init__(model, reward_funcs, args, train_dataset, *extra_args, **kwargs)
        if args.online_filtering and args.filter_reward not in self.reward_func_names:
            raise ValueError(
                f"filter_reward={args.filter_reward!r} is not one of the reward functions {self.reward_func_names}."
            )
        # The gathered per-function rewards of the last rollout batch, kept by `_calculate_rewards` (TRL returns them
        # to `_generate_and_score_completions` but does not put them in its output).
        self._rewards_per_func: torch.Tensor | None = None

    @classmethod
    def _default_args(cls, model: str | PreTrainedModel) -> ExtendedGRPOConfig:
        """The configuration used without `args`: `<config class>("<model name>-<trainer name>")`, as GRPOTrainer."""
        model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        return cls._config_class(f"{model_name.split('/')[-1]}-{cls._name}")

    @property
    def beta(self) -> float:
        """β of TRL's KL term and reference forward: the KL controller's coefficient (the controller alone holds it)."""
        return self.kl_controller.coef

    @beta.setter
    def beta(self, value: float) -> None:
        # `GRPOTrainer.__init__` sets `self.beta = args.beta` once: that builds the controller, which owns β from then.
        if "kl_controller" in self.__dict__:
            raise AttributeError("beta belongs to the KL controller: set `trainer.kl_controller.coef` instead.")
        if self.args.kl_controller == "adaptive":
            self.kl_controller = AdaptiveKLController(value, self.args.kl_target, self.args.kl_horizon)
        else:
            self.kl_controller = FixedKLController(value)

    @property
    def _needs_rollout_kl(self) -> bool:
        return self.beta != 0.0 and (self.args.kl_penalty == "reward" or self.args.kl_controller == "adaptive")

    @property
    def _recomputes_advantages(self) -> bool:
        return (
            self.args.kl_penalty == "reward" or self.args.advantage_estimator != "grpo" or self.args.online_filtering
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Keep the (gathered) per-function rewards: online filtering and the other advantage estimators need them.
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._log_reward_components()
        return self._rewards_per_func

    def _log_reward_components(self) -> None:
        """Log each reward function's `last_components` as `rewards/<name>/<part>`, as the loop trainers name them.

        A part is a per-sample list (its finite numbers are averaged over the samples of every process) or a scalar
        (averaged over processes). The values go through TRL's `log_metric` buffer, which `GRPOTrainer` averages
        across processes right after the rewards are computed.
        """
        for key, values in reward_component_values(self.reward_funcs, self.reward_func_names).items():
            for value in values:
                self._log_metric(key, value)

    def _compute_loss(self, model, inputs):
        if self.args.kl_penalty != "reward":
            return super()._compute_loss(model, inputs)
        # kl_penalty="reward": the KL is already in the advantages; TRL's loss must not add its k3 term again, so it
        # runs with a β of 0 (a fixed controller at 0 in place of the trainer's, whose coefficient stays untouched).
        controller, self.kl_controller = self.kl_controller, FixedKLController(0.0)
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.kl_controller = controller

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:  # evaluation: plain GRPO scoring
            return output
        # Online filtering first: the dropped groups leave the mask that every statistic below is computed over.
        keep = self._apply_online_filtering(output) if self.args.online_filtering else None
        advantages = self._rollout_advantages(output, inputs, self._loss_mask(output), keep)
        if advantages is not None:
            output["advantages"] = advantages.contiguous()
        return output

    def _rollout_advantages(
        self,
        output: dict[str, Any],
        inputs: list[dict[str, Any]],
        mask: torch.Tensor,
        keep: torch.Tensor | None,
        policy_logps: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Per-token advantages (B, T) of a scored rollout batch, or None where TRL's own advantages stand.

        Measures the rollout KL and updates the controller when it is needed, then recomputes the advantages for the
        estimators and filters TRL does not have. `policy_logps` (B, T) are log π(o_t) of the rollout policy when the
        caller has them; otherwise TRL's old log-probabilities, or one no-grad forward when TRL computed none.
        """
        config = self.args
        kl_penalty = None
        if self._needs_rollout_kl:
            if policy_logps is None:
                policy_logps = output.get("old_per_token_logps")
            if policy_logps is None:
                policy_logps = self._rollout_logps(output)
            kl_penalty = self._update_kl(output, policy_logps, mask)
        if not self._recomputes_advantages:
            return None
        greedy = self._greedy_rewards(inputs) if config.advantage_estimator == "remax" else None
        return self._recompute_advantages(mask, kl_penalty, greedy, keep)

    def _process_slice(self, local_size: int) -> slice:
        return slice(self.accelerator.process_index * local_size, (self.accelerator.process_index + 1) * local_size)

    @staticmethod
    def _loss_mask(output: dict[str, Any]) -> torch.Tensor:
        mask = output["completion_mask"].float()
        return mask * output["tool_mask"] if "tool_mask" in output else mask

    def _apply_online_filtering(self, output: dict[str, Any]) -> torch.Tensor:
        """Drop the prompt groups whose mean `filter_reward` lies outside (`filter_low`, `filter_high`).

        The dropped completions leave the loss mask and TRL's token normaliser `num_items_in_batch`; their advantages
        become 0. Returns the gathered keep mask, (N,).
        """
        config = self.args
        filter_rewards = self._rewards_per_func[:, self.reward_func_names.index(config.filter_reward)]
        keep = group_keep_mask(filter_rewards, self.num_generations, config.filter_low, config.filter_high)
        self._metrics["train"]["grpo/filtered_group_fraction"].append(1.0 - keep.float().mean().item())
        local_keep = keep[self._process_slice(len(output["completion_mask"]))].to(output["completion_mask"].device)
        output["completion_mask"] = output["completion_mask"] * local_keep[:, None].to(output["completion_mask"].dtype)
        output["num_items_in_batch"] = self.accelerator.gather(self._loss_mask(output).sum()).sum()
        output["advantages"] = output["advantages"] * local_keep.to(output["advantages"].dtype)
        return keep

    def _update_kl(
        self, output: dict[str, Any], policy_logps: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor | None:
        """Measure the rollout KL to the reference, log it and update the KL controller.

        The KL is the mean over completions (with tokens, all processes) of each completion's per-token mean KL_t.
        Returns β·KL_t (B, T) for `kl_penalty="reward"` (this batch's β, as EasyR1 does), else None.
        """
        config = self.args
        per_token_kl = kl_divergence(policy_logps, output["ref_per_token_logps"], config.kl_estimator) * mask
        rows = mask.sum(1) > 0
        row_kl = per_token_kl.sum(1) / mask.sum(1).clamp(min=1)
        stats = torch.stack([row_kl[rows].sum(), rows.sum().to(row_kl.dtype)])
        total, count = self.accelerator.gather(stats.reshape(1, 2)).sum(0).tolist()
        mean_kl = total / max(count, 1.0)
        kl_penalty = self.beta * per_token_kl if config.kl_penalty == "reward" else None
        self._metrics["train"]["grpo/kl_coef"].append(self.beta)
        self._metrics["train"]["grpo/rollout_kl"].append(mean_kl)
        self.kl_controller.update(mean_kl, n_steps=int(count))
        return kl_penalty

    def _images(self, inputs: list[dict[str, Any]]) -> list:
        if "images" in inputs[0]:
            return [image for example in inputs for image in (example.get("images") or [])]
        if "image" in inputs[0]:
            return [example["image"] for example in inputs if example.get("image") is not None]
        return []

    def _forward_kwargs(self, output: dict[str, Any]) -> dict[str, Any]:
        keys = (*_VISION_KEYS, "mm_token_type_ids", "token_type_ids", "num_images", "num_tiles")
        return {key: output[key] for key in keys if key in output}

    def _sequences(self, output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        return input_ids, attention_mask, output["completion_ids"].size(1)

    @torch.no_grad()
    def _rollout_logps(self, output: dict[str, Any], vision_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
        """Log-probabilities (B, T) of the completions under the current policy, with the batch's own images (if any)
        or the vision inputs `vision_kwargs`: one no-grad forward, `per_device_train_batch_size` rows at a time."""
        input_ids, attention_mask, logits_to_keep = self._sequences(output)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size=self.args.per_device_train_batch_size,
            **(self._forward_kwargs(output) if vision_kwargs is None else vision_kwargs),
        )
        return logps

    @torch.no_grad()
    def _greedy_rewards(self, inputs: list[dict[str, Any]]) -> torch.Tensor:
        """ReMax's baseline: the weighted reward of a greedy completion of each row's prompt (gathered, (N,)).

        On one process, consecutive rows of the same example (a prompt group) share one greedy generation; with several
        processes every row gets its own, so that all processes gather the same number of rewards.
        """
        if self.accelerator.num_processes > 1:
            firsts = list(range(len(inputs)))
        else:
            firsts = [
                i
                for i, example in enumerate(inputs)
                if i == 0 or (example is not inputs[i - 1] and example != inputs[i - 1])
            ]
        unique = [inputs[i] for i in firsts]
        prompts = [example["prompt"] for example in unique]
        images = self._images(unique) if ("image" in unique[0] or "images" in unique[0]) else []
        if images:
            per_example = [
                example.get("images") or ([example["image"]] if example.get("image") is not None else [])
                for example in unique
            ]
            prompts = [
                prepare_multimodal_messages(prompt, images=image_list)
                for prompt, image_list in zip(prompts, per_example)
            ]
        sampling_config = self.generation_config
        self.generation_config = copy.deepcopy(sampling_config)
        self.generation_config.do_sample = False
        for name in ("temperature", "top_p", "top_k", "min_p"):
            setattr(self.generation_config, name, None)
        try:
            _, completion_ids, _, completions, _, _, _, _ = self._generate(prompts)
        finally:
            self.generation_config = sampling_config
        rewards_per_func = GRPOTrainer._calculate_rewards(self, unique, prompts, completions, completion_ids)
        local = rewards_per_func[self._process_slice(len(unique))]
        greedy = (local * self.reward_weights.to(local.device)).nansum(dim=1)
        row_to_unique = torch.tensor([sum(1 for f in firsts if f <= i) - 1 for i in range(len(inputs))])
        self._metrics["train"]["grpo/greedy_reward_mean"].append(greedy.mean().item())
        return self.accelerator.gather(greedy[row_to_unique.to(greedy.device)])

    def _recompute_advantages(
        self,
        mask: torch.Tensor,
        kl_penalty: torch.Tensor | None,
        greedy_rewards: torch.Tensor | None,
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        """Advantages (B, T) from the gathered rewards, for the estimators and filters TRL does not have.

        `kl_penalty` (B, T) is β·KL_t of the local completions (`kl_penalty="reward"`): each completion's reward
        becomes r − Σ_t β·KL_t (for REINFORCE++ the penalty stays per token, as in EasyR1). `keep` (N,) marks the
        groups that online filtering kept: the others are removed before any statistic (group or batch mean and
        standard deviation, REINFORCE++ whitening over `mask`, which already excludes them) and get advantage 0.
        """
        config = self.args
        rewards_per_func = self._rewards_per_func
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        if kl_penalty is not None and config.advantage_estimator != "reinforce_plus_plus":
            rewards = rewards - self.accelerator.gather(kl_penalty.sum(dim=1)).to(rewards.device)
        if keep is not None:
            rewards = rewards.masked_fill(~keep.to(rewards.device), torch.nan)
        group_size = self.num_generations
        process_slice = self._process_slice(len(mask))
        if config.advantage_estimator == "grpo":
            group_ids = torch.arange(len(rewards), device=rewards.device) // group_size
            advantages = compute_advantages(rewards, group_ids, scale=self.scale_rewards)[process_slice]
            advantages = advantages[:, None].expand_as(mask)
        elif config.advantage_estimator == "rloo":
            advantages = torch.nan_to_num(rloo_advantages(rewards, group_size), nan=0.0)[process_slice]
            advantages = advantages[:, None].expand_as(mask)
        elif config.advantage_estimator == "remax":
            advantages = remax_advantages(rewards, greedy_rewards.to(rewards.device))[process_slice]
            advantages = advantages[:, None].expand_as(mask)
        else:  # reinforce_plus_plus: per-token returns, whitened over the local batch as in EasyR1
            token_rewards = outcome_token_rewards(torch.nan_to_num(rewards[process_slice], nan=0.0), mask)
            if kl_penalty is not None:
                token_rewards = token_rewards - kl_penalty
            advantages = reinforce_plus_plus_advantages(token_rewards, mask, config.reinforce_gamma)
        if keep is not None:
            advantages = advantages * keep[process_slice].to(advantages.device)[:, None]
        return advantages

    # Checkpointing: the state kept outside the model, one file per process, written with the RNG states (before
    # `trainer_state.json`) and read back where TRL restores its own controllers.
    def _checkpoint_state(self) -> dict[str, Any]:
        """The JSON-serialisable state outside the model that a resumed run needs (subclasses add theirs)."""
        return {"kl_controller": {"coef": self.kl_controller.coef}}

    def _restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore what `_checkpoint_state` returned."""
        self.kl_controller.coef = state["kl_controller"]["coef"]

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, EXTRA_STATE_NAME.format(process_index=self.accelerator.process_index))
        with open(path, "w") as f:
            json.dump(self._checkpoint_state(), f)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, EXTRA_STATE_NAME.format(process_index=self.accelerator.process_index))
        if not os.path.isfile(path):
            logger.warning(
                "%s has no %s: the KL coefficient (and any state a subclass keeps there) restarts from the "
                "configuration.",
                checkpoint,
                os.path.basename(path),
            )
            return
        with open(path) as f:
            self._restore_checkpoint_state(json.load(f))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load the model weights of a checkpoint to resume from.

        transformers' Trainer (5.24) reads a full-model checkpoint with a plain `load_state_dict`, but `save_pretrained`
        writes the original key layout of the models whose keys transformers renames on load (Qwen2-VL and
        Qwen2.5-VL: `visual.*`, `model.layers.*`), so their weights would silently stay as they are (a "missing keys"
        warning). A checkpoint whose keys are not the model's own is loaded with `from_pretrained`, which renames.
        """
        model = model if model is not None else self.model
        unwrapped = self.accelerator.unwrap_model(model)
        saved_keys = _checkpoint_keys(resume_from_checkpoint)
        if (
            self.is_fsdp_enabled
            or self.is_deepspeed_enabled
            or is_peft_model(unwrapped)
            or saved_keys is None
            or saved_keys <= set(unwrapped.state_dict())
        ):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        dtype = next(unwrapped.parameters()).dtype
        reloaded = type(unwrapped).from_pretrained(resume_from_checkpoint, dtype=dtype, device_map="cpu")
        unwrapped.load_state_dict(reloaded.state_dict())
        del reloaded

    # Model card: TRL's card (written at every checkpoint and by `push_to_hub`), naming the base model by its Hub id
    # also when it was loaded from the Hugging Face cache (TRL leaves out any directory), and written by `save_model`.
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ) -> None:
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        base_model = model_card_name(get_config_model_id(self.model.config))
        card = ModelCard.load(path)
        # TRL's base model: the config's model id unless it is a directory, else None (linked as "[None](...)")
        written = card.data.base_model
        if base_model is None or written != base_model:
            link = (
                f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a local model (no Hub id)"
            )
            card.data.base_model = base_model
            card.text = card.text.replace(f"[{written}](https://huggingface.co/{written})", link)
            card.save(path)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        saved_to = os.path.abspath(output_dir or self.args.output_dir)
        if not _internal_call and saved_to == os.path.abspath(self.args.output_dir):
            name = self.args.hub_model_id.split("/")[-1] if self.args.hub_model_id else os.path.basename(saved_to)
            self.create_model_card(model_name=name)


def _check_train_dataset(dataset: Any, prompts_from_environment: bool) -> None:
    """Reject, at construction, a training dataset that cannot train: empty, or without a `prompt` column."""
    if dataset is None:
        return
    if isinstance(dataset, Dataset) or (not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__")):
        if len(dataset) == 0:
            raise ValueError("train_dataset is empty: GRPO needs at least one prompt to train on.")
    columns = getattr(dataset, "column_names", None)
    if columns is not None and "prompt" not in columns and not prompts_from_environment:
        raise ValueError(
            f"train_dataset has no 'prompt' column (its columns: {list(columns)}); GRPO generates completions of the "
            "'prompt' of each row. Rename the column holding the prompts to 'prompt'."
        )


def _checkpoint_keys(checkpoint: str) -> set[str] | None:
    """Parameter names of a checkpoint's safetensors weights (one file or an index), or None without them."""
    index = os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        with open(index) as f:
            return set(json.load(f)["weight_map"])
    weights = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
    if not os.path.isfile(weights):
        return None
    with safe_open(weights, "pt") as f:
        return set(f.keys())
