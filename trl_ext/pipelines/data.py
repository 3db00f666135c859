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

import json
import os
from typing import Literal

from datasets import Dataset
from transformers.utils import logging


logger = logging.get_logger(__name__)

StageData = Literal["sft", "reward", "ppo"]


def _missing(row: dict, kind: StageData) -> str | None:
    """The fields a row lacks for its stage, or `None`."""
    if kind == "sft":
        if "messages" in row or ("prompt" in row and "completion" in row):
            return None
        return "'messages', or 'prompt' and 'completion'"
    required = ("chosen", "rejected") if kind == "reward" else ("prompt",)
    absent = [name for name in required if name not in row or row[name] is None]
    return ", ".join(repr(name) for name in absent) or None


def load_stage_data(path: str, kind: StageData) -> Dataset:
    """Load the rows of a stage from a `.jsonl` / `.json` file or a Hub dataset (its `train` split).

    JSONL: one object per line; for PPO prompts a line may also be a bare JSON string (the prompt). Empty lines are
    skipped and reported with their count. A line that is not JSON, or a row missing a required field, is a
    `ValueError` naming the file and line (JSON files: the record index).
    """
    rows, empty = [], 0
    if os.path.isfile(path) and path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    empty += 1
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
                rows.append((f"{path}:{number}", row))
    elif os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
        if isinstance(records, dict) and isinstance(records.get("data"), list):
            records = records["data"]
        if not isinstance(records, list):
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
        missing = _missing(row, kind)
        if missing:
            raise ValueError(f"{where}: missing {missing} (a {kind} row needs them).")
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
