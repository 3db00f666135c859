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
"""[`DiffusionLMGRPOConfig`]: the configuration of [`DiffusionLMGRPOTrainer`]."""

from dataclasses import dataclass, field
from typing import Literal

from ..group_config import GroupPolicyConfig
from ..validation import check_ranges


@dataclass
class DiffusionLMGRPOConfig(GroupPolicyConfig):
    r"""
    Configuration class for [`DiffusionLMGRPOTrainer`]: the group-policy update (GRPO) for discrete diffusion language
    models, whose sequence log-likelihood is estimated by `estimator`.

    Each step samples `per_device_train_batch_size · gradient_accumulation_steps` completions per process
    (`num_generations` per prompt) with the family's sampler, scores them, computes group advantages, draws K =
    `num_likelihood_samples` (t, mask) draws per completion and evaluates the old policy's estimate on them; then
    `num_iterations` epochs over `num_mini_batches` minibatches, one optimizer update each, optimise the clipped
    surrogate on ratio = exp((log p̂_new − log p̂_old) / n) on the same draws (common random numbers: the ratio is
    exactly 1 before the first update), n = 1 or `max_completion_length` (`ratio_normalization`), plus `beta` times
    the k3 estimate of KL(π ‖ π_ref) from the reference's estimate on the same draws. The model stays in eval mode (no
    dropout). Names follow [`~trl.GRPOConfig`] where the concept is the same.

    Parameters:
        > Model

        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow a checkpoint's own modelling code (LLaDA, Dream); off unless set.
        mask_token_id (`int`, *optional*):
            The mask token; defaults to the tokenizer's `mask_token_id`.

        > Sampling

        max_prompt_length (`int`, *optional*, defaults to `64`):
            Prompt tokens (the last ones of each prompt, left-padded with the pad token).
        max_completion_length (`int`, *optional*, defaults to `128`):
            Completion positions sampled after each prompt (a completion is cut at its first EOS).
        sampling_steps (`int`, *optional*, defaults to `64`):
            Sampler steps over the completion, split equally between the blocks.
        block_length (`int`, *optional*):
            Positions per block of the sampler (unmasked left to right), and of the masked family's `"elbo"` (the sum
            of each block's bound given the clean previous blocks); the whole completion when unset. DiffusionGemma's
            is its `canvas_length`.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature; 0 takes the argmax (no exploration: a group then has one completion).
        remasking (`Literal["low_confidence", "random"]`, *optional*, defaults to `"low_confidence"`):
            Which masked positions a sampler step commits: the most confident ones (LLaDA's default) or random ones.

        > Likelihood

        estimator (`Literal["elbo", "mean_field", "trace"]`, *optional*, defaults to `"elbo"`):
            `"elbo"`: the family's ELBO with K draws of (t, mask) (MDLM's 1/t-weighted masked cross-entropy);
            `"mean_field"`: d1's one-forward estimate (completion fully masked, prompt partly masked), cheap and biased;
            `"trace"`: the log-probability of the sampled trajectory (TraceRL's), one forward per trained step (the
            only one for DiffusionGemma).
        num_likelihood_samples (`int`, *optional*, defaults to `2`):
            K draws of the estimate.
        elbo_estimator (`Literal["antithetic", "iid"]`, *optional*, defaults to `"antithetic"`):
            Antithetic draws (stratified times, complementary masks in pairs) or independent ones.
        p_mask_prompt (`float`, *optional*, defaults to `0.3`):
            `"mean_field"`: probability that a prompt token is masked (d1's).
        num_trace_steps (`int`, *optional*):
            `"trace"`: sampler steps whose terms are trained, drawn at random per rollout (the same for the old, new
            and reference policies); all steps when unset.

        > Objective

        num_generations (`int`, *optional*, defaults to `4`):
            Completions per prompt (the group size); the rollout batch must be a multiple of it.
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
            `"token"` divides the log-ratio by `max_completion_length`, `"sequence"` does not.
        beta (`float`, *optional*, defaults to `0.0`):
            Coefficient of the KL to the reference model (a frozen copy of the initial policy, or the policy with its
            LoRA adapters disabled when `use_peft`).
        reward_weights (`list[float]`, *optional*):
            Weights of the reward functions; all 1 by default.

        > LoRA

        use_peft (`bool`, *optional*, defaults to `False`):
            Train LoRA adapters instead of the full model (the reference is then the model with them disabled); the
            saved model has them merged.
        lora_r (`int`, *optional*, defaults to `16`):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `32`):
            LoRA alpha.
        lora_target_modules (`list[str]`, *optional*):
            Modules that receive adapters; peft's default for the architecture when unset (LLaDA's remote code has
            none: name them, e.g. `["q_proj", "k_proj", "v_proj"]`).

        > Overridden TrainingArguments defaults

        learning_rate (`float`, *optional*, defaults to `1e-5`):
            Learning rate of the optimizer (`optim`).
        bf16 (`bool`, *optional*):
            bf16 mixed precision; unset, on where the device supports it (a CUDA GPU with bf16), off on a CPU.
    """

    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow a checkpoint's own modelling code (LLaDA, Dream)."}
    )
    mask_token_id: int | None = field(default=None, metadata={"help": "Mask token; defaults to the tokenizer's."})
    max_prompt_length: int = field(default=64, metadata={"help": "Prompt tokens (left-padded with the pad token)."})
    max_completion_length: int = field(
        default=128, metadata={"help": "Completion positions sampled after each prompt (cut at the first EOS)."}
    )
    sampling_steps: int = field(default=64, metadata={"help": "Sampler steps, split equally between the blocks."})
    block_length: int | None = field(
        default=None, metadata={"help": "Positions per sampler block; the whole completion when unset."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0: argmax)."})
    remasking: Literal["low_confidence", "random"] = field(
        default="low_confidence", metadata={"help": "'low_confidence' (LLaDA's default) or 'random'."}
    )
    estimator: Literal["elbo", "mean_field", "trace"] = field(
        default="elbo",
        metadata={"help": "'elbo' (the family's ELBO), 'mean_field' (d1's one-step estimate) or 'trace' (TraceRL's)."},
    )
    num_likelihood_samples: int = field(default=2, metadata={"help": "K draws of the likelihood estimate."})
    elbo_estimator: Literal["antithetic", "iid"] = field(
        default="antithetic", metadata={"help": "'antithetic' (lower variance) or 'iid' draws."}
    )
    p_mask_prompt: float = field(
        default=0.3, metadata={"help": "'mean_field': probability that a prompt token is masked."}
    )
    num_trace_steps: int | None = field(
        default=None, metadata={"help": "'trace': sampler steps trained per rollout (random); all when unset."}
    )
    num_iterations: int = field(default=1, metadata={"help": "Epochs over each rollout batch."})
    ratio_normalization: Literal["token", "sequence"] = field(
        default="token",
        metadata={"help": "'token': log-ratio divided by max_completion_length; 'sequence': not divided."},
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of the full model."})

    def __post_init__(self):
        super().__post_init__()
        check_ranges(
            self,
            at_least_one=(
                "max_prompt_length",
                "max_completion_length",
                "sampling_steps",
                "num_likelihood_samples",
                "num_iterations",
            )
            + (("block_length",) if self.block_length is not None else ()),
            non_negative=("temperature",),
        )
        if self.estimator == "trace" and self.temperature == 0:
            raise ValueError("estimator='trace' needs temperature > 0 (an argmax trajectory has no log-probability).")
        if self.num_trace_steps is not None and not 1 <= self.num_trace_steps <= self.sampling_steps:
            raise ValueError(f"num_trace_steps must be in [1, sampling_steps], got {self.num_trace_steps}.")
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1], got {self.p_mask_prompt}.")
        block_length = self.block_length or self.max_completion_length
        if self.max_completion_length % block_length:
            raise ValueError(
                f"max_completion_length ({self.max_completion_length}) must be a multiple of block_length "
                f"({block_length})."
            )
        if self.sampling_steps % (self.max_completion_length // block_length):
            raise ValueError(
                f"sampling_steps ({self.sampling_steps}) must be a multiple of the number of blocks "
                f"({self.max_completion_length // block_length})."
            )
