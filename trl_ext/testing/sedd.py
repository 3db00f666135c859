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
"""Tiny random SEDD models, in our format or in the published `louaaron/sedd-*` layout."""

import json
import os

import torch


def perturb_zero_initialised_layers(model) -> None:
    """Draw SEDD's zero-initialised modulation and output layers from N(0, 0.02), so that a random model's output
    depends on its input."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "adaLN_modulation" in name or "output_layer.linear" in name:
                parameter.normal_(0.0, 0.02)


def save_tiny_sedd(
    path: str | os.PathLike, tokens: int = 50257, published_layout: bool = False, seed: int = 0, **overrides
) -> str:
    """Build a tiny random absorbing SEDD (GPT-2's vocabulary by default, a 2-block 32-wide trunk) and save it.

    With `published_layout=True` the directory mimics `louaaron/sedd-small`: the whole Hydra run config as
    `config.json` (with its `ngpus`, `training`, `data`, `sampling`, `eval`, `optim` sections) and the reference
    parameter names in `pytorch_model.bin`; otherwise [`SEDDModel.save_pretrained`] writes `model.safetensors`. Both
    load with `SEDDModel.from_pretrained(path)`. The zero-initialised output and adaLN layers of a fresh SEDD are
    perturbed, so that the model's output depends on its input.

    Returns:
        `str`: `path`.
    """
    from ..models.sedd import SEDDConfig, SEDDModel

    path = os.fspath(path)
    values = dict(tokens=tokens, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, length=128, dropout=0.0)
    values.update(overrides)
    torch.manual_seed(seed)
    model = SEDDModel(SEDDConfig(**values))
    perturb_zero_initialised_layers(model)
    if not published_layout:
        model.save_pretrained(path)
        return path
    os.makedirs(path, exist_ok=True)
    hydra = model.config.to_hydra()
    hydra.update(
        ngpus=8,
        training={"batch_size": 512, "accum": 1, "n_iters": 1300001, "ema": 0.9999},
        data={"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        sampling={"predictor": "euler", "steps": 128, "noise_removal": True},
        eval={"batch_size": 512, "perplexity": True},
        optim={"lr": 3e-4, "optimizer": "AdamW"},
    )
    hydra["graph"].update(file="data", report_all=False)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hydra, f)
    torch.save(model.state_dict(), os.path.join(path, "pytorch_model.bin"))
    return path
