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
"""Data of the RLHF pipeline: JSON / JSONL files or Hub datasets, checked row by row (an error names the file and
line), and the offline text metrics of its evaluation (perplexity inputs, BLEU, ROUGE)."""

import os
from typing import Literal

from datasets import Dataset
from transformers.utils import logging

from ..data.records import read_json, read_jsonl, records_of


logger = logging.get_logger(__name__)

StageData = Literal["sft", "reward", "ppo"]


def _text_or_messages_error(value) -> str | None:
    """Why `value` is not a non-empty text or a non-empty list of `{"role": str, "content": ...}` messages, or
    `None`."""
    if isinstance(value, str):
        return None if value.strip() else "is empty"
    if isinstance(value, list) and value:
        for message in value:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
                return f"has a message that is not a {{'role': str, 'content': ...}} object: {message!r:.80}"
        return None
    if isinstance(value, list):
        return "is an empty message list"
    return f"must be a non-empty string or a list of messages, got {type(value).__name__} ({value!r:.80})"


# per stage: the required and the optional fields, each checked by `_field_error` when present
_FIELDS = {
    "sft": ((), ("messages", "prompt", "completion")),
    "reward": (("chosen", "rejected"), ("prompt", "margin")),
    "ppo": (("prompt",), ("reference",)),
}


def _field_error(name: str, value) -> str | None:
    """Why the value of the row field `name` has the wrong type (`margin`: a number, `reference`: a string, the texts:
    [`_text_or_messages_error`]), or `None`."""
    if name == "margin":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"must be a number, got {type(value).__name__} ({value!r:.80})"
    if name == "reference":
        return None if isinstance(value, str) else f"must be a string, got {type(value).__name__} ({value!r:.80})"
    return _text_or_messages_error(value)


def _row_error(row: dict, kind: StageData) -> str | None:
    """What is wrong with a row of its stage (a missing field, a field of the wrong type or empty), or `None`."""
    required, optional = _FIELDS[kind]
    if kind == "sft" and "messages" not in row and not ("prompt" in row and "completion" in row):
        return "missing 'messages', or 'prompt' and 'completion'"
    absent = [name for name in required if name not in row]
    if absent:
        return f"missing {', '.join(repr(name) for name in absent)} (a {kind} row needs them)"
    for name in (*required, *optional):
        if name in row:
            error = _field_error(name, row[name])
            if error:
                return f"'{name}' {error}"
    return None


def load_stage_data(path: str, kind: StageData) -> Dataset:
    """Load the rows of a stage from a `.jsonl` / `.json` file or a Hub dataset (its `train` split).

    JSONL: one object per line; for PPO prompts a line may also be a bare JSON string (the prompt). Empty lines are
    skipped and reported with their count. A line that is not JSON, or a row missing a required field or with a field
    of the wrong type (texts: a non-empty string or a list of `role` / `content` messages; `margin`: a number;
    `reference`: a string), is a `ValueError` naming the file, line (JSON files: the record index) and field. A
    `.json` / `.jsonl` path that is not a file is an error, not a Hub lookup.
    """
    rows, empty = [], 0
    if path.endswith((".json", ".jsonl")) and not os.path.isfile(path):
        raise ValueError(f"{path}: no such file.")
    if os.path.isfile(path) and path.endswith(".jsonl"):
        values, empty = read_jsonl(path)
        rows = [(f"{path}:{number}", row) for number, row in values]
    elif os.path.isfile(path):
        records = records_of(read_json(path))
        if records is None:
            raise ValueError(f"{path}: a JSON file holds a list of records (or {{'data': [...]}}).")
        rows = [(f"{path}: record {i}", row) for i, row in enumerate(records)]
    else:
        from datasets import load_dataset

        dataset = load_dataset(path, split="train")
        rows = [(f"{path}: row {i}", row) for i, row in enumerate(dataset)]
    if empty:
        logger.warning(f"{path}: skipped {empty} empty line(s).")
    checked = []
    for where, row in rows:
        if kind == "ppo" and isinstance(row, str):
            row = {"prompt": row}
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}.")
        error = _row_error(row, kind)
        if error:
            raise ValueError(f"{where}: {error}.")
        checked.append(row)
    if not checked:
        raise ValueError(f"{path} has no rows.")
    columns = sorted({key for row in checked for key in row})
    return Dataset.from_dict({key: [row.get(key) for row in checked] for key in columns})


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's defaults (13a tokenisation, exponential smoothing), one reference each."""
    try:
        import sacrebleu
    except ImportError:
        raise ImportError("BLEU needs sacrebleu: pip install 'trl_ext[eval]'.") from None

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1 / ROUGE-2 / ROUGE-L F-measures (0-1) of `rouge-score` (no stemming)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError("ROUGE needs rouge-score: pip install 'trl_ext[eval]'.") from None

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(reference, hypothesis) for hypothesis, reference in zip(hypotheses, references)]
    return {name: sum(s[name].fmeasure for s in scores) / len(scores) for name in ("rouge1", "rouge2", "rougeL")}


def bundled_rlhf_data() -> dict[str, str]:
    """Paths of the toy data shipped with trl_ext (polite replies: 20 training rows per stage, 4 held out), as
    [`RLHFConfig`] fields."""
    from importlib.resources import files

    root = files("trl_ext").joinpath("data", "bundled")
    names = {
        "sft_data_path": "rlhf_sft.jsonl",
        "reward_data_path": "rlhf_reward.jsonl",
        "ppo_data_path": "rlhf_prompts.jsonl",
        "eval_sft_data_path": "rlhf_sft_eval.jsonl",
        "eval_reward_data_path": "rlhf_reward_eval.jsonl",
        "eval_ppo_data_path": "rlhf_prompts_eval.jsonl",
    }
    return {key: str(root.joinpath(name)) for key, name in names.items()}
