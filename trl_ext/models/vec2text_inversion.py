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
"""Offline loading of vec2text's GTR-base inverter (jxm/gtr__nq__32 + jxm/gtr__nq__32__correct) under transformers 5.

vec2text 0.0.13 cannot load its own checkpoints offline or under transformers 5:

1. `InversionModel.from_pretrained` fails under transformers 5 (its `__init__` calls `from_pretrained` again inside
   transformers' meta-device context). We build each model from its `InversionConfig` and load the state dict.
2. The models' `__init__` loads `config.model_name_or_path` ("t5-base") and the embedder "gtr_base" (hard-coded to
   the Hub id `sentence-transformers/gtr-t5-base`) by name. We resolve both through `trl_ext.hub` and point the
   construction at the resolved directories.
3. Its trainers' `__init__` calls `evaluate.load("accuracy" | "sacrebleu" | "rouge")`, which needs the network; the
   metrics are unused for inversion, so loading runs with `evaluate.load` disabled.
4. transformers 5 leaves `generation_config.length_penalty` as `None`, which breaks vec2text's beam re-ranking; we set
   it to 1.0 (transformers' default before v5).
5. `vec2text.api.load_corrector` builds its trainers with `args=None`, which writes `./tmp_trainer` into the working
   directory; we pass arguments with a temporary output directory.

Every patch of vec2text's module attributes, and `HF_HUB_OFFLINE=1` (everything is resolved to local directories
first), lasts only for the construction and is restored afterwards, also on errors.
"""

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

import torch

from ..hub import ModelSources, resolve_pretrained, scoped_env


# Keys a checkpoint may omit: the tied T5 embeddings (they come back through the tie) and the frozen GTR embedder
# (already loaded from its own directory at construction).
_TIED_SUFFIXES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
_OPTIONAL_PREFIX = "embedder."


def import_vec2text() -> None:
    """Import vec2text without its import-time side effect: `vec2text.experiments` sets torch dynamo's log level to
    INFO for the whole process (noise at every exit); the level is restored."""
    dynamo_logger = logging.getLogger("torch._dynamo")
    level = dynamo_logger.level
    import vec2text  # noqa: F401

    dynamo_logger.setLevel(level)


@contextlib.contextmanager
def _vec2text_offline_construction(encoder_decoder_path: str, embedder_path: str) -> Iterator[None]:
    """Patch vec2text for the duration of model construction (see the module docstring) and restore it after."""
    import_vec2text()
    import transformers
    import vec2text.models.inversion as inversion_module
    import vec2text.trainers.base as trainers_base

    def load_gtr_embedder(name: str, torch_dtype: str, **kwargs):
        if name != "gtr_base":
            raise ValueError(f"Only the 'gtr_base' embedder is supported offline, the checkpoint names {name!r}.")
        # vec2text embeds with the encoder stack of GTR-T5 and mean pooling (no dense layer, no normalisation)
        encoder = transformers.T5EncoderModel.from_pretrained(embedder_path).encoder
        return encoder, transformers.AutoTokenizer.from_pretrained(embedder_path)

    saved = (inversion_module.load_embedder_and_tokenizer, trainers_base.evaluate.load)
    try:
        inversion_module.load_embedder_and_tokenizer = load_gtr_embedder
        trainers_base.evaluate.load = lambda *args, **kwargs: None
        with scoped_env(HF_HUB_OFFLINE="1"):
            yield
    finally:
        inversion_module.load_embedder_and_tokenizer, trainers_base.evaluate.load = saved


def _load_state_dict(directory: str) -> dict[str, torch.Tensor]:
    safetensors_file = os.path.join(directory, "model.safetensors")
    if os.path.isfile(safetensors_file):
        from safetensors.torch import load_file

        return load_file(safetensors_file)
    bin_file = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(bin_file):
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"No model.safetensors or pytorch_model.bin in {directory!r}.")


def build_vec2text_model(model_class, config, encoder_decoder_path: str, embedder_path: str, state_dict=None):
    """Construct a vec2text `InversionModel` or `CorrectorEncoderModel` from its config, offline.

    Args:
        model_class: `vec2text.models.InversionModel` or `vec2text.models.CorrectorEncoderModel`.
        config (`vec2text.models.InversionConfig`): The checkpoint's config; its `model_name_or_path` is replaced by
            `encoder_decoder_path`.
        encoder_decoder_path (`str`): Directory of the T5 encoder-decoder (`t5-base` for the released models).
        embedder_path (`str`): Directory of GTR-T5 (`sentence-transformers/gtr-t5-base`).
        state_dict (`dict`, *optional*): Weights to load. Every key must be used; only the tied T5 embeddings and the
            embedder (loaded from `embedder_path`) may be absent.

    Raises:
        `ValueError`: unexpected or missing keys in `state_dict`.
    """
    config.model_name_or_path = encoder_decoder_path
    with _vec2text_offline_construction(encoder_decoder_path, embedder_path):
        model = model_class(config)
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [key for key in missing if not key.endswith(_TIED_SUFFIXES) and not key.startswith(_OPTIONAL_PREFIX)]
        if missing or unexpected:
            raise ValueError(
                f"{model_class.__name__} checkpoint mismatch: missing {missing}, unexpected {unexpected}."
            )
        model.encoder_decoder.tie_weights()
    if model.encoder_decoder.generation_config.length_penalty is None:
        model.encoder_decoder.generation_config.length_penalty = 1.0
    return model.eval()


