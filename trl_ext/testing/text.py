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
"""Tiny random text models (Qwen2 causal LM and reward model) with an offline byte-level BPE tokenizer."""

import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)


CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# ChatML as in Qwen2/Qwen2-VL, simplified: string content, or a list of {"type": "image"} / {"type": "text"} parts.
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """An offline byte-level BPE tokenizer (256 byte tokens, no merges) with ChatML and Qwen vision special tokens.

    Every string round-trips. `eos_token` is `<|im_end|>`, `pad_token` is `<|endoftext|>`, padding is on the left (as
    TRL's generation expects), and the chat template accepts string content and Qwen-VL style
    `[{"type": "image"}, {"type": "text", "text": ...}]` content.

    With `vocab_size` (a published vocabulary's size, special tokens included) the vocabulary grows with strings of two
    or three byte symbols that encoding never produces (there are no merges): text still encodes byte by byte, and a
    random model's samples over the whole vocabulary decode to text (bytes), as a real tokenizer's would. The special
    tokens keep their place after the regular ones, as in Qwen's vocabulary.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    if vocab_size is not None:
        regular = vocab_size - len(CHATML_SPECIAL_TOKENS + VISION_SPECIAL_TOKENS)
        for first in alphabet:
            for second in alphabet:
                for third in ("", *alphabet):
                    if len(vocab) == regular:
                        break
                    vocab[first + second + third] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(CHATML_SPECIAL_TOKENS + VISION_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        truncation_side="left",
    )
    tokenizer.chat_template = CHATML_CHAT_TEMPLATE
    return tokenizer


def init_tiny_weights(model: PreTrainedModel, seed: int = 0) -> None:
    """Re-initialise a tiny model as TRL's tiny-model scripts do: Xavier for linear and convolution layers (a VLM's
    patch embedding), N(0, 0.02) embeddings, all from one generator seeded with `seed`.

    Every layer with weights drawn at construction is redrawn here: transformers' own initialisation draws from the
    global generator in an order that varies with Python's hash seed, so the same call gave other weights in another
    process.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                weight = module.weight
                receptive_field = weight[0][0].numel()  # 1 for a linear layer
                bound = (6.0 / ((weight.size(0) + weight.size(1)) * receptive_field)) ** 0.5
                weight.copy_(torch.empty_like(weight).uniform_(-bound, bound, generator=generator))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.empty_like(module.weight).normal_(0.0, 0.02, generator=generator))


def tiny_qwen2_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> Qwen2Config:
    """The scaled-down `Qwen2Config` of the tiny text models (TRL's tiny-model sizes); `overrides` win."""
    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    values.update(overrides)
    return Qwen2Config(**values)


def save_with_tokenizer(
    model: PreTrainedModel, tokenizer, path: str | os.PathLike, suppress_tokens: list[int] | None = None
) -> str:
    """Set the generation config's special ids from `tokenizer`, then save model and tokenizer to `path`.

    `suppress_tokens` go into the saved generation config: a VLM's image placeholder tokens, which a trained model
    never writes but a random one samples (its next forward then fails on "image features and image tokens do not
    match"). `generate` applies the saved config under any `GenerationConfig` a trainer passes, so a tiny VLM
    directory works wherever a real checkpoint does.
    """
    path = os.fspath(path)
    if model.can_generate():
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = None
        model.generation_config.suppress_tokens = suppress_tokens
    # GRPOTrainer(beta > 0) rebuilds the reference model from `config._name_or_path`: make it the saved directory.
    model.config._name_or_path = path
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_qwen2(path: str | os.PathLike, seed: int = 0, **config_overrides) -> str:
    """Build a tiny random `Qwen2ForCausalLM` with the offline tokenizer and save both to `path`.

    Args:
        path (`str` or `os.PathLike`):
            Output directory (created if needed).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the weight initialisation.
        **config_overrides:
            Fields of `Qwen2Config` to change (e.g. `hidden_size=32`).

    Returns:
        `str`: `path`, loadable with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`, and
        usable as `model=path` for TRL trainers (which then reload the reference model from it).
    """
    tokenizer = build_tiny_tokenizer()
    model = Qwen2ForCausalLM(tiny_qwen2_config(tokenizer, **config_overrides))
    init_tiny_weights(model, seed)
    return save_with_tokenizer(model, tokenizer, path)


def save_tiny_qwen2_reward_model(path: str | os.PathLike, seed: int = 0, **config_overrides) -> str:
    """Build a tiny random `Qwen2ForSequenceClassification` (one label: a reward model) and save it to `path`.

    Returns:
        `str`: `path`, loadable with `AutoModelForSequenceClassification.from_pretrained`; its
        `config._name_or_path` is the directory, so TRL names its reward metric after it.
    """
    tokenizer = build_tiny_tokenizer()
    model = Qwen2ForSequenceClassification(tiny_qwen2_config(tokenizer, num_labels=1, **config_overrides))
    init_tiny_weights(model, seed)
    return save_with_tokenizer(model, tokenizer, path)
