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
"""The resumable two-phase image-edit benchmark: edit every item, then judge every edit, then report.

Layout of `output_dir`:
- `run_meta.json`: editor id and settings, seed, judge id, scoring mode, the prompts, the item ids; a resume must
  match it, and may add items (a `max_items` run extended to the whole set) but not drop or change any.
- `images/<category>/<id>.png` (edits) and `sources/<category>/<id>.png` (the RGB source, for the gallery).
- `edits.jsonl` and `results.jsonl`: append-only, one line per finished item, flushed and fsynced; the latest line
  of an item wins. A half-written last line (a killed run) is dropped on resume.
- `report.json`, `report.md`, `score_by_category.png` (atomic), `logs/benchmark.log`.

`resume=True` never redoes a finished edit or a scored item, and re-judges items whose judgement failed
(`rejudge_failed`). An item the editor fails on (an image it cannot take, e.g. 1×64) is logged, recorded with its
error in `edits.jsonl` and counted as an `edit_error` in the report; the others go on (a resume tries it again). The
editor is freed before the judge loads.
"""

import gc
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from PIL import Image

from .data import EditItem, load_edit_items
from .report import atomic_write, build_report, write_report


logger = logging.getLogger(__name__)


@dataclass
class ImageEditBenchmarkConfig:
    r"""
    Configuration of [`run_benchmark`] (and of `python -m trl_ext.evaluation.image_edit`).

    Parameters:
        data (`str`, *optional*, defaults to `"tiny"`):
            Seed-schema JSON, JSONL, a `datasets` directory or Hub id, or `"tiny"` (the bundled 10-item set).
        field_mapping (`dict[str, str]`, *optional*):
            Item field -> record key, e.g. `{"instruction": "edit_instruction"}`.
        output_dir (`str`, *optional*, defaults to `"outputs/image_edit"`):
            Where images, results, logs and reports go.
        max_items (`int`, *optional*):
            Evaluate only the first items.
        editor (`str`, *optional*, defaults to `"Qwen/Qwen-Image-Edit"`):
            Diffusers editing pipeline (`trl_ext.hub` key, Hub id or directory).
        num_inference_steps (`int`, *optional*, defaults to `50`), true_cfg_scale (`float`, defaults to `4.0`),
        negative_prompt (`str`, defaults to `" "`), seed (`int`, defaults to `0`):
            Editing settings; each item is edited with a generator seeded `seed + item seed` (0 without one).
        edit_batch_size (`int`, *optional*, defaults to `1`):
            Images per pipeline call (equal aspect ratios only).
        condition_area (`int`, *optional*):
            Condition-image pixel area of the Qwen-Image-Edit pipelines (default 1024²; tiny runs use less).
        judge (`str`, *optional*, defaults to `"Qwen/Qwen3-VL-30B-A3B-Instruct"`):
            Local judge model, or the model name on the server when `judge_url` is set.
        judge_url (`str`, *optional*):
            OpenAI-compatible endpoint (e.g. `"http://localhost:8000/v1"`); both scoring modes work (`"expected"`
            reads the digit distribution from the server's `top_logprobs`).
        judge_timeout (`float`, defaults to `120`), judge_max_retries (`int`, defaults to `3`):
            HTTP judge limits: a deadline in seconds per attempt, retries after the first attempt.
        mode (`str`, *optional*, defaults to `"expected"`):
            `"expected"` or `"generate"` (see [`~trl_ext.rewards.VLMJudgeReward`]).
        compare_with_original (`bool`, defaults to `False`), use_reference (`bool`, defaults to `True`):
            Show the source image too; pass the expected outcome (`rationale_short_en`) to the judge.
        prompt_template (`str`, *optional*), templates (`dict[str, str]`, *optional*):
            One template for every category, or templates by category name (text or file).
        judge_batch_size (`int`, defaults to `8`), max_new_tokens (`int`, defaults to `128`),
        min_digit_mass (`float`, defaults to `0.5`):
            Judge settings.
        dtype (`str`, defaults to `"auto"`), device (`str`, *optional*), attn_implementation (`str`, *optional*):
            Model loading (bf16 on a GPU with `"auto"`; `"flash_attention_2"` falls back to SDPA with a warning).
        local_base_path (`str`, *optional*):
            Directory of local model copies tried before the HF cache and the Hub.
        resume (`bool`, defaults to `False`), rejudge_failed (`bool`, defaults to `True`):
            Continue a run in `output_dir`; judge failed items again.
        gallery_size (`int`, defaults to `3`):
            Best and worst edits shown in `report.md`.
    """

    data: str = field(default="tiny", metadata={"help": "JSON / JSONL / datasets dir or Hub id, or 'tiny'."})
    field_mapping: dict[str, str] | None = field(default=None, metadata={"help": "Item field -> record key."})
    output_dir: str = field(default="outputs/image_edit", metadata={"help": "Output directory."})
    max_items: int | None = field(default=None, metadata={"help": "Evaluate only the first items."})
    editor: str = field(default="Qwen/Qwen-Image-Edit", metadata={"help": "Diffusers editing pipeline."})
    num_inference_steps: int = field(default=50, metadata={"help": "Denoising steps."})
    true_cfg_scale: float = field(default=4.0, metadata={"help": "True CFG scale (needs a negative prompt)."})
    negative_prompt: str = field(default=" ", metadata={"help": "Negative prompt."})
    seed: int = field(default=0, metadata={"help": "Added to each item's seed."})
    edit_batch_size: int = field(default=1, metadata={"help": "Images per pipeline call (one aspect ratio)."})
    condition_area: int | None = field(default=None, metadata={"help": "Condition image area (default 1024²)."})
    judge: str = field(default="Qwen/Qwen3-VL-30B-A3B-Instruct", metadata={"help": "Judge model."})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible judge endpoint."})
    judge_timeout: float = field(default=120.0, metadata={"help": "Deadline in seconds of an HTTP judge attempt."})
    judge_max_retries: int = field(default=3, metadata={"help": "Retries of a failed HTTP judge request."})
    mode: Literal["expected", "generate"] = field(default="expected", metadata={"help": "Scoring mode."})
    compare_with_original: bool = field(default=False, metadata={"help": "Show the source image to the judge."})
    use_reference: bool = field(default=True, metadata={"help": "Pass the expected outcome to the judge."})
    prompt_template: str | None = field(default=None, metadata={"help": "One template (name or file) for all."})
    templates: dict[str, str] | None = field(default=None, metadata={"help": "Templates by category name."})
    judge_batch_size: int = field(default=8, metadata={"help": "Judge requests per batch."})
    max_new_tokens: int = field(default=128, metadata={"help": "Judge answer length in generate mode."})
    min_digit_mass: float = field(default=0.5, metadata={"help": "Expected mode: minimum digit probability."})
    dtype: str = field(default="auto", metadata={"help": "'auto' (bf16 on GPU), 'float32', 'bfloat16', ..."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available)."})
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. 'sdpa', 'flash_attention_2'."})
    local_base_path: str | None = field(default=None, metadata={"help": "Directory of local model copies."})
    resume: bool = field(default=False, metadata={"help": "Continue the run in output_dir."})
    rejudge_failed: bool = field(default=True, metadata={"help": "On resume, judge failed items again."})
    gallery_size: int = field(default=3, metadata={"help": "Best / worst edits in report.md."})

    def __post_init__(self):
        if self.mode not in ("expected", "generate"):
            raise ValueError(f"mode must be 'expected' or 'generate', got {self.mode!r}.")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1 (or None for every item), got {self.max_items}.")


class RunMismatchError(RuntimeError):
    """`resume` was asked for a run whose settings differ from the ones recorded in `run_meta.json`."""


# ---- append-only records --------------------------------------------------------------------------------------------


def read_records(path: str) -> dict[str, dict]:
    """The latest record per `id` of a JSONL file; a half-written last line is cut off the file (with a warning)."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        logger.warning(f"{path}: dropping a half-written last line ({len(data) - cut} bytes) from an interrupted run.")
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    records = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error}); the file was edited by hand?") from None
            records[record["id"]] = record
    return records


def append_record(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _save_png(image: Image.Image, path: str) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())


# ---- the run --------------------------------------------------------------------------------------------------------


def _item_seed(config: ImageEditBenchmarkConfig, item: EditItem) -> int:
    return config.seed + (item.seed or 0)


def _build_editor(config: ImageEditBenchmarkConfig):
    from ...hub import ModelSources
    from .editors import DiffusersImageEditor

    sources = ModelSources(use_local=True, local_base_path=config.local_base_path) if config.local_base_path else None
    return DiffusersImageEditor.from_pretrained(
        config.editor,
        sources,
        dtype=config.dtype,
        device=config.device,
        num_inference_steps=config.num_inference_steps,
        true_cfg_scale=config.true_cfg_scale,
        negative_prompt=config.negative_prompt,
        batch_size=config.edit_batch_size,
        condition_area=config.condition_area,
    )


def _build_judge(config: ImageEditBenchmarkConfig, judge=None):
    from ...hub import ModelSources
    from ...rewards.vlm_judge import OpenAICompatibleJudge, VLMJudgeReward

    if isinstance(judge, VLMJudgeReward):
        return judge
    if judge is None and config.judge_url is not None:
        judge = OpenAICompatibleJudge(
            config.judge_url,
            config.judge,
            timeout=config.judge_timeout,
            max_retries=config.judge_max_retries,
            max_new_tokens=config.max_new_tokens,
        )
    sources = ModelSources(use_local=True, local_base_path=config.local_base_path) if config.local_base_path else None
    return VLMJudgeReward(
        judge if judge is not None else config.judge,
        mode=config.mode,
        prompt_template=config.prompt_template,
        templates=config.templates,
        compare_with_original=config.compare_with_original,
        batch_size=config.judge_batch_size,
        min_digit_mass=config.min_digit_mass,
        sources=sources,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
        device=config.device,
        max_new_tokens=config.max_new_tokens,
    )


def _generic_template_categories(config: ImageEditBenchmarkConfig, items: list[EditItem]) -> list[str]:
    """The categories of `items` judged with the `"generic"` template because no template has their name."""
    from ...rewards.vlm_judge import template_name

    return sorted(
        {
            i.category
            for i in items
            if i.category != "generic"
            and template_name(i.category, config.prompt_template, config.templates) == "generic"
        }
    )


def run_metadata(config: ImageEditBenchmarkConfig, items: list[EditItem], editor=None, judge_name: str | None = None):
    """What a resume must match: the editing and judging settings, the prompts, and the item ids."""
    from ...rewards.vlm_judge import resolve_prompt_template, template_for

    if editor is not None:
        editing = dict(editor.settings())
    else:
        editing = {
            "editor": config.editor,
            "num_inference_steps": config.num_inference_steps,
            "true_cfg_scale": config.true_cfg_scale,
            "negative_prompt": config.negative_prompt,
            "condition_area": config.condition_area,
            "dtype": config.dtype,
        }
    editing["seed"] = config.seed
    categories = sorted({item.category for item in items})
    prompts = {c: template_for(c, config.prompt_template, config.templates) for c in categories}
    if config.prompt_template is not None:
        resolve_prompt_template(config.prompt_template, config.templates)
    judging = {
        "judge": judge_name or (config.judge_url and f"{config.judge} @ {config.judge_url}") or config.judge,
        "mode": config.mode,
        "low": 0,
        "high": 10,
        "compare_with_original": config.compare_with_original,
        "use_reference": config.use_reference,
        "prompts": prompts,
    }
    if config.mode == "expected":
        judging["min_digit_mass"] = config.min_digit_mass
    else:
        judging["max_new_tokens"] = config.max_new_tokens
    data = {"source": config.data, "n_items": len(items), "ids": [item.id for item in items]}
    return {"editing": editing, "judging": judging, "data": data}


def _differing(previous: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(k for k in set(previous) | set(current) if k not in ignore and previous.get(k) != current.get(k))


def _check_or_write_metadata(path: str, metadata: dict, resume: bool) -> None:
    """Write `run_meta.json`, or, on resume, check `metadata` against it first.

    A resume may add items (a `max_items` run extended to the whole set): the recorded items must all still be there,
    and the prompts of the categories both runs have must be equal (new categories bring their prompts). The file is
    then rewritten with the current items and prompts."""
    if os.path.exists(path):
        if not resume:
            raise RunMismatchError(
                f"{os.path.dirname(path)} holds a previous run: pass resume=True (--resume) or another output_dir."
            )
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        for part, ignore in (("editing", ()), ("judging", ("prompts",))):
            keys = _differing(previous.get(part, {}), metadata[part], ignore)
            if keys:
                raise RunMismatchError(f"Cannot resume: the {part} settings differ from run_meta.json in {keys}.")
        old_prompts, prompts = previous["judging"].get("prompts", {}), metadata["judging"]["prompts"]
        changed = sorted(c for c in set(old_prompts) & set(prompts) if old_prompts[c] != prompts[c])
        if changed:
            raise RunMismatchError(
                f"Cannot resume: the judge prompts of the categories {changed} differ from run_meta.json."
            )
        old_data, data = previous.get("data", {}), metadata["data"]
        if old_data.get("source") != data["source"]:
            raise RunMismatchError(
                f"Cannot resume: the data source differs from run_meta.json ({old_data.get('source')!r} -> "
                f"{data['source']!r})."
            )
        current = set(data["ids"])
        missing = [i for i in old_data.get("ids", []) if i not in current]
        if missing:
            raise RunMismatchError(
                f"Cannot resume: the item set shrank or changed: {len(missing)} of the {len(old_data['ids'])} items of "
                f"the recorded run are not among the {len(data['ids'])} items now (e.g. {missing[:3]}). A resume can "
                "only add items (a larger max_items); use another output_dir."
            )
        added = len(data["ids"]) - len(old_data.get("ids", []))
        if added:
            logger.info(f"Resuming with {added} items added to the {len(old_data['ids'])} of the recorded run.")
    atomic_write(path, json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")


def _edit_phase(config, items, output_dir, editor):
    from tqdm.auto import tqdm

    edits_path = os.path.join(output_dir, "edits.jsonl")
    done = read_records(edits_path)
    pending = [
        i
        for i in items
        if i.id not in done or not os.path.exists(os.path.join(output_dir, "images", i.category, f"{i.id}.png"))
    ]
    logger.info(f"Edit phase: {len(items) - len(pending)} done, {len(pending)} to edit.")
    if not pending:
        return editor, False, {}
    created = editor is None
    if created:
        editor = _build_editor(config)
    # equal aspect ratios next to each other, so that the editor can batch them
    pending.sort(key=lambda i: (round(1000 * i.image.size[0] / i.image.size[1]), i.index))
    batch = max(1, config.edit_batch_size)
    failures = {}
    with tqdm(total=len(pending), desc="editing", unit="image") as bar:
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            began = time.perf_counter()
            edited = _edit_chunk(config, editor, chunk)
            seconds = (time.perf_counter() - began) / len(chunk)
            for item, image in zip(chunk, edited):
                record = {"id": item.id, "category": item.category, "seed": _item_seed(config, item)}
                if isinstance(image, Exception):
                    failures[item.id] = record["error"] = f"{type(image).__name__}: {image}"
                    logger.warning(
                        f"Editing {item.id} (source {item.image.size[0]}x{item.image.size[1]}) failed: "
                        f"{record['error']}; the item is counted as an edit_error."
                    )
                else:
                    _save_png(
                        item.image.convert("RGB"),
                        os.path.join(output_dir, "sources", item.category, f"{item.id}.png"),
                    )
                    _save_png(image, os.path.join(output_dir, "images", item.category, f"{item.id}.png"))
                record["seconds"] = round(seconds, 3)
                append_record(edits_path, record)
                bar.update(1)
    return editor, created, failures


def _edit_chunk(config, editor, chunk: list[EditItem]) -> list:
    """The edited images of `chunk`; when the editor fails on the chunk, each item is edited alone and an item that
    still fails gets its exception in place of an image (the run goes on; the item is counted as failed)."""

    def edit(items):
        return editor.edit(
            [i.image for i in items], [i.instruction for i in items], [_item_seed(config, i) for i in items]
        )

    try:
        return edit(chunk)
    except Exception as error:  # isolate the failing item(s) below
        if len(chunk) == 1:
            return [error]
    outputs = []
    for item in chunk:
        try:
            outputs.extend(edit([item]))
        except Exception as error:  # recorded, logged and counted as the item's edit_error
            outputs.append(error)
    return outputs


def _judge_phase(config, items, output_dir, build_reward, edit_failures: dict[str, str]):
    """Judge every edited item not judged yet (and, with `rejudge_failed`, every failed one); `build_reward()` gives
    the `VLMJudgeReward`, called only when an item is left to judge."""
    from tqdm.auto import tqdm

    results_path = os.path.join(output_dir, "results.jsonl")
    results = read_records(results_path)
    for item in items:  # nothing to judge: counted as failed, with the editor's error
        if item.id in edit_failures:
            results[item.id] = {"id": item.id, "category": item.category, "score": None, "status": "edit_error"}
            results[item.id]["error"] = edit_failures[item.id]
    pending = [
        i
        for i in items
        if i.id not in edit_failures
        and (i.id not in results or (config.rejudge_failed and results[i.id].get("status") != "ok"))
    ]
    logger.info(f"Judge phase: {len(items) - len(pending)} judged, {len(pending)} to judge.")
    if not pending:
        return results
    reward = build_reward()
    with tqdm(total=len(pending), desc="judging", unit="item") as bar:
        for start in range(0, len(pending), reward.batch_size):
            chunk = pending[start : start + reward.batch_size]
            requests = []
            for item in chunk:
                with Image.open(os.path.join(output_dir, "images", item.category, f"{item.id}.png")) as edited:
                    edited = edited.convert("RGB")
                requests.append(
                    reward.build_request(
                        item.instruction,
                        edited,
                        item.category,
                        reference=item.reference if config.use_reference else None,
                        source_image=item.image.convert("RGB") if config.compare_with_original else None,
                    )
                )
            began = time.perf_counter()
            outputs = reward.judge_requests(requests)
            seconds = (time.perf_counter() - began) / len(chunk)
            for item, output in zip(chunk, outputs):
                record = {"id": item.id, "category": item.category, **asdict(output), "seconds": round(seconds, 4)}
                append_record(results_path, record)
                results[item.id] = record
                bar.update(1)
    return results


def run_benchmark(config: ImageEditBenchmarkConfig, editor=None, judge=None, items=None) -> dict[str, Any]:
    """Run (or resume) the benchmark and write the reports; returns the report.

    Parameters:
        config ([`ImageEditBenchmarkConfig`]):
            The run.
        editor ([`ImageEditor`], *optional*):
            An editor object; by default `config.editor` is loaded, only when an edit is missing.
        judge (`VLMJudgeReward` or a judge backend, *optional*):
            By default built from `config` (local model or `judge_url`), only when an item is left to judge.
        items (`list[EditItem]`, *optional*):
            Items already loaded; by default `load_edit_items(config.data, ...)`.
    """
    output_dir = config.output_dir
    os.makedirs(os.path.join(output_dir, "logs"), exist_ok=True)
    handler = logging.FileHandler(os.path.join(output_dir, "logs", "benchmark.log"), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("trl_ext")
    previous_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        if items is None:
            items = load_edit_items(config.data, config.field_mapping, max_items=config.max_items)
        elif config.max_items is not None:
            items = items[: config.max_items]
        judge_name = None
        if judge is not None:
            from ...rewards.vlm_judge import VLMJudgeReward

            judge_name = judge.judge_name if isinstance(judge, VLMJudgeReward) else judge.name
        metadata = run_metadata(config, items, editor, judge_name)
        _check_or_write_metadata(os.path.join(output_dir, "run_meta.json"), metadata, config.resume)
        logger.info(f"Benchmark in {output_dir}: {len(items)} items, editor {metadata['editing']['editor']}.")
        warnings = []
        generic = _generic_template_categories(config, items)
        if generic:
            warnings.append(
                f"The categories {generic} have no judge template of their own and are judged with the 'generic' "
                "template; add one by name with `templates` (or set `prompt_template`)."
            )
        for warning in warnings:
            logger.warning(warning)

        editor, created, edit_failures = _edit_phase(config, items, output_dir, editor)
        if created:  # free the editor before the judge loads
            del editor
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

        results = _judge_phase(config, items, output_dir, lambda: _build_judge(config, judge), edit_failures)
        report = build_report(items, results, metadata, warnings=warnings)
        write_report(output_dir, report, items, results, gallery_size=config.gallery_size)
        overall = report["overall"]["micro"]
        logger.info(
            f"Report written to {output_dir}/report.md: {overall['n_scored']}/{overall['n']} scored, "
            f"mean {overall['mean']}."
        )
        return report
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
        handler.close()
