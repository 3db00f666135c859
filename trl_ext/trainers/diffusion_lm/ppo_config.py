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
"""[`DiscreteDiffusionPPOConfig`]: the configuration of [`DiscreteDiffusionPPOTrainer`]."""

from dataclasses import dataclass, field
from typing import Literal

from ..group_config import GroupPolicyConfig
from ..validation import check_ranges


@dataclass
class DiscreteDiffusionPPOConfig(GroupPolicyConfig):
    r"""
    Configuration class for [`DiscreteDiffusionPPOTrainer`]: PPO for SEDD language models, whose sequence
    log-likelihood is the multi-sample ELBO estimate of [`~trl_ext.models.sedd.elbo`].

    Each step samples `per_device_train_batch_size · gradient_accumulation_steps` completions per process
    (`num_generations` per prompt) with the SEDD sampler, scores them, computes group advantages, draws K =
    `num_sigma_samples` noise draws per completion and evaluates the old policy's bound with them; then
    `num_iterations` epochs over `num_mini_batches` minibatches, one optimizer update each, optimise the clipped
    surrogate on ratio = exp((ELBO_old − ELBO_new) / n), evaluated on the same draws (common random numbers:
    the ratio is exactly 1 before the first update), n = 1 or the response length (`ratio_normalization`). With
    `beta > 0` the k3 estimate of KL(π ‖ π_ref), from the reference's bound on the same draws, is added. The model
    stays in eval mode (no dropout) so that the bounds of old and new policy differ only through the weights. Batch
    sizes are TRL's last PPOTrainer's: an update accumulates the gradients of its micro-batches of
    `per_device_train_batch_size` completions and equals the update of the whole minibatch in one micro-batch; every
    completion's gradient reaches an optimizer step. `max_steps` counts training steps; with `num_iterations=1` and
    `num_mini_batches=1` (the defaults) each is one optimizer step of `gradient_accumulation_steps` micro-batches, as
    in transformers' Trainer. Names follow [`~trl.GRPOConfig`] where the concept is the same.

    Parameters:
        > Sampling

        max_prompt_length (`int`, *optional*, defaults to `64`):
            Prompt tokens (the last ones of each prompt, left-padded with EOS, kept fixed while sampling).
        max_completion_length (`int`, *optional*, defaults to `128`):
            Response positions sampled after each prompt (all of them: a completion is cut at its first EOS).
        sampling_steps (`int`, *optional*, defaults to `128`):
            Sampler steps, followed by a denoising step.
        predictor (`Literal["analytic", "euler"]`, *optional*, defaults to `"analytic"`):
            SEDD's Tweedie τ-leaping predictor, or the Euler one.

        > Likelihood

        num_sigma_samples (`int`, *optional*, defaults to `3`):
            K noise draws of the ELBO estimate.
        elbo_estimator (`Literal["antithetic", "iid"]`, *optional*, defaults to `"antithetic"`):
            Antithetic time draws (lower variance) or independent ones.
        estimator (`Literal["elbo", "mean_field", "trace"]`, *optional*, defaults to `"elbo"`):
            `"elbo"`: SEDD's DWDSE bound; `"mean_field"` (absorbing graph): d1's one-forward estimate from the
            conditionals the scores give at t = 1 (completion fully masked, prompt masked w.p. `p_mask_prompt`);
            `"trace"` (absorbing graph): the sampled trajectory's log-probability, the transition probabilities of
            the unmasked tokens, one forward per sampler step.
        p_mask_prompt (`float`, *optional*, defaults to `0.3`):
            `"mean_field"`: probability that a prompt token is masked.

        > Objective

        num_generations (`int`, *optional*, defaults to `4`):
            Completions per prompt (the group size); `per_device_train_batch_size` must be a multiple of it.
        scale_rewards (`Literal["group", "batch", "none"]`, *optional*, defaults to `"group"`):
            The standard deviation that divides the advantages, as in [`~trl.GRPOConfig`].
        epsilon (`float`, *optional*, defaults to `0.2`):
            Lower clipping range of the ratio.
        epsilon_high (`float`, *optional*):
            Upper clipping range (DAPO's asymmetric clipping); defaults to `epsilon`.
        num_iterations (`int`, *optional*, defaults to `1`):
            Epochs over each rollout batch (μ in GRPO).
        num_mini_batches (`int`, *optional*, defaults to `1`):
            Minibatches, hence optimizer updates, per epoch.
        ratio_normalization (`Literal["token", "sequence"]`, *optional*, defaults to `"token"`):
            `"token"` divides the log-ratio by the response length (ESPO-style), `"sequence"` does not.
        beta (`float`, *optional*, defaults to `0.0`):
            Coefficient of the KL to the reference model (a frozen copy, or the base model under LoRA).
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions; all 1 by default.

        > LoRA

        use_peft (`bool`, *optional*, defaults to `False`):
            Train LoRA adapters instead of the full model; the saved model has them merged.
        lora_r (`int`, *optional*, defaults to `16`):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `32`):
            LoRA alpha.
        lora_target_modules (`list[str]`, *optional*, defaults to `["attn_qkv", "attn_out", "mlp.0", "mlp.2"]`):
            Modules of the SEDD DiT that receive adapters.

        > Overridden TrainingArguments defaults

        learning_rate (`float`, *optional*, defaults to `1e-5`):
            Learning rate of the optimizer (`optim`).
        bf16 (`bool`, *optional*):
            bf16 mixed precision; unset, on where the device supports it (a CUDA GPU with bf16), off on a CPU.
    """

    max_prompt_length: int = field(default=64, metadata={"help": "Prompt tokens (left-padded with EOS, kept fixed)."})
    max_completion_length: int = field(
        default=128, metadata={"help": "Response positions sampled after each prompt (cut at the first EOS)."}
    )
    sampling_steps: int = field(default=128, metadata={"help": "Sampler steps (then a denoising step)."})
    predictor: Literal["analytic", "euler"] = field(
        default="analytic", metadata={"help": "'analytic' (Tweedie tau-leaping) or 'euler'."}
    )
    num_sigma_samples: int = field(default=3, metadata={"help": "K noise draws of the ELBO estimate."})
    elbo_estimator: Literal["antithetic", "iid"] = field(
        default="antithetic", metadata={"help": "'antithetic' (lower variance) or 'iid'."}
    )
    estimator: Literal["elbo", "mean_field", "trace"] = field(
        default="elbo",
        metadata={"help": "'elbo' (DWDSE), 'mean_field' (d1's one-step estimate) or 'trace' (absorbing graph)."},
    )
    p_mask_prompt: float = field(
        default=0.3, metadata={"help": "'mean_field': probability that a prompt token is masked."}
    )
    num_iterations: int = field(default=1, metadata={"help": "Epochs over each rollout batch."})
    ratio_normalization: Literal["token", "sequence"] = field(
        default="token",
        metadata={"help": "'token': log-ratio divided by the response length (ESPO-style); 'sequence': not divided."},
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of the full model."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["attn_qkv", "attn_out", "mlp.0", "mlp.2"], metadata={"help": "LoRA target modules."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_ranges(
            self,
            at_least_one=(
                "max_prompt_length",
                "max_completion_length",
                "sampling_steps",
                "num_sigma_samples",
                "num_iterations",
            ),
        )
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1], got {self.p_mask_prompt}.")
