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
"""The reward contract: what every trainer of `trl_ext` passes to a reward function, and what it must return.

A reward function is any callable (a function, or an object with `__call__` and a `__name__` for the logs):

    reward(prompts, completions=..., images=..., **columns) -> list[float | None]

It returns one value per sample, in order: a finite number, or `None` for a sample it cannot score. `None` masks the
sample (it gets no advantage and is counted as `rewards/<name>/masked_count`); it is never read as zero. A non-finite
number, a value that is not a number, a scalar instead of a list, or a list of the wrong length is an error naming the
function (`trl_ext.rl.scoring.RewardScorer`). Several functions are combined as Σ_f w_f·r_f with `reward_weights`, over
the functions that scored the sample. A function may set `last_components` (a dict of per-sample lists or scalars) at
each call: every trainer logs each part as `rewards/<name>/<part>`. A function with a state (e.g. `LaTeXReward`'s
exploration history) exposes `state_dict()` / `load_state_dict()`; the loop trainers checkpoint it per process.

What each trainer passes (keyword arguments; `**columns` are the other columns of the training dataset, repeated
like the prompts):

| trainer | `prompts` | generated output | also |
|---|---|---|---|
| `DiscreteDiffusionPPOTrainer` | `list[str]` | `completions: list[str]` (decoded up to the first EOS) | `**columns` |
| `FlowGRPOTrainer`, `FlowRTPOTrainer` | `list[str]` (the edited prompts with an editor) | `images: torch.Tensor` (B, 3, H, W), float in [0, 1] | `**columns`; with an editor, `original_prompt: list[str]` |
| `PPOTrainer` (its `reward_model` argument) | the dataset's prompts (text or conversational) | `completions` (text, or an assistant message after conversational prompts; decoded up to the stop token), `completion_ids: list[list[int]]` | `prompt_completion_ids` / `prompt_completion_mask` (B, P + L) tensors, `**columns` |
| `ExtendedGRPOTrainer`, `TPRLGRPOTrainer` (TRL's `GRPOTrainer`) | TRL's prompts (text or conversational) | `completions` (text or conversational), `completion_ids` | dataset columns as TRL passes them (input images are PIL images in `image` / `images`), `trainer_state`, `log_metric`, `log_extra` |

Images follow one convention: generated images are float tensors (B, 3, H, W) in [0, 1]; input images from a dataset
are PIL images, as TRL passes them. Rewards that read images accept both through [`to_pil_images`] and
[`to_image_tensor`]; text rewards read completions of either TRL format through [`completion_texts`].
"""

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from .utils import completion_texts, to_pil_images


__all__ = ["RewardFunction", "completion_texts", "to_image_tensor", "to_pil_images"]


class RewardFunction(Protocol):
    """The type of a reward function (see the module docstring)."""

    __name__: str

    def __call__(self, prompts: list, **kwargs) -> list[float | None]: ...


def to_image_tensor(images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
    """PIL images (of one size) or a (B, 3, H, W) tensor → a float tensor (B, 3, H, W) in [0, 1]."""
    if isinstance(images, torch.Tensor):
        return images.float()
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    if len({array.shape for array in arrays}) > 1:
        raise ValueError(f"Images of different sizes cannot form one tensor: {sorted({a.shape for a in arrays})}.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
