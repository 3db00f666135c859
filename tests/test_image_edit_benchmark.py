"""Image-edit benchmark: data loading errors, statistics against hand-computed values, a killed-and-resumed run equal
to an uninterrupted one (no item judged twice), failures counted and never scored, the --tiny CLI end to end."""

import base64
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image, ImageOps

from trl_ext.evaluation.image_edit import (
    EditDataError,
    ImageEditBenchmarkConfig,
    RunMismatchError,
    load_edit_items,
    run_benchmark,
    summarize,
)
from trl_ext.rewards import LocalVLMJudge
from trl_ext.testing import save_tiny_qwen3_vl


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _b64(image, fmt="PNG"):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_bundled_tiny_set_in_the_seed_schema():
    items = load_edit_items("tiny")
    assert len(items) == 10
    assert {i.category for i in items} == {"physics", "environment", "social", "causal", "referential"}
    assert items[0].id == "00000_physics_medium"
    assert {i.image.mode for i in items} >= {"RGB", "RGBA", "P", "L"}
    assert items[0].reference.startswith("The cup gets a soft shadow")
    assert all(i.seed == n for n, i in enumerate(items))


def test_bad_records_are_reported_with_their_index(tmp_path):
    good = {"subset": "物理", "edit_instruction_en": "x", "src_img_b64": _b64(Image.new("RGB", (8, 8)))}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, {**good, "src_img_b64": "bm90IGFuIGltYWdl"}]))
    with pytest.raises(EditDataError, match="Record 1: the image does not decode"):
        load_edit_items(str(path))
    path.write_text(json.dumps([good, good, {k: v for k, v in good.items() if k != "subset"}]))
    with pytest.raises(EditDataError, match="Record 2: missing field 'category'"):
        load_edit_items(str(path), field_mapping={"id": "nope"})
    # JSONL with a field mapping, a datasets dataset, an image file path relative to the data file
    Image.new("RGB", (10, 20), (1, 2, 3)).save(tmp_path / "a.jpg")
    rows = [{"kind": "Weather change", "text": "add rain", "img": "a.jpg"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mapping = {"category": "kind", "instruction": "text", "image": "img"}
    (item,) = load_edit_items(str(tmp_path / "d.jsonl"), field_mapping=mapping)
    assert (item.category, item.instruction, item.image.size, item.id) == (
        "weather_change",
        "add rain",
        (10, 20),
        "00000_weather_change",
    )
    import datasets

    dataset = datasets.Dataset.from_dict({"kind": ["因果"], "text": ["melt it"], "img": [Image.new("RGB", (4, 4))]})
    (item,) = load_edit_items(dataset, field_mapping=mapping)
    assert item.category == "causal" and item.image.size == (4, 4)


def test_summary_statistics_by_hand():
    summary = summarize([2.0, None, 4.0, 9.0, None])
    # mean 5, sample variance ((−3)² + (−1)² + 4²) / 2 = 13
    assert summary == {
        "n": 5,
        "n_scored": 3,
        "n_failed": 2,
        "mean": 5.0,
        "std": pytest.approx(13**0.5),
        "median": 4.0,
        "min": 2.0,
        "max": 9.0,
    }
    assert summarize([None])["mean"] is None and summarize([None])["n_failed"] == 1


class StubEditor:
    """A deterministic editor: inverts the image and tints it by the seed (no diffusion model needed)."""

    name = "stub-editor"

    def __init__(self, fail_after=None):
        self.fail_after, self.calls = fail_after, 0

    def settings(self):
        return {"editor": self.name, "num_inference_steps": 0}

    def edit(self, images, instructions, seeds):
        out = []
        for image, seed in zip(images, seeds):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("killed while editing")
            self.calls += 1
            inverted = ImageOps.invert(image.convert("RGB"))
            out.append(Image.blend(inverted, Image.new("RGB", image.size, (seed * 25 % 256, 0, 0)), 0.3))
        return out


class CountingJudge:
    """Wraps the tiny local judge, records every request it judges, and can die after some batches."""

    def __init__(self, judge, die_after_batches=None):
        self.judge, self.die_after_batches = judge, die_after_batches
        self.name = "tiny-qwen3-vl"
        self.batches, self.texts = 0, []

    def digit_probabilities(self, requests):
        if self.die_after_batches is not None and self.batches >= self.die_after_batches:
            raise KeyboardInterrupt("killed while judging")
        self.batches += 1
        self.texts.extend(r.text for r in requests)
        return self.judge.digit_probabilities(requests)


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    return LocalVLMJudge.from_pretrained(save_tiny_qwen3_vl(tmp_path_factory.mktemp("j") / "judge"), device="cpu")


def _config(output_dir, **kwargs):
    values = dict(data="tiny", output_dir=str(output_dir), min_digit_mass=0.0, judge_batch_size=3)
    values.update(kwargs)
    return ImageEditBenchmarkConfig(**values)


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_judge):
    full_judge = CountingJudge(tiny_judge)
    reference = run_benchmark(_config(tmp_path / "full"), editor=StubEditor(), judge=full_judge)
    assert len(full_judge.texts) == 10 and reference["overall"]["micro"]["n_scored"] == 10

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):  # killed in the edit phase after 4 edits
        run_benchmark(_config(out), editor=StubEditor(fail_after=4), judge=CountingJudge(tiny_judge))
    with pytest.raises(RunMismatchError, match="resume"):  # a rerun without --resume refuses to mix runs
        run_benchmark(_config(out), editor=StubEditor(), judge=CountingJudge(tiny_judge))
    with pytest.raises(RunMismatchError, match="judging settings differ"):
        run_benchmark(_config(out, resume=True, mode="generate"), editor=StubEditor(), judge=CountingJudge(tiny_judge))

    editor, first = StubEditor(), CountingJudge(tiny_judge, die_after_batches=2)
    with pytest.raises(KeyboardInterrupt):  # resumed, then killed in the judge phase after 2 batches (6 items)
        run_benchmark(_config(out, resume=True), editor=editor, judge=first)
    assert editor.calls == 6  # only the 6 missing edits were made
    with open(out / "results.jsonl", "a") as f:  # the kill also left a half-written line
        f.write('{"id": "00009_referential_ha')

    editor, second = StubEditor(), CountingJudge(tiny_judge)
    resumed = run_benchmark(_config(out, resume=True), editor=editor, judge=second)
    assert editor.calls == 0
    assert len(first.texts) == 6 and len(second.texts) == 4
    assert sorted(first.texts + second.texts) == sorted(full_judge.texts)  # every item judged exactly once
    assert resumed == reference
    assert json.loads((out / "report.json").read_text()) == json.loads((tmp_path / "full" / "report.json").read_text())
    assert os.path.exists(out / "report.md") and os.path.exists(out / "score_by_category.png")
    assert (out / "logs" / "benchmark.log").read_text().count("Judge phase") == 2  # the first run died editing
    for item in load_edit_items("tiny"):
        assert os.path.exists(out / "images" / item.category / f"{item.id}.png")


