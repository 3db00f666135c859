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
"""A tiny random masked diffusion LM (a BERT-style bidirectional `AutoModelForMaskedLM`) with an offline WordPiece
tokenizer that has a mask token, for the diffusion-LM trainers' tests and `--tiny` demos."""

import os

from transformers import BertConfig, BertForMaskedLM

from .encoders import build_tiny_bert_tokenizer
from .text import init_tiny_weights


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
