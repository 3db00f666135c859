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
"""`TPRLGRPOConfig`: `ExtendedGRPOConfig` plus the options of Token Perception RL (VPPO) for vision-language models."""

from dataclasses import dataclass, field

from ..grpo.config import ExtendedGRPOConfig


@dataclass
class TPRLGRPOConfig(ExtendedGRPOConfig):
    r"""
    Configuration class for [`TPRLGRPOTrainer`]: [`ExtendedGRPOConfig`] (the RL controls TRL lacks: KL in the reward,
    adaptive KL, RLOO / REINFORCE++ / ReMax advantages, online filtering) plus Token Perception RL (VPPO,
    [Spotlight on Token Perception for Multimodal RL](https://huggingface.co/papers/2510.09285)).

    Every TPRL feature is off by default, in which case the trainer is exactly [`ExtendedGRPOTrainer`] (and, with its
    options off too, [`~trl.GRPOTrainer`], TRL's own options included). The options of the seed / EasyR1 recipes that
    are not about perception map as [`ExtendedGRPOConfig`] documents; the perception ones map as follows:

    | seed / EasyR1 option | trl_ext field |
    |---|---|
    | `use_vppo_on_entropy`, `top_p_entropy_tokens` | `enable_entropy_filtering`, `top_p_entropy_tokens` (per response; TRL's `top_entropy_quantile` is one batch-wide quantile) |
    | `use_vppo_on_perception`, `top_p_perception_tokens` | `enable_perception_filtering`, `top_p_perception_tokens` |
    | `use_advantage_shaping`, `advantage_scaling_min` | `enable_trajectory_reweighting`, `trajectory_scaling_min` |

    Parameters that control Token Perception RL (see the field help for details): `perturbation`,
    `perturbation_patch_size`, `perturbation_probability`, `perturbation_noise_std`, `perturbation_seed`,
    `dependency_estimator`, `enable_entropy_filtering`, `top_p_entropy_tokens`, `enable_perception_filtering`,
    `top_p_perception_tokens`, `token_filter_combination`, `enable_trajectory_reweighting`, `trajectory_scaling_min`,
    `trajectory_scaling_rule`.

    Differences from the reference implementation (VPPO-RL), all deliberate:
    - trajectory shaping also works without perception filtering (the reference silently skips it);
    - the perturbation generator is seeded (`perturbation_seed`), so runs are reproducible;
    - the mean-preserving rule's unbounded β_max can be replaced by the `"bounded"` rule;
    - trajectory shaping normalises over each process's generation batch (`per_device_train_batch_size ×
      steps_per_generation` responses): min-max and β_max alike, so the mean factor is 1 over that batch. The
      reference takes min and max over the per-device mini-batch but β_max per micro-batch; the two agree when
      `steps_per_generation == 1` (TRL's default with `gradient_accumulation_steps=1`);
    - online filtering (of [`ExtendedGRPOConfig`]) masks the dropped groups out instead of re-sampling new prompts;
      it runs first, so that, as in VPPO, the dropped groups take no part in the dependency mean or the min-max
      normalisation of trajectory shaping either.
    """

    _VALID_DICT_FIELDS = ExtendedGRPOConfig._VALID_DICT_FIELDS

    # Token Perception RL
    perturbation: str = field(
        default="patch_blackening",
        metadata={
            "help": "Perturbation I -> I' of the image: 'patch_blackening' (VPPO's default), 'gaussian_noise' or "
            "'blank'. A custom `fn(image, rng) -> image` can be passed to the trainer as `perturbation_fn`."
        },
    )
    perturbation_patch_size: int = field(default=14, metadata={"help": "Patch size in pixels of patch blackening."})
    perturbation_probability: float = field(
        default=0.5, metadata={"help": "Probability that patch blackening blacks out each patch."}
    )
    perturbation_noise_std: float = field(
        default=64.0, metadata={"help": "Standard deviation (0-255 pixel scale) of the 'gaussian_noise' perturbation."}
    )
    perturbation_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the perturbation generator (a fresh mask per rollout); defaults to `seed`."},
    )
    dependency_estimator: str = field(
        default="sampled",
        metadata={
            "help": "Token visual dependency: 'sampled' (VPPO's one-sample k3 estimate at the generated token, uses "
            "TRL's fused LM head, no (B, T, V) logits) or 'kl' (the paper's KL(pi(.|I) || pi(.|I')) over the "
            "vocabulary; holds (2 * per_device_train_batch_size, T, V) log-probabilities at a time)."
        },
    )
    enable_entropy_filtering: bool = field(
        default=False, metadata={"help": "Train only on each response's top `top_p_entropy_tokens` tokens by entropy."}
    )
    top_p_entropy_tokens: float = field(
        default=0.2, metadata={"help": "Fraction k of each response's tokens kept by entropy filtering (ceil(n*k))."}
    )
    enable_perception_filtering: bool = field(
        default=False,
        metadata={"help": "Train only on each response's top `top_p_perception_tokens` tokens by visual dependency."},
    )
    top_p_perception_tokens: float = field(
        default=0.4,
        metadata={"help": "Fraction k of each response's tokens kept by perception filtering (ceil(n*k))."},
    )
    token_filter_combination: str = field(
        default="or",
        metadata={"help": "How entropy and perception masks combine when both are on: 'or' (VPPO) or 'and'."},
    )
    enable_trajectory_reweighting: bool = field(
        default=False,
        metadata={"help": "Scale each response's advantage by a factor from its mean visual dependency (TAS)."},
    )
    trajectory_scaling_min: float = field(
        default=0.9, metadata={"help": "Smallest trajectory scaling factor beta_min, in [0, 1]."}
    )
    trajectory_scaling_rule: str = field(
        default="mean_preserving",
        metadata={
            "help": "'mean_preserving' (VPPO: factors average 1, beta_max = beta_min + (1 - beta_min) / mean(n)) or "
            "'bounded' (factors in [trajectory_scaling_min, 1])."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._check_choices(
            {
                "perturbation": ("patch_blackening", "gaussian_noise", "blank"),
                "dependency_estimator": ("sampled", "kl"),
                "token_filter_combination": ("or", "and"),
                "trajectory_scaling_rule": ("mean_preserving", "bounded"),
            }
        )
        for name in ("top_p_entropy_tokens", "top_p_perception_tokens"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}.")
        if not 0.0 <= self.trajectory_scaling_min <= 1.0:
            raise ValueError(f"trajectory_scaling_min must be in [0, 1], got {self.trajectory_scaling_min}.")
        if self.enable_entropy_filtering and self.top_entropy_quantile < 1.0:
            raise ValueError(
                "enable_entropy_filtering (per-response top-k) and TRL's top_entropy_quantile (one batch-wide "
                "quantile) are two versions of the same filter: set only one."
            )
