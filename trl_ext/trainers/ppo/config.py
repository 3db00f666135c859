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
"""[`PPOConfig`]: the configuration of the token-level [`PPOTrainer`], in the vocabulary of TRL's last PPOConfig, and
[`PPOBatchSizes`], the batch sizes the trainer derives from it as TRL's last PPOTrainer did."""

import math
import os
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from ..validation import check_literal_fields, check_ranges, default_bf16


_DERIVED_SIZES = (
    "num_total_batches",
    "micro_batch_size",
    "local_batch_size",
    "batch_size",
    "local_mini_batch_size",
    "mini_batch_size",
)
"""Sizes TRL's last PPOTrainer wrote on its config; ours derives them into `trainer.batch_sizes` ([`PPOBatchSizes`])."""


@dataclass
class PPOConfig(TrainingArguments):
    r"""
    Configuration class for [`PPOTrainer`]: token-level PPO with a value model and GAE (Ouyang et al. 2022; the
    N+ implementation details of RLHF with PPO, Huang et al. 2024).

    Field names and defaults are those of TRL's last `PPOConfig` (trl ≤ 0.29, `trl.experimental.ppo`), so that a TRL
    PPO script ports by changing its import; the fields after "trl_ext additions" are new. Batch sizes are those of
    TRL's last PPOTrainer (see [`PPOBatchSizes`]): a rollout batch has `local_batch_size =
    per_device_train_batch_size · gradient_accumulation_steps` prompts per process, split into `num_mini_batches`
    mini-batches of `local_batch_size / num_mini_batches` prompts, each run in micro-batches of at most
    `per_device_train_batch_size`. The optimizer steps once per mini-batch (`num_ppo_epochs · num_mini_batches` times
    per rollout batch; TRL's stepped once every `gradient_accumulation_steps` micro-batches, i.e. once per epoch).

    Parameters:
        > Rollout

        response_length (`int`, *optional*, defaults to `53`):
            Maximum number of generated tokens.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature; the log-probabilities of rollout and training both divide the logits by it.
        stop_token (`Literal["eos"]`, *optional*):
            `"eos"` (or `None`): the tokenizer's EOS ends a response. Mutually exclusive with `stop_token_id`.
        stop_token_id (`int`, *optional*):
            The token that ends a response, when not the EOS.
        missing_eos_penalty (`float`, *optional*):
            Subtracted from the score of responses without the stop token (must be >= 0).
        local_rollout_forward_batch_size (`int`, *optional*, defaults to `64`):
            Rows per no-grad forward (old log-probabilities, reference, values) in the rollout phase.
        num_sample_generations (`int`, *optional*, defaults to `10`):
            Times during training that sample completions are logged as a table (0: never).
        total_episodes (`int`, *optional*):
            Prompts to train on over all processes; sets the number of rollout batches when `max_steps` is not set.
        dataset_num_proc (`int`, *optional*):
            Processes that tokenise the datasets' `prompt` column once, when the trainer is built (`num_proc` of
            `datasets.Dataset.map`; `None`: this process).

        > Objective

        num_ppo_epochs (`int`, *optional*, defaults to `4`):
            Passes over each rollout batch.
        num_mini_batches (`int`, *optional*, defaults to `1`):
            Mini-batches (optimizer steps) per pass; divides `per_device_train_batch_size ·
            gradient_accumulation_steps`.
        kl_coef (`float`, *optional*, defaults to `0.05`):
            β of the per-token reward −β·KL (the initial value with `kl_controller="adaptive"`).
        kl_estimator (`Literal["k1", "k3"]`, *optional*, defaults to `"k1"`):
            KL estimator of the per-token penalty: k1 = log π − log π_ref, k3 = e^d − 1 − d with d = log π_ref − log π.
        cliprange (`float`, *optional*, defaults to `0.2`):
            ε of the clipped surrogate.
        vf_coef (`float`, *optional*, defaults to `0.1`):
            Coefficient of the value loss.
        cliprange_value (`float`, *optional*, defaults to `0.2`):
            ε_v of the clipped value loss.
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount factor.
        lam (`float`, *optional*, defaults to `0.95`):
            GAE λ.
        whiten_rewards (`bool`, *optional*, defaults to `False`):
            Whiten the per-token rewards (mean kept) before GAE.

        > Models

        model_adapter_name (`str`, *optional*), ref_adapter_name (`str`, *optional*):
            With a PEFT policy of several adapters: the trained one, and the one that is the reference (default:
            the adapter disabled).
        ds3_gather_for_generation (`bool`, *optional*, defaults to `True`):
            DeepSpeed ZeRO-3: gather the policy's parameters for generation.
        sft_model_path (`str`), reward_model_path (`str`), exp_name (`str`):
            Kept for TRL scripts, which read them; the trainer does not.

        TRL's derived sizes (`num_total_batches`, `micro_batch_size`, `local_batch_size`, `batch_size`,
        `local_mini_batch_size`, `mini_batch_size`), which its trainer wrote on the config, are not fields: the trainer
        derives them into `trainer.batch_sizes` ([`PPOBatchSizes`]) and `trainer.max_steps`, and reading one here
        raises an error that says so. `world_size` is `TrainingArguments.world_size`, the number of processes.

        > trl_ext additions

        value_learning_rate (`float`, *optional*):
            Learning rate of the value model; defaults to `learning_rate` (OpenRLHF uses about 9× the actor's).
        value_model_init (`Literal["policy", "reward_model"]`, *optional*, defaults to `"policy"`):
            Without a `value_model`: a value head on a copy of the policy (the SFT model) or of the reward model.
        kl_controller (`Literal["fixed", "adaptive"]`, *optional*, defaults to `"fixed"`):
            Fixed β, or the adaptive controller of Ziegler et al. (2019) on the per-token mean KL.
        kl_target (`float`, *optional*, defaults to `0.05`), kl_horizon (`int`, *optional*, defaults to `10000`):
            Target per-token KL and horizon of the adaptive controller.
        delta (`float`, *optional*):
            Dual-clip constant δ > 1 (Ye et al. 2020): the loss of negative-advantage tokens is capped at −δ·A
            (`trl.GRPOConfig`'s name; the same loss as its `delta` for δ >= 1 + `cliprange`).
        critic_warmup_steps (`int`, *optional*, defaults to `0`):
            First rollout batches that train only the value model (verl's `critic_warmup`).
        reward_weights (`list[float]`, *optional*):
            Weights of the reward model(s) and functions; all 1 by default.
        num_completions_to_print (`int`, *optional*, defaults to `4`):
            Rows of each logged sample table.

        > Overridden TrainingArguments defaults (as TRL's PPOConfig)

        learning_rate (`float`, *optional*, defaults to `3e-6`), logging_steps (`float`, *optional*, defaults to
        `10`), bf16 (`bool`, *optional*): `True` unless `fp16`, where the device supports bf16 (CUDA with bf16, not
        `use_cpu`); `False` otherwise. `gradient_checkpointing` keeps TrainingArguments' default (`False`; TRL's
        PPOConfig turned it on, which transformers 5 deprecates in favour of `activation_checkpointing`).
    """

    learning_rate: float = field(default=3e-6, metadata={"help": "Learning rate of the policy."})
    logging_steps: float = field(
        default=10, metadata={"help": "Log every X rollout batches (a float < 1: a fraction of the steps)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision; defaults to True unless fp16, where the device supports bf16."},
    )

    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes that tokenise the prompts once, when the trainer is built."}
    )
    num_mini_batches: int = field(
        default=1,
        metadata={"help": "Mini-batches (optimizer steps) per PPO epoch; divides per-device batch · accumulation."},
    )
    total_episodes: int | None = field(
        default=None, metadata={"help": "Prompts to train on over all processes (when max_steps is not set)."}
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per no-grad forward in the rollout phase."}
    )
    num_sample_generations: int = field(
        default=10, metadata={"help": "Times during training that sample completions are logged (0: never)."}
    )
    response_length: int = field(default=53, metadata={"help": "Maximum number of generated tokens."})
    stop_token: Literal["eos"] | None = field(
        default=None, metadata={"help": "'eos' (or None): the EOS ends a response. Exclusive with stop_token_id."}
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "The token that ends a response."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (rollout and training)."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses without the stop token (>= 0)."}
    )
    sft_model_path: str = field(
        default="EleutherAI/pythia-160m",
        metadata={"help": "Path of the SFT model (read by scripts, not the trainer)."},
    )
    exp_name: str = field(
        default=os.path.basename(__file__)[:-3], metadata={"help": "Name of this experiment (read by scripts)."}
    )
    reward_model_path: str = field(
        default="EleutherAI/pythia-160m",
        metadata={"help": "Path of the reward model (read by scripts, not the trainer)."},
    )
    model_adapter_name: str | None = field(default=None, metadata={"help": "PEFT: the adapter trained."})
    ref_adapter_name: str | None = field(default=None, metadata={"help": "PEFT: the adapter of the reference."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards before GAE."})
    kl_coef: float = field(default=0.05, metadata={"help": "β of the per-token KL penalty in the reward."})
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata={"help": "Per-token KL estimator: 'k1' (log-ratio) or 'k3' (low variance)."}
    )
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value predictions."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "DeepSpeed ZeRO-3: gather the policy's parameters for generation."}
    )

    value_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the value model; defaults to learning_rate."}
    )
    value_model_init: Literal["policy", "reward_model"] = field(
        default="policy", metadata={"help": "Without a value_model: copy the policy's or the reward model's backbone."}
    )
    kl_controller: Literal["fixed", "adaptive"] = field(
        default="fixed", metadata={"help": "Fixed kl_coef, or the adaptive controller (Ziegler et al. 2019)."}
    )
    kl_target: float = field(default=0.05, metadata={"help": "Adaptive controller: target per-token mean KL."})
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive controller: horizon in samples."})
    delta: float | None = field(
        default=None, metadata={"help": "Dual-clip constant delta > 1 (GRPOConfig's name; None: off)."}
    )
    critic_warmup_steps: int = field(
        default=0, metadata={"help": "First rollout batches that train only the value model."}
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of the reward model(s) and functions; all 1 by default."}
    )
    num_completions_to_print: int = field(default=4, metadata={"help": "Rows of each logged sample table."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = default_bf16(self)
        super().__post_init__()
        check_literal_fields(self)
        check_ranges(
            self,
            at_least_one=("response_length", "num_ppo_epochs", "num_mini_batches", "local_rollout_forward_batch_size"),
            positive=("temperature",),
            non_negative=("kl_coef", "vf_coef", "cliprange", "critic_warmup_steps", "num_sample_generations"),
        )
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"gamma and lam must lie in [0, 1], got {self.gamma} and {self.lam}.")
        if self.stop_token is not None and self.stop_token_id is not None:
            raise ValueError("stop_token and stop_token_id are mutually exclusive; set one of them.")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError(f"missing_eos_penalty must be >= 0 (it is subtracted), got {self.missing_eos_penalty}.")
        if self.delta is not None and self.delta <= 1.0:
            raise ValueError(f"delta (dual clip) must be > 1, got {self.delta}.")
        if self.cliprange_value is not None and self.cliprange_value < 0:
            raise ValueError(f"cliprange_value must be >= 0, got {self.cliprange_value}.")
        if self.value_learning_rate is not None and self.value_learning_rate < 0:
            raise ValueError(f"value_learning_rate must be >= 0, got {self.value_learning_rate}.")
        if self.kl_controller == "adaptive":
            check_ranges(self, at_least_one=("kl_horizon",), positive=("kl_target",))
        if self.total_episodes is not None and self.total_episodes < 1:
            raise ValueError(f"total_episodes must be >= 1, got {self.total_episodes}.")
        if self.dataset_num_proc is not None and self.dataset_num_proc < 1:
            raise ValueError(f"dataset_num_proc must be >= 1, got {self.dataset_num_proc}.")
        PPOBatchSizes.from_config(self, world_size=1)  # num_mini_batches must divide the rollout batch

    def __getattr__(self, name: str):
        # called only for names the config lacks: TRL's derived sizes get an error that says where they are
        if name in _DERIVED_SIZES:
            where = "trainer.max_steps" if name == "num_total_batches" else f"trainer.batch_sizes.{name}"
            raise AttributeError(
                f"PPOConfig has no {name!r}: TRL's PPOTrainer wrote it on its config; trl_ext's PPOTrainer derives it "
                f"into {where} from per_device_train_batch_size, gradient_accumulation_steps, num_mini_batches, the "
                "number of processes and total_episodes."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclass(frozen=True)
class PPOBatchSizes:
    r"""
    The batch sizes of token-level PPO, derived from a [`PPOConfig`] exactly as TRL's last `PPOTrainer` derived them
    (`trl/experimental/ppo/ppo_trainer.py` at fd09025, its last change):

    ```python
    local_batch_size = per_device_train_batch_size * gradient_accumulation_steps
    micro_batch_size = per_device_train_batch_size * world_size
    batch_size = local_batch_size * world_size
    mini_batch_size = exact_div(batch_size, num_mini_batches)
    local_mini_batch_size = exact_div(local_batch_size, num_mini_batches)
    ```

    Each mini-batch runs in micro-batches of at most `per_device_train_batch_size` rows (TRL's
    `range(0, local_mini_batch_size, per_device_train_batch_size)`), whose gradients accumulate into one optimizer step
    (each micro-batch's mean loss weighs alike, as in TRL, also when the last one is smaller).

    Parameters:
        world_size (`int`): Processes.
        per_device_train_batch_size (`int`): Rows per micro-batch (forward and backward) on each process.
        local_batch_size (`int`): Prompts per rollout batch on each process.
        batch_size (`int`): Prompts per rollout batch over all processes (episodes per training step).
        local_mini_batch_size (`int`): Prompts per mini-batch (optimizer step) on each process.
        mini_batch_size (`int`): Prompts per mini-batch over all processes.
        micro_batch_size (`int`): Rows per micro-batch over all processes.
        micro_batches_per_mini_batch (`int`): Micro-batches whose gradients accumulate into one optimizer step.
    """

    world_size: int
    per_device_train_batch_size: int
    local_batch_size: int
    batch_size: int
    local_mini_batch_size: int
    mini_batch_size: int
    micro_batch_size: int
    micro_batches_per_mini_batch: int

    @classmethod
    def from_config(cls, args: PPOConfig, world_size: int) -> "PPOBatchSizes":
        """The sizes for `args` on `world_size` processes; `num_mini_batches` must divide the rollout batch."""
        per_device = args.per_device_train_batch_size
        local_batch_size = per_device * args.gradient_accumulation_steps
        if local_batch_size % args.num_mini_batches:
            raise ValueError(
                f"num_mini_batches={args.num_mini_batches} must divide the rollout batch per process, "
                f"per_device_train_batch_size · gradient_accumulation_steps = {per_device} · "
                f"{args.gradient_accumulation_steps} = {local_batch_size} (as in TRL's PPOTrainer)."
            )
        local_mini_batch_size = local_batch_size // args.num_mini_batches
        return cls(
            world_size=world_size,
            per_device_train_batch_size=per_device,
            local_batch_size=local_batch_size,
            batch_size=local_batch_size * world_size,
            local_mini_batch_size=local_mini_batch_size,
            mini_batch_size=local_mini_batch_size * world_size,
            micro_batch_size=per_device * world_size,
            micro_batches_per_mini_batch=math.ceil(local_mini_batch_size / per_device),
        )
