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
"""Helpers shared by the reward functions: completion texts and image conversion."""

from collections.abc import Sequence

import torch
from PIL import Image


def completion_texts(completions: list) -> list[str]:
    """The text of each completion, in TRL's standard (`str`) or conversational (`[{"role", "content"}]`) format."""
    return [c[0]["content"] if isinstance(c, list) else c for c in completions]


def to_pil_images(images: torch.Tensor | Sequence) -> list[Image.Image]:
    """(B, 3, H, W) float images in [0, 1] (what `FlowRTPOTrainer` passes) or PIL images → PIL images."""
    if isinstance(images, torch.Tensor):
        arrays = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(array) for array in arrays]
    return list(images)
