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
"""The SEDD diffusion transformer (DiT), parameter-compatible with `louaaron/sedd-small|medium`.

The reference implementation imports flash-attn at module level; this one uses `torch.nn.functional.
scaled_dot_product_attention` (non-causal), so it runs on CPU. The model is split into a trunk (everything up to the
final layer) and an output head that can be applied to selected rows only, so losses, likelihoods and samplers that
need the full-vocabulary output at masked positions only never build a (B, L, V) tensor.
"""

import json
import math
import os
import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging

from .configuration_sedd import SEDDConfig


logger = logging.get_logger(__name__)

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"


class LayerNorm(nn.Module):
    """Weight-only LayerNorm computed in fp32 (as in the reference)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), [self.dim]).to(x.dtype) * self.weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the total noise σ̄ (256 frequencies), then a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
        args = sigma.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Rotary(nn.Module):
    """GPT-NeoX rotary embedding (rotate-half, non-interleaved) applied to queries and keys."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # q, k: (B, H, L, D)
        positions = torch.arange(q.size(2), device=q.device, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq.float())
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]

        def rotate(x: torch.Tensor) -> torch.Tensor:
            x1, x2 = x.float().chunk(2, dim=-1)
            return (x.float() * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)

        return rotate(q), rotate(k)


class DDiTBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, cond_dim: int, mlp_ratio: int = 4, dropout: float = 0.1):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: torch.Tensor, rotary: Rotary, c: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(
            6, dim=2
        )
        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        q, k, v = qkv.view(batch, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, k)
        attention = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)
        x = x + gate_msa * self.dropout(self.attn_out(attention))
        return x + gate_mlp * self.dropout(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))


class EmbeddingLayer(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.embedding, not self.embedding[x]: the indexing backward accumulates repeated tokens in a thread-dependent
        # order on CPU, so the same step gave gradients differing by ~1e-6 from run to run
        return F.embedding(x, self.embedding)


class DDitFinalLayer(nn.Module):
    def __init__(self, hidden_size: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size)
        for layer in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(h), shift, scale))


class SEDDModel(nn.Module):
    r"""
    SEDD's diffusion transformer: maps a noised sequence x_t and its total noise σ̄ to the log concrete score
    log s_θ(x_t, σ̄)_{i,y} ≈ log p_t(x_t with token i set to y) / p_t(x_t), shape (B, L, V) (V = tokens + 1 for the
    absorbing graph). With `scale_by_sigma`, log(e^σ̄ − 1) + log(V − 1) is subtracted, and the log-score at the current
    token is 0, as in the reference.

    Load the published checkpoints with `SEDDModel.from_pretrained("louaaron/sedd-small")` (resolved through
    `trl_ext.hub`, so local copies work offline).
    """

    def __init__(self, config: SEDDConfig):
        super().__init__()
        self.config = config
        self.vocab_embed = EmbeddingLayer(config.hidden_size, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(config.hidden_size // config.n_heads)
        self.blocks = nn.ModuleList(
            DDiTBlock(config.hidden_size, config.n_heads, config.cond_dim, dropout=config.dropout)
            for _ in range(config.n_blocks)
        )
        self.output_layer = DDitFinalLayer(config.hidden_size, config.vocab_size, config.cond_dim)

    @property
    def device(self) -> torch.device:
        return self.vocab_embed.embedding.device

    def trunk(self, indices: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states before the output layer (B, L, D) and the noise conditioning c (B, cond_dim)."""
        x = self.vocab_embed(indices)
        c = F.silu(self.sigma_map(sigma))
        for block in self.blocks:
            x = block(x, self.rotary_emb, c)
        return x, c

    def head(self, hidden: torch.Tensor, c: torch.Tensor, indices: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Log-scores (N, V) of N selected rows: `hidden` (N, D), `c` (N, cond), current tokens and σ̄ (N,)."""
        logits = self.output_layer(hidden, c).float()
        if self.config.scale_by_sigma and self.config.graph_type == "absorb":
            sigma = sigma.float()
            log_expm1 = torch.where(sigma < 0.5, torch.expm1(sigma), sigma.exp() - 1).log()
            logits = logits - log_expm1[:, None] - math.log(self.config.vocab_size - 1)
        return torch.scatter(logits, -1, indices[:, None], 0.0)

    def forward(self, indices: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Log-scores (B, L, V) at every position (fp32)."""
        hidden, c = self.trunk(indices, sigma)
        batch, length = indices.shape
        rows = self.head(
            hidden.reshape(batch * length, -1),
            c.repeat_interleave(length, 0),
            indices.reshape(-1),
            sigma.repeat_interleave(length, 0),
        )
        return rows.view(batch, length, -1)

    # Loading and saving

    @classmethod
    def from_pretrained(cls, name_or_path: str, sources=None, map_location: str | torch.device = "cpu") -> "SEDDModel":
        """Load a SEDD checkpoint: the published `louaaron/sedd-*` layout (flat Hydra `config.json` +
        `model.safetensors` or `pytorch_model.bin`) or one written by [`save_pretrained`].

        `name_or_path` is a directory, a `trl_ext.hub` model key (`"sedd_small"`) or a Hub id, resolved through
        `trl_ext.hub.resolve_pretrained` (local directory → local base path → HF cache → Hub). Weights load with
        strict key matching; a mismatch raises an error listing the missing and unexpected keys.
        """
        from safetensors.torch import load_file

        from ...hub import resolve_pretrained

        resolved = resolve_pretrained(name_or_path, sources)
        path = resolved.path
        with open(os.path.join(path, CONFIG_NAME)) as f:
            config = SEDDConfig.from_hydra(json.load(f))
        if os.path.isfile(os.path.join(path, SAFETENSORS_NAME)):
            state_dict = load_file(os.path.join(path, SAFETENSORS_NAME), device=str(map_location))
        elif os.path.isfile(os.path.join(path, PYTORCH_NAME)):
            state_dict = torch.load(os.path.join(path, PYTORCH_NAME), map_location=map_location, weights_only=True)
        else:
            raise OSError(f"{path} has neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}.")
        model = cls(config)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"The checkpoint in {path} does not match SEDDModel(config): missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(unexpected)}."
            )
        model.name_or_path = name_or_path if resolved.source == "local_path" else resolved.repo_id  # for model cards
        logger.info(f"Loaded SEDD ({sum(p.numel() for p in model.parameters()):,} parameters) from {path}")
        return model.to(map_location)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `config.json` (the published Hydra layout) and `model.safetensors`."""
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w") as f:
            json.dump(self.config.to_hydra(), f, indent=2)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
            os.path.join(save_directory, SAFETENSORS_NAME),
        )

    def push_to_hub(self, repo_id: str, commit_message: str = "Upload SEDD model", token: str | None = None) -> str:
        """Save to a temporary directory and upload it to `repo_id`."""
        from huggingface_hub import create_repo, upload_folder

        create_repo(repo_id, exist_ok=True, token=token)
        with tempfile.TemporaryDirectory() as directory:
            self.save_pretrained(directory)
            return upload_folder(repo_id=repo_id, folder_path=directory, commit_message=commit_message, token=token)
