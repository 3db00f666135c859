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
"""The base of trainers that own their rollout loop (SEDD SFT / PPO, Flow-GRPO / Flow-RTPO, token-level PPO).

`transformers.Trainer` and TRL's trainers assume a `PreTrainedModel` fed by a dataloader; RL trainers for diffusion
models sample their own batches instead. [`RLLoopTrainer`] gives them the contract of `transformers.Trainer`, built
from its pieces: the optimizer of `optim` (`Trainer.get_optimizer_cls_and_kwargs`), `transformers.get_scheduler`,
`TrainerState` with its `log_history` in `trainer_state.json`, `rotate_checkpoints`, the callback handler and
`DefaultFlowCallback`, and accelerate for devices, mixed precision, gradient accumulation, `report_to` trackers and
distributed training.

What it guarantees (the loop contract, which `tests/test_loop_contract.py` checks):

- every `TrainingArguments` field is honoured or, set to a value the loop cannot honour, rejected at construction;
- `max_steps`, else `num_train_epochs` over the training rows (never 0 steps silently);
- batch sizes as TRL's last PPOTrainer (and transformers): a training step uses `per_device_train_batch_size ·
  gradient_accumulation_steps` rows per process, `num_mini_batches` optimizer updates split them (if the trainer has
  them), and each update accumulates micro-batches of `per_device_train_batch_size` rows ([`micro_batches`]); a step
  ends on an optimizer step, so every micro-batch's gradient is applied (checked after every step);
- each process draws its own rows: the rows of step `s` on rank `r` are a fixed function of (seed, s, r), so a resumed
  run sees the same rows as an uninterrupted one;
- metrics are gathered over the processes before they are logged;
- checkpoints are written to `tmp-checkpoint-N` and renamed to `checkpoint-N` once complete (a crash while saving
  leaves the previous checkpoint usable), hold every process's RNG streams and the state of stateful rewards, and a
  resume reproduces the uninterrupted run;
- reward functions are checked: a wrong return type or length, or a non-finite reward, is an error naming the
  function; `None` masks a sample, and a step in which no process has a scored sample makes no update (counted);
- `train()` never destroys the process group, so several trainers can run in one script;
- `callbacks` are `transformers.TrainerCallback`s, called at the events of `transformers.Trainer`'s loop; when to log
  and to save is decided by transformers' `DefaultFlowCallback`, so a callback can also stop training, or ask for a
  log or a checkpoint, through `control`.
"""

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    gather_object,
)
from tqdm.auto import tqdm
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    get_scheduler,
    set_seed,
)
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback
from transformers.trainer_utils import (
    TrainOutput,
    enable_full_determinism,
)
from transformers.utils import logging

from ..rl.scoring import RewardFunc, RewardScorer
from .checkpointing import TRAINER_STATE_NAME, CheckpointMixin, last_complete_checkpoint
from .hub_push import HubPushMixin


logger = logging.get_logger(__name__)

# TrainingArguments fields the loop honours, itself or through accelerate / `TrainingArguments.__post_init__`.
HONOURED_FIELDS = frozenset(
    """
    output_dir per_device_train_batch_size num_train_epochs max_steps learning_rate lr_scheduler_type
    lr_scheduler_kwargs warmup_steps optim optim_args weight_decay adam_beta1 adam_beta2 adam_epsilon
    gradient_accumulation_steps max_grad_norm bf16 fp16 tf32 gradient_checkpointing gradient_checkpointing_kwargs
    activation_checkpointing activation_checkpointing_kwargs
    logging_strategy logging_steps logging_first_step log_level log_level_replica log_on_each_node disable_tqdm
    report_to run_name project trackio_space_id trackio_bucket_id trackio_static_space_id save_strategy save_steps
    save_total_limit push_to_hub hub_strategy hub_always_push hub_token hub_private_repo hub_model_id hub_revision
    seed data_seed
    full_determinism use_cpu resume_from_checkpoint ddp_find_unused_parameters ddp_bucket_cap_mb
    ddp_broadcast_buffers ddp_static_graph ddp_backend ddp_timeout local_rank restore_callback_states_from_checkpoint
    """.split()
)
# Fields that mean nothing to a loop without evaluation or dataloader: any value is accepted.
INERT_FIELDS = frozenset(
    """
    do_train do_eval do_predict per_device_eval_batch_size eval_steps eval_delay prediction_loss_only
    eval_do_concat_batches eval_use_gather_object eval_accumulation_steps include_for_metrics batch_eval_metrics
    bf16_full_eval fp16_full_eval dataloader_pin_memory dataloader_drop_last dataloader_in_order
    remove_unused_columns label_names length_column_name train_sampling_strategy greater_is_better
    logging_nan_inf_filter skip_memory_metrics debug ignore_data_skip
    average_tokens_across_devices use_cache accelerator_config
    """.split()
)
ACCELERATE_TRACKERS = (
    "all",
    "aim",
    "tensorboard",
    "wandb",
    "trackio",
    "comet_ml",
    "mlflow",
    "clearml",
    "dvclive",
    "swanlab",
)


