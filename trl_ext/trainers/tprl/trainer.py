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
"""`TPRLGRPOTrainer`: `ExtendedGRPOTrainer` with Token Perception RL (VPPO) for vision-language models.

The trainer overrides the fewest hooks it can (`ExtendedGRPOTrainer._rollout_advantages`, and of `GRPOTrainer`
`_compute_loss`, `_get_per_token_logps_and_entropies`, `get_high_entropy_mask`, the checkpoint hooks and the model card)
and folds the token weights into per-token advantages of shape (B, T), which TRL's loss accepts as they are.
"""

import logging
import textwrap
from typing import Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel
from trl import GRPOTrainer
from trl.trainer.utils import (
    get_config_model_id,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from ...models.processors import load_vlm_processor
from ..grpo.trainer import ExtendedGRPOTrainer
from .config import TPRLGRPOConfig
from .perception import sampled_token_dependency, top_k_per_row_mask, trajectory_scaling_factors
from .perturbations import Perturbation, get_perturbation


logger = logging.getLogger(__name__)

# Key of the rollout batch holding log π(o_t|I′) when the shaping is computed in the loss (on-policy, see
# `TPRLGRPOTrainer._shapes_in_loss`).
PERTURBED_LOGPS_KEY = "tprl_perturbed_per_token_logps"


class TPRLGRPOTrainer(ExtendedGRPOTrainer):
    r"""
    [`ExtendedGRPOTrainer`] with Token Perception RL for vision-language models (VPPO,
    [Spotlight on Token Perception for Multimodal RL](https://huggingface.co/papers/2510.09285)). The RL controls
    that TRL lacks (KL estimators and an adaptive KL controller, RLOO / REINFORCE++ / ReMax advantages, online
    difficulty filtering, reward-component logging) are [`ExtendedGRPOTrainer`]'s.

    After each rollout batch is generated, scored and (with online filtering) filtered by [`ExtendedGRPOTrainer`], the
    trainer

    1. re-scores the completions with a perturbed image I′ (patch blackening by default) in one extra no-grad forward
       and measures each token's visual dependency s_t, either VPPO's one-sample k3 estimate at the generated token or
       the full KL over the vocabulary. log π(o_t|I) are TRL's old log-probabilities when it computed them
       (off-policy). On-policy they are TRL's own loss forward, as TRL takes them: steps 2 and 3 then run in the loss,
       right after that forward (with VPPO's estimate, one loss step per generation batch and no rollout KL; otherwise
       the original and the perturbed images go through the model together, as one batch of 2B sequences);
    2. keeps, per response, the top ⌈n·k⌉ tokens by entropy and/or by dependency (Token Gradient Filtering);
    3. scales each response's advantage by a factor from its mean dependency (Trajectory Advantage Shaping);

    and folds all of it into the per-token advantages (B, T) of [`ExtendedGRPOTrainer`], which `GRPOTrainer`'s loss
    accepts as is. With every feature off (the default) it is exactly [`ExtendedGRPOTrainer`] (and, with its options
    off too, `GRPOTrainer`, TRL's own options included).

    The perturbation generator is checkpointed with the KL controller, in `trl_ext_state_<process>.json`, so that a
    resumed run continues both exactly.

    Example:

    ```python
    >>> from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
    >>> args = TPRLGRPOConfig(output_dir="out", enable_perception_filtering=True, enable_trajectory_reweighting=True)
    >>> trainer = TPRLGRPOTrainer(
    ...     model="Qwen/Qwen2.5-VL-3B-Instruct", reward_funcs=accuracy, args=args, train_dataset=dataset
    ... )  # dataset with "prompt" and "image" columns
    >>> trainer.train()
    ```

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            As for [`~trl.GRPOTrainer`].
        reward_funcs:
            As for [`ExtendedGRPOTrainer`].
        args ([`TPRLGRPOConfig`], *optional*):
            Defaults to `TPRLGRPOConfig("<model name>-TPRL-GRPO")`, as [`~trl.GRPOTrainer`] builds its default.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`], *optional*):
            Must hold a `prompt` column (unless `environment_factory` supplies the prompts) and at least one row.
        perturbation_fn (`Callable[[PIL.Image.Image, numpy.random.Generator], PIL.Image.Image]`, *optional*):
            A custom perturbation, used instead of `args.perturbation`.
        **kwargs:
            Every other argument of [`~trl.GRPOTrainer`] (`eval_dataset`, `processing_class`, `peft_config`, ...).
            Without `processing_class`, the model's processor is loaded as GRPOTrainer loads it (left padding and
            truncation), through [`~trl_ext.models.processors.load_vlm_processor`] so that Qwen-VL processors load
            without torchvision.
    """

    _tag_names = ["trl", "grpo", "trl_ext", "tprl"]
    _config_class = TPRLGRPOConfig
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

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: Any = None,
        args: TPRLGRPOConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        *extra_args,
        perturbation_fn: Perturbation | None = None,
        **kwargs,
    ):
        args = self._default_args(model) if args is None else args
        if len(extra_args) < 2 and kwargs.get("processing_class") is None and isinstance(args, TPRLGRPOConfig):
            kwargs["processing_class"] = _load_processor(model, args)
        # (inputs, log π(o_t|I′)) of an on-policy batch, from `_compute_loss` to TRL's loss forward (see there)
        self._pending_shaping: tuple[dict[str, Any], torch.Tensor] | None = None
        super().__init__(model, reward_funcs, args, train_dataset, *extra_args, **kwargs)
        config = self.args
        self.perturbation_fn = perturbation_fn or get_perturbation(
            config.perturbation,
            config.perturbation_patch_size,
            config.perturbation_probability,
            config.perturbation_noise_std,
        )
        seed = config.perturbation_seed if config.perturbation_seed is not None else config.seed
        self._perturbation_rng = np.random.default_rng([seed, self.accelerator.process_index])
        # Entropy filtering alone needs no extra forward: TRL calls `get_high_entropy_mask` in its loss whenever
        # `top_entropy_quantile < 1`, and the override below applies the per-response rule there. With perception
        # filtering too, both masks are built at rollout time and folded into the advantages instead.
        if config.enable_entropy_filtering and not config.enable_perception_filtering:
            self.top_entropy_quantile = config.top_p_entropy_tokens

    @property
    def _needs_dependency(self) -> bool:
        return self.args.enable_perception_filtering or self.args.enable_trajectory_reweighting

    def get_high_entropy_mask(self, entropies: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
        """Entropy mask of TRL's loss (called when `top_entropy_quantile < 1`).

        With TPRL's entropy filtering on (and perception filtering off, so that the rule runs inside TRL's loss), each
        response keeps its ⌈n·k⌉ highest-entropy tokens (k = `top_p_entropy_tokens`, n its valid tokens). Otherwise
        this is exactly [`~trl.GRPOTrainer.get_high_entropy_mask`]: tokens whose entropy is at least the batch-wide
        `threshold` quantile of all valid tokens of all processes. The parent's rule also applies when the method is
        called on an object that has no TPRL configuration.
        """
        config = getattr(self, "args", None)
        if (
            isinstance(config, TPRLGRPOConfig)
            and config.enable_entropy_filtering
            and not config.enable_perception_filtering
        ):
            return top_k_per_row_mask(entropies, mask, config.top_p_entropy_tokens)
        return GRPOTrainer.get_high_entropy_mask(self, entropies, mask, threshold)

    def _compute_loss(self, model, inputs):
        if PERTURBED_LOGPS_KEY in inputs:
            # On-policy shaping: TRL's loss forward is the rollout policy's forward (TRL itself takes its detached
            # log-probabilities as the old ones), so the dependency and the token weights are computed from it, in
            # `_get_per_token_logps_and_entropies`, and written to `inputs["advantages"]` before TRL reads them.
            # The key is removed, so the batch's advantages are shaped once.
            self._pending_shaping = (inputs, inputs.pop(PERTURBED_LOGPS_KEY))
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._pending_shaping = None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        pending, self._pending_shaping = self._pending_shaping, None
        if pending is not None:  # the loss forward of an on-policy TPRL batch (see `_compute_loss`)
            inputs, perturbed_logps = pending
            inputs["advantages"] = self._shape_advantages(
                inputs["advantages"],
                self._loss_mask(inputs),
                sampled_token_dependency(logps.detach(), perturbed_logps),
                entropies.detach() if entropies is not None else None,
            )
        return logps, entropies, aux_loss

    def _rollout_advantages(
        self,
        output: dict[str, Any],
        inputs: list[dict[str, Any]],
        mask: torch.Tensor,
        keep: torch.Tensor | None,
        policy_logps: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """[`ExtendedGRPOTrainer`]'s advantages (B, T), with the token weights of Token Perception RL folded in.

        The dependency pass runs before the rollout KL, whose log π(o_t|I) it provides. When the shaping is computed
        in the loss (`_shapes_in_loss`), only log π(o_t|I′) is computed here and travels with the batch.
        """
        if not self._needs_dependency:
            return super()._rollout_advantages(output, inputs, mask, keep, policy_logps)
        config = self.args
        policy_logps = output.get("old_per_token_logps")
        dependency, entropies = None, None
        if self._shapes_in_loss(policy_logps):
            output[PERTURBED_LOGPS_KEY] = self._rollout_logps(output, self._perturbed_forward_kwargs(output, inputs))
        else:
            needs_entropies = config.enable_entropy_filtering and config.enable_perception_filtering
            dependency, policy_logps, entropies = self._token_dependency(output, inputs, policy_logps, needs_entropies)
        advantages = super()._rollout_advantages(output, inputs, mask, keep, policy_logps)
        if advantages is None:
            advantages = output["advantages"][:, None].expand_as(mask)
        if dependency is None:
            return advantages
        return self._shape_advantages(advantages, mask, dependency, entropies)

    def _shapes_in_loss(self, policy_logps: torch.Tensor | None) -> bool:
        """Whether the token weights come from TRL's loss forward instead of an unperturbed pass at rollout time.

        That forward gives log π(o_t|I) (and the entropies) of the rollout policy when TRL computed no old
        log-probabilities (on-policy) and nothing else needs them now (no rollout KL), the dependency is VPPO's
        sampled-token estimate, and the loss sees the whole generation batch at once (`steps_per_generation == 1`),
        which the batch-wide shaping statistics need. Then the only extra pass is the perturbed forward.
        """
        return (
            policy_logps is None
            and not self._needs_rollout_kl
            and self.args.dependency_estimator == "sampled"
            and self.args.steps_per_generation == 1
        )

    def _shape_advantages(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        dependency: torch.Tensor,
        entropies: torch.Tensor | None,
    ) -> torch.Tensor:
        """Token Gradient Filtering and Trajectory Advantage Shaping folded into the advantages (B, T), with metrics.

        `dependency` and `entropies` (B, T) are the visual dependency and the entropy of each completion token under
        the rollout policy; `mask` (B, T) is the loss mask (dropped groups already removed).
        """
        config = self.args
        metrics = self._metrics["train"]
        token_weights = torch.ones_like(mask)
        dependency = dependency * mask
        metrics["tprl/dependency_mean"].append(self._gathered_mean(dependency.sum() / mask.sum().clamp(min=1)))
        if config.enable_perception_filtering:
            perception = top_k_per_row_mask(dependency, mask, config.top_p_perception_tokens)
            metrics["tprl/perception_token_fraction"].append(self._token_fraction(perception, mask))
            selected = perception
            if config.enable_entropy_filtering:
                by_entropy = top_k_per_row_mask(entropies, mask, config.top_p_entropy_tokens)
                metrics["tprl/entropy_token_fraction"].append(self._token_fraction(by_entropy, mask))
                if config.token_filter_combination == "or":
                    selected = selected | by_entropy
                else:
                    selected = selected & by_entropy
            token_weights = selected.float()
        if config.enable_trajectory_reweighting:
            # rows without valid tokens (dropped groups, masked truncations) are left out of the normalisation
            _, factors = trajectory_scaling_factors(
                dependency, mask, config.trajectory_scaling_min, config.trajectory_scaling_rule
            )
            kept_factors = factors[mask.sum(1) > 0]
            stats = torch.stack([kept_factors.sum(), kept_factors.new_tensor(float(kept_factors.numel()))])
            total, count = self.accelerator.gather(stats.reshape(1, 2)).sum(0).tolist()
            metrics["tprl/scaling_factor_mean"].append(total / max(count, 1.0))
            metrics["tprl/scaling_factor_max"].append(self.accelerator.gather(factors.max()).max().item())
            token_weights = token_weights * factors[:, None]
        return advantages * token_weights

    def _gathered_mean(self, value: torch.Tensor) -> float:
        return self.accelerator.gather(value.detach().float().reshape(1)).mean().item()

    def _token_fraction(self, selected: torch.Tensor, mask: torch.Tensor) -> float:
        counts = torch.stack([(selected.float() * mask).sum(), mask.sum()])
        kept, total = self.accelerator.gather(counts.reshape(1, 2)).sum(0).tolist()
        return kept / max(total, 1.0)

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
                raise ValueError(
                    f"The perturbed image changed the processor's {key!r}: perturbations must keep the size."
                )
        return kwargs

    @torch.no_grad()
    def _token_dependency(
        self,
        output: dict[str, Any],
        inputs: list[dict[str, Any]],
        policy_logps: torch.Tensor | None = None,
        needs_entropies: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Visual dependency s_t of every completion token: how much its distribution moves when the image is perturbed.

        - `"sampled"` (VPPO): s_t = clamp(eˣ − x − 1, 0, 10), x = clamp(log π(o_t|I′) − log π(o_t|I), −20, 20);
        - `"kl"`: s_t = KL(π(·|I) ‖ π(·|I′)) = Σ_v π(v|I) (log π(v|I) − log π(v|I′)), clamped at 0.

        One no-grad pass, `per_device_train_batch_size` rows at a time. `policy_logps` are log π(o_t|I) when TRL
        already has them (off-policy); when they are missing, `needs_entropies` or with `"kl"`, the original and the
        perturbed rows are stacked into one batch, so the same forward gives log π(o_t|I), its entropies and the
        perturbed distribution.

        Returns:
            `tuple`: s_t (B, T), log π(o_t|I) (B, T) and the entropies under I (B, T) or None.
        """
        input_ids, attention_mask, logits_to_keep = self._sequences(output)
        original = self._forward_kwargs(output)
        perturbed = self._perturbed_forward_kwargs(output, inputs)
        size = input_ids.size(0)
        chunk = self.args.per_device_train_batch_size
        if self.args.dependency_estimator == "kl":
            dependency, own_logps, entropies = self._full_kl_dependency(output, original, perturbed, chunk)
            policy_logps = own_logps if policy_logps is None else policy_logps
            return dependency, policy_logps, entropies if needs_entropies else None
        if policy_logps is None or needs_entropies:
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                self.model,
                input_ids.repeat(2, 1),
                attention_mask.repeat(2, 1),
                logits_to_keep,
                batch_size=2 * chunk,
                compute_entropy=needs_entropies,
                **_stack_forward_kwargs(original, perturbed),
            )
            own, perturbed_logps = logps[:size], logps[size:]
            policy_logps = own if policy_logps is None else policy_logps
            entropies = entropies[:size] if needs_entropies else None
        else:
            own, entropies = policy_logps, None
            perturbed_logps = self._rollout_logps(output, perturbed)
        return sampled_token_dependency(own, perturbed_logps), policy_logps, entropies

    def _full_kl_dependency(
        self, output: dict[str, Any], original: dict[str, Any], perturbed: dict[str, Any], chunk: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """KL(π(·|I) ‖ π(·|I′)), log π(o_t|I) and the entropies under I, each (B, T), `chunk` rows at a time.

        Each chunk's original and perturbed rows go through the model as one batch of 2·chunk sequences, so the
        (2·chunk, T, V) log-probabilities of one chunk are in memory at a time.
        """
        input_ids, attention_mask, logits_to_keep = self._sequences(output)
        num_chunks = input_ids.size(0) // chunk
        rows = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_ids": output["completion_ids"]}
        results = []
        for first, second in zip(
            _row_chunks({**rows, **original}, num_chunks), _row_chunks({**rows, **perturbed}, num_chunks)
        ):
            first_ids, first_mask, completion_ids = (first.pop(key) for key in rows)
            for key in rows:
                del second[key]
            log_probs = self._completion_log_softmax(
                first_ids.repeat(2, 1), first_mask.repeat(2, 1), logits_to_keep, _stack_forward_kwargs(first, second)
            )
            own, other = log_probs.chunk(2)
            results.append(
                (
                    (own.exp() * (own - other)).sum(-1).clamp(min=0),
                    own.gather(-1, completion_ids[..., None]).squeeze(-1),
                    -(own.exp() * own).sum(-1),
                )
            )
        dependency, logps, entropies = (torch.cat(parts) for parts in zip(*results))
        return dependency, logps, entropies

    def _completion_log_softmax(self, input_ids, attention_mask, logits_to_keep, kwargs) -> torch.Tensor:
        """Full-vocabulary log-probabilities (B, T, V) at the completion positions (the 'kl' dependency estimator)."""
        model_inputs = {k: v for k, v in kwargs.items() if k not in ("num_images", "num_tiles")}
        with self.accelerator.autocast():
            logits = self.model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1, **model_inputs
            ).logits[:, :-1]
        return (logits.float() / self.temperature).log_softmax(-1)

    # Checkpointing: the perturbation generator too, in ExtendedGRPOTrainer's per-process state file.
    def _checkpoint_state(self) -> dict[str, Any]:
        return {**super()._checkpoint_state(), "perturbation_rng": self._perturbation_rng.bit_generator.state}

    def _restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        super()._restore_checkpoint_state(state)
        self._perturbation_rng.bit_generator.state = state["perturbation_rng"]


def _load_processor(model: str | PreTrainedModel, args: TPRLGRPOConfig):
    """The processor GRPOTrainer would load for `model` (`AutoProcessor`, left padding and truncation), built without
    torchvision when `AutoProcessor` needs it."""
    if isinstance(model, str):
        model_id, revision = model, (args.model_init_kwargs or {}).get("revision")
    else:
        model_id, revision = get_config_model_id(model.config), None
    return load_vlm_processor(
        model_id,
        revision=revision,
        truncation_side="left",
        padding_side="left",
        trust_remote_code=args.trust_remote_code,
    )


def _row_chunks(batch: dict[str, Any], num_chunks: int) -> list[dict[str, Any]]:
    """`batch` (per-row tensors and lists, vision inputs per image; its first entry a per-row tensor) split into
    `num_chunks` batches of consecutive rows, each with its own images' vision inputs (TRL's splitting of a generation
    batch)."""
    return [
        unsplit_pixel_values_by_grid(part) for part in split_tensor_dict(split_pixel_values_by_grid(batch), num_chunks)
    ]


def _stack_forward_kwargs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Forward kwargs of the batch `first` followed by the batch `second` (tensors along dim 0, lists joined)."""
    stacked = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            stacked[key] = torch.cat([value, second[key]], dim=0)
        elif isinstance(value, list):
            stacked[key] = [*value, *second[key]]
        else:
            stacked[key] = value
    return stacked
