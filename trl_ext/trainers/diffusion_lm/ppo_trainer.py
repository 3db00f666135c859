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
"""[`DiscreteDiffusionPPOTrainer`]: PPO for SEDD discrete diffusion language models on an ELBO likelihood: the SEDD
entry point of [`~trl_ext.trainers.diffusion_lm.trainer.DiffusionLMGRPOTrainer`]."""

import torch
from datasets import Dataset
from transformers import TrainerCallback

from ...models.diffusion_lm import SEDDAdapter
from ...models.sedd import SEDDModel
from ...rl.scoring import RewardFunc
from .ppo_config import DiscreteDiffusionPPOConfig
from .trainer import DiffusionLMGRPOTrainer


class DiscreteDiffusionPPOTrainer(DiffusionLMGRPOTrainer):
    r"""
    PPO for SEDD discrete diffusion language models.

    Rollouts come from the SEDD sampler conditioned on each prompt (the prompt positions are fixed, inpainting-style).
    The policy's log-likelihood of a completion is the negative of its DWDSE bound, estimated with K noise draws that
    are drawn once per rollout and reused for the old policy, every PPO epoch and the reference (common random
    numbers; with independent draws the log-ratio's noise is hundreds of nats and every sample is clipped). It is
    [`DiffusionLMGRPOTrainer`] with the SEDD family ([`~trl_ext.models.diffusion_lm.SEDDAdapter`]), SEDD's DWDSE bound
    as the `"elbo"` estimator, LoRA, and the SEDD defaults and names of [`DiscreteDiffusionPPOConfig`].

    Args:
        model (`str` or [`SEDDModel`]): The policy, or a path / `trl_ext.hub` key / Hub id.
        reward_funcs (callable or list of callables): TRL-convention rewards
            `fn(prompts, completions, **columns) -> list[float | None]` (`None` masks a sample).
        args ([`DiscreteDiffusionPPOConfig`]): Configuration.
        train_dataset (`datasets.Dataset`): A `prompt` column (text) and any columns the rewards read.
        processing_class (tokenizer): Encodes prompts and decodes completions (GPT-2's for the published models);
            its `eos_token_id` pads prompts on the left.
        ref_model ([`SEDDModel`], *optional*): The reference for `beta > 0`; defaults to a frozen copy of the
            initial policy (or the policy with LoRA disabled when `use_peft`).
        callbacks (list of `transformers.TrainerCallback`, *optional*): Called at the events of `transformers.Trainer`'s
            loop (`on_step_end`, `on_log`, `on_save`, ...); they can stop training through `control`.
    """

    _name = "SEDD-PPO"
    _method = "PPO"
    metric_prefix = "sedd"
    _forward_bypasses_wrapper = True  # the ELBO calls the policy's submodules (row-chunked head)

    def __init__(
        self,
        model: str | SEDDModel,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: DiscreteDiffusionPPOConfig,
        train_dataset: Dataset,
        processing_class,
        ref_model: SEDDModel | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ):
        super().__init__(model, reward_funcs, args, train_dataset, processing_class, ref_model, callbacks)
        self.noise = self.adapter.noise

    def _load_model(self, model, processing_class) -> tuple[SEDDModel, object]:
        return SEDDModel.from_pretrained(model) if isinstance(model, str) else model, processing_class

    def _check_model_and_tokenizer(self, model: SEDDModel, processing_class) -> None:
        if processing_class.eos_token_id is None:
            raise ValueError("processing_class needs an eos_token_id (it pads the prompts).")
        if self.args.estimator == "mean_field" and model.config.graph_type != "absorb":
            raise ValueError("estimator='mean_field' needs the absorbing graph (its scores give the conditionals).")
        if len(processing_class) > model.config.tokens:
            raise ValueError(
                f"The tokenizer has {len(processing_class)} tokens but the model only {model.config.tokens}."
            )

    def _pad_token_id(self, processing_class) -> int | None:
        return processing_class.eos_token_id  # GPT-2's tokenizer has no pad token

    def _default_adapter(self, model: SEDDModel) -> SEDDAdapter:
        return SEDDAdapter(model.config, self.args.sampling_steps, self.args.predictor)

    @property
    def num_likelihood_samples(self) -> int:
        """K = `args.num_sigma_samples`."""
        return self.args.num_sigma_samples

    def _likelihood_logs(self, old_per_draw: torch.Tensor) -> dict[str, float]:
        if self.estimator != "elbo":
            return super()._likelihood_logs(old_per_draw)
        return {"sedd/old_elbo_nll": (-old_per_draw.mean(0)).mean().item()}

    def _term_metrics(self, new: torch.Tensor) -> dict[str, float]:
        if self.estimator != "elbo":
            return super()._term_metrics(new)
        return {"sedd/elbo_nll": (-new).mean().item()}
