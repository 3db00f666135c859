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
"""Benchmark reports: statistics per category and overall (micro and macro), `report.json`, `report.md`, a score chart
and a gallery of the best and worst edits, every file written atomically (temporary file, then `os.replace`).

Unscored items (the judge gave no usable score) count in `n` and `n_failed`, never in the statistics.
"""

import json
import math
import os
import statistics
import tempfile
from typing import Any


STD_DDOF = 1  # sample standard deviation; 0 for a single score


def atomic_write(path: str, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def summarize(scores: list[float | None]) -> dict[str, Any]:
    """n, n_scored, n_failed, mean, std (ddof = [`STD_DDOF`]), median, min, max of `scores` (`None` = failed)."""
    scored = [float(s) for s in scores if s is not None]
    summary: dict[str, Any] = {"n": len(scores), "n_scored": len(scored), "n_failed": len(scores) - len(scored)}
    if scored:
        summary.update(
            mean=statistics.fmean(scored),
            std=statistics.stdev(scored) if len(scored) > 1 else 0.0,
            median=statistics.median(scored),
            min=min(scored),
            max=max(scored),
        )
    else:
        summary.update(mean=None, std=None, median=None, min=None, max=None)
    return summary


def build_report(
    items, results: dict[str, dict], metadata: dict[str, Any], warnings: list[str] | None = None
) -> dict[str, Any]:
    """The report of a run: `items` are the benchmark items, `results` the latest judge record per item id (an item
    whose edit failed has status `"edit_error"`), `warnings` what the run warned about (shown in `report.md`)."""
    by_category: dict[str, list[float | None]] = {}
    failures: dict[str, int] = {}
    for item in items:
        result = results.get(item.id)
        score = result.get("score") if result and result.get("status") == "ok" else None
        by_category.setdefault(item.category, []).append(score)
        if score is None:
            status = result.get("status", "not_judged") if result else "not_judged"
            failures[status] = failures.get(status, 0) + 1
    categories = {name: summarize(scores) for name, scores in sorted(by_category.items())}
    micro = summarize([s for scores in by_category.values() for s in scores])
    means = [c["mean"] for c in categories.values() if c["mean"] is not None]
    macro = summarize(means)
    macro.update(
        n_categories=len(categories),
        n_categories_scored=len(means),
        n=micro["n"],
        n_scored=micro["n_scored"],
        n_failed=micro["n_failed"],
    )
    return {
        "metadata": metadata,
        "std_ddof": STD_DDOF,
        "macro_definition": "statistics of the per-category means (categories with at least one score)",
        "categories": categories,
        "overall": {"micro": micro, "macro": macro},
        "failures": dict(sorted(failures.items())),
        "warnings": list(warnings or []),
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cell(text: str | None, limit: int = 160) -> str:
    text = " ".join(str(text or "").split())
    text = text[:limit] + ("…" if len(text) > limit else "")
    return text.replace("|", "\\|") or "–"


def _judge_cell(result: dict) -> str:
    if result.get("text"):
        return _cell(result["text"])
    if result.get("digit_mass") is not None:
        return f"expected score (digit probability {result['digit_mass']:.3f})"
    return "–"


def write_chart(report: dict[str, Any], path: str) -> bool:
    """A bar chart of the mean score per category (error bars: std) with n_scored/n labels; `False` without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(report["categories"])
    means = [report["categories"][c]["mean"] or 0.0 for c in names]
    stds = [report["categories"][c]["std"] or 0.0 for c in names]
    figure, axis = plt.subplots(figsize=(1.4 * max(len(names), 3) + 1, 3.2), dpi=100)
    bars = axis.bar(names, means, yerr=stds, capsize=4, color="#4C72B0")
    for bar, name in zip(bars, names):
        c = report["categories"][name]
        axis.annotate(f"{c['n_scored']}/{c['n']}", (bar.get_x() + bar.get_width() / 2, 0.2), ha="center", color="w")
    high = report["metadata"].get("judging", {}).get("high", 10)
    axis.set_ylim(0, high)
    axis.set_ylabel(f"mean judge score (std, ddof={STD_DDOF})")
    axis.set_title("Score per category (n_scored/n)")
    save_figure(figure, path)
    return True


def save_figure(figure, path: str) -> None:
    """Save a matplotlib `figure` as a PNG at `path` atomically (temporary file, then `os.replace`) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.unlink(tmp)


def render_markdown(
    report: dict[str, Any], items, results: dict[str, dict], chart: str | None, gallery_size: int
) -> str:
    meta = report["metadata"]
    lines = ["# Image-edit benchmark report", ""]
    editing, judging = meta.get("editing", {}), meta.get("judging", {})
    lines += ["| setting | value |", "|---|---|"]
    for key, value in [*editing.items(), *((k, v) for k, v in judging.items() if k != "prompts")]:
        lines.append(f"| {key} | {_cell(json.dumps(value, ensure_ascii=False))} |")
    lines.append(f"| items | {meta.get('data', {}).get('n_items', '–')} |")
    lines += [f"\n**Warning:** {_cell(warning, 1000)}" for warning in report.get("warnings", [])]
    lines += [
        "",
        f"Statistics over scored items; std with ddof={report['std_ddof']}. Unscored items count in n and "
        "n_failed only.",
        "",
    ]
    header = "| category | n | n_scored | n_failed | mean | std | median | min | max |"
    lines += [header, "|---|---|---|---|---|---|---|---|---|"]
    keys = ["n", "n_scored", "n_failed", "mean", "std", "median", "min", "max"]
    for name, summary in report["categories"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(summary[k]) for k in keys) + " |")
    for name in ("micro", "macro"):
        summary = report["overall"][name]
        lines.append(f"| **overall ({name})** | " + " | ".join(_fmt(summary[k]) for k in keys) + " |")
    lines += ["", f"Macro: {report['macro_definition']}."]
    if report["failures"]:
        lines += [
            "",
            "Unscored items by reason: " + ", ".join(f"{k}: {v}" for k, v in report["failures"].items()) + ".",
        ]
    if chart:
        lines += ["", f"![score per category]({chart})"]
    scored = [(results[i.id]["score"], i) for i in items if results.get(i.id, {}).get("status") == "ok"]
    scored.sort(key=lambda pair: (pair[0], pair[1].id))
    sections = [("Best edits", list(reversed(scored))[:gallery_size]), ("Worst edits", scored[:gallery_size])]
    for title, chosen in sections:
        if not chosen:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            "| source | edit | category | score | instruction | judge |",
            "|---|---|---|---|---|---|",
        ]
        for score, item in chosen:
            result = results[item.id]
            lines.append(
                f"| ![](sources/{item.category}/{item.id}.png) | ![](images/{item.category}/{item.id}.png) | "
                f"{item.category} | {score:.2f} | {_cell(item.instruction, 100)} | {_judge_cell(result)} |"
            )
    failed = [i for i in items if results.get(i.id, {}).get("status") != "ok"]
    if failed:
        lines += [
            "",
            "## Unscored items",
            "",
            "| id | category | reason | error | judge text |",
            "|---|---|---|---|---|",
        ]
        for item in failed:
            result = results.get(item.id, {})
            lines.append(
                f"| {item.id} | {item.category} | {result.get('status', 'not_judged')} | {_cell(result.get('error'))} | "
                f"{_cell(result.get('text'))} |"
            )
    return "\n".join(lines) + "\n"


def write_report(output_dir: str, report: dict[str, Any], items, results: dict[str, dict], gallery_size: int = 3):
    """Write `report.json`, `score_by_category.png` and `report.md` in `output_dir`; returns their paths."""
    json_path = os.path.join(output_dir, "report.json")
    md_path = os.path.join(output_dir, "report.md")
    chart_path = os.path.join(output_dir, "score_by_category.png")
    atomic_write(json_path, json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    chart = os.path.basename(chart_path) if write_chart(report, chart_path) else None
    atomic_write(md_path, render_markdown(report, items, results, chart, gallery_size))
    return json_path, md_path


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
