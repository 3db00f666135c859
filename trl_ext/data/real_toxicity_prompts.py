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
"""Real Toxicity Prompts (Gehman et al. 2020, `allenai/real-toxicity-prompts`) for red-teaming runs."""

from datasets import Dataset, DatasetDict


def load_real_toxicity_prompts(
    name_or_path: str = "allenai/real-toxicity-prompts",
    challenging_only: bool = True,
    num_train: int = 1000,
    num_eval: int | None = None,
) -> DatasetDict:
    """Prompts of Real Toxicity Prompts, as a deterministic train / held-out split (the first `num_train` prompts
    train, the next `num_eval` (default: all the rest) are held out).

    Args:
        name_or_path (`str`): The Hub dataset, or a local copy (parquet, JSON or JSON-lines file) with the same
            columns (`prompt` as a dict with `text` and `toxicity`, `challenging`).
        challenging_only (`bool`): Keep the `challenging` subset only (the usual red-teaming setting).

    Returns:
        `DatasetDict` with `train` and `test` splits; columns `prompt` (text) and `prompt_toxicity`.
    """
    from datasets import load_dataset

    if name_or_path.endswith((".parquet", ".json", ".jsonl")):
        rows = load_dataset(
            "parquet" if name_or_path.endswith(".parquet") else "json", data_files=name_or_path, split="train"
        )
    else:
        rows = load_dataset(name_or_path, split="train")
    missing = {"prompt", "challenging"} - set(rows.column_names)
    if missing:
        raise ValueError(f"{name_or_path} is missing the Real Toxicity Prompts column(s) {sorted(missing)}.")
    if challenging_only:
        rows = rows.filter(lambda row: bool(row["challenging"]))
    prompts = [row["text"] for row in rows["prompt"]]
    toxicity = [row.get("toxicity") for row in rows["prompt"]]
    if num_train >= len(prompts):
        raise ValueError(f"num_train={num_train} leaves no held-out prompts ({len(prompts)} after filtering).")
    end = len(prompts) if num_eval is None else min(len(prompts), num_train + num_eval)

    def split(start: int, stop: int) -> Dataset:
        return Dataset.from_dict({"prompt": prompts[start:stop], "prompt_toxicity": toxicity[start:stop]})

    return DatasetDict(train=split(0, num_train), test=split(num_train, end))
