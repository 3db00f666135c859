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
"""Lazy attribute access for package `__init__` modules.

`import trl_ext` must stay fast and must not import diffusers, vec2text, detoxify or deepspeed: each public name is
imported from its submodule on first access (PEP 562 module `__getattr__`).
"""

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, import_structure: dict[str, list[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """Build the `__getattr__` and `__all__` of a package whose public names live in submodules.

    Args:
        package (`str`):
            The package's `__name__`.
        import_structure (`dict[str, list[str]]`):
            Maps a submodule path relative to `package` (e.g. `"trainers.tprl.trainer"`) to the names it exports.

    Returns:
        `tuple[Callable, list[str]]`: the module-level `__getattr__` and the sorted `__all__`.
    """
    name_to_module = {name: module for module, names in import_structure.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in name_to_module:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{name_to_module[name]}")
        return getattr(module, name)

    return __getattr__, sorted(name_to_module)
