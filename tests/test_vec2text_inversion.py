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
"""vec2text's GTR inverter loads offline under transformers 5 through our loader, and leaves nothing patched behind."""

import os

import pytest
import torch

from trl_ext.hub import ModelNotFoundError, ModelSources
from trl_ext.models.prompt_editor import PromptEditorConfig, PromptEditorPolicy
from trl_ext.models.vec2text_inversion import Vec2TextInverter
from trl_ext.testing.inversion import save_tiny_vec2text


@pytest.fixture(scope="module")
def tiny_vec2text(tmp_path_factory):
    return save_tiny_vec2text(tmp_path_factory.mktemp("vec2text"))


def _vec2text_hooks():
    import evaluate
    import vec2text.models.inversion as inversion_module
    import vec2text.models.model_utils as model_utils
    import vec2text.trainers.base as trainers_base

    return (
        inversion_module.load_embedder_and_tokenizer is model_utils.load_embedder_and_tokenizer,
        trainers_base.evaluate.load is evaluate.load,
    )


def test_loads_offline_with_the_saved_weights_and_restores_everything(tiny_vec2text, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env_before, offline_before = dict(os.environ), hub_constants.HF_HUB_OFFLINE
    inverter = Vec2TextInverter.from_pretrained(
        **tiny_vec2text.as_kwargs(), device="cpu", num_steps=0, sequence_beam_width=0, max_length=12
    )
    assert dict(os.environ) == env_before and hub_constants.HF_HUB_OFFLINE == offline_before
    assert _vec2text_hooks() == (True, True)
    assert os.listdir(tmp_path) == []  # vec2text's own loader would write ./tmp_trainer here

    saved = load_file(os.path.join(tiny_vec2text.corrector, "model.safetensors"))
    loaded = inverter.corrector.model.state_dict()
    assert saved.keys() <= loaded.keys()
    for key, value in saved.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert inverter.embedding_dim == 768

    embeddings = inverter.encode(["a cat on the street", "you are nice", "a red car"])
    assert embeddings.shape == (3, 768)
    texts = inverter.decode(embeddings)
    assert len(texts) == 3 and all(isinstance(text, str) for text in texts)
    assert inverter.decode(embeddings) == texts  # greedy: deterministic
    assert len(set(texts)) > 1  # the hypothesiser is conditioned on the embedding


def test_beam_corrections_run_under_transformers_5(tiny_vec2text):
    # transformers 5 leaves generation_config.length_penalty None, which breaks vec2text's beam re-ranking
    inverter = Vec2TextInverter.from_pretrained(
        **tiny_vec2text.as_kwargs(), device="cpu", num_steps=1, sequence_beam_width=2, max_length=8
    )
    for model in (inverter.corrector.model, inverter.corrector.inversion_trainer.model):
        assert model.encoder_decoder.generation_config.length_penalty == 1.0
    texts = inverter.decode(inverter.encode(["a cat", "a dog"]))
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)


def test_resolves_through_local_base_path_and_reports_what_is_missing(tiny_vec2text, monkeypatch):
    base = os.path.dirname(tiny_vec2text.inversion)
    names = {"vec2text_inversion": "inversion", "vec2text_corrector": "corrector", "t5_base": "t5", "gtr": "gtr"}
    sources = ModelSources(use_local=True, local_base_path=base, local_names=names, cache_dir=base)
    inverter = Vec2TextInverter.from_pretrained(
        sources, device="cpu", num_steps=0, sequence_beam_width=0, max_length=8
    )
    assert len(inverter.decode(inverter.encode(["a cat"]))) == 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="(?s)'vec2text_inversion'.*Hub 'jxm/gtr__nq__32': skipped"):
        Vec2TextInverter.from_pretrained(ModelSources(use_local=True, local_base_path=base, cache_dir=base))


def test_a_mismatched_checkpoint_raises_and_still_restores_the_patches(tiny_vec2text, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = str(tmp_path / "inversion")
    shutil.copytree(tiny_vec2text.inversion, broken)
    weights = load_file(os.path.join(broken, "model.safetensors"))
    weights["embedding_transform.9.weight"] = torch.zeros(1)
    save_file(weights, os.path.join(broken, "model.safetensors"))
    kwargs = {**tiny_vec2text.as_kwargs(), "inversion_path": broken}
    with pytest.raises(ValueError, match="unexpected.*embedding_transform.9.weight"):
        Vec2TextInverter.from_pretrained(**kwargs, device="cpu")
    assert _vec2text_hooks() == (True, True)


def test_bad_decoding_settings_raise(tiny_vec2text):
    with pytest.raises(ValueError, match="sequence beam"):
        Vec2TextInverter(corrector=None, num_steps=0, sequence_beam_width=2)


def test_prompt_editor_edits_through_the_inverter_keep_the_embedding_norm(tiny_vec2text):
    inverter = Vec2TextInverter.from_pretrained(
        **tiny_vec2text.as_kwargs(), device="cpu", num_steps=0, sequence_beam_width=0, max_length=8
    )
    decoded = []

    def decode(embeddings):
        decoded.append(embeddings)
        return inverter.decode(embeddings)

    torch.manual_seed(0)
    config = PromptEditorConfig(hidden_dim=16, init_log_std=-2.0)
    editor = PromptEditorPolicy(inverter.encode, decode, inverter.embedding_dim, config)
    edits = editor.sample(["a cat on the street", "you are nice"])
    torch.testing.assert_close(decoded[0].norm(dim=-1), inverter.encode(edits.original).norm(dim=-1))
    torch.testing.assert_close(edits.embeddings.norm(dim=-1), torch.ones(2))
    assert len(edits.edited) == 2 and edits.log_probs.shape == (2,)
