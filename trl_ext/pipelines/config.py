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
"""[`RLHFConfig`]: one configuration for the three stages of [`RLHFPipeline`], from a dict, JSON or YAML."""

import dataclasses
import enum
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..trainers.validation import check_ranges


def _describe(hint) -> str:
    """A readable name of a type hint: `int`, `str or None`, `one of ('cpu', 'cuda')`."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return f"one of {typing.get_args(hint)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def matches_type(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint` strictly: no conversion, so the string `"false"` is not a `bool` and `"8"`
    is not an `int`; a `bool` is not a number; an `int` is a `float`; a list is a `tuple`; an `Enum` field takes one of
    its values. Hints this does not know (type variables, forward references) accept any value."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if origin in (list, tuple, set, frozenset):
        return isinstance(value, (list, tuple, set, frozenset))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_field_types(values: Mapping[str, Any], cls: type, where: str = "") -> None:
    """Raise a `ValueError` naming the first key of `values` whose value does not have the type of the field of the
    dataclass `cls` with that name ([`matches_type`]: strict, no conversion). Keys that are not fields are left to the
    caller. `where` prefixes the message (e.g. `"ppo_args: "`)."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is None or matches_type(value, hint):
            continue
        message = f"{where}{name} must be {_describe(hint)}, got {value!r} ({type(value).__name__})."
        if isinstance(value, str) and any(t in (int, float) for t in (hint, *typing.get_args(hint))):
            message += " Numbers are not converted from strings (note: YAML reads 1e-5 as a string; write 1.0e-5)."
        raise ValueError(message)


ALIASES = {"ppo_iterations": "ppo_max_steps", "ppo_epochs": "ppo_num_ppo_epochs"}
"""Earlier names of [`RLHFConfig`] fields, still accepted: alias -> field."""


