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
"""[`GroupPolicyConfig`]: the options every [`~trl_ext.trainers.group_update.GroupPolicyTrainer`] shares (groups,
clipping, KL, reward weights, LoRA, the bf16 default), one base of the SEDD / diffusion-LM and flow configs."""

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from .validation import check_group_batch, check_literal_fields, check_ranges, default_bf16


@dataclass
class GroupPolicyConfig(TrainingArguments):
    r"""
    The options shared by the configs of the loop trainers that make the clipped group-policy update
    ([`DiffusionLMGRPOConfig`], [`DiscreteDiffusionPPOConfig`], [`FlowGRPOConfig`]); each subclass documents all of
    its parameters and overrides the defaults its method publishes. Names follow [`~trl.GRPOConfig`].

    Parameters:
        num_generations (`int`, *optional*, defaults to `4`):
            Samples per prompt (the group size); the rollout batch must be a multiple of it.
        scale_rewards (`Literal["group", "batch", "none"]`, *optional*, defaults to `"group"`):
            The standard deviation that divides the advantages, as in [`~trl.GRPOConfig`].
        epsilon (`float`, *optional*, defaults to `0.2`):
            Lower clipping range of the ratio.
        epsilon_high (`float`, *optional*):
            Upper clipping range (DAPO's asymmetric clipping); defaults to `epsilon`.
        num_mini_batches (`int`, *optional*, defaults to `1`):
            Minibatches, hence optimizer updates, per epoch over a rollout batch.
        beta (`float`, *optional*, defaults to `0.0`):
            Coefficient of the KL to the reference model.
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions; all 1 by default.
        lora_r (`int`, *optional*, defaults to `16`):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `32`):
            LoRA alpha.
        lora_target_modules (`list[str]`, *optional*):
            Modules that receive LoRA adapters; peft's default for the architecture when unset.
        learning_rate (`float`, *optional*, defaults to `1e-5`):
            Learning rate of the optimizer (`optim`).
        bf16 (`bool`, *optional*):
            bf16 mixed precision; unset, on where the device supports it (a CUDA GPU with bf16), off on a CPU (TRL's
            configs default to `True`, which `TrainingArguments` rejects on a CPU).
    """

    num_generations: int = field(default=4, metadata={"help": "Samples per prompt (group size)."})
    scale_rewards: Literal["group", "batch", "none"] = field(
        default="group", metadata={"help": "Advantage std: 'group', 'batch' or 'none'."}
    )
    epsilon: float = field(default=0.2, metadata={"help": "Lower clipping range of the ratio."})
    epsilon_high: float | None = field(
        default=None, metadata={"help": "Upper clipping range (DAPO); defaults to epsilon."}
    )
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches (optimizer updates) per epoch."})
    beta: float = field(default=0.0, metadata={"help": "Coefficient of the KL to the reference model."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "Weights of the reward functions."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "LoRA target modules; peft's default for the architecture when unset."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate of the optimizer."})
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision; unset: on where the device supports it (a CUDA GPU with bf16), off on a CPU."
        },
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = default_bf16(self)
        super().__post_init__()
        check_literal_fields(self)
        check_ranges(
            self,
            at_least_one=("num_mini_batches", "lora_r"),
            positive=("epsilon",) + (("epsilon_high",) if self.epsilon_high is not None else ()),
            non_negative=("beta",),
        )
        check_group_batch(self)
