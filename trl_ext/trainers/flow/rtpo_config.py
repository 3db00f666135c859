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
"""[`FlowRTPOConfig`]: the configuration of [`FlowRTPOTrainer`], Flow-GRPO's options plus the prompt editor's."""

from dataclasses import dataclass, field

from ..validation import check_ranges
from .config import FlowGRPOConfig


@dataclass
class FlowRTPOConfig(FlowGRPOConfig):
    r"""
    Configuration class for [`FlowRTPOTrainer`]: every option of [`FlowGRPOConfig`] (Flow-GRPO on the image
    generator) plus those of the Flow-RTPO prompt editor, used when the trainer gets a `prompt_editor`.

    Parameters:
        > Prompt editor (Flow-RTPO)

        num_edits_per_prompt (`int`, *optional*, defaults to `2`):
            Edits sampled per original prompt; each gets `num_generations` images.
        editor_learning_rate (`float`, *optional*, defaults to `5e-6`):
            Learning rate of the editor's optimizer (the `optim` type).
        editor_epsilon (`float`, *optional*, defaults to `0.2`):
            Clipping range of the editor's ratio.
    """

    num_edits_per_prompt: int = field(
        default=2, metadata={"help": "With a prompt editor: edits sampled per original prompt (Flow-RTPO: 2)."}
    )
    editor_learning_rate: float = field(
        default=5e-6, metadata={"help": "Learning rate of the prompt editor (same optimizer type, `optim`)."}
    )
    editor_epsilon: float = field(default=0.2, metadata={"help": "PPO clipping range of the editor's ratio."})

    def __post_init__(self):
        super().__post_init__()
        check_ranges(
            self,
            at_least_one=("num_edits_per_prompt",),
            positive=("editor_epsilon",),
            non_negative=("editor_learning_rate",),
        )
