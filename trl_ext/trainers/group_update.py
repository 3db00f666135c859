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
"""[`GroupPolicyTrainer`]: the clipped group-policy update shared by the loop trainers that train on groups of samples
(SEDD PPO, Flow-GRPO / Flow-RTPO). Each trainer supplies only its likelihood: the per-sample log-ratio to the rollout
policy and the KL to the reference, as [`PolicyTerm`]s."""

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..rl.losses import clipped_surrogate_loss
from .loop import RLLoopTrainer


@dataclass
class PolicyTerm:
    """One term of a micro-batch's loss (one per trained denoising step for Flow-GRPO, one per sample for SEDD PPO).

    Args:
        log_ratio (`torch.Tensor`): Per sample, log π_θ(sample) − log π_old(sample), with gradient.
        kl (`torch.Tensor` or `None`): Per sample, the estimate of KL(π_θ ‖ π_ref); `None` when `beta` is 0.
        metrics (`dict[str, float]`): Extra values to log, averaged over the terms of the step.
    """

    log_ratio: torch.Tensor
    kl: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class GroupPolicyTrainer(RLLoopTrainer):
    """[`RLLoopTrainer`] with the clipped policy update on a scored rollout batch ([`group_policy_update`]). Its config
    has `beta`, `epsilon`, `epsilon_high` and `num_mini_batches`; a subclass sets `metric_prefix`, the `<method>/` of
    the metrics TRL has no name for (its folder: `"sedd"`, `"flow"`)."""

    metric_prefix: str

    def _set_update_accumulation(self) -> None:
        """Micro-batches of `per_device_train_batch_size` per optimizer update, as TRL's PPOTrainer: each of the
        `num_mini_batches` updates accumulates `gradient_accumulation_steps / num_mini_batches` of them (set before
        `_prepare`, which hands it to DeepSpeed)."""
        self.accelerator.gradient_accumulation_steps = math.ceil(
            self.args.gradient_accumulation_steps / self.args.num_mini_batches
        )

    def group_policy_update(
        self,
        policy_terms: Callable[[torch.Tensor], Iterator[PolicyTerm]],
        advantages: torch.Tensor,
        unscored: torch.Tensor,
        device: torch.device,
        num_iterations: int = 1,
        num_terms: int = 1,
    ) -> dict[str, float]:
        """`num_iterations` epochs over the rollout batch in `num_mini_batches` random minibatches, one optimizer
        update each, of the clipped surrogate plus `beta` times the KL.

        Unscored samples stay in the minibatches with weight 0, so that every process makes the same updates; the
        others weigh as in [`~RLLoopTrainer.micro_batches`]. The loss of each of the `num_terms` terms that
        `policy_terms(micro_batch)` yields is backpropagated divided by `num_terms`. Returns the means of the logged
        metrics, under `trl.GRPOTrainer`'s names where it has one: `loss`, `kl` (with `beta > 0`), `clip_ratio/low_mean`
        (ratio below 1 − `epsilon` with a negative advantage), `clip_ratio/high_mean` (above 1 + `epsilon_high` with a
        positive one), `clip_ratio/region_mean` (either), `grad_norm`; `<metric_prefix>/ratio` (the mean ratio); and
        the terms' own metrics.
        """
        args = self.args
        weights = (~unscored).float().to(device)
        metrics = defaultdict(list)
        for _ in range(num_iterations):
            for minibatch in torch.randperm(len(advantages), generator=self._generator).chunk(args.num_mini_batches):
                for micro_batch, weight in self.micro_batches(minibatch.to(device), weights):
                    with self.optimizer_update(metrics):
                        for term in policy_terms(micro_batch):
                            micro_advantages = advantages[micro_batch]
                            policy_loss, clipped = clipped_surrogate_loss(
                                term.log_ratio, micro_advantages, args.epsilon, args.epsilon_high
                            )
                            loss = (policy_loss * weight).sum()
                            if term.kl is not None:
                                loss = loss + args.beta * (term.kl * weight).sum()
                                metrics["kl"].append(term.kl.mean().item())
                            self.accelerator.backward(loss / num_terms)
                            metrics["loss"].append(loss.item())
                            metrics[f"{self.metric_prefix}/ratio"].append(term.log_ratio.exp().mean().item())
                            # the clipped term is active: below 1 - epsilon with A < 0, above 1 + epsilon_high with A > 0
                            low, high = clipped & (micro_advantages < 0), clipped & (micro_advantages > 0)
                            metrics["clip_ratio/low_mean"].append(low.float().mean().item())
                            metrics["clip_ratio/high_mean"].append(high.float().mean().item())
                            metrics["clip_ratio/region_mean"].append(clipped.float().mean().item())
                            for name, value in term.metrics.items():
                                metrics[name].append(value)
        return {name: sum(values) / len(values) for name, values in metrics.items()}
