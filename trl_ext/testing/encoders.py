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
"""Tiny random encoders with offline tokenizers: CLIP, a GTR-like T5 sentence encoder, and a Detoxify-style BERT."""

import os
import string
import tempfile
from dataclasses import dataclass

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .text import init_tiny_weights


# Detoxify's "original" model: labels of the Jigsaw toxic-comment challenge, in checkpoint order.
DETOXIFY_ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]

_WORDS = (
    "a an the cat dog sky sun red blue green photo of image is are and to with in on you your we they it this "
    "that nice bad stupid idiot hate love good kill awful great person people city street"
).split()


def build_tiny_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """An in-memory CLIP BPE tokenizer: every byte symbol (with and without the `</w>` word suffix), a few merges."""
    symbols = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "</w>": 2}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "f</w>"), ("a", "</w>")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def build_tiny_t5_tokenizer(model_max_length: int = 64) -> T5Tokenizer:
    """An in-memory Unigram (SentencePiece-style) T5 tokenizer over a small word list and single characters."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -5.0) for word in _WORDS]
    pieces += [(ch, -8.0) for ch in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def tiny_t5_config(vocab_size: int, d_model: int = 64) -> T5Config:
    """A 2-layer T5 config of width `d_model` (GTR-T5, SD3's third text encoder) for the tiny T5 tokenizer."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def tiny_clip_text_config(vocab_size: int, max_position_embeddings: int, **overrides) -> CLIPTextConfig:
    """A 2-layer, 32-wide CLIP text config for the tiny CLIP tokenizer (CLIP's own text tower, SD3's and FLUX's CLIP
    text encoders); `overrides` set the rest (`projection_dim`, `hidden_act`)."""
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **overrides,
    )


def build_tiny_bert_tokenizer(model_max_length: int = 128) -> BertTokenizer:
    """An in-memory uncased WordPiece tokenizer over a small word list and single characters; it truncates at
    `model_max_length` (the tiny BERT's position count), as bert-base-uncased's does at 512."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _WORDS
    tokens += list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += ["##" + ch for ch in string.ascii_lowercase + string.digits]
    tokens = list(dict.fromkeys(tokens))  # one id per token ("a" is a word and a character): ids stay below the size
    return BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, model_max_length=model_max_length)


def save_tiny_clip(path: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random `CLIPModel` (32×32 images, patch 8) with its processor and save both to `path`.

    Reload with `CLIPModel.from_pretrained(path)` and `CLIPProcessor.from_pretrained(path)`.

    Returns:
        `str`: `path`.
    """
    path = os.fspath(path)
    tokenizer = build_tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=tiny_clip_text_config(len(tokenizer), max_position_embeddings=77),
        vision_config=CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config)
    init_tiny_weights(model, seed)
    model.save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def save_tiny_gtr_t5(path: str | os.PathLike, seed: int = 0, hidden_size: int = 32) -> str:
    """Build a tiny GTR-like sentence encoder (like `sentence-transformers/gtr-t5-base`) and save it to `path`.

    The modules are those of GTR: a `T5EncoderModel` transformer, mean pooling, a bias-free dense projection and L2
    normalisation. Load with `sentence_transformers.SentenceTransformer(path)`; the directory's root also holds the
    `T5EncoderModel` (as vec2text loads it). `hidden_size` is the embedding dimension (vec2text's corrector needs 768).

    Returns:
        `str`: `path`.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    path = os.fspath(path)
    tokenizer = build_tiny_t5_tokenizer()
    encoder = T5EncoderModel(tiny_t5_config(len(tokenizer), hidden_size))
    init_tiny_weights(encoder, seed)
    torch.manual_seed(seed)
    # sentence-transformers builds its Transformer module from a directory; the saved model holds its own copy.
    with tempfile.TemporaryDirectory() as encoder_dir:
        encoder.save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
        transformer = Transformer(encoder_dir, max_seq_length=64)
    dim = transformer.get_embedding_dimension()
    modules = [
        transformer,
        Pooling(dim, pooling_mode="mean"),
        Dense(dim, dim, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(path)
    return path


@dataclass
class TinyDetoxify:
    """Paths of a tiny Detoxify-format model, as `detoxify.Detoxify(checkpoint=..., huggingface_config_path=...)` takes.

    Attributes:
        checkpoint (`str`): The Detoxify-format `.ckpt` file (config + state dict).
        huggingface_config_path (`str`): The directory holding the BERT config and tokenizer.
    """

    checkpoint: str
    huggingface_config_path: str


def save_tiny_detoxify(path: str | os.PathLike, seed: int = 0) -> TinyDetoxify:
    """Build a tiny random BERT classifier with Detoxify's six "original" labels and save it in two formats.

    `path` receives the model in `save_pretrained` format with its tokenizer, and `path/tiny_detoxify.ckpt` in
    Detoxify's own checkpoint format. Detoxify builds the architecture from `config.arch.args.model_type` (for the
    released checkpoint, the Hub id `bert-base-uncased`, which needs the network); here it is the local directory, so

    ```python
    Detoxify("original", checkpoint=tiny.checkpoint, huggingface_config_path=tiny.huggingface_config_path)
    ```

    loads offline.

    Returns:
        [`TinyDetoxify`]: the checkpoint file and the config/tokenizer directory.
    """
    path = os.fspath(path)
    tokenizer = build_tiny_bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        num_labels=len(DETOXIFY_ORIGINAL_CLASSES),
    )
    model = BertForSequenceClassification(config)
    init_tiny_weights(model, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    checkpoint = os.path.join(path, "tiny_detoxify.ckpt")
    detoxify_config = {
        "arch": {
            "args": {
                "model_type": path,
                "model_name": "BertForSequenceClassification",
                "tokenizer_name": "BertTokenizer",
                "num_classes": len(DETOXIFY_ORIGINAL_CLASSES),
            }
        },
        "dataset": {"args": {"classes": DETOXIFY_ORIGINAL_CLASSES}},
    }
    torch.save({"config": detoxify_config, "state_dict": model.state_dict()}, checkpoint)
    return TinyDetoxify(checkpoint=checkpoint, huggingface_config_path=path)
