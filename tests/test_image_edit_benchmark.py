"""Image-edit benchmark: data loading errors, statistics against hand-computed values, a killed-and-resumed run equal
to an uninterrupted one (no item judged twice), failures counted and never scored, the --tiny CLI end to end."""

import base64
import io
import json
import math
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
from trl_ext.rewards import JudgeResult, LocalVLMJudge
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

    def score_digits(self, requests):
        if self.die_after_batches is not None and self.batches >= self.die_after_batches:
            raise KeyboardInterrupt("killed while judging")
        self.batches += 1
        self.texts.extend(r.text for r in requests)
        return self.judge.score_digits(requests)


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

    def generate_answers(self, requests):
        out = self.answers[self.calls : self.calls + len(requests)]
        self.calls += len(requests)
        return [JudgeResult(text=text) for text in out]


def test_unparseable_answers_are_failures_never_numbers(tmp_path):
    answers = ["Score: 8", "Looks fine!", "Score: 6", "7/10", "I cannot see the image.", "Score: 2"]
    answers += ["Score: 5", "There are 3 apples.", "Score: 9", "Score: 4 or maybe Score: 6"]
    config = _config(tmp_path / "run", mode="generate")
    report = run_benchmark(config, editor=StubEditor(), judge=ScriptedJudge(answers))

    # items in order: physics x2, environment x2, social x2, causal x2, referential x2
    def one_of_two(score):  # one scored item of two: std 0 (a single score), median = min = max = the score
        return {
            "n": 2,
            "n_scored": 1,
            "n_failed": 1,
            "mean": score,
            "std": 0.0,
            "median": score,
            "min": score,
            "max": score,
        }

    assert report["categories"]["physics"] == one_of_two(8.0)
    # 6 and 7: mean 6.5, sample variance (0.5² + 0.5²) / 1 = 0.5
    assert report["categories"]["environment"] == {
        "n": 2,
        "n_scored": 2,
        "n_failed": 0,
        "mean": 6.5,
        "std": pytest.approx(0.5**0.5),
        "median": 6.5,
        "min": 6.0,
        "max": 7.0,
    }
    assert report["categories"]["social"] == one_of_two(2.0)
    assert report["categories"]["causal"] == one_of_two(5.0)
    assert report["categories"]["referential"] == one_of_two(9.0)
    micro = report["overall"]["micro"]
    assert (micro["n"], micro["n_scored"], micro["n_failed"]) == (10, 6, 4)
    assert micro["mean"] == pytest.approx((8 + 6 + 7 + 2 + 5 + 9) / 6)
    assert report["overall"]["macro"]["mean"] == pytest.approx((8 + 6.5 + 2 + 5 + 9) / 5)
    assert report["failures"] == {"parse_failure": 4}
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert (
        "I cannot see the image." in markdown and "| parse_failure | no unambiguous score in the answer |" in markdown
    )

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
    # --tiny sets min_digit_mass 0: every item is scored; the means by hand from the three judged records
    # (the first three bundled items: physics, physics, environment)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    scores = {r["id"]: r["score"] for r in records}
    assert [r["status"] for r in records] == ["ok"] * 3 and len(scores) == 3
    physics = [scores["00000_physics_medium"], scores["00001_physics_hard"]]
    environment = scores["00002_environment_easy"]
    assert (summary["n"], summary["n_scored"], summary["n_failed"]) == (3, 3, 0)
    assert summary["micro_mean"] == pytest.approx((physics[0] + physics[1] + environment) / 3, abs=1e-12)
    assert summary["macro_mean"] == pytest.approx(((physics[0] + physics[1]) / 2 + environment) / 2, abs=1e-12)
    report = json.loads((out / "report.json").read_text())
    assert report["metadata"]["judging"]["compare_with_original"] is True
    assert report["metadata"]["editing"]["editor"].endswith("qwen_image_edit")
    assert report["metadata"]["editing"]["condition_area"] == 32 * 32
    assert "overall (macro)" in (out / "report.md").read_text()
    edited = Image.open(next((out / "images" / "physics").iterdir()))
    assert edited.size[0] > 0


def test_resume_adds_items_to_a_max_items_run_and_names_a_shrunk_set(tmp_path, tiny_judge):
    """A 3-item run (physics and environment only), then the whole set with resume: the 7 new items are edited and
    judged, the first 3 are not redone, and the report equals an uninterrupted 10-item run (judge batches of 3 in
    both, so that every item is judged in the same batch as in the uninterrupted run)."""
    reference = run_benchmark(_config(tmp_path / "full"), editor=StubEditor(), judge=CountingJudge(tiny_judge))
    out = tmp_path / "extended"
    first = CountingJudge(tiny_judge)
    small = run_benchmark(_config(out, max_items=3), editor=StubEditor(), judge=first)
    assert small["overall"]["micro"]["n"] == 3 and set(small["categories"]) == {"physics", "environment"}
    editor, second = StubEditor(), CountingJudge(tiny_judge)
    extended = run_benchmark(_config(out, resume=True), editor=editor, judge=second)
    assert editor.calls == 7 and len(first.texts) == 3 and len(second.texts) == 7
    assert extended == reference
    assert json.loads((out / "run_meta.json").read_text())["data"]["n_items"] == 10

    with pytest.raises(RunMismatchError, match=r"item set shrank or changed: 8 of the 10 items .* among the 2 items"):
        run_benchmark(_config(out, resume=True, max_items=2), editor=StubEditor(), judge=CountingJudge(tiny_judge))
    records = [
        {"subset": "physics", "edit_instruction_en": "x", "src_img_b64": _b64(Image.new("RGB", (8, 8))), "id": "new"}
    ]
    (tmp_path / "other.json").write_text(json.dumps(records))
    with pytest.raises(RunMismatchError, match="data source differs"):
        run_benchmark(_config(out, resume=True, data=str(tmp_path / "other.json")), editor=StubEditor(), judge=second)
    with pytest.raises(RunMismatchError, match=r"prompts of the categories \['physics'\]"):
        run_benchmark(
            _config(out, resume=True, templates={"physics": "Rate {instruction}. Score: N"}),
            editor=StubEditor(),
            judge=CountingJudge(tiny_judge),
        )


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"data\.json: the file is empty"),
        ("[]", r"data\.json: no records"),
        ("[{]", r"data\.json: not JSON"),
        (
            json.dumps(
                [{"subset": "光学", "edit_instruction_en": "x", "src_img_b64": _b64(Image.new("RGB", (8, 8)))}]
            ),
            "Record 0: category '光学'",
        ),
    ],
)
def test_data_file_errors_name_the_file_or_record(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EditDataError, match=message):
        load_edit_items(str(path))


