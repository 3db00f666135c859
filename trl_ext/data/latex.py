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
"""LaTeX math data: formulas extracted from S1K-1.1 solutions, and a generated corpus for offline `--tiny` runs."""

import random
import re

from datasets import Dataset


# $$...$$, \[...\], \(...\), $...$ (not $$), \begin{equation|align|gather}...\end{...}
_MATH_SPANS = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<!\$)\$(?!\$)(.+?)(?<!\$)\$(?!\$)"
    r"|\\begin\{(?:equation|align|gather)\*?\}(.+?)\\end\{(?:equation|align|gather)\*?\}",
    re.DOTALL,
)


def extract_latex(text: str, min_length: int = 3) -> list[str]:
    """Math-mode spans of `text` (display and inline, delimiters removed, whitespace collapsed)."""
    formulas = []
    for match in _MATH_SPANS.finditer(text or ""):
        formula = " ".join(next(group for group in match.groups() if group is not None).split())
        if len(formula) >= min_length:
            formulas.append(formula)
    return formulas


def latex_from_rows(
    rows: Dataset | list[dict], fields: tuple[str, ...] = ("solution",), min_length: int = 3
) -> Dataset:
    """One row per formula found in `fields` of each row, with its `question` as `prompt` and the `solution`."""
    prompts, formulas, solutions = [], [], []
    for row in rows:
        for name in fields:
            for formula in extract_latex(row.get(name), min_length):
                prompts.append(row.get("question", ""))
                formulas.append(formula)
                solutions.append(row.get("solution", ""))
    return Dataset.from_dict({"prompt": prompts, "text": formulas, "solution": solutions})


def load_s1k_latex(
    name_or_path: str = "simplescaling/s1K-1.1", split: str = "train", fields: tuple[str, ...] = ("solution",)
) -> Dataset:
    """LaTeX formulas from S1K-1.1 (MIT; 1,000 math questions with reference solutions and DeepSeek-R1 traces).

    `name_or_path` is the Hub dataset or a local copy (a directory or a parquet/JSON file). Its question sources keep
    their own licenses; the traces are model outputs.
    """
    from datasets import load_dataset

    if name_or_path.endswith((".parquet", ".json", ".jsonl")):
        kind = "parquet" if name_or_path.endswith(".parquet") else "json"
        rows = load_dataset(kind, data_files=name_or_path, split=split)
    else:
        rows = load_dataset(name_or_path, split=split)
    missing = set(fields) - set(rows.column_names)
    if missing:
        raise ValueError(f"{name_or_path} has no column(s) {sorted(missing)}; columns: {rows.column_names}.")
    return latex_from_rows(rows, fields)


def generate_latex_corpus(num_formulas: int = 512, seed: int = 0) -> Dataset:
    """A deterministic corpus of well-formed LaTeX formulas from a small grammar (fractions, roots, sums, integrals,
    powers, Greek letters), with short prompts, for offline `--tiny` runs."""
    rng = random.Random(seed)
    variables = ["x", "y", "n", "k", r"\alpha", r"\theta", "a", "b"]

    def term(depth: int = 0) -> str:
        choice = rng.randrange(7 if depth < 2 else 3)
        v = rng.choice(variables)
        if choice == 0:
            return v
        if choice == 1:
            return str(rng.randrange(1, 10))
        if choice == 2:
            return f"{v}^{{{rng.randrange(2, 5)}}}"
        if choice == 3:
            return rf"\frac{{{term(depth + 1)}}}{{{term(depth + 1)}}}"
        if choice == 4:
            return rf"\sqrt{{{term(depth + 1)}}}"
        if choice == 5:
            return rf"\sum_{{{v}=1}}^{{n}} {term(depth + 1)}"
        return rf"\int_0^1 {term(depth + 1)} \, d{v}"

    operators = ["+", "-", r"\cdot"]
    formulas = [f"{term()} {rng.choice(operators)} {term()} = {term()}" for _ in range(num_formulas)]
    prompts = [rng.choice(["Formula:", "Equation:", "Identity:", "Compute:"]) for _ in range(num_formulas)]
    return Dataset.from_dict({"prompt": prompts, "text": formulas})
