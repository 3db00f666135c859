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
"""`ExtendedGRPOConfig`: `trl.GRPOConfig` plus the RL controls TRL lacks (KL in the reward, adaptive KL, RLOO /
REINFORCE++ / ReMax advantages, online difficulty filtering), for any model `GRPOTrainer` trains."""

from dataclasses import dataclass, field

from trl import GRPOConfig

from ..validation import default_bf16


@dataclass
class ExtendedGRPOConfig(GRPOConfig):
    r"""
    Configuration class for [`ExtendedGRPOTrainer`]: [`~trl.GRPOConfig`] plus the RL controls that TRL lacks, for any
    model [`~trl.GRPOTrainer`] trains (text-only language models and VLMs alike).

    Every extension is off by default, in which case the trainer is exactly [`~trl.GRPOTrainer`], TRL's own options
    (`loss_type`, `beta`, `num_iterations`, `scale_rewards`, `delta` for dual clipping, ...) included. One default
    differs: an unset `bf16` is on only where the device supports it (a CUDA device with bf16); `GRPOConfig` turns it
    on everywhere, so that `GRPOConfig(output_dir)` raises on a CPU.

    Options of the EasyR1 / veRL recipes map to TRL's existing fields where TRL has them:

    | EasyR1 option | TRL / trl_ext field |
    |---|---|
    | `clip_ratio_low`, `clip_ratio_high` | `epsilon`, `epsilon_high` |
    | `clip_ratio_dual` (dual-clip, c = 3) | `delta` |
    | `ppo_epochs` | `num_iterations` |
    | `rollout.n` | `num_generations` |
    | `kl_coef` | `beta` (with `kl_penalty`, `kl_estimator`, `kl_controller` below) |
    | `disable_kl` | `beta=0.0` |
    | `use_entropy_penalty`, `entropy_penalty_coef` | `entropy_coef` with a **negative** value: the "entropy penalty" adds coef·(−mean log p), which *lowers* entropy; TRL's `entropy_coef` > 0 is a bonus that raises it, so a penalty is `entropy_coef < 0` |
    | `adv_estimator: grpo` / `rloo` | `advantage_estimator="grpo"` (TRL's own group normalisation, `scale_rewards`) / `"rloo"` |
    | `adv_estimator: reinforce_plus_plus` | `advantage_estimator="reinforce_plus_plus"` |
    | `adv_estimator: remax` | `advantage_estimator="remax"` (one extra greedy generation per prompt) |
    | `online_filtering`, `filter_key`, `filter_low`, `filter_high` | `online_filtering`, `filter_reward`, `filter_low`, `filter_high` |

    Parameters of the KL penalty: `kl_penalty`, `kl_estimator`, `kl_controller`, `kl_target`, `kl_horizon`.
    Advantages and filtering: `advantage_estimator`, `reinforce_gamma`, `online_filtering`, `filter_reward`,
    `filter_low`, `filter_high` (see the field help for details).

    Online filtering masks the dropped groups out of the loss (and its token normaliser) instead of re-sampling new
    prompts to refill the batch, which TRL's sampler does not allow. It runs first, so that the dropped groups take no
    part in any statistic of the batch: the rollout KL and the controller's sample count, `scale_rewards="batch"` and
    the REINFORCE++ whitening (and, in [`TPRLGRPOConfig`], the token-perception statistics).
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS

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
        self._check_choices(
            {
                "kl_penalty": ("loss", "reward"),
                "kl_estimator": ("k1", "k2", "k3", "abs"),
                "kl_controller": ("fixed", "adaptive"),
                "advantage_estimator": ("grpo", "rloo", "reinforce_plus_plus", "remax"),
            }
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

    def _check_choices(self, choices: dict[str, tuple[str, ...]]) -> None:
        """Raise a `ValueError` naming the field when an enum-like option is not one of its `choices`."""
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