def test_cli_rejects_an_empty_data_file(tmp_path, capsys):
    from trl_ext.evaluation.image_edit.__main__ import main

    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path / "empty.jsonl"), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code != 0 and "empty.jsonl: no records" in str(exit_info.value.code)
    assert not (tmp_path / "out" / "report.json").exists()
    with pytest.raises(ValueError, match="max_items must be >= 1"):  # was: an n=0 report
        ImageEditBenchmarkConfig(max_items=0)


def _serve_logprob_judge(answer):
    """A chat-completions server that answers every request with `answer` and records the request bodies."""
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread, bodies


def test_cli_http_judge_in_expected_mode_with_a_bad_image_and_an_unknown_category(tmp_path, caplog):
    """`--tiny --judge_url` with the default mode: the HTTP judge is asked for logprobs and the score is the expected
    one, (7 + 8) / 2 = 7.5 from "Score: 7" with P(7) = P(8) = 0.5; a 1x64 source image is an edit failure counted and
    named in the report (the others go on); a category without a template of its own is judged with the generic
    template, said in a warning and in the report."""
    from trl_ext.evaluation.image_edit.__main__ import main

    def entry(token, alternatives):
        top = [{"token": t, "logprob": math.log(p)} for t, p in alternatives]
        return {"token": token, "logprob": math.log(dict(alternatives)[token]), "top_logprobs": top}

    content = [entry("Score: ", [("Score: ", 1.0)]), entry("7", [("7", 0.5), ("8", 0.5)])]
    answer = {"choices": [{"message": {"role": "assistant", "content": "Score: 7"}, "logprobs": {"content": content}}]}
    server, thread, bodies = _serve_logprob_judge(answer)
    image = _b64(Image.new("RGB", (48, 32), (200, 30, 30)))
    records = [
        {"subset": "物理", "edit_instruction_en": "add a shadow", "src_img_b64": image, "id": "a"},
        {
            "subset": "物理",
            "edit_instruction_en": "add a shadow",
            "src_img_b64": _b64(Image.new("RGB", (1, 64))),
            "id": "thin",
        },
        {"subset": "Weather change", "edit_instruction_en": "add rain", "src_img_b64": image, "id": "c"},
    ]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        with caplog.at_level("WARNING", logger="trl_ext"):
            code = main(["--tiny", "--data", str(data), "--output_dir", str(out), "--judge_url", url])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert code == 0
    assert len(bodies) == 2 and all(body["logprobs"] is True for body in bodies)
    report = json.loads((out / "report.json").read_text())
    assert json.loads((out / "run_meta.json").read_text())["judging"]["mode"] == "expected"
    micro = report["overall"]["micro"]
    assert (micro["n"], micro["n_scored"], micro["n_failed"], micro["mean"]) == (3, 2, 1, 7.5)
    assert report["failures"] == {"edit_error": 1}
    markdown = (out / "report.md").read_text()
    assert "| thin | physics | edit_error | ValueError: " in markdown  # the editor's error, named
    assert any("weather_change" in w and "generic" in w for w in report["warnings"])
    assert "weather_change" in markdown and any("weather_change" in r.message for r in caplog.records)
    assert not any("generate" in r.message for r in caplog.records)


def test_http_expected_mode_failures_are_recorded_not_fatal(tmp_path):
    """An HTTP judge in expected mode whose answer has no number after "Score:": each item is a parse failure with the
    judge's text and reason in results.jsonl and the report. Its digit mass is unknown (null): it was NaN, which the
    JSON records refuse, so the first such item stopped the run with a ValueError."""
    from trl_ext.rewards import OpenAICompatibleJudge

    content = [{"token": "I rate 7", "logprob": 0.0, "top_logprobs": [{"token": "I rate 7", "logprob": 0.0}]}]
    answer = {"choices": [{"message": {"role": "assistant", "content": "I rate 7"}, "logprobs": {"content": content}}]}
    server, thread, bodies = _serve_logprob_judge(answer)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = OpenAICompatibleJudge(url, "judge", timeout=10, max_retries=0)
        report = run_benchmark(_config(tmp_path / "run", max_items=2), editor=StubEditor(), judge=judge)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert len(bodies) == 2 and report["failures"] == {"parse_failure": 2}
    assert report["overall"]["micro"]["n_scored"] == 0
    with open(tmp_path / "run" / "results.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [(r["status"], r["score"], r["digit_mass"], r["text"]) for r in records] == [
        ("parse_failure", None, None, "I rate 7")
    ] * 2
    assert all(r["error"] == "no number after 'Score:' in the answer" for r in records)
