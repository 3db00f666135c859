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
"""`TPRLGRPOConfig`: `trl.GRPOConfig` plus the options of Token Perception RL (VPPO) and of the RL controls TRL lacks."""

from dataclasses import dataclass, field

from trl import GRPOConfig

from ..validation import default_bf16


@dataclass
class TPRLGRPOConfig(GRPOConfig):
    r"""
    Configuration class for [`TPRLGRPOTrainer`]: [`~trl.GRPOConfig`] plus Token Perception RL (VPPO,
    [Spotlight on Token Perception for Multimodal RL](https://huggingface.co/papers/2510.09285)) and the RL controls
    that TRL lacks.

    Every TPRL feature is off by default, in which case the trainer is exactly [`~trl.GRPOTrainer`], TRL's own options
    (`top_entropy_quantile`, `loss_type`, `beta`, `num_iterations`, `scale_rewards`, ...) included. One default
    differs: an unset `bf16` is on only where the device supports it (a CUDA device with bf16); `GRPOConfig` turns it
    on everywhere, so that `GRPOConfig(output_dir)` raises on a CPU.

    Options of the seed / EasyR1 recipes map to TRL's existing fields where TRL has them:

    | seed / EasyR1 option | TRL / trl_ext field |
    |---|---|
    | `clip_ratio_low`, `clip_ratio_high` | `epsilon`, `epsilon_high` |
    | `clip_ratio_dual` (dual-clip, c = 3) | `delta` |
    | `ppo_epochs` | `num_iterations` |
    | `rollout.n` | `num_generations` |
    | `kl_coef` | `beta` (with `kl_penalty`, `kl_estimator`, `kl_controller` below) |
    | `disable_kl` | `beta=0.0` |
    | `use_entropy_penalty`, `entropy_penalty_coef` | `entropy_coef` with a **negative** value: the seed's "entropy penalty" adds coef·(−mean log p), which *lowers* entropy; TRL's `entropy_coef` > 0 is a bonus that raises it, so a penalty is `entropy_coef < 0` |
    | `adv_estimator: grpo` / `rloo` | `advantage_estimator="grpo"` (TRL's own group normalisation, `scale_rewards`) / `"rloo"` |
    | `adv_estimator: reinforce_plus_plus` | `advantage_estimator="reinforce_plus_plus"` |
    | `adv_estimator: remax` | `advantage_estimator="remax"` (one extra greedy generation per prompt) |
    | `use_vppo_on_entropy`, `top_p_entropy_tokens` | `enable_entropy_filtering`, `top_p_entropy_tokens` (per response; TRL's `top_entropy_quantile` is one batch-wide quantile) |
    | `use_vppo_on_perception`, `top_p_perception_tokens` | `enable_perception_filtering`, `top_p_perception_tokens` |
    | `use_advantage_shaping`, `advantage_scaling_min` | `enable_trajectory_reweighting`, `trajectory_scaling_min` |
    | `online_filtering`, `filter_key`, `filter_low`, `filter_high` | `online_filtering`, `filter_reward`, `filter_low`, `filter_high` |

    Parameters that control Token Perception RL (see the field help for details): `perturbation`,
    `perturbation_patch_size`, `perturbation_probability`, `perturbation_noise_std`, `perturbation_seed`,
    `dependency_estimator`, `enable_entropy_filtering`, `top_p_entropy_tokens`, `enable_perception_filtering`,
    `top_p_perception_tokens`, `token_filter_combination`, `enable_trajectory_reweighting`, `trajectory_scaling_min`,
    `trajectory_scaling_rule`. Parameters of the KL penalty: `kl_penalty`, `kl_estimator`, `kl_controller`,
    `kl_target`, `kl_horizon`. Advantages and filtering: `advantage_estimator`, `reinforce_gamma`, `online_filtering`,
    `filter_reward`, `filter_low`, `filter_high`.

    Differences from the reference implementation (VPPO-RL), all deliberate:
    - trajectory shaping also works without perception filtering (the reference silently skips it);
    - the perturbation generator is seeded (`perturbation_seed`), so runs are reproducible;
    - the mean-preserving rule's unbounded β_max can be replaced by the `"bounded"` rule;
    - trajectory shaping normalises over each process's generation batch (`per_device_train_batch_size ×
      steps_per_generation` responses): min-max and β_max alike, so the mean factor is 1 over that batch. The
      reference takes min and max over the per-device mini-batch but β_max per micro-batch; the two agree when
      `steps_per_generation == 1` (TRL's default with `gradient_accumulation_steps=1`);
    - online filtering masks the dropped groups out of the loss (and its token normaliser) instead of re-sampling
      new prompts to refill the batch, which TRL's sampler does not allow. It runs first, so that, as in VPPO, the
      dropped groups take no part in any statistic of the batch: the dependency mean, the min-max normalisation of
      trajectory shaping, the rollout KL and the controller's sample count, `scale_rewards="batch"` and the
      REINFORCE++ whitening.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS

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

    # KL penalty
    kl_penalty: str = field(
        default="loss",
        metadata={
            "help": "Where the KL to the reference goes: 'loss' (TRL's k3 term, beta * KL added to the loss) or "
            "'reward' (EasyR1's default: beta * sum_t KL_t subtracted from each completion's reward before the "
            "advantages). 'reward' accepts every `kl_estimator`."
        },
    )
    kl_estimator: str = field(
        default="k3",
        metadata={
            "help": "KL estimator: 'k1' (log-ratio), 'k2' (half squared log-ratio, 'mse'), 'k3' ('low_var_kl') or 'abs'."
        },
    )
    kl_controller: str = field(
        default="fixed",
        metadata={
            "help": "'fixed' beta, or 'adaptive': beta <- beta * (1 + clip(KL/kl_target - 1, +-0.2) * n / kl_horizon)."
        },
    )
    kl_target: float = field(
        default=0.05,
        metadata={"help": "Target of the adaptive KL controller, as a per-token mean KL (not a sequence sum)."},
    )
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (in samples) of the adaptive KL controller."})

    # Advantages and online filtering
    advantage_estimator: str = field(
        default="grpo",
        metadata={
            "help": "'grpo' (TRL's group normalisation with `scale_rewards`), 'rloo' (leave-one-out baseline), "
            "'reinforce_plus_plus' (return-to-go whitened over the batch's tokens) or 'remax' (reward minus the "
            "reward of a greedy completion of the same prompt: one extra greedy generation per prompt)."
        },
    )
    reinforce_gamma: float = field(default=1.0, metadata={"help": "Discount of 'reinforce_plus_plus' returns."})
    online_filtering: bool = field(
        default=False,
        metadata={"help": "Drop prompt groups whose mean `filter_reward` lies outside (filter_low, filter_high)."},
    )
    filter_reward: str | None = field(
        default=None, metadata={"help": "Name of the reward function (as TRL logs it) that online filtering reads."}
    )
    filter_low: float = field(default=0.01, metadata={"help": "Groups with mean filter reward <= this are dropped."})
    filter_high: float = field(default=0.99, metadata={"help": "Groups with mean filter reward >= this are dropped."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = default_bf16(self)
        super().__post_init__()
        choices = {
            "perturbation": ("patch_blackening", "gaussian_noise", "blank"),
            "dependency_estimator": ("sampled", "kl"),
            "token_filter_combination": ("or", "and"),
            "trajectory_scaling_rule": ("mean_preserving", "bounded"),
            "kl_penalty": ("loss", "reward"),
            "kl_estimator": ("k1", "k2", "k3", "abs"),
            "kl_controller": ("fixed", "adaptive"),
            "advantage_estimator": ("grpo", "rloo", "reinforce_plus_plus", "remax"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
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
        if self.kl_penalty == "loss" and self.kl_estimator != "k3":
            raise ValueError(
                f"kl_penalty='loss' uses TRL's k3 loss term; kl_estimator={self.kl_estimator!r} needs kl_penalty='reward'."
            )
        if (self.kl_penalty == "reward" or self.kl_controller == "adaptive") and self.beta == 0.0:
            raise ValueError("kl_penalty='reward' and kl_controller='adaptive' need a reference model: set beta > 0.")
        if self.advantage_estimator == "reinforce_plus_plus" and self.loss_type in ("cispo", "sapo", "vespo"):
            raise ValueError(
                f"advantage_estimator='reinforce_plus_plus' is not supported with loss_type={self.loss_type!r}."
            )
        if self.advantage_estimator == "remax" and self.use_vllm:
            raise ValueError(
                "advantage_estimator='remax' generates its greedy baseline with transformers: set use_vllm=False."
            )
        if self.online_filtering:
            if self.filter_reward is None:
                raise ValueError("online_filtering needs filter_reward: the name of the reward function to filter on.")
            if self.filter_low >= self.filter_high:
                raise ValueError(f"filter_low ({self.filter_low}) must be below filter_high ({self.filter_high}).")
