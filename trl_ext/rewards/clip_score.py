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
"""CLIP image-text agreement as a reward on images."""

import torch

from ..hub import ModelSources, resolve_pretrained
from .utils import to_pil_images


class CLIPScoreReward:
    """CLIP image-text agreement: `scale` × cosine similarity of the image and prompt embeddings.

    Args:
        model (`str`): `trl_ext.hub` key (`"clip"`: openai/clip-vit-large-patch14-336), Hub id or local path.
        scale (`float`): Multiplier of the cosine (Flow-RTPO uses CLIP logits / 30 = cosine × 100 / 30).
    """

    __name__ = "clip_score"

    def __init__(
        self, model: str = "clip", sources: ModelSources | None = None, scale: float = 1.0, device: str = "cpu"
    ):
        from transformers import CLIPModel, CLIPProcessor

        path = resolve_pretrained(model, sources).path
        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.scale = scale

    @torch.no_grad()
    def __call__(self, prompts: list[str], images, **kwargs) -> list[float]:
        inputs = self.processor(
            text=list(prompts), images=to_pil_images(images), return_tensors="pt", padding=True, truncation=True
        )
        outputs = self.model(**inputs.to(self.model.device))  # image_embeds and text_embeds are L2-normalised
        return (self.scale * (outputs.image_embeds * outputs.text_embeds).sum(-1)).tolist()
