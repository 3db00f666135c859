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
"""Validation shared by the trainer configs' `__post_init__`: `Literal` fields, numeric ranges, the bf16 default."""

import dataclasses
import typing

import torch


def check_literal_fields(config) -> None:
    """Raise a `ValueError` for every `Literal[...]`-typed field of the dataclass `config` whose value is not one of
    its choices (the command line checks choices; a config built in Python does not)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        hint = hints.get(f.name)
        if typing.get_origin(hint) is typing.Literal and getattr(config, f.name) not in typing.get_args(hint):
            raise ValueError(f"{f.name} must be one of {typing.get_args(hint)}, got {getattr(config, f.name)!r}.")


def check_ranges(
    config, at_least_one: tuple[str, ...] = (), positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()
) -> None:
    """Raise a `ValueError` naming the first field out of its range: integers >= 1, numbers > 0, numbers >= 0."""
    for names, ok, rule in (
        (at_least_one, lambda v: v >= 1, ">= 1"),
        (positive, lambda v: v > 0, "> 0"),
        (non_negative, lambda v: v >= 0, ">= 0"),
    ):
        for name in names:
            if not ok(getattr(config, name)):
                raise ValueError(f"{name} must be {rule}, got {getattr(config, name)}.")


def default_bf16(config) -> bool:
    """bf16 for a config whose `bf16` was left unset: on unless `fp16`, where the device supports it (a CUDA device
    with bf16), and off on a CPU, where TRL's own default (`True`) makes `TrainingArguments` raise."""
    supported = not config.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return supported and not config.fp16


def check_group_batch(config) -> None:
    """Raise a `ValueError` unless the rollout batch of a group trainer's config splits into groups and minibatches:
    `num_generations` >= 2 (a group advantage needs two samples), and `per_device_train_batch_size ·
    gradient_accumulation_steps` a multiple of `num_generations` and of `num_mini_batches`."""
    if config.num_generations < 2:
        raise ValueError(f"num_generations must be >= 2 for group advantages, got {config.num_generations}.")
    rollout = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if rollout % config.num_generations or rollout % config.num_mini_batches:
        raise ValueError(
            f"The rollout batch, per_device_train_batch_size · gradient_accumulation_steps = {rollout}, must be a "
            f"multiple of num_generations ({config.num_generations}) and of num_mini_batches "
            f"({config.num_mini_batches})."
        )
