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
        sde_type (`Literal["sde", "cps"]`, *optional*, defaults to `"sde"`):
            The stochastic step: Flow-GRPO's SDE, or coefficient-preserving sampling (CPS, Flow-GRPO-Fast's
            `sde_type="cps"`, `noise_level` <= 1) with its Gaussian log-probability ([`~trl_ext.models.flow.sde`]).
            CPS's std σ'·sin(a·π/2) shrinks with σ': train it on early steps (an SDE window in the first half, as
            Flow-GRPO-Fast), where its density is not too sharp for the clipped ratio.
        true_cfg_scale (`float`, *optional*, defaults to `1.0`):
            True classifier-free guidance for FLUX.1 (`FluxPipeline`'s `true_cfg_scale`, beside the guidance
            embedding's `guidance_scale`); <= 1: none. The other families take their CFG scale from `guidance_scale`.
        negative_prompt (`str`, *optional*, defaults to `""`):
            The negative prompt of FLUX.1's true CFG.
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
        sde_window_size (`int`, *optional*):
            SDE window (Flow-GRPO-Fast / MixGRPO): sample only this many consecutive steps with the SDE, the others
            with the deterministic ODE step (no noise, no log-probability, no gradient), and train on the window's
            steps only. `None`: every step is sampled with the SDE and the first int(T · timestep_fraction) trained.
        sde_window_range (`list[int]`, *optional*):
            (lo, hi): the window lies within steps [lo, hi); its start is drawn uniformly from lo..hi −
            sde_window_size for each rollout batch, the same on every process (Flow-GRPO-Fast's `sde_window_range`).
            Default: (0, int(T · timestep_fraction)), the steps `timestep_fraction` trains; hi may not exceed that.
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
    sde_type: Literal["sde", "cps"] = field(
        default="sde",
        metadata={
            "help": "The stochastic step: 'sde' (Flow-GRPO) or 'cps' (coefficient-preserving sampling, "
            "Flow-GRPO-Fast; noise_level <= 1), each with its Gaussian log-probability."
        },
    )
    true_cfg_scale: float = field(
        default=1.0,
        metadata={
            "help": "FLUX.1 only: true classifier-free guidance with `negative_prompt` (FluxPipeline's "
            "`true_cfg_scale`), beside the guidance embedding's `guidance_scale`; <= 1: none."
        },
    )
    negative_prompt: str = field(default="", metadata={"help": "The negative prompt of FLUX.1's true CFG."})
    resolution: int = field(default=512, metadata={"help": "Image height and width in pixels."})
    max_sequence_length: int = field(default=256, metadata={"help": "T5 prompt length."})
    condition_area: int | None = field(
        default=None,
        metadata={
            "help": "Condition-image pixel area of the image editor (Qwen-Image-Edit); None: the pipeline's 1024²."
        },
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
    sde_window_size: int | None = field(
        default=None,
        metadata={
            "help": "SDE window (Flow-GRPO-Fast / MixGRPO): sample this many consecutive steps with the SDE and the "
            "others with the deterministic ODE step (no log-probability, no gradient); only the window's steps are "
            "trained. None: every step is SDE and the first int(T * timestep_fraction) are trained."
        },
    )
    sde_window_range: list[int] | None = field(
        default=None,
        metadata={
            "help": "lo hi: the SDE window lies within steps [lo, hi), its start drawn uniformly from lo..hi - "
            "sde_window_size per rollout batch (the same on every process). Default: 0 and int(T * "
            "timestep_fraction), the steps timestep_fraction trains; hi may not exceed that."
        },
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
        self._check_sde_window()

    def _check_sde_window(self) -> None:
        """Validate `sde_type` and the SDE window against `num_inference_steps` and `timestep_fraction`."""
        steps, trained = self.num_inference_steps, int(self.num_inference_steps * self.timestep_fraction)
        if self.sde_type not in ("sde", "cps"):
            raise ValueError(f"sde_type must be 'sde' or 'cps', got {self.sde_type!r}.")
        if self.sde_type == "cps" and self.noise_level > 1:
            raise ValueError(
                f"noise_level={self.noise_level} with sde_type='cps': CPS's noise is sigma' * sin(noise_level * pi / 2), "
                "so noise_level must be in (0, 1] (above 1 it repeats 2 - noise_level)."
            )
        if self.sde_window_size is None:
            if self.sde_window_range is not None:
                raise ValueError("sde_window_range needs sde_window_size (the number of SDE steps in the window).")
            window_end = trained
        else:
            if not 1 <= self.sde_window_size <= steps:
                raise ValueError(
                    f"sde_window_size must be in [1, num_inference_steps={steps}], got {self.sde_window_size}."
                )
            if self.sde_window_range is not None:
                self.sde_window_range = [int(bound) for bound in self.sde_window_range]  # (a tuple, from Python)
            low, high = self.sde_window_bounds()
            if self.sde_window_range is not None and (len(self.sde_window_range) != 2 or not 0 <= low < high <= steps):
                raise ValueError(
                    f"sde_window_range must be two steps lo < hi in [0, num_inference_steps={steps}], got "
                    f"{self.sde_window_range}."
                )
            if high - low < self.sde_window_size:
                raise ValueError(
                    f"sde_window_range={[low, high]} holds {high - low} steps, fewer than sde_window_size="
                    f"{self.sde_window_size}."
                )
            if high > trained:
                raise ValueError(
                    f"sde_window_range={[low, high]} lets the SDE window reach step {high - 1}, but timestep_fraction="
                    f"{self.timestep_fraction} trains only the first {trained} of {steps} steps: set "
                    f"timestep_fraction=1.0 to train a window anywhere, or keep hi <= {trained}."
                )
            window_end = high
        if self.sde_type == "cps" and window_end == steps:
            raise ValueError(
                "sde_type='cps' cannot train the last step: CPS's std there is sigma' * sin(noise_level * pi / 2) = 0 "
                "(sigma' = 0), a deterministic step without a log-probability. Keep timestep_fraction < 1, or an SDE "
                "window that ends before the last step."
            )

    def sde_window_bounds(self) -> tuple[int, int]:
        """(lo, hi) of the SDE window's range: `sde_window_range`, or (0, int(T · timestep_fraction))."""
        if self.sde_window_range is not None:
            return self.sde_window_range[0], self.sde_window_range[-1]
        return 0, int(self.num_inference_steps * self.timestep_fraction)

    def sampling_config(self) -> FlowSamplingConfig:
        """The sampling settings of rollouts and of the recomputation of their log-probabilities."""
        return FlowSamplingConfig(
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            noise_level=self.noise_level,
            height=self.resolution,
            width=self.resolution,
            max_sequence_length=self.max_sequence_length,
            sde_type=self.sde_type,
            true_cfg_scale=self.true_cfg_scale,
            negative_prompt=self.negative_prompt,
            condition_area=self.condition_area,
        )