@dataclass
class RLHFConfig:
    r"""
    Configuration of [`RLHFPipeline`]: supervised fine-tuning (`trl.SFTTrainer`), reward-model training
    (`trl.RewardTrainer`) and PPO ([`PPOTrainer`]), each stage starting from the previous one's weights.

    Parameters:
        > Model and run

        model_name (`str`): The base causal LM (Hub id or directory).
        tokenizer_path (`str`, *optional*): Its tokenizer; defaults to `model_name`.
        device (`Literal["auto", "cpu", "cuda"]`, *optional*, defaults to `"auto"`): `"auto"` trains on CUDA when
            available, else on CPU (bf16 only on CUDA with bf16 support).
        max_length (`int`, *optional*, defaults to `512`): Maximum tokens of an SFT sample and of a reward pair
            (longer pairs are dropped by RewardTrainer).
        save_dir (`str`, *optional*, defaults to `"rlhf_output"`): Holds `sft/`, `reward_model/`, `ppo/` (checkpoints
            and `final/`) and `logs/` (config snapshot, log file, `eval.json`).
        save_interval (`int`, *optional*, defaults to `50`): Optimizer steps (SFT, reward) or rollout batches (PPO)
            between checkpoints.
        log_level (`Literal["debug", "info", "warning", "error"]`, *optional*, defaults to `"warning"`): Verbosity
            of the console (stage skips, resumes and retraining are warnings); `logs/pipeline.log` records at
            `"info"` (or `"debug"` when asked) whatever the console shows.
        seed (`int`, *optional*, defaults to `42`).
        overwrite_stages (`bool`, *optional*, defaults to `False`): A stage already in `save_dir` (finished or with
            checkpoints) that was produced by other settings, or from other inputs (a changed data file, a retrained
            earlier stage), is an error naming the differing keys; with `overwrite_stages` it is deleted and retrained
            together with every stage after it.

    Every field is type-checked as declared, without conversion (`"false"` is not a `bool`, `"8"` not an `int`), and
    so is every `sft_args` / `reward_args` / `ppo_args` value against its config field. (A command line parsed by
    `TrlParser`, `--config` file included, converts its strings by the declared types first, as in every TRL script.)

        > SFT (skipped without `sft_data_path`: the reward model and PPO then start from `model_name`)

        sft_data_path (`str`, *optional*): JSON / JSONL (rows with `messages`, or `prompt` + `completion`) or a Hub id.
        sft_epochs (`int`, defaults to `3`), sft_batch_size (`int`, defaults to `8`), sft_lr (`float`, defaults to
        `5e-5`).

        > Reward model

        reward_data_path (`str`): Rows with `chosen` and `rejected` (and `prompt`, optional `margin`).
        reward_epochs (`int`, defaults to `1`), reward_batch_size (`int`, defaults to `8`), reward_lr (`float`,
        defaults to `1e-5`).
        freeze_reward_backbone (`bool`, defaults to `False`): Train the reward head (`score`) only.

        > PPO

        ppo_data_path (`str`): JSONL objects with a `prompt`, or bare JSON strings.
        ppo_max_steps (`int`, defaults to `100`): Rollout batches (`PPOConfig.max_steps`). Alias: `ppo_iterations`.
        ppo_batch_size (`int`, defaults to `8`): Prompts per rollout batch (per process).
        ppo_mini_batch_size (`int`, defaults to `4`): Prompts per optimizer step; divides `ppo_batch_size`.
        ppo_num_ppo_epochs (`int`, defaults to `4`): Passes over each rollout batch (`PPOConfig.num_ppo_epochs`).
            Alias: `ppo_epochs`.
        ppo_lr_policy (`float`, defaults to `1e-6`), ppo_lr_value (`float`, defaults to `1e-5`).

        `ppo_max_steps` and `ppo_num_ppo_epochs` are `ppo_` + the `PPOConfig` field they set. `ppo_iterations` and
        `ppo_epochs`, their names in earlier releases, are aliases ([`ALIASES`]): a dict, JSON / YAML file or command
        line with them loads to the same configuration (and the same stage fingerprints) as with the new names, which
        `to_dict` and `logs/config.json` use. Both names with different values are an error in a dict or file; as
        keyword arguments (or on a command line) the alias wins.

        > Per-stage overrides and evaluation

        sft_args (`dict`), reward_args (`dict`), ppo_args (`dict`): Any `SFTConfig` / `RewardConfig` / `PPOConfig`
            field, applied last (e.g. `{"center_rewards_coefficient": 0.01}`, `{"response_length": 32}`).
        eval_sft_data_path (`str`, *optional*): Held-out SFT rows: perplexity of the SFT and PPO models.
        eval_reward_data_path (`str`, *optional*): Held-out pairs: reward-model accuracy.
        eval_ppo_data_path (`str`, *optional*): Held-out prompts (optional `reference`): reward-model score of greedy
            completions before (SFT) and after PPO, and BLEU / ROUGE against the references.
    """

    model_name: str = field(metadata={"help": "Base causal LM (Hub id or directory)."})
    tokenizer_path: str | None = field(default=None, metadata={"help": "Tokenizer; defaults to model_name."})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'."})
    sft_data_path: str | None = field(default=None, metadata={"help": "SFT data: JSON/JSONL or a Hub dataset."})
    sft_epochs: float = field(default=3, metadata={"help": "SFT epochs."})
    sft_batch_size: int = field(default=8, metadata={"help": "SFT batch size per device."})
    sft_lr: float = field(default=5e-5, metadata={"help": "SFT learning rate."})
    reward_data_path: str | None = field(default=None, metadata={"help": "Preference pairs: JSON/JSONL or Hub id."})
    reward_epochs: float = field(default=1, metadata={"help": "Reward-model epochs."})
    reward_lr: float = field(default=1e-5, metadata={"help": "Reward-model learning rate."})
    reward_batch_size: int = field(default=8, metadata={"help": "Reward-model batch size per device."})
    freeze_reward_backbone: bool = field(default=False, metadata={"help": "Train the reward head only."})
    ppo_data_path: str | None = field(default=None, metadata={"help": "PPO prompts: JSONL objects or strings."})
    ppo_max_steps: int = field(
        default=100, metadata={"help": "PPO rollout batches (PPOConfig's max_steps; alias: ppo_iterations)."}
    )
    ppo_lr_policy: float = field(default=1e-6, metadata={"help": "PPO policy learning rate."})
    ppo_lr_value: float = field(default=1e-5, metadata={"help": "PPO value-model learning rate."})
    ppo_batch_size: int = field(default=8, metadata={"help": "Prompts per PPO rollout batch (per process)."})
    ppo_mini_batch_size: int = field(default=4, metadata={"help": "Prompts per PPO optimizer step."})
    ppo_num_ppo_epochs: int = field(
        default=4,
        metadata={"help": "Passes over each PPO rollout batch (PPOConfig's num_ppo_epochs; alias: ppo_epochs)."},
    )
    max_length: int = field(default=512, metadata={"help": "Maximum tokens of an SFT sample / reward pair."})
    save_dir: str = field(default="rlhf_output", metadata={"help": "Output directory of all stages."})
    save_interval: int = field(default=50, metadata={"help": "Steps between checkpoints."})
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="warning",
        metadata={"help": "Console log level; logs/pipeline.log records at 'info' or lower (the level asked for)."},
    )
    seed: int = field(default=42, metadata={"help": "Random seed of every stage."})
    overwrite_stages: bool = field(
        default=False,
        metadata={"help": "Retrain a stage whose saved outputs came from other settings, and every stage after it."},
    )
    sft_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra SFTConfig fields."})
    reward_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra RewardConfig fields."})
    ppo_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra PPOConfig fields."})
    eval_sft_data_path: str | None = field(default=None, metadata={"help": "Held-out SFT rows (perplexity)."})
    eval_reward_data_path: str | None = field(default=None, metadata={"help": "Held-out pairs (RM accuracy)."})
    eval_ppo_data_path: str | None = field(default=None, metadata={"help": "Held-out prompts (+ references)."})
    ppo_iterations: int | None = field(
        default=None, metadata={"help": "Alias of ppo_max_steps (its earlier name); when given, sets it."}
    )
    ppo_epochs: int | None = field(
        default=None, metadata={"help": "Alias of ppo_num_ppo_epochs (its earlier name); when given, sets it."}
    )

    def __post_init__(self):
        check_field_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, type(self))
        for alias, name in ALIASES.items():  # an alias sets its field and is cleared: one value, one name
            if getattr(self, alias) is not None:
                setattr(self, name, getattr(self, alias))
                setattr(self, alias, None)
        check_ranges(
            self,
            at_least_one=(
                "sft_batch_size",
                "reward_batch_size",
                "ppo_max_steps",
                "ppo_batch_size",
                "ppo_mini_batch_size",
                "ppo_num_ppo_epochs",
                "max_length",
                "save_interval",
            ),
            positive=("sft_epochs", "reward_epochs", "sft_lr", "reward_lr", "ppo_lr_policy", "ppo_lr_value"),
        )
        if self.ppo_batch_size % self.ppo_mini_batch_size:
            raise ValueError(
                f"ppo_mini_batch_size={self.ppo_mini_batch_size} must divide ppo_batch_size={self.ppo_batch_size}."
            )
        self._check_stage_fields()

    def _check_stage_fields(self) -> None:
        """A key of `sft_args` / `reward_args` / `ppo_args` that is not a field of its config class, or a value not of
        that field's type, is an error."""
        from trl import RewardConfig, SFTConfig

        from ..trainers.ppo.config import PPOConfig

        for name, cls in (("sft_args", SFTConfig), ("reward_args", RewardConfig), ("ppo_args", PPOConfig)):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(getattr(self, name)) - known)
            if unknown:
                raise ValueError(f"{name} has keys that are not {cls.__name__} fields: {unknown}.")
            check_field_types(getattr(self, name), cls, where=f"{name}: ")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RLHFConfig":
        """Build from a dict; a key that is not a field (or an alias, see [`ALIASES`]) is an error, and so are an alias
        and its field with different values."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown RLHFConfig keys: {unknown}. Known keys: {sorted(known - set(ALIASES))}.")
        for alias, name in ALIASES.items():
            if values.get(alias) is not None and name in values and values[name] != values[alias]:
                raise ValueError(
                    f"{alias} is an alias of {name}; they differ ({values[alias]!r} and {values[name]!r}): give {name}."
                )
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "RLHFConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "RLHFConfig":
        import yaml

        with open(path) as f:
            return cls.from_dict(yaml.safe_load(f) or {})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "RLHFConfig":
        """JSON, or YAML for `.yaml` / `.yml`."""
        return cls.from_yaml(path) if str(path).endswith((".yaml", ".yml")) else cls.from_json(path)

    def to_dict(self) -> dict[str, Any]:
        """The fields under their names (aliases left out: their values are in the fields they set)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name not in ALIASES}
