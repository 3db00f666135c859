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
"""Tiny random diffusion LMs for the diffusion-LM trainers' tests and `--tiny` demos: a masked diffusion LM (a BERT-style
bidirectional `AutoModelForMaskedLM`) with an offline WordPiece tokenizer that has a mask token, and a
`DiffusionGemmaForBlockDiffusion` (random weights from a scaled-down config) with the offline byte-level tokenizer."""

import os

import torch
from transformers import BertConfig, BertForMaskedLM

from .encoders import build_tiny_bert_tokenizer
from .text import build_tiny_tokenizer, init_tiny_weights, save_with_tokenizer


def save_tiny_masked_diffusion_lm(path: str | os.PathLike, seed: int = 0, max_length: int = 64) -> str:
    """Build a tiny random `BertForMaskedLM` (2 layers, width 32, `max_length` positions) with the offline BERT
    tokenizer (`[MASK]` is its mask token) and save both to `path`.

    Reload with [`~trl_ext.models.diffusion_lm.load_masked_diffusion_lm`] (or `AutoModelForMaskedLM.from_pretrained`)
    and `AutoTokenizer.from_pretrained(path)`.

    Returns:
        `str`: `path`.
    """
    path = os.fspath(path)
    tokenizer = build_tiny_bert_tokenizer(model_max_length=max_length)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_length,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForMaskedLM(config)
    init_tiny_weights(model, seed)
    model.config._name_or_path = path
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_diffusion_gemma(path: str | os.PathLike, seed: int = 0, canvas_length: int = 4) -> str:
    """Build a tiny random `DiffusionGemmaForBlockDiffusion` (2 layers, width 32, 2 experts, a one-layer vision tower
    it needs to exist, blocks of `canvas_length`) with the offline byte-level tokenizer
    ([`build_tiny_tokenizer`]) and save both to `path`.

    The vocabulary is the tokenizer's (its pad token pads, `<|im_end|>` ends); the last layer is a full-attention one, as
    the architecture requires. Reload with `DiffusionGemmaForBlockDiffusion.from_pretrained(path)` (or
    [`~trl_ext.models.diffusion_lm.load_diffusion_lm`]) and `AutoTokenizer.from_pretrained(path)`.

    Returns:
        `str`: `path`.
    """
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    tokenizer = build_tiny_tokenizer()
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        global_head_dim=16,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=16,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    vision_config = dict(
        model_type="gemma4_vision",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        position_embedding_size=16,
    )
    config = DiffusionGemmaConfig(text_config=text_config, vision_config=vision_config, canvas_length=canvas_length)
    model = DiffusionGemmaForBlockDiffusion(config)
    init_tiny_weights(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # the experts' stacked weights are no nn.Linear: drawn here too, from the seed alone
        for name, parameter in model.named_parameters():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                parameter.normal_(0.0, 0.02, generator=generator)
    return save_with_tokenizer(model, tokenizer, path)
