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
"""Reward scoring: TRL-convention reward functions and their weights -> rewards, the mask of unscored samples, and
per-function logs (including the parts a reward exposes as `last_components`).

A reward function is called as `fn(prompts=..., completions=... or images=..., **columns)` and returns one value per
sample: a finite number, or `None` for a sample it cannot score (masked, never zero). Anything else is an error that
names the function (see `trl_ext/rewards/base.py` for what each trainer passes).
"""

import math
from collections.abc import Callable

import torch


RewardFunc = Callable[..., list[float | None]]


def reward_component_values(reward_funcs: list[RewardFunc], names: list[str]) -> dict[str, list[float]]:
    """The finite numbers of each reward function's `last_components` (a dict of per-sample lists or scalars, set by
    the function at each call), keyed `rewards/<name>/<part>`."""
    values: dict[str, list[float]] = {}
    for func, name in zip(reward_funcs, names, strict=True):
        components = getattr(func, "last_components", None)
        if not isinstance(components, dict):
            continue
        for part, part_values in components.items():
            part_values = [part_values] if isinstance(part_values, (int, float)) else part_values
            if isinstance(part_values, (list, tuple)):
                finite = [float(v) for v in part_values if isinstance(v, (int, float)) and math.isfinite(v)]
                if finite:
                    values[f"rewards/{name}/{part}"] = finite
    return values


class RewardScorer:
    """Reward functions with their weights (TRL's `reward_funcs` / `reward_weights`).

    Args:
        reward_funcs (callable or list of callables):
            TRL-convention reward functions.
        reward_weights (`list[float]`, *optional*):
            One weight per function; all 1 by default.
    """

    def __init__(self, reward_funcs: RewardFunc | list[RewardFunc], reward_weights: list[float] | None = None):
        self.funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        if not self.funcs or not all(callable(f) for f in self.funcs):
            raise TypeError("reward_funcs must be a callable or a non-empty list of callables.")
        self.names = [getattr(f, "__name__", type(f).__name__) for f in self.funcs]
        weights = reward_weights or [1.0] * len(self.funcs)
        if len(weights) != len(self.funcs):
            raise ValueError(f"{len(weights)} reward_weights for {len(self.funcs)} reward functions.")
        self.weights = torch.tensor(weights, dtype=torch.float32)

    @property
    def stateful(self) -> list:
        """The functions with a state to checkpoint (`state_dict` / `load_state_dict`, e.g. `LaTeXReward`)."""
        return [f for f in self.funcs if hasattr(f, "state_dict") and hasattr(f, "load_state_dict")]

    def __call__(self, prompts: list, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Call every function as `fn(prompts=prompts, **kwargs)`.

        Returns:
            The (N, F) rewards per function (NaN where a function returned `None`); their weighted sum r = Σ_f w_f·r_f
            over the functions that scored the sample (N,), NaN where none did; and that "unscored" mask (N,).
        """
        rewards_per_func = torch.full((len(prompts), len(self.funcs)), float("nan"))
        for j, (func, name) in enumerate(zip(self.funcs, self.names)):
            values = func(prompts=prompts, **kwargs)
            if isinstance(values, torch.Tensor) or hasattr(values, "tolist"):
                values = values.tolist()
            if not isinstance(values, (list, tuple)):
                raise TypeError(
                    f"Reward function {name} must return a list of floats or None, got {type(values).__name__}."
                )
            if len(values) != len(prompts):
                raise ValueError(f"Reward function {name} returned {len(values)} values for {len(prompts)} samples.")
            for i, value in enumerate(values):
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(
                        f"Reward function {name} returned {value!r} for sample {i}: expected a float or None."
                    )
                if not math.isfinite(value):
                    raise ValueError(
                        f"Reward function {name} returned {value} for sample {i}: rewards must be finite (return None "
                        "to leave a sample unscored)."
                    )
                rewards_per_func[i, j] = float(value)
        rewards = (rewards_per_func * self.weights).nansum(dim=1)
        unscored = torch.isnan(rewards_per_func).all(dim=1)
        rewards[unscored] = float("nan")
        return rewards_per_func, rewards, unscored

    def logs(self, rewards_per_func: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """Mean and std (unbiased) of the total reward and of each function over scored samples, the count of masked
        samples per function and overall (`*_count`, summed over processes by the loop), and the mean of each
        `last_components` part."""

        def stats(values: torch.Tensor) -> tuple[float, float]:
            values = values[~torch.isnan(values)]
            mean = values.mean().item() if values.numel() else float("nan")
            return mean, values.std().item() if values.numel() > 1 else 0.0

        logs = dict(zip(("reward", "reward_std"), stats(rewards)))
        for j, name in enumerate(self.names):
            logs[f"rewards/{name}/mean"], logs[f"rewards/{name}/std"] = stats(rewards_per_func[:, j])
            logs[f"rewards/{name}/masked_count"] = int(torch.isnan(rewards_per_func[:, j]).sum())
        logs["unscored_count"] = int(torch.isnan(rewards).sum())
        for key, values in reward_component_values(self.funcs, self.names).items():
            logs[key] = sum(values) / len(values)
        return logs