class ScriptedJudge:
    name = "scripted"

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def generate(self, requests):
        out = self.answers[self.calls : self.calls + len(requests)]
        self.calls += len(requests)
        return out


def test_unparseable_answers_are_failures_never_numbers(tmp_path):
    answers = ["Score: 8", "Looks fine!", "Score: 6", "7/10", "I cannot see the image.", "Score: 2"]
    answers += ["Score: 5", "There are 3 apples.", "Score: 9", "Score: 4 or maybe Score: 6"]
    config = _config(tmp_path / "run", mode="generate")
    report = run_benchmark(config, editor=StubEditor(), judge=ScriptedJudge(answers))
    # items in order: physics x2, environment x2, social x2, causal x2, referential x2
    assert report["categories"]["physics"] == summarize([8.0, None])
    assert report["categories"]["environment"] == summarize([6.0, 7.0])
    assert report["categories"]["social"] == summarize([None, 2.0])
    assert report["categories"]["causal"] == summarize([5.0, None])
    assert report["categories"]["referential"] == summarize([9.0, None])
    micro = report["overall"]["micro"]
    assert (micro["n"], micro["n_scored"], micro["n_failed"]) == (10, 6, 4)
    assert micro["mean"] == pytest.approx((8 + 6 + 7 + 2 + 5 + 9) / 6)
    assert report["overall"]["macro"]["mean"] == pytest.approx((8 + 6.5 + 2 + 5 + 9) / 5)
    assert report["failures"] == {"parse_failure": 4}
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "I cannot see the image." in markdown and "| parse_failure |" in markdown

    # resume re-judges only the failed items
    rejudge = ScriptedJudge(["Score: 1", "Score: 3", "Score: 10", "Score: 0"])
    report = run_benchmark(_config(tmp_path / "run", mode="generate", resume=True), editor=StubEditor(), judge=rejudge)
    assert rejudge.calls == 4 and report["overall"]["micro"]["n_failed"] == 0
    assert report["categories"]["physics"]["min"] == 1.0


def test_tiny_cli_writes_both_reports(tmp_path):
    out = tmp_path / "demo"
    config = tmp_path / "bench.yaml"
    config.write_text(f"output_dir: {out}\nmax_items: 3\ncompare_with_original: true\n")
    command = [sys.executable, "-m", "trl_ext.evaluation.image_edit", "--config", str(config), "--tiny"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 3 and summary["n_scored"] + summary["n_failed"] == 3
    report = json.loads((out / "report.json").read_text())
    assert report["metadata"]["judging"]["compare_with_original"] is True
    assert report["metadata"]["editing"]["editor"].endswith("qwen_image_edit")
    assert report["metadata"]["editing"]["condition_area"] == 32 * 32
    assert "overall (macro)" in (out / "report.md").read_text()
    edited = Image.open(next((out / "images" / "physics").iterdir()))
    assert edited.size[0] > 0
