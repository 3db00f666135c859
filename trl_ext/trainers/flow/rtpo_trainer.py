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
"""[`FlowRTPOTrainer`]: Flow-GRPO ([`FlowGRPOTrainer`]) trained jointly with the Flow-RTPO prompt editor."""

import os

from datasets import Dataset
from transformers import TrainerCallback

from ...models.prompt_editor import PromptEditorPolicy
from ...rl.scoring import RewardFunc
from .editor import editor_step
from .rtpo_config import FlowRTPOConfig
from .trainer import FlowGRPOTrainer


PROMPT_EDITOR_WEIGHTS_NAME = "prompt_editor.safetensors"


class FlowRTPOTrainer(FlowGRPOTrainer):
    r"""
    Flow-RTPO: [`FlowGRPOTrainer`] with a prompt editor that learns which edits of the prompts the reward favours
    (red-teaming: edits whose images a target model answers toxically).

    Each original prompt gets `num_edits_per_prompt` edits from the editor and `num_generations` images per edit;
    image advantages are grouped by original prompt (the rewards also receive an `original_prompt` column), and after
    the generator's update the editor takes one clipped policy-gradient step on its Gaussian log-probability with the
    edits' group advantages (mean image reward minus semantic penalty, [`~trl_ext.trainers.flow.editor.editor_step`]).
    Without a `prompt_editor` it is [`FlowGRPOTrainer`].

    Args:
        pipeline, reward_funcs, train_dataset, callbacks, held_out_reward_funcs:
            As for [`FlowGRPOTrainer`].
        args ([`FlowRTPOConfig`]):
            Configuration: Flow-GRPO's and the editor's options.
        prompt_editor ([`~trl_ext.models.prompt_editor.PromptEditorPolicy`], *optional*):
            The editor trained jointly with the image generator; its weights are saved by `save_model` as
            `prompt_editor.safetensors` (for `PromptEditorPolicy.load_state_dict`).
    """

    def __init__(
        self,
        pipeline,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: FlowRTPOConfig,
        train_dataset: Dataset | list[str],
        prompt_editor: PromptEditorPolicy | None = None,
        callbacks: list[TrainerCallback] | None = None,
        held_out_reward_funcs: RewardFunc | list[RewardFunc] | None = None,
    ):
        if prompt_editor is not None:
            if not isinstance(args, FlowRTPOConfig):
                raise TypeError(f"A prompt_editor needs a FlowRTPOConfig (the editor's options), got {type(args)}.")
            rollout_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
            images_per_prompt = args.num_generations * args.num_edits_per_prompt
            if rollout_size % images_per_prompt:
                raise ValueError(
                    f"The rollout batch, per_device_train_batch_size · gradient_accumulation_steps = {rollout_size}, "
                    f"must be a multiple of the images per original prompt ({images_per_prompt}: num_generations times "
                    "num_edits_per_prompt with an editor)."
                )
        self.prompt_editor = prompt_editor  # set first: it decides `images_per_prompt`, which the parent reads
        super().__init__(pipeline, reward_funcs, args, train_dataset, callbacks, held_out_reward_funcs)
        if prompt_editor is not None:
            # its own optimizer, not prepared: it steps once per training step, outside gradient accumulation
            self.editor_optimizer = self.create_optimizer(list(prompt_editor.parameters()), args.editor_learning_rate)
            self.prompt_editor = self.accelerator.prepare(prompt_editor)
            self.accelerator.register_for_checkpointing(self.editor_optimizer)

    @property
    def images_per_prompt(self) -> int:
        """Images per original prompt, the group of the image advantages: `num_generations`, times
        `num_edits_per_prompt` with an editor."""
        edits = self.args.num_edits_per_prompt if self.prompt_editor is not None else 1
        return self.args.num_generations * edits

    def training_step(self) -> dict[str, float]:
        """Without an editor, [`FlowGRPOTrainer.training_step`]. With one: sample `num_edits_per_prompt` edits per
        original prompt, train the image generator on `num_generations` images per edit, then update the editor."""
        if self.prompt_editor is None:
            return super().training_step()
        args = self.args
        originals, columns, group_ids = self._sample_prompts(self.train_dataset, self.images_per_prompt)
        edit_rows = range(0, len(originals), args.num_generations)
        edits = self.accelerator.unwrap_model(self.prompt_editor).sample([originals[i] for i in edit_rows])
        prompts = [edited for edited in edits.edited for _ in range(args.num_generations)]
        logs, rewards = self._generator_step(prompts, {**columns, "original_prompt": originals}, group_ids)
        if rewards is not None:  # the step was not skipped
            logs.update(
                editor_step(
                    self.prompt_editor,
                    self.editor_optimizer,
                    edits,
                    rewards,
                    num_generations=args.num_generations,
                    num_edits_per_prompt=args.num_edits_per_prompt,
                    scale_rewards=args.scale_rewards,
                    epsilon=args.editor_epsilon,
                    accelerator=self.accelerator,
                )
            )
        return logs

    def save_model(self, output_dir: str | None = None) -> None:
        """[`FlowGRPOTrainer.save_model`], and the prompt editor's weights if there is one
        (`prompt_editor.safetensors`, for `PromptEditorPolicy.load_state_dict`)."""
        output_dir = output_dir or self.args.output_dir
        super().save_model(output_dir)
        if self.prompt_editor is None or not self.accelerator.is_main_process:
            return
        from safetensors.torch import save_file

        editor = self.accelerator.unwrap_model(self.prompt_editor)
        state = {name: tensor.detach().contiguous() for name, tensor in editor.state_dict().items()}
        save_file(state, os.path.join(output_dir, PROMPT_EDITOR_WEIGHTS_NAME))