def check_training_arguments(args: TrainingArguments) -> None:
    """Raise a `ValueError` listing every `TrainingArguments` field set to a value the loop cannot honour."""
    ignored = []
    for f in dataclasses.fields(TrainingArguments):
        if not f.init or f.name in HONOURED_FIELDS or f.name in INERT_FIELDS:
            continue
        value = getattr(args, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        # (a default of None may become False / [] in __post_init__; building a default TrainingArguments instead
        # would reset accelerate's distributed state)
        if value != default and not (default is None and not value):
            ignored.append(f"{f.name}={value!r}")
    if ignored:
        raise ValueError(
            f"{type(args).__name__} sets fields this trainer cannot honour: {', '.join(ignored)}. It has no evaluation "
            "loop and no dataloader; launch distributed set-ups (DeepSpeed, FSDP) with `accelerate launch "
            "--config_file accelerate_configs/<config>.yaml` instead of the `deepspeed` / `fsdp` fields."
        )
    if args.save_strategy not in ("no", "steps", "epoch"):
        raise ValueError(
            f"save_strategy={args.save_strategy!r} needs an evaluation loop; use 'steps', 'epoch' or 'no'."
        )
    unknown = [name for name in args.report_to if name not in ACCELERATE_TRACKERS and name != "none"]
    if unknown:
        raise ValueError(
            f"report_to {unknown} is not an accelerate tracker; supported: {', '.join(ACCELERATE_TRACKERS)}."
        )


class RLLoopTrainer(CheckpointMixin, HubPushMixin):
    """Base class of trainers that own their loop.

    A subclass calls `super().__init__(args, callbacks)`, then [`_setup_data`] with the number of training rows and the
    rows each process uses per step, then [`_prepare`] with its model and trainable parameters; it implements
    `training_step() -> dict[str, float]` (one rollout batch and its updates, metrics of this process) and
    `save_model(output_dir)`. Updates go through [`optimizer_update`].
    """

    _name = "RL"
    # True when the losses call submodules of the unwrapped model (the SEDD likelihood's row-chunked head): DDP only
    # reduces the gradients of a backward that follows its own forward, so the loop averages them itself, and FSDP
    # (whose root module gathers the sharded weights) cannot run such a model
    _forward_bypasses_wrapper = False

    def __init__(self, args: TrainingArguments, callbacks: list[TrainerCallback] | None = None):
        check_training_arguments(args)
        self.args = args
        self.control = TrainerControl()
        self.callback_handler = CallbackHandler([DefaultFlowCallback, *(callbacks or [])], None, None, None, None)
        # as transformers' Trainer: model initialisation (e.g. LoRA weights) is reproducible
        if args.full_determinism:
            enable_full_determinism(args.seed)
        else:
            set_seed(args.seed)
        trackers = [name for name in args.report_to if name != "none"]
        logging_dir = os.environ.get("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs")
        ddp_kwargs = {
            name: getattr(args, f"ddp_{name}")
            for name in ("find_unused_parameters", "bucket_cap_mb", "broadcast_buffers", "static_graph")
            if getattr(args, f"ddp_{name}") is not None
        }
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision="bf16" if args.bf16 else "fp16" if args.fp16 else "no",
            cpu=args.use_cpu,
            log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
            kwargs_handlers=[
                DistributedDataParallelKwargs(**ddp_kwargs),
                InitProcessGroupKwargs(backend=args.ddp_backend, timeout=timedelta(seconds=args.ddp_timeout)),
            ],
        )
        self.state = TrainerState(
            is_local_process_zero=self.accelerator.is_local_main_process,
            is_world_process_zero=self.accelerator.is_main_process,
        )
        self.skipped_steps = 0
        # each process has its own noise stream; its state is checkpointed per process
        self._generator = torch.Generator(device="cpu").manual_seed(args.seed + self.accelerator.process_index)
        self._permutations: dict[int, list[int]] = {}
        if args.push_to_hub:  # as Trainer: the repository is created (offline mode is an error) before training
            self.init_hf_repo()

    @property
    def global_step(self) -> int:
        """Training steps (rollout batches) done: `self.state.global_step`."""
        return self.state.global_step

    def add_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        """Add a callback (a class is instantiated), as `transformers.Trainer.add_callback`."""
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> TrainerCallback | None:
        """Remove a callback and return it, as `transformers.Trainer.pop_callback`."""
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        """Remove a callback, as `transformers.Trainer.remove_callback`."""
        self.callback_handler.remove_callback(callback)

    def training_step(self) -> dict[str, float]:
        raise NotImplementedError

    def save_model(self, output_dir: str | None = None) -> None:
        raise NotImplementedError

    # Data

    def _setup_data(self, num_rows: int, rows_per_step: int) -> None:
        """Declare the training rows (prompts, text blocks) and how many each process uses per step; fixes the
        number of training steps: `max_steps`, else `num_train_epochs` passes over the rows by all processes."""
        if num_rows == 0:
            raise ValueError("The training data is empty.")
        self.num_rows, self.rows_per_step = num_rows, rows_per_step
        rows_per_global_step = rows_per_step * self.accelerator.num_processes
        if self.args.max_steps > 0:
            self.max_steps = self.args.max_steps
        else:
            self.max_steps = math.ceil(self.args.num_train_epochs * math.ceil(num_rows / rows_per_global_step))
            if self.max_steps < 1:
                raise ValueError(
                    f"max_steps={self.args.max_steps} and num_train_epochs={self.args.num_train_epochs} train 0 steps: "
                    "set max_steps > 0 or num_train_epochs > 0."
                )
        self.steps_per_epoch = num_rows / rows_per_global_step

    def rows_for_step(self, step: int) -> list[int]:
        """The training rows of this process at `step`: consecutive slices, one per process, of a stream of shuffled
        passes over the rows (pass e is a permutation seeded by `data_seed` (else `seed`) + e)."""
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        start = (step * self.accelerator.num_processes + self.accelerator.process_index) * self.rows_per_step
        rows = []
        for position in range(start, start + self.rows_per_step):
            epoch = position // self.num_rows
            if epoch not in self._permutations:
                self._permutations = {
                    epoch: torch.randperm(
                        self.num_rows, generator=torch.Generator().manual_seed(seed + epoch)
                    ).tolist()
                }
            rows.append(self._permutations[epoch][position % self.num_rows])
        return rows

    def _sample_prompts(self, dataset, group_size: int) -> tuple[list[str], dict[str, list], torch.Tensor]:
        """This step's prompts, each repeated `group_size` times (a group), the other columns repeated alike, and the
        group id of every sample (N,)."""
        examples = dataset.select(self.rows_for_step(self.state.global_step))

        def repeat(values: list) -> list:
            return [value for value in values for _ in range(group_size)]

        columns = {name: repeat(examples[name]) for name in examples.column_names if name != "prompt"}
        group_ids = torch.arange(len(examples)).repeat_interleave(group_size)
        return repeat(examples["prompt"]), columns, group_ids

    # Optimisation

    def _prepare(self, model: torch.nn.Module, params: list[torch.nn.Parameter] | list[dict]) -> None:
        """Gradient checkpointing, the optimizer of `optim` (over `params`: parameters, or parameter groups as in
        [`create_optimizer`]), the scheduler of `lr_scheduler_type`, and `accelerator.prepare`; sets `self.model`,
        `self.optimizer`, `self.lr_scheduler`, `self.trainable_params`."""
        if self._forward_bypasses_wrapper and self.accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError(f"{type(self).__name__} does not support FSDP; launch it with DDP or DeepSpeed.")
        if self.args.gradient_checkpointing or self.args.activation_checkpointing:  # (transformers 5 aliases)
            kwargs = self.args.gradient_checkpointing_kwargs or self.args.activation_checkpointing_kwargs or {}
            if hasattr(model, "gradient_checkpointing_enable"):  # transformers / peft
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            elif hasattr(model, "enable_gradient_checkpointing") and not kwargs:  # diffusers
                model.enable_gradient_checkpointing()
            else:
                raise ValueError(f"gradient_checkpointing is not supported by {type(model).__name__} here.")
        optimizer = self.create_optimizer(params)
        self.lr_scheduler = self.create_scheduler(optimizer)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # FSDP2 replaces the parameters by sharded ones (DDP and DeepSpeed keep them)
        self.trainable_params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # not prepared: accelerate's scheduler wrapper steps it once per process and per optimizer step
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        handler = self.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = model, self.optimizer, self.lr_scheduler
        handler.processing_class = getattr(self, "processing_class", None)
        self.control = handler.on_init_end(self.args, self.state, self.control)

    def create_optimizer(
        self, params: list[torch.nn.Parameter] | list[dict], learning_rate: float | None = None
    ) -> torch.optim.Optimizer:
        """The optimizer `optim` selects (with its betas, epsilon and `optim_args`, as `transformers.Trainer`), with
        `weight_decay` on matrices and none on biases and norm weights.

        `params` is a list of parameters, or of parameter groups as torch optimizers take them (`{"params": [...],
        "lr": ...}`: e.g. a policy and a value model with their own learning rates); each group keeps its options and
        is split by weight decay the same way. The scheduler scales every group's learning rate alike.
        """
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args)
        if learning_rate is not None:
            kwargs["lr"] = learning_rate
        params = list(params)
        given = params if params and isinstance(params[0], dict) else [{"params": params}]
        groups = []
        for group in given:
            options = {k: v for k, v in group.items() if k != "params"}
            members = list(group["params"])
            groups.append(
                {
                    "weight_decay": self.args.weight_decay,
                    **options,
                    "params": [p for p in members if p.ndim >= 2],
                }
            )
            groups.append({**options, "params": [p for p in members if p.ndim < 2], "weight_decay": 0.0})
        return optimizer_cls([group for group in groups if group["params"]], **kwargs)

    def create_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """`lr_scheduler_type` with its warm-up over `max_steps` training steps; stepped once per training step (as
        TRL's PPOTrainer, whose scheduler counts rollout batches)."""
        return get_scheduler(
            self.args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=self.args.get_warmup_steps(self.max_steps),
            num_training_steps=self.max_steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs or {},
        )

    def micro_batches(
        self, indices: torch.Tensor, weights: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Split the samples of one optimizer update into micro-batches of `per_device_train_batch_size` (the last may
        be smaller), as many as the accelerator accumulates, each with its samples' loss weights.

        A sample's weight is its `weights` entry (default 1; 0 for an unscored sample) over their sum on the whole
        update, times the number of micro-batches, by which `accelerator.backward` divides each micro-batch's loss: the
        accumulated gradient of the micro-batches' `(loss * weight).sum()` is the gradient of the update's weighted
        mean loss whatever the split.
        """
        chunks = indices.split(self.args.per_device_train_batch_size)
        if len(chunks) != self.accelerator.gradient_accumulation_steps:
            raise ValueError(
                f"An optimizer update of {len(indices)} samples makes {len(chunks)} micro-batches of "
                f"per_device_train_batch_size={self.args.per_device_train_batch_size}, but the accelerator accumulates "
                f"{self.accelerator.gradient_accumulation_steps}."
            )
        weights = torch.ones(len(indices), device=self.accelerator.device) if weights is None else weights[indices]
        weights = weights * (len(chunks) / weights.sum().clamp(min=1.0))
        return list(zip(chunks, weights.split(self.args.per_device_train_batch_size)))

    @contextlib.contextmanager
    def optimizer_update(self, metrics: dict[str, list[float]]) -> Iterator[None]:
        """One micro-batch: the body runs the forwards and `accelerator.backward`; after the last micro-batch of an
        optimizer update (see [`micro_batches`]) the gradients are averaged over the processes where DDP did not see
        the forward (`_forward_bypasses_wrapper`), clipped to `max_grad_norm` (the norm is logged; DeepSpeed reports
        none) and the optimizer steps.
        """
        with self.accelerator.accumulate(self.model):
            yield
            if self.accelerator.sync_gradients:
                if self._forward_bypasses_wrapper and isinstance(
                    self.model, torch.nn.parallel.DistributedDataParallel
                ):
                    for param in self.trainable_params:
                        if param.grad is not None:
                            param.grad = self.accelerator.reduce(param.grad, reduction="mean")
                if self.args.max_grad_norm:
                    norm = self.accelerator.clip_grad_norm_(self.trainable_params, self.args.max_grad_norm)
                    if norm is not None:
                        metrics["grad_norm"].append(float(norm))
            self.optimizer.step()
            self.optimizer.zero_grad()

    def any_process_scored(self, unscored: torch.Tensor) -> bool:
        """Whether some process has a scored sample (every process must take the same decision to update)."""
        scored = torch.tensor([int((~unscored).sum())], device=self.accelerator.device)
        return bool(self.accelerator.gather(scored).sum() > 0)

    # Rewards

    def _set_reward_funcs(
        self, reward_funcs: RewardFunc | list[RewardFunc], reward_weights: list[float] | None
    ) -> None:
        self.scorer = RewardScorer(reward_funcs, reward_weights)
        self.reward_funcs, self.reward_func_names = self.scorer.funcs, self.scorer.names

    # Logging

    def _gather_logs(self, logs: dict[str, float]) -> dict[str, float]:
        """Combine the metrics of every process: counts (`*_count`) are summed, the others averaged (NaN-aware)."""
        if self.accelerator.num_processes == 1:
            return logs
        every = gather_object([logs])
        combined = {}
        for key in sorted({k for process_logs in every for k in process_logs}):
            values = torch.tensor([float(p[key]) for p in every if key in p], dtype=torch.float64)
            if key.endswith("_count"):
                combined[key] = int(values.sum())
            else:
                finite = values[~torch.isnan(values)]
                combined[key] = finite.mean().item() if finite.numel() else float("nan")
        return combined

    def log(self, logs: dict[str, float]) -> None:
        """Record metrics in `state.log_history`, send them to the `report_to` trackers and the logger, and call the
        callbacks' `on_log`."""
        entry = {**logs, "epoch": self.state.epoch, "step": self.state.global_step}
        self.state.log_history.append(entry)
        self.accelerator.log(logs, step=self.state.global_step)
        logger.info(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in entry.items()}))
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs=logs)

    def _interval(self, value: float) -> int:
        """`logging_steps` / `save_steps` as a number of steps (a value below 1 is a fraction of `max_steps`)."""
        return max(1, int(value) if value >= 1 else math.ceil(self.max_steps * value))

    def _completes_epoch(self, step: int) -> bool:
        """Whether step `step` (1-based) is the one that completes a pass over the training rows."""
        return math.floor(step / self.steps_per_epoch) > math.floor((step - 1) / self.steps_per_epoch)

    # The loop

    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
        """Train for `max_steps` (or `num_train_epochs`) steps.

        Args:
            resume_from_checkpoint (`str` or `bool`, *optional*):
                A `checkpoint-N` directory written by this trainer, or `True` (also the string `"true"`, as a
                command line gives it) for the latest complete one in `output_dir`. Defaults to
                `args.resume_from_checkpoint`.
        """
        args = self.args
        if resume_from_checkpoint is None:
            resume_from_checkpoint = args.resume_from_checkpoint
        if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() == "true":
            resume_from_checkpoint = True  # as a command line gives it
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True but {args.output_dir} has no complete checkpoint.")
        self.control = TrainerControl()
        if resume_from_checkpoint:
            self._load_checkpoint(resume_from_checkpoint)  # (restores `control` with the callbacks, when asked)
            self.control.should_training_stop = False  # a checkpoint of a run's last step says "stop"
        self.state.max_steps, self.state.num_train_epochs = (
            self.max_steps,
            math.ceil(self.max_steps / self.steps_per_epoch),
        )
        self.state.logging_steps, self.state.save_steps = (
            self._interval(args.logging_steps),
            self._interval(args.save_steps),
        )
        self.state.train_batch_size = args.per_device_train_batch_size
        if self.accelerator.log_with and not self.accelerator.trackers:
            config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in args.to_dict().items()}
            self.accelerator.init_trackers(args.run_name or self._name.lower().replace(" ", "_"), config=config)
        start, first_step = time.time(), self.state.global_step
        progress = tqdm(
            total=self.max_steps,
            initial=first_step,
            desc=self._name,
            disable=args.disable_tqdm or not self.accelerator.is_local_main_process,
        )
        handler = self.callback_handler
        self.control = handler.on_train_begin(args, self.state, self.control)
        while self.state.global_step < self.max_steps and not self.control.should_training_stop:
            if self.state.global_step == 0 or self._completes_epoch(self.state.global_step):
                self.control = handler.on_epoch_begin(args, self.state, self.control)
            self.control = handler.on_step_begin(args, self.state, self.control)
            learning_rate = self.lr_scheduler.get_last_lr()[0]
            logs = self.training_step()
            if self.accelerator.step % self.accelerator.gradient_accumulation_steps:  # (its count of micro-batches)
                raise RuntimeError(
                    f"{type(self).__name__}.training_step ended within an optimizer update: each update must run the "
                    f"{self.accelerator.gradient_accumulation_steps} micro-batches the accelerator accumulates, so "
                    "that no gradient is left unapplied."
                )
            with warnings.catch_warnings():  # a step without an update (nothing scored) still advances the schedule
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                self.lr_scheduler.step()
            self.state.global_step += 1
            self.state.epoch = self.state.global_step / self.steps_per_epoch
            logs = self._gather_logs({**logs, "learning_rate": learning_rate})
            logs["skipped_steps_count"] = self.skipped_steps
            self.control = handler.on_step_end(args, self.state, self.control)
            if self._completes_epoch(self.state.global_step):
                self.control = handler.on_epoch_end(args, self.state, self.control)
            if self.control.should_log or self.control.should_training_stop:  # the last step is always logged
                self.control.should_log = False
                self.log(logs)
            if self.control.should_save:
                self.control.should_save = False
                self._save_checkpoint()
                self.control = handler.on_save(args, self.state, self.control)
            self._on_step_end()
            progress.update(1)
        progress.close()
        if self.accelerator.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)
            self.state.save_to_json(os.path.join(args.output_dir, TRAINER_STATE_NAME))
        self.control = handler.on_train_end(args, self.state, self.control)
        self._finish_current_push()
        for tracker in self.accelerator.trackers:  # not accelerator.end_training(): it destroys the process group
            tracker.finish()
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        runtime = time.time() - start
        metrics = {
            "train_runtime": runtime,
            "train_steps_per_second": (self.state.global_step - first_step) / max(runtime, 1e-9),
        }
        return TrainOutput(self.state.global_step, sum(losses) / len(losses) if losses else float("nan"), metrics)

    def _on_step_end(self) -> None:
        """Called after every training step (after logging and checkpointing); subclasses may override."""

    # Outputs

    @property
    def library_class_name(self) -> str:
        """The name of the first `trl_ext` class of this trainer's type: what a model card says trained the model (a
        user's subclass is not ours)."""
        return next(c for c in type(self).__mro__ if c.__module__.startswith("trl_ext.")).__name__

    def _write_model_card(
        self,
        output_dir: str,
        base_model: str | None,
        summary: str,
        usage: str,
        tags: list[str],
        library_name: str = "trl_ext",
    ) -> None:
        """Fill `trl_ext/templates/model_card.md` and write `output_dir/README.md`.

        Args:
            base_model: The base model's Hub id (see [`~trl_ext.hub.model_card_name`]); `None` when it has none (a
                local directory, a model built in memory): the card then has no `base_model` metadata and its usage
                names `"<the base model's Hub id or local directory>"`, for the user to replace.
            summary: What the model is and how it was trained (Markdown). `usage`: Python code loading it (the
                template puts it in a ```python block), where `{model_name}` and `{base_model}` are filled in.
                `tags`: tags besides `trl_ext`.
        """
        from importlib.resources import files

        model_name = self.args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
        config = {k: v for k, v in self.args.to_dict().items() if k in type(self.args).__dataclass_fields__}
        config = {k: config[k] for k in sorted(config) if not k.startswith(("hub_", "push_to_hub"))}
        link = f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model else "a local model (no Hub id)"
        details = [f"- Base model: {link}"]
        if getattr(self, "reward_func_names", None):
            details.append(f"- Reward functions: {', '.join(self.reward_func_names)}")
        details.append(f"- Steps trained: {self.state.global_step}")
        card = (
            files("trl_ext")
            .joinpath("templates", "model_card.md")
            .read_text()
            .format(
                library_name=library_name,
                base_model_metadata=f"base_model: {base_model}\n" if base_model else "",
                tags="\n".join(f"- {tag}" for tag in ["trl_ext", *tags]),
                model_name=model_name,
                summary=summary,
                details="\n".join(details),
                usage=usage.format(
                    model_name=model_name, base_model=base_model or "<the base model's Hub id or local directory>"
                ),
                config=json.dumps(config, indent=2, default=str),
            )
        )
        with open(os.path.join(output_dir, "README.md"), "w") as f:
            f.write(card)
