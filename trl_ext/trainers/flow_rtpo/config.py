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
from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class FlowRTPOConfig(TrainingArguments):
    r"""
    Configuration class for [`FlowRTPOTrainer`]: GRPO on the denoising trajectories of a flow-matching text-to-image
    model (Flow-GRPO, [arXiv 2505.05470](https://huggingface.co/papers/2505.05470)).

    One training step samples `per_device_train_batch_size` images (`num_generations` per prompt) with the SDE
    sampler, scores them with the reward functions, computes per-prompt group advantages, then makes one optimizer
    update per minibatch (`num_minibatches`; gradients accumulate over the trained timesteps, and over
    `gradient_accumulation_steps` minibatches). The first minibatch is on-policy (ratio exactly 1); later ones are
    off-policy and clipped at `clip_range`.

    Parameters of sampling (shared by rollouts and by the recomputation of their log-probabilities):
    `num_inference_steps`, `guidance_scale`, `noise_level`, `resolution`, `max_sequence_length`. Of the objective:
    `num_generations`, `scale_rewards`, `adv_clip_max`, `clip_range`, `beta`, `timestep_fraction`, `num_minibatches`,
    `reward_weights`. Of LoRA: `lora_rank`, `lora_alpha`, `lora_target_modules`, and its moving average `ema_decay`,
    `ema_update_interval`. Of the prompt editor (Flow-RTPO): `num_edits_per_prompt`, `editor_learning_rate`,
    `editor_clip_range`. Of monitoring: `sample_steps`, `num_sample_prompts`. Training uses the
    [`~transformers.TrainingArguments`] fields `learning_rate`, `max_steps`, `gradient_accumulation_steps`,
    `max_grad_norm`, `logging_steps`, `save_steps`, `seed`, `report_to`, `push_to_hub`, `hub_model_id` and
    `bf16`/`fp16` (mixed precision through accelerate).

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
    num_generations: int = field(default=4, metadata={"help": "Images per prompt (the GRPO group size)."})
    scale_rewards: str = field(
        default="batch",
        metadata={"help": "Advantage std: 'batch' (Flow-GRPO's global_std), 'group' (per prompt) or 'none'."},
    )
    adv_clip_max: float = field(
        default=5.0, metadata={"help": "Advantages are clipped to [-adv_clip_max, adv_clip_max]."}
    )
    clip_range: float = field(
        default=1e-4, metadata={"help": "PPO clipping range of the per-step ratio (Flow-GRPO: 1e-4)."}
    )
    beta: float = field(
        default=0.04,
        metadata={"help": "KL coefficient to the reference (the base model, LoRA disabled); 0 disables it."},
    )
    timestep_fraction: float = field(
        default=0.99, metadata={"help": "Fraction of the denoising steps trained on (the first int(T * fraction))."}
    )
    num_minibatches: int = field(default=1, metadata={"help": "Optimizer updates per rollout batch."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "Weights of the reward functions."})
    num_edits_per_prompt: int = field(
        default=2, metadata={"help": "With a prompt editor: edits sampled per original prompt (Flow-RTPO: 2)."}
    )
    editor_learning_rate: float = field(default=5e-6, metadata={"help": "AdamW learning rate of the prompt editor."})
    editor_clip_range: float = field(default=0.2, metadata={"help": "PPO clipping range of the editor's ratio."})
    lora_rank: int = field(default=32, metadata={"help": "LoRA rank of the transformer's attention projections."})
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
        metadata={"help": "Modules of the SD3 transformer that receive LoRA adapters (Flow-GRPO's list)."},
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
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (Flow-GRPO: 3e-4)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (off by default; fp32 on CPU)."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 for group advantages, got {self.num_generations}.")
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations})."
            )
        if self.num_edits_per_prompt < 1:
            raise ValueError(f"num_edits_per_prompt must be >= 1, got {self.num_edits_per_prompt}.")
        if self.per_device_train_batch_size % self.num_minibatches:
            raise ValueError("per_device_train_batch_size must be a multiple of num_minibatches.")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}.")
        if int(self.num_inference_steps * self.timestep_fraction) < 1:
            raise ValueError("num_inference_steps * timestep_fraction must leave at least one step to train on.")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {self.scale_rewards!r}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.ema_update_interval < 1:
            raise ValueError(f"ema_update_interval must be >= 1, got {self.ema_update_interval}.")
        for name in (
            "num_inference_steps",
            "resolution",
            "max_sequence_length",
            "num_minibatches",
            "lora_rank",
            "num_sample_prompts",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("clip_range", "adv_clip_max", "editor_clip_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        for name in ("beta", "guidance_scale", "sample_steps", "editor_learning_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.noise_level <= 0:
            raise ValueError("noise_level must be > 0: the ODE sampler (noise_level=0) has no log-probabilities.")
