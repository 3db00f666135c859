import os

import pytest

from trl_ext.hub import ModelNotFoundError, ModelSources, from_pretrained, resolve_pretrained, scoped_env


SHA = "0123456789abcdef0123456789abcdef01234567"


def _write_model(directory, marker):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        f.write(f'{{"marker": "{marker}"}}')
    return str(directory)


def _populate_cache(cache_dir, repo_id):
    repo_dir = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    snapshot = _write_model(os.path.join(repo_dir, "snapshots", SHA), "cache")
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(SHA)
    return snapshot


@pytest.fixture
def layout(tmp_path):
    """A local base path, an HF cache and an explicit directory, each holding a different copy of `org/model`."""
    base = tmp_path / "models"
    cache = tmp_path / "hf_cache"
    explicit = _write_model(tmp_path / "explicit", "explicit")
    _write_model(base / "my-model", "local")
    snapshot = _populate_cache(str(cache), "org/model")
    sources = ModelSources(
        use_local=True,
        local_base_path=str(base),
        local_names={"policy": "my-model"},
        hub_ids={"policy": "org/model"},
        cache_dir=str(cache),
    )
    return sources, explicit, snapshot


def test_sources_are_tried_in_order(layout, tmp_path):
    sources, explicit, snapshot = layout
    assert resolve_pretrained("policy", sources, local_path=explicit).source == "local_path"
    resolved = resolve_pretrained("policy", sources, local_path=tmp_path / "missing")
    assert (resolved.source, resolved.path) == ("local_base_path", os.path.join(sources.local_base_path, "my-model"))
    sources.use_local = False
    resolved = resolve_pretrained("policy", sources)
    assert (resolved.source, resolved.path, resolved.repo_id) == ("hf_cache", snapshot, "org/model")


def test_a_key_that_is_a_directory_is_read_as_one(layout, tmp_path, monkeypatch):
    # as transformers' from_pretrained reads it: a directory named like a model key or a Hub id wins, relative or not
    sources, explicit, snapshot = layout
    monkeypatch.chdir(tmp_path)
    _write_model(tmp_path / "policy", "cwd")
    _write_model(tmp_path / "org" / "model", "cwd")
    for key in ("policy", "org/model", str(tmp_path / "policy")):
        resolved = resolve_pretrained(key, sources)
        assert (resolved.source, resolved.path) == ("local_path", key)
    assert resolve_pretrained("policy", sources, local_path=explicit).path == explicit  # an explicit one still first
    os.rename(tmp_path / "policy", tmp_path / "moved")
    assert resolve_pretrained("policy", sources).source == "local_base_path"


def test_local_name_defaults_to_the_last_part_of_the_hub_id(tmp_path):
    _write_model(tmp_path / "stable-diffusion-3.5-medium", "local")
    sources = ModelSources(use_local=True, local_base_path=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert resolve_pretrained("sd3", sources).path == str(tmp_path / "stable-diffusion-3.5-medium")


def test_offline_error_lists_every_place_tried(layout, tmp_path):
    sources, _, _ = layout
    sources.local_names["other"] = "absent"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pretrained("other", sources, local_path=tmp_path / "nowhere")
    message = str(info.value)
    assert "Could not find model 'other'" in message
    for place in ["1. local directory", "2. local_base_path", "3. HF cache", "4. Hub 'other': skipped, offline mode"]:
        assert place in message


def test_hub_is_tried_when_online(layout, monkeypatch):
    import huggingface_hub.constants as hub_constants

    sources, _, _ = layout
    sources.use_local = False
    sources.hub_ids["absent"] = "org/absent"
    # online, but the endpoint is a closed local port: the Hub attempt is made and its failure reported
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pretrained("absent", sources)
    assert "2. Hub 'org/absent':" in str(info.value) and "skipped" not in str(info.value)


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc", ""])
def test_local_names_that_escape_the_base_path_are_rejected(tmp_path, name):
    sources = ModelSources(use_local=True, local_base_path=str(tmp_path / "base"), local_names={"m": name})
    with pytest.raises(ValueError, match="local_base_path|relative"):
        resolve_pretrained("m", sources)


def test_symlink_escaping_the_base_path_is_rejected(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    _write_model(tmp_path / "outside", "outside")
    os.symlink(tmp_path / "outside", base / "link")
    sources = ModelSources(use_local=True, local_base_path=str(base), local_names={"m": "link"})
    with pytest.raises(ValueError, match="symlink"):
        resolve_pretrained("m", sources)


def test_use_local_without_base_path_is_reported(tmp_path):
    with pytest.raises(ModelNotFoundError, match="use_local is set but local_base_path is None"):
        resolve_pretrained("m", ModelSources(use_local=True, cache_dir=str(tmp_path)))


def test_real_model_loads_through_the_local_base_path(tmp_path):
    from transformers import AutoModelForCausalLM

    from trl_ext.testing import save_tiny_qwen2

    save_tiny_qwen2(tmp_path / "tiny-qwen2")
    sources = ModelSources(use_local=True, local_base_path=str(tmp_path), hub_ids={"policy": "org/tiny-qwen2"})
    model = from_pretrained(AutoModelForCausalLM, "policy", sources)
    assert type(model).__name__ == "Qwen2ForCausalLM"


def test_scoped_env_restores_variables_and_hub_constants(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("TORCH_HOME", "/before/torch")
    monkeypatch.delenv("HF_HOME", raising=False)
    cache_before = hub_constants.HF_HUB_CACHE
    with scoped_env(TORCH_HOME=tmp_path / "torch", HF_HOME=tmp_path / "hf", HF_HUB_OFFLINE=None):
        assert os.environ["TORCH_HOME"] == str(tmp_path / "torch") and os.environ["HF_HOME"] == str(tmp_path / "hf")
        assert "HF_HUB_OFFLINE" not in os.environ and hub_constants.HF_HUB_OFFLINE is False
        assert hub_constants.HF_HUB_CACHE == str(tmp_path / "hf" / "hub")
    assert os.environ["TORCH_HOME"] == "/before/torch" and "HF_HOME" not in os.environ
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE is True
    assert hub_constants.HF_HUB_CACHE == cache_before


def test_scoped_env_restores_when_the_loader_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    with pytest.raises(RuntimeError, match="loader failed"):
        with scoped_env(TORCH_HOME=tmp_path, HF_HUB_CACHE=tmp_path / "hub"):
            raise RuntimeError("loader failed")
    assert "TORCH_HOME" not in os.environ and os.environ.get("HF_HUB_CACHE") != str(tmp_path / "hub")
