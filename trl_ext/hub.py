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
"""Where models come from: an explicit local directory, `local_base_path/<local name>`, the HF cache, then the Hub.

Training jobs often run on machines without internet access, next to a shared directory of downloaded checkpoints.
[`ModelSources`] describes that set-up once (per-model local names under one base path, Hub ids, revisions) and
[`resolve_pretrained`] turns a model key into a directory, trying each source in order, logging the one that won and
raising one [`ModelNotFoundError`] that lists every place tried.

Some third-party loaders (vec2text, Detoxify) take no path and read caches from the environment instead:
[`scoped_env`] sets those variables for the duration of a `with` block and restores them afterwards.
"""

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from transformers.utils import logging


if TYPE_CHECKING:
    import torch


logger = logging.get_logger(__name__)

SourceKind = Literal["local_path", "local_base_path", "hf_cache", "hub"]

DEFAULT_HUB_IDS = {
    "sedd_small": "louaaron/sedd-small",
    "sedd_medium": "louaaron/sedd-medium",
    "gpt2": "openai-community/gpt2",
    "sd3": "stabilityai/stable-diffusion-3.5-medium",
    "llava": "llava-hf/llava-v1.6-mistral-7b-hf",
    "clip": "openai/clip-vit-large-patch14-336",
    "sbert": "sentence-transformers/all-MiniLM-L6-v2",
    "gtr": "sentence-transformers/gtr-t5-base",
    "vec2text_inversion": "jxm/gtr__nq__32",
    "vec2text_corrector": "jxm/gtr__nq__32__correct",
    "t5_base": "google-t5/t5-base",
    "bert_base_uncased": "google-bert/bert-base-uncased",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
}


class ModelNotFoundError(OSError):
    """No source held the model. The message lists every place tried and why each failed."""


@dataclass
class ModelSources:
    r"""
    Where to look for each model, in the order [`resolve_pretrained`] tries them.

    Args:
        use_local (`bool`, *optional*, defaults to `False`):
            Look in `local_base_path/<local name>` before the HF cache and the Hub.
        local_base_path (`str`, *optional*):
            Directory holding local copies of the models, one sub-directory per model.
        local_names (`dict[str, str]`, *optional*):
            Model key → sub-directory name under `local_base_path`. Keys without an entry use the last part of their
            Hub id (`"stabilityai/stable-diffusion-3.5-medium"` → `"stable-diffusion-3.5-medium"`).
        hub_ids (`dict[str, str]`, *optional*):
            Model key → Hub repository id. Defaults to the models `trl_ext` uses ([`DEFAULT_HUB_IDS`]); a key not
            listed is taken as a Hub id itself.
        revisions (`dict[str, str]`, *optional*):
            Model key → Hub revision (branch, tag or commit).
        cache_dir (`str`, *optional*):
            HF cache directory; defaults to huggingface_hub's (`HF_HUB_CACHE`).
    """

    use_local: bool = field(default=False, metadata={"help": "Look in `local_base_path/<local name>` first."})
    local_base_path: str | None = field(
        default=None, metadata={"help": "Directory holding local copies of the models, one sub-directory each."}
    )
    local_names: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Model key -> sub-directory name under `local_base_path`."}
    )
    hub_ids: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_HUB_IDS), metadata={"help": "Model key -> Hub repository id."}
    )
    revisions: dict[str, str] = field(default_factory=dict, metadata={"help": "Model key -> Hub revision."})
    cache_dir: str | None = field(default=None, metadata={"help": "HF cache directory (default: HF_HUB_CACHE)."})

    def hub_id(self, key: str) -> str:
        """The Hub id of `key` (the key itself when it has no entry)."""
        return self.hub_ids.get(key, key)

    def local_name(self, key: str) -> str:
        """The sub-directory name of `key` under `local_base_path`."""
        return self.local_names.get(key, self.hub_id(key).rstrip("/").split("/")[-1])


@dataclass(frozen=True)
class ResolvedSource:
    """A resolved model: the directory to load from, which source it came from, and its Hub id."""

    path: str
    source: SourceKind
    repo_id: str


