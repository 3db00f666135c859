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
import copy
import textwrap
from typing import Any

import numpy as np
import torch
from trl import GRPOTrainer
from trl.data_utils import prepare_multimodal_messages

from .rl_utils import (
    AdaptiveKLController,
    FixedKLController,
    compute_advantages,
    group_keep_mask,
    kl_divergence,
    outcome_token_rewards,
    reinforce_plus_plus_advantages,
    remax_advantages,
    rloo_advantages,
    sampled_token_dependency,
    top_k_per_row_mask,
    trajectory_scaling_factors,
)
from .tprl_grpo_config import TPRLGRPOConfig
from .tprl_perturbations import Perturbation, get_perturbation


# Forward kwargs of GRPOTrainer's batches that hold image data.
_VISION_KEYS = ("pixel_values", "image_grid_thw", "image_sizes", "pixel_attention_mask", "spatial_shapes")


class TPRLGRPOTrainer(GRPOTrainer):
    r"""
    [`~trl.GRPOTrainer`] with Token Perception RL for vision-language models (VPPO,
    [Spotlight on Token Perception for Multimodal RL](https://huggingface.co/papers/2510.09285)) and the RL controls
    that TRL lacks (KL estimators and an adaptive KL controller, RLOO / REINFORCE++ advantages, online difficulty
    filtering).

    After each rollout batch is generated and scored by `GRPOTrainer`, the trainer

    1. re-scores the completions with a perturbed image I′ (patch blackening by default; one extra no-grad forward;
       a second one on-policy, when TRL skipped the old log-probabilities) and measures each token's visual
       dependency s_t, either VPPO's one-sample k3 estimate at the generated token or the full KL over the
       vocabulary;
    2. keeps, per response, the top ⌈n·k⌉ tokens by entropy and/or by dependency (Token Gradient Filtering);
    3. scales each response's advantage by a factor from its mean dependency (Trajectory Advantage Shaping);

    and folds all of it into per-token advantages of shape (B, T), which `GRPOTrainer`'s loss accepts as is. With every
    feature off (the default) it is exactly `GRPOTrainer`.

    Example:

    ```python
    >>> from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
    >>> args = TPRLGRPOConfig(output_dir="out", enable_perception_filtering=True, enable_trajectory_reweighting=True)
    >>> trainer = TPRLGRPOTrainer(model="Qwen/Qwen2.5-VL-3B-Instruct", reward_funcs=accuracy, args=args,
    ...                           train_dataset=dataset)  # dataset with "prompt" and "image" columns
    >>> trainer.train()
    ```

    Args:
        perturbation_fn (`Callable[[PIL.Image.Image, numpy.random.Generator], PIL.Image.Image]`, *optional*):
            A custom perturbation, used instead of `args.perturbation`.
        **kwargs:
            Every argument of [`~trl.GRPOTrainer`] (`model`, `reward_funcs`, `args`, `train_dataset`,
            `processing_class`, `peft_config`, ...). `args` must be a [`TPRLGRPOConfig`].
    """

    _tag_names = ["trl", "grpo", "trl_ext", "tprl"]
    _name = "TPRL-GRPO"
    _paper = {
        "title": "Spotlight on Token Perception for Multimodal Reinforcement Learning",
        "id": "2510.09285",
        # docstyle-ignore
        "citation": textwrap.dedent(
            """\
            @article{huang2025spotlight,
                title        = {{Spotlight on Token Perception for Multimodal Reinforcement Learning}},
                author       = {Siyuan Huang and others},
                year         = 2025,
                eprint       = {arXiv:2510.09285}
            }"""
        ),
    }

    def __init__(self, *args, perturbation_fn: Perturbation | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.args
        if not isinstance(config, TPRLGRPOConfig):
            raise TypeError(f"args must be a TPRLGRPOConfig, got {type(config).__name__}.")
        self.perturbation_fn = perturbation_fn or get_perturbation(
            config.perturbation, config.perturbation_patch_size, config.perturbation_probability,
            config.perturbation_noise_std,
        )  # fmt: skip
        seed = config.perturbation_seed if config.perturbation_seed is not None else config.seed
        self._perturbation_rng = np.random.default_rng([seed, self.accelerator.process_index])
        if config.kl_controller == "adaptive":
            self.kl_controller = AdaptiveKLController(self.beta, config.kl_target, config.kl_horizon)
        else:
            self.kl_controller = FixedKLController(self.beta)
        if config.online_filtering and config.filter_reward not in self.reward_func_names:
            raise ValueError(
                f"filter_reward={config.filter_reward!r} is not one of the reward functions {self.reward_func_names}."
            )
        # Entropy filtering alone needs no extra forward: TRL calls `get_high_entropy_mask` in its loss whenever
        # `top_entropy_quantile < 1`, and the override below applies the per-response rule there. With perception
        # filtering too, both masks are built at rollout time and folded into the advantages instead.
        if config.enable_entropy_filtering and not config.enable_perception_filtering:
            self.top_entropy_quantile = config.top_p_entropy_tokens
        self._rewards_per_func: torch.Tensor | None = None

    @property
    def _needs_dependency(self) -> bool:
        return self.args.enable_perception_filtering or self.args.enable_trajectory_reweighting

    @property
    def _recomputes_advantages(self) -> bool:
        return self.args.kl_penalty == "reward" or self.args.advantage_estimator != "grpo" or self.args.online_filtering

    def get_high_entropy_mask(self, entropies: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
        """Per-response entropy filter: each response keeps its ⌈n·k⌉ highest-entropy tokens (k =
        `top_p_entropy_tokens`), instead of TRL's single batch-wide quantile `threshold`."""
        return top_k_per_row_mask(entropies, mask, self.args.top_p_entropy_tokens)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Keep the (gathered) per-function rewards: online filtering and the other advantage estimators need them.
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _compute_loss(self, model, inputs):
        if self.args.kl_penalty == "loss":
            return super()._compute_loss(model, inputs)
        # kl_penalty="reward": the KL is already in the advantages; TRL's loss must not add its k3 term again.
        beta, self.beta = self.beta, 0.0
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.beta = beta

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:  # evaluation: plain GRPO scoring
            return output
        config = self.args
        mask = output["completion_mask"].float()
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        sequence_advantages = output["advantages"]
        metrics = self._metrics["train"]

        old_logps = entropies = None
        if self._needs_dependency or (config.enable_entropy_filtering and config.enable_perception_filtering):
            old_logps, entropies = self._rollout_logps(output, inputs)

        if self.beta != 0.0 and (config.kl_penalty == "reward" or config.kl_controller == "adaptive"):
            policy_logps = output.get("old_per_token_logps")
            if policy_logps is None:
                policy_logps = old_logps if old_logps is not None else self._rollout_logps(output, inputs)[0]
            per_token_kl = kl_divergence(policy_logps, output["ref_per_token_logps"], config.kl_estimator) * mask
            mean_kl = self.accelerator.gather((per_token_kl.sum(1) / mask.sum(1).clamp(min=1)).mean()).mean().item()
            # EasyR1's KL-in-reward uses this batch's coefficient, then the controller updates it for the next one
            kl_penalty = self.beta * per_token_kl if config.kl_penalty == "reward" else None
            metrics["tprl/kl_coef"].append(self.beta)
            metrics["tprl/rollout_kl"].append(mean_kl)
            self.beta = self.kl_controller.update(mean_kl, n_steps=len(self._rewards_per_func))
        else:
            kl_penalty = None

        if self._recomputes_advantages:
            greedy = self._greedy_rewards(inputs) if config.advantage_estimator == "remax" else None
            advantages = self._recompute_advantages(output, mask, kl_penalty, greedy)
        else:
            advantages = sequence_advantages[:, None].expand_as(mask)

        token_weights = torch.ones_like(mask)
        if self._needs_dependency:
            dependency = self._token_dependency(output, inputs, old_logps) * mask
            metrics["tprl/dependency_mean"].append(self._gathered_mean(dependency.sum() / mask.sum().clamp(min=1)))
            if config.enable_perception_filtering:
                perception = top_k_per_row_mask(dependency, mask, config.top_p_perception_tokens)
                metrics["tprl/perception_token_fraction"].append(self._token_fraction(perception, mask))
                selected = perception
                if config.enable_entropy_filtering:
                    by_entropy = top_k_per_row_mask(entropies, mask, config.top_p_entropy_tokens)
                    metrics["tprl/entropy_token_fraction"].append(self._token_fraction(by_entropy, mask))
                    selected = selected | by_entropy if config.token_filter_combination == "or" else selected & by_entropy
                token_weights = selected.float()
            if config.enable_trajectory_reweighting:
                _, factors = trajectory_scaling_factors(
                    dependency, mask, config.trajectory_scaling_min, config.trajectory_scaling_rule
                )
                metrics["tprl/scaling_factor_mean"].append(self._gathered_mean(factors.mean()))
                metrics["tprl/scaling_factor_max"].append(self.accelerator.gather(factors.max()).max().item())
                token_weights = token_weights * factors[:, None]

        if self._needs_dependency or self._recomputes_advantages:
            output["advantages"] = advantages * token_weights
        return output

    def _gathered_mean(self, value: torch.Tensor) -> float:
        return self.accelerator.gather(value.detach().float().reshape(1)).mean().item()

    def _token_fraction(self, selected: torch.Tensor, mask: torch.Tensor) -> float:
        counts = torch.stack([(selected.float() * mask).sum(), mask.sum()])
        kept, total = self.accelerator.gather(counts.reshape(1, 2)).sum(0).tolist()
        return kept / max(total, 1.0)

    def _images(self, inputs: list[dict[str, Any]]) -> list:
        if "images" in inputs[0]:
            return [image for example in inputs for image in (example.get("images") or [])]
        if "image" in inputs[0]:
            return [example["image"] for example in inputs if example.get("image") is not None]
        return []

    def _forward_kwargs(self, output: dict[str, Any]) -> dict[str, Any]:
        kwargs = {key: output[key] for key in (*_VISION_KEYS, "mm_token_type_ids", "token_type_ids") if key in output}
        for key in ("num_images", "num_tiles"):
            if key in output:
                kwargs[key] = output[key]
        return kwargs

    def _perturbed_forward_kwargs(self, output: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
        images = self._images(inputs)
        if not images or "pixel_values" not in output:
            raise ValueError(
                "Perception filtering and trajectory reweighting need images: the batch has none (text-only model or "
                "dataset without an 'image'/'images' column). Turn enable_perception_filtering and "
                "enable_trajectory_reweighting off for text-only training."
            )
        perturbed = [self.perturbation_fn(image, self._perturbation_rng) for image in images]
        processed = self.processing_class.image_processor(images=perturbed, return_tensors="pt")
        kwargs = self._forward_kwargs(output)
        for key, value in processed.items():
            if key not in kwargs:
                continue
            value = value.to(kwargs[key].device)
            if key == "pixel_values":
                kwargs[key] = value.to(kwargs[key].dtype)
            elif not torch.equal(value, kwargs[key]):
                raise ValueError(f"The perturbed image changed the processor's {key!r}: perturbations must keep the size.")
        return kwargs

    def _sequences(self, output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        return input_ids, attention_mask, output["completion_ids"].size(1)

    @torch.no_grad()
    def _rollout_logps(self, output, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities and entropies of the completions under the current policy and the original images."""
        input_ids, attention_mask, logits_to_keep = self._sequences(output)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention_mask, logits_to_keep, batch_size=self.args.per_device_train_batch_size,
            compute_entropy=True, **self._forward_kwargs(output),
        )  # fmt: skip
        return logps, entropies

    @torch.no_grad()
    def _token_dependency(self, output, inputs, old_logps: torch.Tensor) -> torch.Tensor:
        """Visual dependency s_t of every completion token: how much its distribution moves when the image is perturbed."""
        input_ids, attention_mask, logits_to_keep = self._sequences(output)
        perturbed_kwargs = self._perturbed_forward_kwargs(output, inputs)
        if self.args.dependency_estimator == "sampled":
            perturbed_logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep,
                batch_size=self.args.per_device_train_batch_size, **perturbed_kwargs,
            )  # fmt: skip
            return sampled_token_dependency(old_logps, perturbed_logps)
        original = self._completion_log_softmax(input_ids, attention_mask, logits_to_keep, self._forward_kwargs(output))
        perturbed = self._completion_log_softmax(input_ids, attention_mask, logits_to_keep, perturbed_kwargs)
        return (original.exp() * (original - perturbed)).sum(-1).clamp(min=0)

    def _completion_log_softmax(self, input_ids, attention_mask, logits_to_keep, kwargs) -> torch.Tensor:
        """Full-vocabulary log-probabilities (B, T, V) at the completion positions (the 'kl' dependency estimator)."""
        model_inputs = {k: v for k, v in kwargs.items() if k not in ("num_images", "num_tiles")}
        with self.accelerator.autocast():
            logits = self.model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1, **model_inputs
            ).logits[:, :-1]
        return (logits.float() / self.temperature).log_softmax(-1)

    @torch.no_grad()
    def _greedy_rewards(self, inputs: list[dict[str, Any]]) -> torch.Tensor:
        """ReMax's baseline: the weighted reward of a greedy completion of each row's prompt (gathered, (N,)).

        On one process, consecutive rows of the same example (a prompt group) share one greedy generation; with several
        processes every row gets its own, so that all processes gather the same number of rewards.
        """
        if self.accelerator.num_processes > 1:
            firsts = list(range(len(inputs)))
        else:
            firsts = [i for i, example in enumerate(inputs) if i == 0 or (example is not inputs[i - 1] and example != inputs[i - 1])]
        unique = [inputs[i] for i in firsts]
        prompts = [example["prompt"] for example in unique]
        images = self._images(unique) if ("image" in unique[0] or "images" in unique[0]) else []
        if images:
            per_example = [example.get("images") or ([example["image"]] if example.get("image") is not None else []) for example in unique]
            prompts = [prepare_multimodal_messages(prompt, images=image_list) for prompt, image_list in zip(prompts, per_example)]
        sampling_config = self.generation_config
        self.generation_config = copy.deepcopy(sampling_config)
        self.generation_config.do_sample = False
        for name in ("temperature", "top_p", "top_k", "min_p"):
            setattr(self.generation_config, name, None)
        try:
            _, completion_ids, _, completions, _, _, _, _ = self._generate(prompts)
        finally:
            self.generation_config = sampling_config
        rewards_per_func = GRPOTrainer._calculate_rewards(self, unique, prompts, completions, completion_ids)
        local = rewards_per_func[self.accelerator.process_index * len(unique) : (self.accelerator.process_index + 1) * len(unique)]
        greedy = (local * self.reward_weights.to(local.device)).nansum(dim=1)
        row_to_unique = torch.tensor([sum(1 for f in firsts if f <= i) - 1 for i in range(len(inputs))])
        self._metrics["train"]["tprl/greedy_reward_mean"].append(greedy.mean().item())
        return self.accelerator.gather(greedy[row_to_unique.to(greedy.device)])

    def _recompute_advantages(
        self, output, mask: torch.Tensor, kl_penalty: torch.Tensor | None, greedy_rewards: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Advantages (B, T) from the gathered rewards, for the estimators and filters TRL does not have.

        `kl_penalty` (B, T) is β·KL_t of the local completions (`kl_penalty="reward"`): each completion's reward
        becomes r − Σ_t β·KL_t (for REINFORCE++ the penalty stays per token, as in EasyR1).
        """
        config = self.args
        rewards_per_func = self._rewards_per_func
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        if kl_penalty is not None and config.advantage_estimator != "reinforce_plus_plus":
            rewards = rewards - self.accelerator.gather(kl_penalty.sum(dim=1))
        group_size = self.num_generations
        keep = torch.ones_like(rewards, dtype=torch.bool)
        if config.online_filtering:
            filter_rewards = rewards_per_func[:, self.reward_func_names.index(config.filter_reward)]
            keep = group_keep_mask(filter_rewards, group_size, config.filter_low, config.filter_high)
            self._metrics["train"]["tprl/filtered_group_fraction"].append(1.0 - keep.float().mean().item())
        process_slice = slice(
            self.accelerator.process_index * len(mask), (self.accelerator.process_index + 1) * len(mask)
        )
        if config.advantage_estimator == "grpo":
            group_ids = torch.arange(len(rewards), device=rewards.device) // group_size
            advantages = compute_advantages(rewards, group_ids, scale=self.scale_rewards)[process_slice]
            advantages = advantages[:, None].expand_as(mask)
        elif config.advantage_estimator == "rloo":
            advantages = torch.nan_to_num(rloo_advantages(rewards, group_size), nan=0.0)[process_slice]
            advantages = advantages[:, None].expand_as(mask)
        elif config.advantage_estimator == "remax":
            advantages = remax_advantages(rewards, greedy_rewards.to(rewards.device))[process_slice]
            advantages = advantages[:, None].expand_as(mask)
        else:  # reinforce_plus_plus: per-token returns, whitened over the local batch as in EasyR1
            token_rewards = outcome_token_rewards(torch.nan_to_num(rewards[process_slice], nan=0.0), mask)
            if kl_penalty is not None:
                token_rewards = token_rewards - kl_penalty
            advantages = reinforce_plus_plus_advantages(token_rewards, mask, config.reinforce_gamma)
        if config.online_filtering:
            local_keep = keep[process_slice]
            output["completion_mask"] = output["completion_mask"] * local_keep[:, None].to(output["completion_mask"].dtype)
            loss_mask = output["completion_mask"] if "tool_mask" not in output else output["completion_mask"] * output["tool_mask"]
            output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            advantages = advantages * local_keep[:, None]
        return advantages
