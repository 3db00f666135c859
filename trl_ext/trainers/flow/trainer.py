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
"""[`FlowGRPOTrainer`]: Flow-GRPO with LoRA for diffusers flow-matching pipelines (SD3 / SD3.5, FLUX.1, Qwen-Image, and
the Qwen-Image-Edit image editor)."""

import contextlib
import os
from collections.abc import Iterator

import torch
from datasets import Dataset
from transformers import TrainerCallback

from ...hub import model_card_name
from ...models.flow import (
    FlowTrajectory,
    flow_adapter,
    load_flow_pipeline,
    sample_trajectories,
    trajectory_step_log_prob,
)
from ...rl.advantages import compute_advantages
from ...rl.scoring import RewardFunc, RewardScorer
from ..group_update import GroupPolicyTrainer, PolicyTerm
from .config import FlowGRPOConfig


SOURCE_IMAGE_COLUMN = "source_image"
"""The dataset column holding the image each prompt edits, for an editing family (Qwen-Image-Edit); the VLM judge's
reward reads the same column."""


class FlowGRPOTrainer(GroupPolicyTrainer):
    r"""
    Flow-GRPO for flow-matching text-to-image models with LoRA: every pipeline family with an adapter in
    [`~trl_ext.models.flow`] (`StableDiffusion3Pipeline`, `FluxPipeline`, `QwenImagePipeline`,
    `QwenImageEditPipeline`), chosen from the pipeline's class. The image editor (`QwenImageEditPipeline`) edits the
    `source_image` column's image of each prompt (an edit record: [`~trl_ext.evaluation.image_edit.edit_records_dataset`]),
    and a group is `num_generations` edits of one record.

    Each step samples `num_generations` images per prompt with the SDE sampler of [`~trl_ext.models.flow.sde`],
    recording every latent and per-step log-probability; scores the images with the reward functions; computes group
    advantages per prompt; and optimises the clipped surrogate on the per-step ratio
    exp(log π_θ(x_{t+1}|x_t) − log π_old(x_{t+1}|x_t)) plus β·KL to the base model (the same transformer with LoRA
    disabled). The KL per step is the exact one between the two Gaussian transitions, ‖μ_θ − μ_ref‖²/(2·std²),
    averaged over latent elements like the log-probabilities. With `sde_window_size` (Flow-GRPO-Fast / MixGRPO) only
    a window of consecutive steps is sampled with the SDE and trained, the others with the deterministic ODE step
    ([`sde_window`]); `sde_type="cps"` takes the coefficient-preserving step. [`FlowRTPOTrainer`] adds the Flow-RTPO
    prompt editor.

    Args:
        pipeline (`str`, `StableDiffusion3Pipeline`, `FluxPipeline` or `QwenImagePipeline`):
            A pipeline or its path / Hub id (loaded with `DiffusionPipeline.from_pretrained`, which picks the class).
            A path is loaded with the frozen weights in the mixed-precision dtype (`bf16` / `fp16`, else fp32) and the
            VAE in fp32; the LoRA weights always train in fp32. Any other pipeline class is a `ValueError` that
            lists the supported ones.
        reward_funcs (callable or list of callables):
            Image rewards `fn(prompts: list[str], images: torch.Tensor, **columns) -> list[float | None]`; `images`
            is a float tensor (B, 3, H, W) in [0, 1] and `columns` are the dataset's other columns. `None` marks a
            sample without reward: it gets no advantage and its count is logged, never a zero reward.
        args ([`FlowGRPOConfig`]):
            Configuration.
        train_dataset (`datasets.Dataset` or `list[str]`):
            Prompts (a `prompt` column); other columns reach the reward functions as keyword arguments. An editing
            family needs a `source_image` column (PIL images), which the VLM judge's reward reads too.
        callbacks (list of `transformers.TrainerCallback`, *optional*): Called at the events of `transformers.Trainer`'s
            loop (`on_step_end`, `on_log`, `on_save`, ...); they can stop training through `control`.
        held_out_reward_funcs (callable or list of callables, *optional*):
            Reward functions never trained on (the same convention as `reward_funcs`), a guard against reward hacking:
            every `sample_steps` steps they score the saved sample images, and their scores are logged as
            `held_out/reward`, `held_out/rewards/<name>/mean`, ... beside the training reward. A training reward that
            rises while a held-out one falls is a policy gaming its reward.

    Every `sample_steps` steps the trainer also logs image statistics of the saved samples that drift when a policy
    hacks its reward ([`~trl_ext.evaluation.image_statistics.image_statistics`]: `images/dark_fraction`,
    `images/colour_entropy`, `images/high_frequency`), in a log entry of their own at that step.
    """

    _name = "Flow-GRPO"
    metric_prefix = "flow"

    def __init__(
        self,
        pipeline,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: FlowGRPOConfig,
        train_dataset: Dataset | list[str],
        callbacks: list[TrainerCallback] | None = None,
        held_out_reward_funcs: RewardFunc | list[RewardFunc] | None = None,
    ):
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        super().__init__(args, callbacks)
        if isinstance(pipeline, str):
            weight_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32
            pipeline = load_flow_pipeline(pipeline, dtype=weight_dtype)  # an unsupported class fails here
            pipeline.vae.to(torch.float32)  # decode in fp32, as Flow-GRPO does
        self.adapter = flow_adapter(pipeline)
        if args.true_cfg_scale > 1 and not self.adapter.takes_true_cfg_scale:
            raise ValueError(
                f"true_cfg_scale={args.true_cfg_scale} sets FLUX.1's true CFG; {self.adapter.pipeline_class} takes its "
                "classifier-free guidance scale from guidance_scale."
            )
        self.pipeline = pipeline.to(self.accelerator.device)
        self.pipeline.set_progress_bar_config(disable=True)
        for name, module in pipeline.components.items():
            if isinstance(module, torch.nn.Module) and name != "transformer":
                module.requires_grad_(False)  # text encoders, VAE
        self._set_reward_funcs(reward_funcs, args.reward_weights)
        self.held_out_scorer = RewardScorer(held_out_reward_funcs) if held_out_reward_funcs else None
        if isinstance(train_dataset, list):
            train_dataset = Dataset.from_dict({"prompt": train_dataset})
        if "prompt" not in train_dataset.column_names or len(train_dataset) == 0:
            raise ValueError("train_dataset must have a non-empty 'prompt' column.")
        if self.adapter.edits_images and SOURCE_IMAGE_COLUMN not in train_dataset.column_names:
            raise ValueError(
                f"{self.adapter.pipeline_class} edits images: train_dataset needs a {SOURCE_IMAGE_COLUMN!r} column (the "
                "image each prompt edits, PIL), e.g. from trl_ext.evaluation.image_edit.edit_records_dataset."
            )
        self.train_dataset = train_dataset
        self.adapter.check_resolution(args.resolution)
        self.sampling = args.sampling_config()

        transformer = pipeline.transformer
        transformer.requires_grad_(False)
        transformer.add_adapter(
            LoraConfig(
                r=args.lora_r,
                lora_alpha=args.lora_alpha,
                init_lora_weights="gaussian",
                target_modules=args.lora_target_modules,
                exclude_modules=self.adapter.lora_exclude_modules(),
            )
        )
        cast_training_params(transformer, torch.float32)  # LoRA weights train in fp32 whatever the base dtype
        transformer.eval()  # no dropout: rollouts and recomputation must see the same function
        rollout_size = args.per_device_train_batch_size * args.gradient_accumulation_steps  # a multiple (the config)
        self._setup_data(len(train_dataset), rollout_size // self.images_per_prompt)
        self._set_update_accumulation()
        self._prepare(transformer, [p for p in transformer.parameters() if p.requires_grad])
        self.ema = None
        if args.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.trainable_params, decay=args.ema_decay)
            self.accelerator.register_for_checkpointing(self.ema)

    def _condition_images(self, columns: dict[str, list]) -> list | None:
        """The condition images of an editing family's samples (the `source_image` column), else `None`."""
        return columns[SOURCE_IMAGE_COLUMN] if self.adapter.edits_images else None

    @property
    def images_per_prompt(self) -> int:
        """Images per original prompt, the group of the image advantages: `num_generations`."""
        return self.args.num_generations

    @property
    def transformer(self) -> torch.nn.Module:
        """The pipeline's transformer with its LoRA adapter, as prepared by accelerate (`self.model`)."""
        return self.model

    # Training

    def _kl_to_reference(
        self, trajectory: FlowTrajectory, step: int, indices: torch.Tensor, mean, std
    ) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.transformer)
        with torch.no_grad():
            model.disable_adapters()
            try:
                reference = trajectory_step_log_prob(model, trajectory, step, self.sampling, indices)
            finally:
                model.enable_adapters()
        return ((mean - reference.mean) ** 2 / (2 * std**2)).mean(dim=tuple(range(1, mean.dim())))

    def sde_window(self) -> tuple[int, int] | None:
        """The SDE window [start, end) of this step's rollouts (`None` without `sde_window_size`: every step is
        sampled with the SDE). Its start is drawn uniformly from `lo..hi − sde_window_size` (`sde_window_range` =
        (lo, hi): the window lies within steps [lo, hi), as in Flow-GRPO-Fast) by a generator seeded with `seed` and
        the global step, so every process draws the same window and a resumed run draws the uninterrupted run's."""
        import numpy as np

        args = self.args
        if args.sde_window_size is None:
            return None
        low, high = args.sde_window_bounds()
        start = int(
            np.random.default_rng([args.seed, self.global_step]).integers(low, high - args.sde_window_size + 1)
        )
        return start, start + args.sde_window_size

    def training_step(self) -> dict[str, float]:
        """Sample one rollout batch, score it, and make `num_mini_batches` clipped policy-gradient updates, each over
        micro-batches of `per_device_train_batch_size` images."""
        prompts, columns, group_ids = self._sample_prompts(self.train_dataset, self.images_per_prompt)
        logs, _ = self._generator_step(prompts, columns, group_ids)
        return logs

    def _generator_step(
        self, prompts: list[str], columns: dict[str, list], group_ids: torch.Tensor
    ) -> tuple[dict[str, float], torch.Tensor | None]:
        """Sample an image per prompt, score the images, and train the LoRA on them with advantages grouped by
        `group_ids`. Returns the logs and the images' rewards (NaN: unscored), or `None` for the rewards when no
        process scored any image (the step is skipped and counted: no update)."""
        args = self.args
        window = self.sde_window()
        with torch.no_grad():
            trajectory = sample_trajectories(
                self.adapter,
                prompts,
                self.sampling,
                generator=self._generator,
                transformer=self.accelerator.unwrap_model(self.transformer),
                images=self._condition_images(columns),
                sde_window=window,
            )
        rewards_per_func, rewards, unscored = self.scorer(prompts, **columns, images=trajectory.images)
        advantages = compute_advantages(rewards, group_ids, scale=args.scale_rewards).clamp(
            -args.adv_clip_max, args.adv_clip_max
        )
        logs = self.scorer.logs(rewards_per_func, rewards)
        if not self.any_process_scored(unscored):  # no reward anywhere: no update
            self.skipped_steps += 1
            return logs, None

        # the window's steps, else the first int(T * timestep_fraction)
        train_steps = range(*window) if window else range(int(args.num_inference_steps * args.timestep_fraction))

        def policy_terms(micro_batch: torch.Tensor) -> Iterator[PolicyTerm]:
            for step in train_steps:
                out = trajectory_step_log_prob(self.transformer, trajectory, step, self.sampling, micro_batch)
                kl = None
                if args.beta > 0:
                    kl = self._kl_to_reference(trajectory, step, micro_batch, out.mean, out.std)
                yield PolicyTerm(out.log_prob - trajectory.log_probs[micro_batch, step], kl)

        logs.update(
            self.group_policy_update(
                policy_terms, advantages, unscored, trajectory.log_probs.device, num_terms=len(train_steps)
            )
        )
        if window:
            logs[f"{self.metric_prefix}/sde_window_start"] = window[0]
        if self.ema is not None and (self.state.global_step + 1) % args.ema_update_interval == 0:
            self.ema.step(self.trainable_params)
        return logs, rewards

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Within the block the LoRA holds its moving-average weights (with `ema_decay > 0`; otherwise no change)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.trainable_params)
        self.ema.copy_to(self.trainable_params)
        try:
            yield
        finally:
            self.ema.restore(self.trainable_params)

    def save_samples(
        self, prompts: list[str] | None = None, directory: str | None = None, images: list | None = None
    ) -> list[str]:
        """Render `prompts` (default: the first `num_sample_prompts` training prompts, with their source images for an
        editing family; else `images`) with a fixed seed and the EMA weights (the live ones without EMA), and save
        them as PNG files in `directory` (default: `output_dir/samples/step-<global_step>`). Returns the file paths."""
        prompts, _, samples = self._render_samples(prompts, images)
        return self._write_samples(prompts, samples, directory)

    def _render_samples(
        self, prompts: list[str] | None = None, images: list | None = None
    ) -> tuple[list[str], dict[str, list], torch.Tensor]:
        """[`save_samples`]'s rendering: the prompts, their dataset columns (the default prompts' rows; none for given
        prompts) and the images (B, 3, H, W), rounded to the 8 bits a PNG file keeps."""
        columns = {}
        if prompts is None:
            rows = self.train_dataset.select(range(min(self.args.num_sample_prompts, len(self.train_dataset))))
            prompts = list(rows["prompt"])
            columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}
            images = columns[SOURCE_IMAGE_COLUMN] if self.adapter.edits_images else None
        with torch.no_grad(), self.ema_weights():
            samples = sample_trajectories(
                self.adapter,
                prompts,
                self.sampling,
                generator=torch.Generator().manual_seed(self.args.seed),
                transformer=self.accelerator.unwrap_model(self.transformer),
                images=images,
            )
        return prompts, columns, (samples.images.float().clamp(0, 1) * 255).round() / 255

    def _write_samples(self, prompts: list[str], images: torch.Tensor, directory: str | None = None) -> list[str]:
        """Save `images` as `directory/000.png`, ... and the prompts as `prompts.txt` (on the main process)."""
        from ...rewards.utils import to_pil_images

        if not self.accelerator.is_main_process:
            return []
        directory = directory or os.path.join(self.args.output_dir, "samples", f"step-{self.global_step}")
        os.makedirs(directory, exist_ok=True)
        paths = [os.path.join(directory, f"{i:03d}.png") for i in range(len(prompts))]
        for path, image in zip(paths, to_pil_images(images)):
            image.save(path)
        with open(os.path.join(directory, "prompts.txt"), "w") as f:
            f.write("\n".join(prompts) + "\n")
        return paths

    def sample_metrics(self, prompts: list[str], columns: dict[str, list], images: torch.Tensor) -> dict[str, float]:
        """The reward-hacking guard's metrics of sample images: their image statistics (`images/...`) and, with
        `held_out_reward_funcs`, the held-out rewards' logs (`held_out/reward`, `held_out/rewards/<name>/mean`, ...:
        the training reward's log names under `held_out/`). Every process computes them on the same samples."""
        from ...evaluation.image_statistics import image_statistics

        metrics = image_statistics(images)
        if self.held_out_scorer is not None:
            rewards_per_func, rewards, _ = self.held_out_scorer(prompts, **columns, images=images)
            logs = self.held_out_scorer.logs(rewards_per_func, rewards)
            metrics.update({f"held_out/{name}": value for name, value in logs.items()})
        return metrics

    def _on_step_end(self) -> None:
        if self.args.sample_steps and self.global_step % self.args.sample_steps == 0:
            prompts, columns, images = self._render_samples()
            self._write_samples(prompts, images)
            self.log(self.sample_metrics(prompts, columns, images))

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the LoRA weights (`pytorch_lora_weights.safetensors`, loadable with `pipe.load_lora_weights`) and a
        model card. With `ema_decay > 0` the saved LoRA weights are the moving average."""
        from peft import get_peft_model_state_dict

        output_dir = output_dir or self.args.output_dir
        if not self.accelerator.is_main_process:
            return
        with self.ema_weights():
            lora = get_peft_model_state_dict(self.accelerator.unwrap_model(self.transformer))
        type(self.pipeline).save_lora_weights(output_dir, transformer_lora_layers=lora)
        self.create_model_card(output_dir)

    def create_model_card(self, output_dir: str) -> None:
        """Write `README.md`: method, paper, base model, reward functions and configuration, and a usage example that
        loads the base model with the family's pipeline class, the LoRA with its `load_lora_weights`, and (for a
        text-to-image family) renders a training prompt with the sampling settings trained with (steps, size,
        guidance as the pipeline's `__call__` takes it)."""
        pipeline_class = self.adapter.pipeline_class  # the family's class, which loads any subclass's weights
        render = ""
        if not self.adapter.edits_images:
            call = ", ".join(
                [repr(self.train_dataset[0]["prompt"])]
                + [f"{k}={v!r}" for k, v in self.adapter.pipeline_call_kwargs(self.sampling).items()]
            )
            render = f"\nimage = pipe({call}).images[0]"
        self._write_model_card(
            output_dir,
            model_card_name(self.pipeline.config._name_or_path),
            summary=(
                f"LoRA adapter trained with `trl_ext.{self.library_class_name}` (Flow-GRPO: GRPO on the SDE denoising "
                "trajectories of a flow-matching model, [arXiv 2505.05470](https://huggingface.co/papers/2505.05470))."
            ),
            usage=(
                f"from diffusers import {pipeline_class}\n\n"
                f'pipe = {pipeline_class}.from_pretrained("{{base_model}}")\n'
                'pipe.load_lora_weights("{model_name}")' + render.replace("{", "{{").replace("}", "}}")
            ),
            tags=["flow-grpo", "lora", "text-to-image"],
            library_name="diffusers",
        )
