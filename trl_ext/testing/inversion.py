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
"""A tiny random vec2text GTR inverter (hypothesiser + corrector) in the layout of jxm/gtr__nq__32(__correct)."""

import os
from dataclasses import dataclass

from transformers import T5Config, T5ForConditionalGeneration

from .encoders import build_tiny_t5_tokenizer, save_tiny_gtr_t5
from .text import init_tiny_weights


@dataclass
class TinyVec2Text:
    """Directories of a tiny vec2text inverter, as [`~trl_ext.models.vec2text_inversion.Vec2TextInverter`] takes.

    Attributes:
        inversion (`str`): The `InversionModel` (hypothesiser), like `jxm/gtr__nq__32`.
        corrector (`str`): The `CorrectorEncoderModel`, like `jxm/gtr__nq__32__correct`.
        encoder_decoder (`str`): The T5 encoder-decoder both build on, like `t5-base`.
        embedder (`str`): The GTR-T5 sentence encoder (768-d), like `sentence-transformers/gtr-t5-base`.
    """

    inversion: str
    corrector: str
    encoder_decoder: str
    embedder: str

    def as_kwargs(self) -> dict[str, str]:
        """Keyword arguments of `Vec2TextInverter.from_pretrained`."""
        return {
            "inversion_path": self.inversion,
            "corrector_path": self.corrector,
            "encoder_decoder_path": self.encoder_decoder,
            "embedder_path": self.embedder,
        }


def save_tiny_vec2text(path: str | os.PathLike, seed: int = 0, max_seq_length: int = 16) -> TinyVec2Text:
    """Build a tiny random vec2text GTR inverter and save its four parts under `path`.

    The encoder-decoder is a 1+1-layer T5 (d_model 32) with an offline tokenizer; the embedder a 768-d GTR-like encoder
    (vec2text's corrector hard-codes 768). The two vec2text models are saved as the released ones are: an
    `InversionConfig` whose `model_name_or_path` is `"t5-base"` and `embedder_model_name` is `"gtr_base"` (names that
    `Vec2TextInverter.from_pretrained` redirects to local directories), and their weights in `model.safetensors`.
    """
    from safetensors.torch import save_model

    from ..models.vec2text_inversion import build_vec2text_model, import_vec2text

    import_vec2text()
    from vec2text.models import CorrectorEncoderModel, InversionModel
    from vec2text.models.config import InversionConfig

    path = os.fspath(path)
    parts = TinyVec2Text(*(os.path.join(path, name) for name in ("inversion", "corrector", "t5", "gtr")))
    tokenizer = build_tiny_t5_tokenizer(model_max_length=max_seq_length)
    t5 = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    init_tiny_weights(t5, seed)
    t5.save_pretrained(parts.encoder_decoder)
    tokenizer.save_pretrained(parts.encoder_decoder)
    save_tiny_gtr_t5(parts.embedder, seed=seed, hidden_size=768)

    for directory, model_class in ((parts.inversion, InversionModel), (parts.corrector, CorrectorEncoderModel)):
        config = InversionConfig(
            model_name_or_path="t5-base",
            embedder_model_name="gtr_base",
            embedder_model_api=None,
            embedder_torch_dtype="float32",
            embedder_fake_with_zeros=False,
            use_frozen_embeddings_as_input=False,
            encoder_dropout_disabled=False,
            decoder_dropout_disabled=False,
            embeddings_from_layer_n=None,
            use_lora=False,
            max_seq_length=max_seq_length,
            num_repeat_tokens=4,
            embedder_no_grad=True,
            embedder_gaussian_noise_level=0.0,
            corrector_ignore_hypothesis_embedding=False,
        )
        model = build_vec2text_model(model_class, config, parts.encoder_decoder, parts.embedder)
        init_tiny_weights(model, seed)
        config.model_name_or_path = "t5-base"
        config.save_pretrained(directory)
        save_model(model, os.path.join(directory, "model.safetensors"))
    return parts
