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
"""[`DiscreteDiffusionSFTConfig`]: the configuration of [`DiscreteDiffusionSFTTrainer`]."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..validation import default_bf16


@dataclass
class DiscreteDiffusionSFTConfig(TrainingArguments):
    r"""
    Configuration class for [`DiscreteDiffusionSFTTrainer`]: score-entropy fine-tuning of a SEDD model on text.

    The text column is tokenized, an EOS is appended to each document, and the stream is cut into blocks of
    `block_size` tokens (SEDD's pretraining format). As in transformers' Trainer, each step is one optimizer step on
    `per_device_train_batch_size · gradient_accumulation_steps` blocks per process, accumulated over
    `gradient_accumulation_steps` micro-batches of `per_device_train_batch_size`, and minimises the one-sample DWDSE
    (SEDD's own training loss); an epoch (`num_train_epochs`) is one pass over the blocks.

    Parameters:
        dataset_text_field (`str`, *optional*, defaults to `"text"`):
            Column holding the training text.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per training sequence (>= 2).

        > Overridden TrainingArguments defaults

        learning_rate (`float`, *optional*, defaults to `3e-4`):
            Learning rate of the optimizer (SEDD's).
        bf16 (`bool`, *optional*):
            bf16 mixed precision; unset, on where the device supports it (a CUDA GPU with bf16), off on a CPU.
    """

    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the training text."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Learning rate of the optimizer (SEDD: 3e-4)."})
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision; unset: on where the device supports it (a CUDA GPU with bf16), off on a CPU."
        },
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = default_bf16(self)
        super().__post_init__()
        if self.block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {self.block_size}.")
