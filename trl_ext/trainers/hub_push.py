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
"""Pushing a loop trainer's model to the Hub as `transformers.Trainer` does (`push_to_hub`, `hub_strategy`, ...).

[`HubPushMixin`] gives [`~trl_ext.trainers.loop.RLLoopTrainer`] the Hub behaviour of `transformers.Trainer`, through
`huggingface_hub`'s public API:

- with `push_to_hub=True` the repository (`hub_model_id`, else the name of `output_dir`, `hub_private_repo`,
  `hub_token`) is created at construction, and the Hub being unreachable because offline mode is on
  (`HF_HUB_OFFLINE=1`) is an error there, before any training;
- at every checkpoint, per `hub_strategy`: `"end"` pushes nothing; `"every_save"` saves the model (and its card) to
  `output_dir` and uploads `output_dir` in the background; `"checkpoint"` also uploads the checkpoint to
  `last-checkpoint/` (a run resumes from it), `"all_checkpoints"` to `checkpoint-N/`. While the previous push is still
  running a checkpoint is not pushed, unless `hub_always_push`;
- `train()` waits for the pushes still running; `push_to_hub()` saves the model and its card and uploads
  `output_dir` ("End of training"), as the TRL example scripts call it after `train()`.
"""

from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

from accelerate.utils import broadcast_object_list
from huggingface_hub import CommitInfo, HfApi
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, SaveStrategy
from transformers.utils import logging

from ..hub import is_offline_mode


logger = logging.get_logger(__name__)

# what an upload of `output_dir` leaves out: checkpoints (complete or being written) and private files, as Trainer
IGNORE_PATTERNS = ["_*", f"{PREFIX_CHECKPOINT_DIR}-*", f"tmp-{PREFIX_CHECKPOINT_DIR}-*"]


class HubPushMixin:
    """The Hub side of `transformers.Trainer` for trainers that own their loop.

    The class using it has `args` (`TrainingArguments`), `accelerator`, `state`, `control`, `callback_handler` and
    `save_model(output_dir)` (called on every process), and calls [`init_hf_repo`] at construction when
    `args.push_to_hub`, [`_push_from_checkpoint`] after each checkpoint and [`_finish_current_push`] at the end of
    `train()`.
    """

    hub_model_id: str | None = None  # the repository id, set by `init_hf_repo` on the main process
    _push_jobs: Sequence[futures.Future] = ()

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the repository `args.hub_model_id` (else the name of `output_dir`, in the token's namespace), as
        `transformers.Trainer.init_hf_repo`; an error, on every process, when offline mode is on.

        Args:
            token (`str`, *optional*): Token with write access. Defaults to `args.hub_token`.
            private (`bool`, *optional*): Whether a new repository is private. Defaults to `args.hub_private_repo`.
        """
        if is_offline_mode():
            raise ValueError(
                "push_to_hub needs the Hub, but offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE): unset it, "
                "or set push_to_hub=False and upload output_dir later (`hf upload <repo_id> <output_dir>`)."
            )
        if not self.accelerator.is_main_process:
            return
        self._hub_api = HfApi(library_name="trl_ext")
        repo_url = self._hub_api.create_repo(
            self.args.hub_model_id or Path(self.args.output_dir).absolute().name,
            token=token if token is not None else self.args.hub_token,
            private=private if private is not None else self.args.hub_private_repo,
            exist_ok=True,
        )
        self.hub_model_id = repo_url.repo_id
        logger.info(f"Pushing to {repo_url} (hub_strategy={self.args.hub_strategy}).")

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
    ) -> CommitInfo | futures.Future | None:
        """Save the model and its card to `output_dir` (on every process) and upload `output_dir`, without its
        checkpoints, to the repository, as `transformers.Trainer.push_to_hub`.

        Args:
            commit_message (`str`, *optional*, defaults to `"End of training"`): The commit's message.
            blocking (`bool`, *optional*, defaults to `True`): Wait for the upload; otherwise return its `Future`.
            token (`str`, *optional*): Token with write access. Defaults to `args.hub_token`.
            revision (`str`, *optional*): The branch to commit to. Defaults to `args.hub_revision` (else `main`).
            private (`bool`, *optional*): Whether the repository, when this call creates it, is private. Defaults
                to `args.hub_private_repo`.

        Returns:
            The `CommitInfo` (a `Future` of it when not `blocking`) on the main process, `None` on the others.
        """
        if self.hub_model_id is None:  # push_to_hub=False at construction
            self.init_hf_repo(token=token, private=private)
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self.save_model(self.args.output_dir)
        if not self.accelerator.is_main_process:
            return None
        self._finish_current_push()
        return self._hub_api.upload_folder(
            repo_id=self.hub_model_id,
            folder_path=self.args.output_dir,
            commit_message=commit_message,
            token=token if token is not None else self.args.hub_token,
            revision=revision if revision is not None else self.args.hub_revision,
            ignore_patterns=IGNORE_PATTERNS,
            run_as_future=not blocking,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Push the model (saved to `output_dir`) and, per `hub_strategy`, the checkpoint, in the background."""
        args = self.args
        if args.hub_strategy == HubStrategy.END:
            return
        # every process must agree: saving the model may be collective (ZeRO-3 gathers the weights)
        busy = [self.accelerator.is_main_process and not args.hub_always_push and not self._pushes_done()]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(busy)
        if busy[0]:
            logger.info(f"The previous push is still running: {checkpoint_folder} is not pushed (hub_always_push).")
            return
        self.callback_handler.on_push_begin(args, self.state, self.control)
        self.save_model(args.output_dir)
        if not self.accelerator.is_main_process:
            return
        if args.save_strategy == SaveStrategy.STEPS:
            commit_message = f"Training in progress, step {self.state.global_step}"
        else:
            commit_message = f"Training in progress, epoch {int(self.state.epoch)}"
        uploads = [(args.output_dir, None, commit_message, IGNORE_PATTERNS)]
        if args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            path_in_repo = "last-checkpoint" if args.hub_strategy == HubStrategy.CHECKPOINT else None
            uploads.append(
                (
                    checkpoint_folder,
                    path_in_repo or Path(checkpoint_folder).name,
                    f"{commit_message}, checkpoint",
                    None,
                )
            )
        jobs = [
            self._hub_api.upload_folder(
                repo_id=self.hub_model_id,
                folder_path=folder,
                path_in_repo=path_in_repo,
                commit_message=message,
                token=args.hub_token,
                revision=args.hub_revision,
                ignore_patterns=ignore,
                run_as_future=True,
            )
            for folder, path_in_repo, message, ignore in uploads
        ]
        self._drop_finished_pushes()
        self._push_jobs = [*self._push_jobs, *jobs]

    def _pushes_done(self) -> bool:
        return all(job.done() for job in self._push_jobs)

    def _drop_finished_pushes(self) -> None:
        """Forget the finished pushes; one that failed is logged as an error (a failed push does not stop training)."""
        for job in self._push_jobs:
            if job.done() and job.exception() is not None:
                logger.error(f"A push to {self.hub_model_id} failed: {job.exception()!r}")
        self._push_jobs = [job for job in self._push_jobs if not job.done()]

    def _finish_current_push(self) -> None:
        """Wait for the pushes still running (as `transformers.Trainer` at the end of `train()`)."""
        if not self._pushes_done():
            logger.info("Waiting for the current checkpoint push to be finished.")
            futures.wait(self._push_jobs)
        self._drop_finished_pushes()
