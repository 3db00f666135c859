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
"""Semantic similarity of completions to a reference text with sentence-transformers."""

import torch

from ..hub import ModelSources, resolve_pretrained
from .utils import completion_texts


class SemanticSimilarityReward:
    """Cosine similarity of sentence embeddings (sentence-transformers) between each completion and a reference text
    (the `reference_column` dataset column, or the prompt).

    Args:
        model (`str`): `trl_ext.hub` key (`"sbert"`: sentence-transformers/all-MiniLM-L6-v2), Hub id or local path.
    """

    __name__ = "semantic_similarity"

    def __init__(
        self,
        model: str = "sbert",
        sources: ModelSources | None = None,
        reference_column: str | None = None,
        device: str = "cpu",
    ):
        from sentence_transformers import SentenceTransformer

        path = resolve_pretrained(model, sources).path
        self.model = SentenceTransformer(path, device=device)
        self.reference_column = reference_column

    def similarity(self, texts: list[str], references: list[str]) -> torch.Tensor:
        """Cosine similarity of each text with its reference, (N,)."""
        embeddings = self.model.encode(
            list(texts) + list(references), convert_to_tensor=True, normalize_embeddings=True
        )
        return (embeddings[: len(texts)] * embeddings[len(texts) :]).sum(-1).cpu()

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        texts = completion_texts(completions)
        references = kwargs[self.reference_column] if self.reference_column else prompts
        return self.similarity(texts, references).tolist()
