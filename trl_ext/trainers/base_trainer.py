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
"""A minimal training loop for trainers whose models are not transformers models (SD3 transformers, SEDD).

`transformers.Trainer` and TRL's base trainer assume a `PreTrainedModel` (`model.config.model_type`, generation,
data collators); RL trainers for diffusion models own their rollout loop instead. [`RLLoopTrainer`] holds what they
share: the accelerator (mixed precision, gradient accumulation, `report_to` trackers), the step loop with a progress
bar, metric logging, and checkpoint save / resume.
"""

import json
import os
import random
from collections.abc import Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import TrainingArguments, set_seed
from transformers.utils import logging


logger = logging.get_logger(__name__)


class RLLoopTrainer:
    """Base class: subclasses implement `training_step() -> dict[str, float]` and `save_model(output_dir)`.

    It also holds the reward plumbing the RL subclasses share: TRL-convention reward functions with weights, where
    `None` marks a sample without reward (NaN here: masked from advantages, counted in the logs, never zeroed).
    """

    _name = "RL"

    def __init__(self, args: TrainingArguments):
        self.args = args
        set_seed(args.seed)  # as transformers' Trainer: model initialisation (e.g. LoRA weights) is reproducible
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision="bf16" if args.bf16 else "fp16" if args.fp16 else "no",
            cpu=args.use_cpu,
            log_with=[r for r in args.report_to if r != "none"] or None,
        )
        self.global_step = 0
        self.log_history: list[dict[str, float]] = []
        self._rng = random.Random(args.seed)
        self._generator = torch.Generator(device="cpu").manual_seed(args.seed + self.accelerator.process_index)

    def training_step(self) -> dict[str, float]:
        raise NotImplementedError

    def _set_reward_funcs(self, reward_funcs: Callable | list[Callable], reward_weights: list[float] | None) -> None:
        self.reward_funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        self.reward_func_names = [getattr(f, "__name__", type(f).__name__) for f in self.reward_funcs]
        weights = reward_weights or [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(weights)} reward_weights for {len(self.reward_funcs)} reward functions.")
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)

    def _sample_prompts(self, dataset, num_generations: int) -> tuple[list[str], dict[str, list]]:
        """Draw `per_device_train_batch_size / num_generations` rows, each repeated `num_generations` times (a group)."""
        num_prompts = self.args.per_device_train_batch_size // num_generations
        examples = dataset.select([self._rng.randrange(len(dataset)) for _ in range(num_prompts)])

        def repeat(values: list) -> list:
            return [value for value in values for _ in range(num_generations)]

        columns = {name: repeat(examples[name]) for name in examples.column_names if name != "prompt"}
        return repeat(examples["prompt"]), columns

    def _score(self, prompts: list, columns: dict[str, list], **outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Call every reward function as `fn(prompts=..., **outputs, **columns)`.

        Returns the (N, F) rewards per function (NaN where a function returned None), the weighted sum (N,) (NaN where
        every function returned None) and that "unscored" mask (N,).
        """
        rewards_per_func = torch.full((len(prompts), len(self.reward_funcs)), float("nan"))
        for j, func in enumerate(self.reward_funcs):
            values = func(prompts=prompts, **outputs, **columns)
            if len(values) != len(prompts):
                raise ValueError(f"Reward function {self.reward_func_names[j]} returned {len(values)} values for {len(prompts)} samples.")
            rewards_per_func[:, j] = torch.tensor([float("nan") if v is None else float(v) for v in values])
        rewards = (rewards_per_func * self.reward_weights).nansum(dim=1)
        unscored = torch.isnan(rewards_per_func).all(dim=1)
        rewards[unscored] = float("nan")
        return rewards_per_func, rewards, unscored

    def _reward_logs(self, rewards_per_func: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """Mean and std of the total reward and of each function, and the count of masked (None) samples."""

        def stats(values: torch.Tensor) -> tuple[float, float]:
            values = values[~torch.isnan(values)]
            return (values.mean().item() if values.numel() else float("nan"), values.std().item() if values.numel() > 1 else 0.0)

        logs = dict(zip(("reward", "reward_std"), stats(rewards)))
        for j, name in enumerate(self.reward_func_names):
            logs[f"rewards/{name}/mean"], logs[f"rewards/{name}/std"] = stats(rewards_per_func[:, j])
            logs[f"rewards/{name}/masked_count"] = int(torch.isnan(rewards_per_func[:, j]).sum())
        logs["unscored_samples"] = int(torch.isnan(rewards).sum())
        # reward functions that expose the parts of their last reward (e.g. FlowRTPOReward) have each part logged
        for func, name in zip(self.reward_funcs, self.reward_func_names):
            for part, values in (getattr(func, "last_components", None) or {}).items():
                if isinstance(values, (int, float)):
                    logs[f"rewards/{name}/{part}"] = values
                elif values and all(isinstance(v, (int, float)) for v in values):
                    logs[f"rewards/{name}/{part}"] = stats(torch.tensor(values, dtype=torch.float64))[0]
        return logs

    def _write_model_card(self, output_dir: str, template: str, **fields) -> None:
        """Fill `template` (fields plus `model_name`, `rewards`, `steps`, `config`) and write `output_dir/README.md`."""
        config = {k: v for k, v in self.args.to_dict().items() if k in type(self.args).__dataclass_fields__}
        config = {k: config[k] for k in sorted(config) if not k.startswith(("hub_", "push_to_hub"))}
        card = template.format(
            model_name=self.args.hub_model_id or os.path.basename(os.path.abspath(output_dir)),
            rewards=", ".join(getattr(self, "reward_func_names", [])), steps=self.global_step,
            config=json.dumps(config, indent=2, default=str), **fields,
        )  # fmt: skip
        with open(os.path.join(output_dir, "README.md"), "w") as f:
            f.write(card)

    def train(self, resume_from_checkpoint: str | None = None) -> list[dict[str, float]]:
        """Run `max_steps` training steps, resuming from a `checkpoint-*` directory written by this trainer."""
        if self.accelerator.is_main_process and self.accelerator.log_with and self.global_step == 0:
            self.accelerator.init_trackers(self._name.lower().replace(" ", "_"), config=self.args.to_dict())
        if resume_from_checkpoint is not None:
            self._load_checkpoint(resume_from_checkpoint)
        args = self.args
        for _ in tqdm(range(self.global_step, args.max_steps), desc=self._name, disable=args.disable_tqdm):
            logs = self.training_step()
            self.global_step += 1
            logs["step"] = self.global_step
            self.log_history.append(logs)
            if self.global_step % max(1, int(args.logging_steps)) == 0:
                self.log(logs)
            if args.save_strategy != "no" and args.save_steps and self.global_step % int(args.save_steps) == 0:
                self._save_checkpoint()
            self._on_step_end()
        self.accelerator.end_training()
        return self.log_history

    def _on_step_end(self) -> None:
        """Called after every training step (after logging and checkpointing); subclasses may override."""

    def log(self, logs: dict[str, float]) -> None:
        """Send metrics to the trackers of `report_to` and to the logger."""
        self.accelerator.log(logs, step=self.global_step)
        logger.info(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in logs.items()}))

    def _save_checkpoint(self) -> str:
        directory = os.path.join(self.args.output_dir, f"checkpoint-{self.global_step}")
        self.accelerator.save_state(directory)
        if self.accelerator.is_main_process:
            state = {"global_step": self.global_step, "rng": self._rng.getstate(), "generator": self._generator.get_state().tolist()}
            with open(os.path.join(directory, "trainer_state.json"), "w") as f:
                json.dump(state, f)
        return directory

    def _load_checkpoint(self, directory: str) -> None:
        self.accelerator.load_state(directory)
        with open(os.path.join(directory, "trainer_state.json")) as f:
            state = json.load(f)
        self.global_step = state["global_step"]
        self._rng.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["rng"]))
        self._generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))

    def push_to_hub(self, commit_message: str | None = None) -> str:
        """Save the model and its card to `output_dir` and upload the folder to `hub_model_id`."""
        from huggingface_hub import create_repo, upload_folder

        if not self.args.hub_model_id:
            raise ValueError("push_to_hub needs args.hub_model_id.")
        self.save_model()
        create_repo(self.args.hub_model_id, exist_ok=True, token=self.args.hub_token)
        return upload_folder(
            repo_id=self.args.hub_model_id, folder_path=self.args.output_dir, token=self.args.hub_token,
            commit_message=commit_message or f"{self._name} model", ignore_patterns=["checkpoint-*", "checkpoint-*/*"],
        )  # fmt: skip

    def save_model(self, output_dir: str | None = None) -> None:
        raise NotImplementedError