def _safe_join(base: str, name: str) -> str:
    """`base/name`, refusing names that are absolute or that escape `base` (`..`, symlinks)."""
    if not name or os.path.isabs(name) or os.path.splitdrive(name)[0]:
        raise ValueError(f"Local model name {name!r} must be a relative directory name inside local_base_path.")
    if ".." in name.replace("\\", "/").split("/"):
        raise ValueError(f"Local model name {name!r} escapes local_base_path ('..' is not allowed).")
    path = os.path.join(base, name)
    real_base = os.path.realpath(base)
    if os.path.commonpath([real_base, os.path.realpath(path)]) != real_base:
        raise ValueError(f"Local model name {name!r} resolves outside local_base_path {base!r} (symlink).")
    return path


def is_offline_mode() -> bool:
    """Whether the Hub must not be contacted (`HF_HUB_OFFLINE`, read at call time, or huggingface_hub's constant)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in {"1", "ON", "YES", "TRUE"}


def resolve_pretrained(
    key: str,
    sources: ModelSources | None = None,
    *,
    local_path: str | os.PathLike | None = None,
    allow_patterns: list[str] | str | None = None,
) -> ResolvedSource:
    """Find a model's directory: `local_path` (or `key` itself when it is an existing directory, as transformers'
    `from_pretrained` reads it), then `local_base_path/<local name>`, the HF cache, then the Hub.

    Each source is tried in that order; the first that has the model wins and is logged. The Hub is skipped in
    offline mode (`HF_HUB_OFFLINE=1`).

    Args:
        key (`str`):
            A directory, a model key of `sources` (e.g. `"sd3"`) or a Hub id.
        sources (`ModelSources`, *optional*):
            Defaults to `ModelSources()` (no local base path, the default Hub ids).
        local_path (`str` or `os.PathLike`, *optional*):
            An explicit directory, tried first.
        allow_patterns (`list[str]` or `str`, *optional*):
            Restricts what is fetched from the cache or the Hub (e.g. `["*.json", "*.safetensors"]`).

    Returns:
        [`ResolvedSource`]: the directory and the source it came from.

    Raises:
        `ValueError`: a local name that is absolute or escapes `local_base_path`.
        [`ModelNotFoundError`]: no source has the model; the message lists every place tried.
    """
    from huggingface_hub import snapshot_download

    sources = sources if sources is not None else ModelSources()
    repo_id = sources.hub_id(key)
    tried: list[str] = []
    if local_path is None and os.path.isdir(key):
        local_path = key

    def found(path: str, source: SourceKind) -> ResolvedSource:
        logger.info(f"Loading {key!r} from {source.replace('_', ' ')}: {path}")
        return ResolvedSource(path=path, source=source, repo_id=repo_id)

    if local_path is not None:
        local_path = os.fspath(local_path)
        if os.path.isdir(local_path):
            return found(local_path, "local_path")
        tried.append(f"local directory {local_path!r}: not a directory")

    if sources.use_local:
        if sources.local_base_path is None:
            tried.append("local_base_path: use_local is set but local_base_path is None")
        else:
            path = _safe_join(sources.local_base_path, sources.local_name(key))
            if os.path.isdir(path):
                return found(path, "local_base_path")
            tried.append(f"local_base_path {path!r}: not a directory")

    hub_kwargs = dict(
        repo_id=repo_id,
        revision=sources.revisions.get(key),
        cache_dir=sources.cache_dir,
        allow_patterns=allow_patterns,
    )
    try:
        return found(snapshot_download(local_files_only=True, **hub_kwargs), "hf_cache")
    except Exception as error:  # huggingface_hub raises several types for "not in the cache" / "bad repo id"
        tried.append(
            f"HF cache ({sources.cache_dir or 'HF_HUB_CACHE'}) for {repo_id!r}: {type(error).__name__}: {error}"
        )

    if is_offline_mode():
        tried.append(f"Hub {repo_id!r}: skipped, offline mode (HF_HUB_OFFLINE=1)")
    else:
        try:
            return found(snapshot_download(**hub_kwargs), "hub")
        except Exception as error:
            tried.append(f"Hub {repo_id!r}: {type(error).__name__}: {error}")

    places = "\n".join(f"  {i}. {place}" for i, place in enumerate(tried, start=1))
    raise ModelNotFoundError(f"Could not find model {key!r}. Tried, in order:\n{places}")


_HF_CACHE_SNAPSHOT = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\][^/\\]+$")


def resolve_device_and_dtype(device: str | None, dtype: str) -> tuple[str, "torch.dtype"]:
    """The device to load a model on (`device`, else CUDA when available, else CPU) and its dtype: `dtype="auto"` is
    bf16 on a CUDA device that supports it and fp32 otherwise; any other value names a torch dtype (`"float16"`)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype != "auto":
        return device, getattr(torch, dtype)
    use_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device, torch.bfloat16 if use_bf16 else torch.float32


