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
"""Two benchmark reports side by side (e.g. the base editor and the editor with an RL-trained LoRA): the mean score per
category and overall, and their difference, as `comparison.json`, `comparison.md` and one grouped bar chart
`comparison.png`.

A difference is only given where both reports have a mean (a category without any scored item has none); the number
of scored items of each side is kept beside it, since an unscored judgement is never a score.
"""

import json
import os
from typing import Any

from .report import _fmt, atomic_write, save_figure


def compare_reports(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per category and overall (micro and macro), each report's mean and n_scored / n, and the difference of the
    means of the last report minus the first (`None` when either has no mean).

    Parameters:
        reports (`dict[str, dict]`):
            Two reports of [`~trl_ext.evaluation.image_edit.run_benchmark`] by name, the reference first (e.g.
            `{"base": ..., "trained": ...}`).
    """
    if len(reports) != 2:
        raise ValueError(f"compare_reports takes two reports, got {len(reports)}.")
    (first, a), (second, b) = reports.items()

    def row(summary_a: dict | None, summary_b: dict | None) -> dict[str, Any]:
        entry = {}
        for name, summary in ((first, summary_a), (second, summary_b)):
            summary = summary or {}
            entry[name] = {key: summary.get(key) for key in ("mean", "n_scored", "n")}
        mean_a, mean_b = entry[first]["mean"], entry[second]["mean"]
        entry["difference"] = None if mean_a is None or mean_b is None else mean_b - mean_a
        return entry

    categories = sorted(set(a["categories"]) | set(b["categories"]))
    return {
        "names": [first, second],
        "difference_definition": f"mean({second}) - mean({first})",
        "categories": {c: row(a["categories"].get(c), b["categories"].get(c)) for c in categories},
        "overall": {kind: row(a["overall"][kind], b["overall"][kind]) for kind in ("micro", "macro")},
    }


def render_comparison_markdown(comparison: dict[str, Any], chart: str | None) -> str:
    """The comparison as a Markdown table (one row per category, then the overall rows)."""
    first, second = comparison["names"]
    lines = [
        f"# Image-edit benchmark: {first} vs {second}",
        "",
        f"Mean judge score per category over the scored items (n_scored/n); difference = "
        f"{comparison['difference_definition']}.",
        "",
        f"| category | {first} | {second} | difference |",
        "|---|---|---|---|",
    ]

    def cell(side: dict) -> str:
        return f"{_fmt(side['mean'])} ({side['n_scored']}/{side['n']})"

    rows = [*comparison["categories"].items(), *((f"**overall ({k})**", v) for k, v in comparison["overall"].items())]
    for name, entry in rows:
        lines.append(f"| {name} | {cell(entry[first])} | {cell(entry[second])} | {_fmt(entry['difference'])} |")
    if chart:
        lines += ["", f"![mean score per category]({chart})"]
    return "\n".join(lines) + "\n"


def write_comparison_chart(comparison: dict[str, Any], path: str, high: float = 10) -> bool:
    """Grouped bars of both means per category (and overall micro); `False` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [*comparison["categories"], "overall"]
    entries = [*comparison["categories"].values(), comparison["overall"]["micro"]]
    figure, axis = plt.subplots(figsize=(1.4 * max(len(names), 3) + 1, 3.2), dpi=100)
    width = 0.4
    for offset, (side, colour) in zip((-width / 2, width / 2), zip(comparison["names"], ("#8C8C8C", "#4C72B0"))):
        means = [entry[side]["mean"] or 0.0 for entry in entries]
        axis.bar([i + offset for i in range(len(names))], means, width, label=side, color=colour)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, high)
    axis.set_ylabel("mean judge score")
    axis.set_title(f"{comparison['names'][0]} vs {comparison['names'][1]}")
    axis.legend()
    save_figure(figure, path)
    return True


def write_comparison(output_dir: str, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """[`compare_reports`] written to `output_dir` as `comparison.json`, `comparison.png` and `comparison.md`;
    returns the comparison."""
    comparison = compare_reports(reports)
    os.makedirs(output_dir, exist_ok=True)
    atomic_write(
        os.path.join(output_dir, "comparison.json"),
        json.dumps(comparison, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
    )
    high = next(iter(reports.values()))["metadata"].get("judging", {}).get("high", 10)
    chart = (
        "comparison.png"
        if write_comparison_chart(comparison, os.path.join(output_dir, "comparison.png"), high)
        else None
    )
    atomic_write(os.path.join(output_dir, "comparison.md"), render_comparison_markdown(comparison, chart))
    return comparison