class Vec2TextInverter:
    r"""
    vec2text's GTR-base inverter: `encode` maps text to the embedding vec2text inverts (mean-pooled GTR-T5 encoder
    states) and `decode` maps embeddings back to text (the hypothesiser, then `num_steps` correction steps with a
    sequence beam of `sequence_beam_width`). Use them as the `encode` / `decode` of
    [`~trl_ext.models.prompt_editor.PromptEditorPolicy`].

    Args:
        corrector (`vec2text.trainers.Corrector`): The loaded corrector (see [`from_pretrained`]).
        num_steps (`int`): Correction steps (0: hypothesiser only; Flow-RTPO: 20).
        sequence_beam_width (`int`): Beam width of the corrections (0: greedy; Flow-RTPO: 4).
        max_length (`int`): Token length of decoded texts (vec2text's API fixes 128; the checkpoints were trained on
            32 tokens).
    """

    def __init__(self, corrector, num_steps: int = 20, sequence_beam_width: int = 4, max_length: int = 32):
        if num_steps < 0 or sequence_beam_width < 0:
            raise ValueError("num_steps and sequence_beam_width must be >= 0.")
        if num_steps == 0 and sequence_beam_width > 0:
            raise ValueError("A sequence beam needs correction steps (num_steps > 0).")
        self.corrector = corrector
        self.num_steps, self.sequence_beam_width, self.max_length = num_steps, sequence_beam_width, max_length

    @classmethod
    def from_pretrained(
        cls,
        sources: ModelSources | None = None,
        *,
        inversion_path: str | None = None,
        corrector_path: str | None = None,
        encoder_decoder_path: str | None = None,
        embedder_path: str | None = None,
        device: str | torch.device | None = None,
        **kwargs,
    ) -> "Vec2TextInverter":
        """Load the inverter fully offline from local copies (each path, or `sources`: local dir → HF cache → Hub).

        The models are the `trl_ext.hub` keys `vec2text_inversion` (jxm/gtr__nq__32), `vec2text_corrector`
        (jxm/gtr__nq__32__correct), `t5_base` and `gtr` (sentence-transformers/gtr-t5-base). Other keyword arguments
        go to the constructor.
        """
        from transformers import DataCollatorForSeq2Seq, TrainingArguments

        import_vec2text()
        from vec2text.collator import DataCollatorForCorrection
        from vec2text.models import CorrectorEncoderModel, InversionModel
        from vec2text.models.config import InversionConfig
        from vec2text.trainers import Corrector, InversionTrainer

        paths = {
            key: resolve_pretrained(key, sources, local_path=path).path
            for key, path in (
                ("vec2text_inversion", inversion_path),
                ("vec2text_corrector", corrector_path),
                ("t5_base", encoder_decoder_path),
                ("gtr", embedder_path),
            )
        }
        models = {}
        for key, model_class in (
            ("vec2text_inversion", InversionModel),
            ("vec2text_corrector", CorrectorEncoderModel),
        ):
            config = InversionConfig.from_pretrained(paths[key])
            models[key] = build_vec2text_model(
                model_class, config, paths["t5_base"], paths["gtr"], state_dict=_load_state_dict(paths[key])
            )
        device = (
            torch.device(device)
            if device is not None
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        inversion_model, corrector_model = models["vec2text_inversion"], models["vec2text_corrector"]
        corrector_model.config.dispatch_batches = None  # read by vec2text's trainer, absent from old configs
        with (
            tempfile.TemporaryDirectory() as output_dir,
            _vec2text_offline_construction(paths["t5_base"], paths["gtr"]),
        ):
            args = TrainingArguments(output_dir=output_dir, report_to=[], use_cpu=device.type == "cpu")
            inversion_trainer = InversionTrainer(
                model=inversion_model,
                args=args,
                train_dataset=None,
                eval_dataset=None,
                data_collator=DataCollatorForSeq2Seq(inversion_model.tokenizer, label_pad_token_id=-100),
            )
            corrector = Corrector(
                model=corrector_model,
                inversion_trainer=inversion_trainer,
                args=args,
                data_collator=DataCollatorForCorrection(tokenizer=inversion_model.tokenizer),
            )
        inversion_model.to(device)
        corrector_model.to(device)
        return cls(corrector, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.corrector.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """Dimension of the embeddings (768 for GTR-T5-base)."""
        return self.corrector.inversion_trainer.model.embedder_dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """The (N, D) GTR embeddings that vec2text inverts."""
        model = self.corrector.inversion_trainer.model
        inputs = model.embedder_tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        ).to(self.device)
        return model.call_embedding_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

    @torch.no_grad()
    def decode(self, embeddings: torch.Tensor) -> list[str]:
        """Invert (N, D) embeddings to N texts."""
        self.corrector.inversion_trainer.model.eval()
        self.corrector.model.eval()
        inputs = {"frozen_embeddings": embeddings.to(self.device, torch.float32)}
        generation_kwargs = {**self.corrector.gen_kwargs, "min_length": 1, "max_length": self.max_length}
        if self.num_steps == 0:
            tokens = self.corrector.inversion_trainer.generate(inputs=inputs, generation_kwargs=generation_kwargs)
        else:
            self.corrector.return_best_hypothesis = self.sequence_beam_width > 0
            tokens = self.corrector.generate(
                inputs=inputs,
                generation_kwargs=generation_kwargs,
                num_recursive_steps=self.num_steps,
                sequence_beam_width=self.sequence_beam_width,
            )
        return self.corrector.tokenizer.batch_decode(tokens, skip_special_tokens=True)
