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
class DiscreteDiffusionPPOConfig(TrainingArguments):
    r"""
    Configuration class for [`DiscreteDiffusionPPOTrainer`]: PPO for SEDD language models, whose sequence
    log-likelihood is the multi-sample ELBO estimate of [`~trl_ext.models.sedd.elbo`].

    Each step samples `per_device_train_batch_size` completions (`num_generations` per prompt) with the SEDD sampler,
    scores them, computes advantages, draws K = `num_sigma_samples` noise draws per completion and evaluates the old
    policy's bound with them; then `ppo_epochs` epochs over `num_minibatches` minibatches optimise the clipped
    surrogate on ratio = exp((ELBO_old − ELBO_new) / n), evaluated on the same draws (common random numbers: the ratio
    is exactly 1 before the first update), n = 1 or the response length (`ratio_normalization`). With `kl_beta > 0`
    the k3 estimate of KL(π ‖ π_ref), from the reference's bound on the same draws, is added.

    Sampling: `max_prompt_length`, `generation_length`, `sampling_steps`, `predictor`. Likelihood: `num_sigma_samples`,
    `elbo_estimator`. Objective: `num_generations`, `scale_rewards`, `ppo_clip`, `ppo_epochs`, `num_minibatches`,
    `ratio_normalization`, `kl_beta`, `reward_weights`. LoRA: `use_peft`, `lora_r`, `lora_alpha`,
    `lora_target_modules`. The model stays in eval mode (no dropout) so that the bound of old and new policy
    differ only through the weights.
    """

    max_prompt_length: int = field(default=64, metadata={"help": "Prompt tokens (left-padded with EOS, kept fixed)."})
    generation_length: int = field(default=128, metadata={"help": "Response tokens sampled after each prompt."})
    sampling_steps: int = field(default=128, metadata={"help": "Sampler steps (then a denoising step)."})
    predictor: str = field(default="analytic", metadata={"help": "'analytic' (Tweedie tau-leaping) or 'euler'."})
    num_sigma_samples: int = field(default=3, metadata={"help": "K noise draws of the ELBO estimate."})
    elbo_estimator: str = field(default="antithetic", metadata={"help": "'antithetic' (lower variance) or 'iid'."})
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt (group size)."})
    scale_rewards: str = field(default="group", metadata={"help": "Advantage std: 'group', 'batch' or 'none'."})
    ppo_clip: float = field(default=0.2, metadata={"help": "PPO clipping range of the ratio."})
    ppo_epochs: int = field(default=1, metadata={"help": "Epochs over each rollout batch."})
    num_minibatches: int = field(default=1, metadata={"help": "Minibatches (optimizer updates) per epoch."})
    ratio_normalization: str = field(
        default="token",
        metadata={"help": "'token': log-ratio divided by the response length (ESPO-style); 'sequence': not divided."},
    )
    kl_beta: float = field(default=0.0, metadata={"help": "Coefficient of the KL to the frozen reference model."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "Weights of the reward functions."})
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of the full model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["attn_qkv", "attn_out", "mlp.0", "mlp.2"], metadata={"help": "LoRA target modules."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})
    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (off by default; fp32 on CPU)."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2 or self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations}), which must be >= 2."
            )
        if self.per_device_train_batch_size % self.num_minibatches:
            raise ValueError("per_device_train_batch_size must be a multiple of num_minibatches.")
        for name, allowed in {
            "predictor": ("analytic", "euler"),
            "elbo_estimator": ("antithetic", "iid"),
            "scale_rewards": ("group", "batch", "none"),
            "ratio_normalization": ("token", "sequence"),
        }.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        for name in (
            "max_prompt_length",
            "generation_length",
            "sampling_steps",
            "num_sigma_samples",
            "ppo_epochs",
            "num_minibatches",
            "lora_r",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.ppo_clip <= 0:
            raise ValueError(f"ppo_clip must be > 0, got {self.ppo_clip}.")
        if self.kl_beta < 0:
            raise ValueError(f"kl_beta must be >= 0, got {self.kl_beta}.")
