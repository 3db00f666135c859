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
"""Checkpoints of [`~trl_ext.trainers.loop.RLLoopTrainer`]: atomic saves, resume, every process's RNG streams.

A checkpoint `checkpoint-N` holds what `accelerate.Accelerator.save_state` writes (model, optimizers, scheduler, every
process's torch / numpy / python RNG states), one `process_state_<rank>.pt` per process (the loop's noise generator,
the state of stateful rewards, the count of skipped steps, and what a trainer adds in `_process_state`) and
`trainer_state.json` (`transformers.TrainerState`, with the `ExportableState` callbacks), written last. It is written
to `tmp-checkpoint-N` and renamed once complete, so a crash while saving leaves the previous checkpoint usable.
"""

import json
import os
import re
import shutil

import torch
from transformers import TrainerControl, TrainerState
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging


logger = logging.get_logger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
PROCESS_STATE_NAME = "process_state_{}.pt"


def last_complete_checkpoint(folder: str) -> str | None:
    """The `checkpoint-N` directory of `folder` with the highest N whose `trainer_state.json` is complete, or None.

    `transformers.Trainer` writes `trainer_state.json` last, straight into `checkpoint-N`, and `get_last_checkpoint`
    returns the newest directory whatever it holds, so a run killed while saving would resume from a torn checkpoint;
    such directories are skipped here (with a warning). This trainer's own checkpoints are complete or absent.
    """
    if not os.path.isdir(folder):
        return None
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(folder)
        if (match := re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name))
        and os.path.isdir(os.path.join(folder, name))
    )
    for _, name in reversed(steps):
        path = os.path.join(folder, name)
        try:
            with open(os.path.join(path, TRAINER_STATE_NAME)) as f:
                json.load(f)
        except (OSError, ValueError):
            logger.warning(f"{path} has no complete {TRAINER_STATE_NAME} (a save was interrupted): skipped.")
            continue
        return path
    return None


class CheckpointMixin:
    """Checkpoint saving and loading for [`~trl_ext.trainers.loop.RLLoopTrainer`], which sets the attributes read
    here (`args`, `accelerator`, `state`, `control`, `callback_handler`, `skipped_steps`, `_generator`) and pushes
    checkpoints through [`~trl_ext.trainers.hub_push.HubPushMixin`]."""

    def _stateful_rewards(self) -> list:
        """Rewards with a state (e.g. `LaTeXReward`'s exploration history), checkpointed per process."""
        return self.scorer.stateful if hasattr(self, "scorer") else []

    def _process_state(self) -> dict:
        """State of this process that lives outside the model and optimizer; subclasses extend it."""
        return {
            "generator": self._generator.get_state(),
            "rewards": [func.state_dict() for func in self._stateful_rewards()],
            "skipped_steps": self.skipped_steps,
        }

    def _load_process_state(self, state: dict) -> None:
        self._generator.set_state(state["generator"])
        for func, reward_state in zip(self._stateful_rewards(), state["rewards"]):
            func.load_state_dict(reward_state)
        self.skipped_steps = state["skipped_steps"]

    def _save_checkpoint(self) -> str:
        """Write `checkpoint-N` atomically: everything goes to `tmp-checkpoint-N`, renamed once complete; then older
        checkpoints beyond `save_total_limit` are deleted."""
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final, temporary = os.path.join(self.args.output_dir, name), os.path.join(self.args.output_dir, f"tmp-{name}")
        if self.accelerator.is_main_process and os.path.isdir(temporary):  # left by a crash
            shutil.rmtree(temporary)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(temporary)  # model, optimizers, scheduler, EMA, every process's RNG states
        torch.save(
            self._process_state(), os.path.join(temporary, PROCESS_STATE_NAME.format(self.accelerator.process_index))
        )
        if self.accelerator.is_main_process:
            self._record_callback_states()
            self.state.save_to_json(os.path.join(temporary, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if os.path.isdir(final):  # from an earlier run that went further than the checkpoint resumed from
                shutil.rmtree(final)
            os.replace(temporary, final)
            rotate_checkpoints(self.args.output_dir, save_total_limit=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(final)
        return final

    def _load_checkpoint(self, directory: str) -> None:
        path = os.path.join(directory, PROCESS_STATE_NAME.format(self.accelerator.process_index))
        if not os.path.isfile(os.path.join(directory, TRAINER_STATE_NAME)) or not os.path.isfile(path):
            raise ValueError(
                f"{directory} is not a complete checkpoint of this trainer for {self.accelerator.num_processes} "
                f"process(es) (no {TRAINER_STATE_NAME} or {os.path.basename(path)})."
            )
        self.accelerator.load_state(directory)
        self._load_process_state(torch.load(path, weights_only=True))
        self.state = TrainerState.load_from_json(os.path.join(directory, TRAINER_STATE_NAME))
        self.state.is_local_process_zero = self.accelerator.is_local_main_process
        self.state.is_world_process_zero = self.accelerator.is_main_process
        if self.args.restore_callback_states_from_checkpoint:
            self._restore_callback_states()

    def _record_callback_states(self) -> None:
        """Put the state of every `ExportableState` callback (and of `control`) in `state.stateful_callbacks`, as
        `transformers.Trainer` does at each checkpoint."""
        exportable = [cb for cb in [*self.callback_handler.callbacks, self.control] if isinstance(cb, ExportableState)]
        self.state.stateful_callbacks = TrainerState(stateful_callbacks=exportable).stateful_callbacks

    def _restore_callback_states(self) -> None:
        """Rebuild the `ExportableState` callbacks (and `control`) from the checkpoint's `stateful_callbacks`
        (`restore_callback_states_from_checkpoint`); a stored callback of a class this trainer does not have is
        ignored with a warning, as `transformers.Trainer` does."""
        current = [*self.callback_handler.callbacks, self.control]
        for name, states in self.state.stateful_callbacks.items():
            matching = [cb for cb in current if type(cb).__name__ == name]
            if not matching:
                logger.warning(f"The checkpoint holds the state of a {name} callback, which this trainer has not.")
                continue
            for callback, state in zip(matching, states if isinstance(states, list) else [states]):
                restored = type(callback).from_state(state)
                if isinstance(callback, TrainerControl):
                    self.control = restored
                else:
                    self.callback_handler.callbacks[self.callback_handler.callbacks.index(callback)] = restored
