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
"""[`SEDDConfig`]: the architecture, graph and noise schedule of a SEDD model, read from and written to the published
Hydra `config.json` layout."""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SEDDConfig:
    """Configuration of a SEDD (score-entropy discrete diffusion) DiT, as in `louaaron/sedd-small|medium`.

    The published checkpoints store the whole Hydra run config as `config.json`; [`SEDDConfig.from_hydra`] reads the
    fields a model needs from it and [`SEDDConfig.to_hydra`] writes the same layout back, so our checkpoints load in
    the reference code too.

    Args:
        tokens (`int`): Vocabulary size of the tokenizer (GPT-2: 50257). The absorbing graph adds a mask token.
        hidden_size, cond_dim, n_blocks, n_heads (`int`): DiT sizes (small: 768, 128, 12, 12).
        length (`int`): Maximum sequence length (rotary tables are built on the fly).
        dropout (`float`): Dropout inside the blocks (active only in train mode).
        scale_by_sigma (`bool`): Subtract log(e^σ̄ − 1) + log(V − 1) from the output (absorbing graph only).
        graph_type (`str`): `"absorb"` (the published models) or `"uniform"`.
        noise_type (`str`): `"loglinear"` (absorb) or `"geometric"`.
        sigma_min, sigma_max (`float`): σ̄(0) and σ̄(1) of the geometric schedule σ̄(t) = σ_min^{1−t}·σ_max^t (the
            reference config's `noise.sigma_min`/`noise.sigma_max`; unused by the log-linear schedule). Build the
            schedule with `get_noise(config)`.
    """

    tokens: int = 50257
    hidden_size: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    length: int = 1024
    dropout: float = 0.1
    scale_by_sigma: bool = True
    graph_type: str = "absorb"
    noise_type: str = "loglinear"
    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.graph_type not in ("absorb", "uniform"):
            raise ValueError(f"graph_type must be 'absorb' or 'uniform', got {self.graph_type!r}.")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by n_heads ({self.n_heads}).")
        if self.noise_type not in ("loglinear", "geometric"):
            raise ValueError(f"noise_type must be 'loglinear' or 'geometric', got {self.noise_type!r}.")
        self.sigma_min, self.sigma_max = float(self.sigma_min), float(self.sigma_max)
        if self.noise_type == "geometric" and not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"Need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}.")

    @property
    def vocab_size(self) -> int:
        """Number of model outputs: the tokens, plus the mask token for the absorbing graph."""
        return self.tokens + (1 if self.graph_type == "absorb" else 0)

    @property
    def mask_index(self) -> int:
        return self.tokens

    @classmethod
    def from_hydra(cls, config: dict[str, Any]) -> "SEDDConfig":
        """Read the flat Hydra `config.json` of the published checkpoints (keys `tokens`, `graph`, `noise`, `model`).

        `noise.sigma_min`/`noise.sigma_max` default to 1e-4 and 20 (the reference `configs/config.yaml`) when absent.
        """
        try:
            model, noise = config["model"], config["noise"]
            return cls(
                tokens=config["tokens"],
                hidden_size=model["hidden_size"],
                cond_dim=model["cond_dim"],
                n_blocks=model["n_blocks"],
                n_heads=model["n_heads"],
                length=model["length"],
                dropout=model.get("dropout", 0.1),
                scale_by_sigma=model.get("scale_by_sigma", True),
                graph_type=config["graph"]["type"],
                noise_type=noise["type"],
                sigma_min=float(noise.get("sigma_min", 1e-4)),
                sigma_max=float(noise.get("sigma_max", 20.0)),
                extra={k: v for k, v in config.items() if k not in ("tokens", "graph", "noise", "model")},
            )
        except KeyError as error:
            raise ValueError(f"Not a SEDD config.json: missing key {error}.") from error

    def to_hydra(self) -> dict[str, Any]:
        """The published `config.json` layout (what the reference's `SEDD`, `get_graph` and `get_noise` read)."""
        values = asdict(self)
        extra = values.pop("extra")
        model = {
            k: values[k]
            for k in ("hidden_size", "cond_dim", "n_blocks", "n_heads", "length", "dropout", "scale_by_sigma")
        }
        model["name"] = "trl_ext_sedd"
        model["type"] = "ddit"
        noise = {"type": self.noise_type, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
        return {**extra, "tokens": self.tokens, "graph": {"type": self.graph_type}, "noise": noise, "model": model}
