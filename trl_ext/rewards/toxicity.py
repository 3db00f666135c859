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
"""Toxicity of completions with Detoxify, loaded fully offline."""

import os
import tempfile
from collections.abc import Sequence

import torch

from ..hub import ModelSources, resolve_pretrained, scoped_env
from .utils import completion_texts


DETOXIFY_HEADS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


class ToxicityReward:
    """Toxicity of text completions with Detoxify (Hanu & Unitary team), as a TRL-convention reward.

    reward = max or mean over the selected heads of Detoxify's sigmoid scores.

    The released "original" checkpoint names its architecture by Hub id (`bert-base-uncased`) and Detoxify loads it
    from the Hub even when given a local checkpoint. This loader resolves that architecture through `trl_ext.hub`
    (local directory → local base path → HF cache → Hub), rewrites the checkpoint's reference to the resolved
    directory, and loads with the caches redirected by `scoped_env` (restored afterwards).

    Args:
        checkpoint (`str`): Detoxify-format `.ckpt` file (e.g. `toxic_original-c1212f89.ckpt`).
        huggingface_config_path (`str`, *optional*): Directory with the BERT config and tokenizer; defaults to the
            resolved architecture directory.
        heads (`Sequence[str]`, *optional*): Heads to aggregate (default: all six).
        aggregation (`str`): `"max"` or `"mean"`.
        sources ([`ModelSources`], *optional*): Where `bert_base_uncased` is looked up.
        device (`str`): Device of the Detoxify model (any `torch.device` string, `"cpu:0"` and `"cuda:1"` included).
    """

    __name__ = "toxicity"

    def __init__(
        self,
        checkpoint: str,
        huggingface_config_path: str | None = None,
        heads: Sequence[str] | None = None,
        aggregation: str = "max",
        sources: ModelSources | None = None,
        device: str = "cpu",
    ):
        from detoxify import Detoxify

        self.heads = tuple(heads or DETOXIFY_HEADS)
        unknown = set(self.heads) - set(DETOXIFY_HEADS)
        if unknown:
            raise ValueError(f"Unknown Detoxify heads {sorted(unknown)}; choose from {DETOXIFY_HEADS}.")
        if aggregation not in ("max", "mean"):
            raise ValueError(f"aggregation must be 'max' or 'mean', got {aggregation!r}.")
        self.aggregation = aggregation
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
        arch = loaded["config"]["arch"]["args"]
        if not os.path.isdir(arch["model_type"]):
            arch["model_type"] = resolve_pretrained("bert_base_uncased", sources).path
        with tempfile.TemporaryDirectory() as directory, scoped_env(HF_HUB_OFFLINE="1", TORCH_HOME=directory):
            patched = os.path.join(directory, "checkpoint.ckpt")
            torch.save(loaded, patched)
            # Detoxify passes `device` to torch.load as map_location, which only knows bare device types ("cpu:0",
            # the device of a CPU process under accelerate launch, fails): load on the CPU, then move.
            self.model = Detoxify(
                checkpoint=patched,
                device="cpu",
                huggingface_config_path=huggingface_config_path or arch["model_type"],
            )
        self.model.device = torch.device(device)
        self.model.model.to(self.model.device)

    def scores(self, texts: list[str]) -> dict[str, list[float]]:
        """Detoxify's per-head probabilities."""
        return self.model.predict(list(texts))

    def __call__(self, prompts: list | None = None, completions: list | None = None, **kwargs) -> list[float | None]:
        texts = completion_texts(completions)
        scored = [i for i, text in enumerate(texts) if text]
        rewards: list[float | None] = [None] * len(texts)  # an empty completion has no toxicity: masked, not zero
        if scored:
            heads = self.scores([texts[i] for i in scored])
            table = torch.tensor([heads[name] for name in self.heads]).reshape(len(self.heads), -1)
            values = table.max(dim=0).values if self.aggregation == "max" else table.mean(dim=0)
            for i, value in zip(scored, values.tolist()):
                rewards[i] = value
        return rewards
