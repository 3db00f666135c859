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
"""[`DiscreteDiffusionSFTTrainer`]: score-entropy fine-tuning of SEDD discrete diffusion language models."""

from collections import defaultdict

import torch
from datasets import Dataset
from transformers import TrainerCallback

from ...hub import model_card_name
from ...models.diffusion_lm.sedd import SEDD_USAGE
from ...models.sedd import SEDDModel, get_noise, score_entropy_loss
from ..loop import RLLoopTrainer
from .sft_config import DiscreteDiffusionSFTConfig


class DiscreteDiffusionSFTTrainer(RLLoopTrainer):
    r"""
    Score-entropy fine-tuning (SFT) of a SEDD model ([arXiv 2310.16834](https://huggingface.co/papers/2310.16834)).

    Args:
        model (`str` or [`SEDDModel`]): The model, or a path / `trl_ext.hub` key / Hub id.
        args ([`DiscreteDiffusionSFTConfig`]): Configuration.
        train_dataset (`datasets.Dataset`): A text column (`args.dataset_text_field`).
        processing_class (tokenizer): Encodes the text; its `eos_token_id` separates documents.
        callbacks (list of `transformers.TrainerCallback`, *optional*): Called at the events of `transformers.Trainer`'s
            loop (`on_step_end`, `on_log`, `on_save`, ...); they can stop training through `control`.
    """

    _name = "SEDD-SFT"
    _forward_bypasses_wrapper = True  # the score-entropy loss calls the model's submodules (row-chunked head)

    def __init__(
        self,
        model: str | SEDDModel,
        args: DiscreteDiffusionSFTConfig,
        train_dataset: Dataset,
        processing_class,
        callbacks: list[TrainerCallback] | None = None,
    ):
        super().__init__(args, callbacks)
        model = SEDDModel.from_pretrained(model) if isinstance(model, str) else model
        if args.dataset_text_field not in train_dataset.column_names:
            raise ValueError(f"train_dataset has no {args.dataset_text_field!r} column.")
        if processing_class.eos_token_id is None:
            raise ValueError("processing_class needs an eos_token_id (it separates documents).")
        stream = []
        for text in train_dataset[args.dataset_text_field]:
            stream += processing_class(text, add_special_tokens=False)["input_ids"] + [processing_class.eos_token_id]
        num_blocks = len(stream) // args.block_size
        if num_blocks == 0:
            raise ValueError(f"The dataset has {len(stream)} tokens, fewer than one block of {args.block_size}.")
        if max(stream) >= model.config.tokens:
            raise ValueError(f"Token id {max(stream)} is outside the model's {model.config.tokens} tokens.")
        self.blocks = torch.tensor(stream[: num_blocks * args.block_size]).view(num_blocks, args.block_size)
        self.noise = get_noise(model.config)
        self.base_model_name = model_card_name(getattr(model, "name_or_path", None))
        self._setup_data(num_blocks, args.per_device_train_batch_size * args.gradient_accumulation_steps)
        self._prepare(model.train(), list(model.parameters()))

    def training_step(self) -> dict[str, float]:
        """One optimizer step on this step's blocks, over `gradient_accumulation_steps` micro-batches."""
        rows = torch.tensor(self.rows_for_step(self.state.global_step))
        model = self.accelerator.unwrap_model(self.model)
        metrics = defaultdict(list)
        for micro_batch, weight in self.micro_batches(rows):
            with self.optimizer_update(metrics):
                blocks = self.blocks[micro_batch].to(self.accelerator.device)
                loss = (score_entropy_loss(model, blocks, self.noise, generator=self._generator) * weight).sum()
                loss = loss / self.args.block_size
                self.accelerator.backward(loss)
            metrics["loss"].append(loss.item())
        return {name: sum(v) / len(v) for name, v in metrics.items()}

    def save_model(self, output_dir: str | None = None) -> None:
        """Save the model in the SEDD checkpoint layout, with a model card."""
        output_dir = output_dir or self.args.output_dir
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir)
            self._write_model_card(
                output_dir,
                self.base_model_name,
                summary=(
                    "A SEDD discrete diffusion language model ([Score Entropy Discrete Diffusion]"
                    "(https://huggingface.co/papers/2310.16834)) fine-tuned with "
                    "`trl_ext.DiscreteDiffusionSFTTrainer` (score-entropy loss)."
                ),
                usage=SEDD_USAGE,
                tags=["sedd", "discrete-diffusion", "sft"],
            )