def model_card_name(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id a model card names as the base model (`base_model`), never a local path; `None` when there is none.

    A Hub id (`org/name`) is returned as is and a directory of the Hugging Face cache
    (`.../models--org--name/snapshots/<revision>`) gives `org/name`. Any other local directory gives `None`, as in
    TRL's cards: its name would not load from the Hub.
    """
    if not name_or_path:
        return None
    name = os.fspath(name_or_path)
    path = os.path.normpath(os.path.expanduser(name))
    if not os.path.isdir(path) and not os.path.isabs(path):
        return name
    match = _HF_CACHE_SNAPSHOT.search(os.path.abspath(path))
    return f"{match['org']}/{match['name']}" if match else None


def from_pretrained(model_class: Any, key: str, sources: ModelSources | None = None, *, local_path=None, **kwargs):
    """Resolve `key` with [`resolve_pretrained`] and load it with `model_class.from_pretrained(path, **kwargs)`.

    Works with any class (or function) that has the `from_pretrained(path, **kwargs)` convention: transformers,
    diffusers and sentence-transformers models, tokenizers and processors.
    """
    resolved = resolve_pretrained(key, sources, local_path=local_path)
    return model_class.from_pretrained(resolved.path, **kwargs)


# huggingface_hub copies these variables into module constants when it is imported; scoped_env updates the copies too.
_HF_HUB_CONSTANTS = {"HF_HOME": "HF_HOME", "HF_HUB_CACHE": "HF_HUB_CACHE", "HF_HUB_OFFLINE": "HF_HUB_OFFLINE"}


@contextlib.contextmanager
def scoped_env(**variables: str | os.PathLike | None) -> Iterator[None]:
    """Set environment variables for the duration of a `with` block, then restore every one of them.

    For loaders that take no path and read caches from the environment (vec2text, Detoxify, `torch.hub`): e.g.
    `with scoped_env(HF_HUB_CACHE=cache, TORCH_HOME=torch_home, HF_HUB_OFFLINE="1"): Detoxify(...)`. A value of
    `None` unsets the variable. Variables that were unset before are unset again afterwards, also when the block
    raises.

    huggingface_hub reads `HF_HOME`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE` once, at import time, into
    `huggingface_hub.constants`; those three constants are updated and restored as well, so transformers and
    huggingface_hub calls inside the block follow them. Other libraries that cached a variable at import time (and
    anything that ran before the block) are not affected.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = {name: os.environ.get(name) for name in variables}
    saved_constants = {
        name: getattr(hub_constants, _HF_HUB_CONSTANTS[name]) for name in variables if name in _HF_HUB_CONSTANTS
    }
    try:
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = os.fspath(value)
        for name in saved_constants:
            value = variables[name]
            if name == "HF_HUB_OFFLINE":
                setattr(hub_constants, name, value is not None and str(value).upper() in {"1", "ON", "YES", "TRUE"})
            elif value is not None:
                setattr(hub_constants, _HF_HUB_CONSTANTS[name], os.fspath(value))
        if "HF_HOME" in variables and "HF_HUB_CACHE" not in variables and variables["HF_HOME"] is not None:
            saved_constants.setdefault("HF_HUB_CACHE", hub_constants.HF_HUB_CACHE)
            hub_constants.HF_HUB_CACHE = os.path.join(os.fspath(variables["HF_HOME"]), "hub")
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, value in saved_constants.items():
            setattr(hub_constants, _HF_HUB_CONSTANTS[name], value)
