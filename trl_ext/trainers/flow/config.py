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
"""[`FlowGRPOConfig`]: the configuration of [`FlowGRPOTrainer`]."""

from dataclasses import dataclass, field
from typing import Literal

from ...models.flow import FlowSamplingConfig
from ..group_config import GroupPolicyConfig
from ..validation import check_ranges


@dataclass
class FlowGRPOConfig(GroupPolicyConfig):
    r"""
    Configuration class for [`FlowGRPOTrainer`]: GRPO on the denoising trajectories of a flow-matching text-to-image
    model (Flow-GRPO, [arXiv 2505.05470](https://huggingface.co/papers/2505.05470)). [`FlowRTPOConfig`] adds the
    options of the Flow-RTPO prompt editor.

    One training step samples `per_device_train_batch_size · gradient_accumulation_steps` images per process
    (`num_generations` per prompt) with the SDE sampler, scores them with the reward functions, computes group
    advantages, then makes one optimizer update per minibatch (`num_mini_batches`): batch sizes as in TRL's last
    PPOTrainer. An update accumulates the gradients of its micro-batches of `per_device_train_batch_size` images (and
    of the trained timesteps) and equals the update of the whole minibatch in one micro-batch; every image's gradient
    reaches an optimizer step. `max_steps` counts training steps; with `num_mini_batches=1` (the default) each is one
    optimizer step of `gradient_accumulation_steps` micro-batches, as in transformers' Trainer. The first minibatch
    is on-policy (ratio exactly 1); later ones are off-policy and clipped at `epsilon` / `epsilon_high`. Names follow
    [`~trl.GRPOConfig`] where the concept is the same.

    Parameters:
        > Sampling (shared by rollouts and the recomputation of their log-probabilities: [`sampling_config`])

        num_inference_steps (`int`, *optional*, defaults to `10`):
            Denoising steps per rollout.
        guidance_scale (`float`, *optional*, defaults to `4.5`):
            Classifier-free guidance scale (<= 1: none).
        noise_level (`float`, *optional*, defaults to `0.7`):
            SDE noise level a (> 0: the ODE sampler has no log-probabilities).
        resolution (`int`, *optional*, defaults to `512`):
            Image height and width; a multiple of the VAE factor times the patch size (checked by the trainer).
        max_sequence_length (`int`, *optional*, defaults to `256`):
            T5 prompt length.
        condition_area (`int`, *optional*):
            Pixel area the image editor (Qwen-Image-Edit) resizes each condition image to, at its aspect ratio;
            `None`: the pipeline's own (1024²). Text-to-image families ignore it.

        > Objective

        num_generations (`int`, *optional*, defaults to `4`):
            Images per prompt (the group size).
        scale_rewards (`Literal["group", "batch", "none"]`, *optional*, defaults to `"batch"`):
            Advantage standard deviation: the batch's (Flow-GRPO's `global_std`), the group's, or none.
        adv_clip_max (`float`, *optional*, defaults to `5.0`):
            Advantages are clipped to [-adv_clip_max, adv_clip_max].
        epsilon (`float`, *optional*, defaults to `1e-4`):
            Lower clipping range of the per-step ratio (Flow-GRPO: 1e-4).
        epsilon_high (`float`, *optional*):
            Upper clipping range; defaults to `epsilon`.
        beta (`float`, *optional*, defaults to `0.04`):
            Coefficient of the exact Gaussian KL to the base model (LoRA disabled); 0 disables it.
        timestep_fraction (`float`, *optional*, defaults to `0.99`):
            Fraction of the denoising steps trained on (the first int(T · fraction)).
        num_mini_batches (`int`, *optional*, defaults to `1`):
            Optimizer updates per rollout batch.
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions; all 1 by default.

        > LoRA and its moving average

        lora_r (`int`, *optional*, defaults to `32`):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `64`):
            LoRA alpha.
        lora_target_modules (`list[str]`, *optional*):
            Modules of the transformer that receive adapters (default: Flow-GRPO's attention projections).
        ema_decay (`float`, *optional*, defaults to `0.0`):
            Decay of diffusers' `EMAModel` over the LoRA weights (0: none; Flow-GRPO: 0.9).
        ema_update_interval (`int`, *optional*, defaults to `1`):
            Training steps between EMA updates.

        > Monitoring

        sample_steps (`int`, *optional*, defaults to `0`):
            Every this many steps, save fixed-seed images of the first `num_sample_prompts` prompts (0: never).
        num_sample_prompts (`int`, *optional*, defaults to `4`):
            Prompts rendered by `sample_steps`.

        > Overridden TrainingArguments defaults

        learning_rate (`float`, *optional*, defaults to `3e-4`), max_grad_norm (`float`, *optional*, defaults to
        `1.0`), bf16 (`bool`, *optional*: unset, on where the device supports it, a CUDA GPU with bf16).

    > [!NOTE]
    > LoRA dropout is not offered: dropout during the recomputation would make the ratio differ from 1 on-policy (a
    > defect of the public Flow-RTPO code). The transformer stays in eval mode for rollouts and recomputation alike.
    """

    num_inference_steps: int = field(default=10, metadata={"help": "Denoising steps per rollout (Flow-GRPO: 10)."})
    guidance_scale: float = field(
        default=4.5, metadata={"help": "CFG scale for rollouts and recomputation (<= 1: none)."}
    )
    noise_level: float = field(default=0.7, metadata={"help": "SDE noise level a (Flow-GRPO: 0.7)."})
    resolution: int = field(default=512, metadata={"help": "Image height and width in pixels."})
    max_sequence_length: int = field(default=256, metadata={"help": "T5 prompt length."})
    condition_area: int | None = field(
        default=None,
        metadata={"help": "Condition-image pixel area of the image editor (Qwen-Image-Edit); None: the pipeline's 1024²."},
    )
    scale_rewards: Literal["group", "batch", "none"] = field(
        default="batch",
        metadata={"help": "Advantage std: 'batch' (Flow-GRPO's global_std), 'group' (per prompt) or 'none'."},
    )
    adv_clip_max: float = field(
        default=5.0, metadata={"help": "Advantages are clipped to [-adv_clip_max, adv_clip_max]."}
    )
    epsilon: float = field(
        default=1e-4, metadata={"help": "PPO clipping range of the per-step ratio (Flow-GRPO: 1e-4)."}
    )
    beta: float = field(
        default=0.04,
        metadata={"help": "KL coefficient to the reference (the base model, LoRA disabled); 0 disables it."},
    )
    timestep_fraction: float = field(
        default=0.99, metadata={"help": "Fraction of the denoising steps trained on (the first int(T * fraction))."}
    )
    lora_r: int = field(default=32, metadata={"help": "LoRA rank of the transformer's attention projections."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: [
            "attn.add_k_proj",
            "attn.add_q_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "attn.to_k",
            "attn.to_out.0",
            "attn.to_q",
            "attn.to_v",
        ],
        metadata={"help": "Modules of the transformer that receive LoRA adapters (Flow-GRPO's list)."},
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "Decay of an exponential moving average of the LoRA weights (diffusers' `EMAModel`, whose decay "
            "warms up as min(ema_decay, (1 + n)/(10 + n))). The EMA weights are what `save_model` writes and what "
            "`ema_weights()` swaps in for evaluation; rollouts always use the live weights. 0 disables it (Flow-GRPO: 0.9)."
        },
    )
    ema_update_interval: int = field(
        default=1,
        metadata={"help": "Training steps (rollout batches) between EMA updates (Flow-GRPO: every 8 updates)."},
    )
    sample_steps: int = field(
        default=0,
        metadata={
            "help": "Every this many steps, render the first `num_sample_prompts` training prompts (fixed seed, EMA "
            "weights if any) and save them as PNG files under `output_dir/samples/step-N`; 0 never does."
        },
    )
    num_sample_prompts: int = field(default=4, metadata={"help": "Prompts rendered by `sample_steps`."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Learning rate of the optimizer (Flow-GRPO: 3e-4)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})

    def __post_init__(self):
        super().__post_init__()
        check_ranges(
            self,
            at_least_one=(
                "num_inference_steps",
                "resolution",
                "max_sequence_length",
                "ema_update_interval",
                "num_sample_prompts",
            ),
            positive=("adv_clip_max", "noise_level"),
            non_negative=("guidance_scale", "sample_steps"),
        )
        if self.condition_area is not None and self.condition_area < 32 * 32:
            raise ValueError(f"condition_area must be at least 32 x 32 pixels (or None), got {self.condition_area}.")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}.")
        if int(self.num_inference_steps * self.timestep_fraction) < 1:
            raise ValueError("num_inference_steps * timestep_fraction must leave at least one step to train on.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}.")

    def sampling_config(self) -> FlowSamplingConfig:
        """The sampling settings of rollouts and of the recomputation of their log-probabilities."""
        return FlowSamplingConfig(
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            noise_level=self.noise_level,
            height=self.resolution,
            width=self.resolution,
            max_sequence_length=self.max_sequence_length,
            condition_area=self.condition_area,
        )
