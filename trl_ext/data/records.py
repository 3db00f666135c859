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
"""Reading records from JSON and JSONL files, shared by the loaders that check their rows (the RLHF pipeline's
stage data, the image-edit benchmark's items): each caller keeps its own row validation and error messages."""

import json
from typing import Any


class JSONLineError(ValueError):
    """A line of a JSONL file that is not JSON.

    Args:
        path (`str`): The file.
        line_number (`int`): The line, counted from 1.
        error (`json.JSONDecodeError`): The decoder's error on that line.
    """

    def __init__(self, path: str, line_number: int, error: json.JSONDecodeError):
        super().__init__(f"{path}:{line_number}: not valid JSON ({error.msg}).")
        self.path, self.line_number, self.error = path, line_number, error


def read_jsonl(path: str) -> tuple[list[tuple[int, Any]], int]:
    """The `(line number, value)` of every non-blank line of a JSONL file (lines counted from 1), and the number of
    blank lines skipped. A line that is not JSON raises [`JSONLineError`]."""
    values, blank = [], 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                blank += 1
                continue
            try:
                values.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise JSONLineError(path, number, error) from None
    return values, blank


def read_json(path: str) -> Any:
    """The value a JSON file holds. An empty (or blank) file raises a `ValueError` saying so, other invalid JSON the
    decoder's `json.JSONDecodeError` (a `ValueError`)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"{path}: the file is empty.")
    return json.loads(text)


def records_of(value: Any, any_key: bool = False) -> list | None:
    """The list of records a JSON file's `value` holds: the value itself if it is a list; for an object, its `data`
    list (`{"data": [...]}`), or with `any_key` its only list value whatever its key; otherwise `None`."""
    if isinstance(value, dict):
        if any_key:
            lists = [v for v in value.values() if isinstance(v, list)]
            return lists[0] if len(lists) == 1 else None
        value = value.get("data")
    return value if isinstance(value, list) else None
