"""RLHFPipeline: the three stages offline on a tiny Qwen2 and the bundled toy data, skip on rerun, resume of a killed
stage, refusal (or retraining with overwrite_stages) of stages produced by other settings, config, type and data
errors before the first stage, the example script (one and two processes), and the offline BLEU / ROUGE against
hand-computed values."""

import ast
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from trl_ext import RLHFConfig, RLHFPipeline
from trl_ext.pipelines.data import bleu, bundled_rlhf_data, load_stage_data, rouge
from trl_ext.testing import save_tiny_qwen2


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(model_dir: str, save_dir: str, **overrides) -> dict:
    config = dict(
        model_name=model_dir,
        device="cpu",
        save_dir=save_dir,
        sft_epochs=5,
        sft_batch_size=4,
        sft_lr=3e-3,
        reward_epochs=5,
        reward_batch_size=4,
        reward_lr=3e-3,
        ppo_max_steps=4,
        ppo_batch_size=8,
        ppo_mini_batch_size=4,
        ppo_num_ppo_epochs=2,
        ppo_lr_policy=3e-3,
        ppo_lr_value=1e-2,
        max_length=128,
        save_interval=2,
        log_level="warning",
        ppo_args={"response_length": 12, "temperature": 1.0},
        **bundled_rlhf_data(),
    )
    config.update(overrides)
    return config


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_three_stages_offline_then_skip_then_resume_a_killed_stage(tmp_path):
    model_dir = save_tiny_qwen2(tmp_path / "base", hidden_size=32, intermediate_size=64)
    config = tiny_config(model_dir, str(tmp_path / "run"))
    pipeline = RLHFPipeline(config)
    outputs = pipeline.run()
    for stage in ("sft", "reward_model", "ppo"):
        assert outputs[stage] == str(tmp_path / "run" / stage / "final")
        assert pipeline.is_done(stage)
    assert json.loads((tmp_path / "run" / "logs" / "config.json").read_text())["ppo_max_steps"] == 4
    # ppo_batch_size=8 prompts per rollout batch: TRL counts 8 episodes per PPO step (4 steps: 32)
    state = json.loads((tmp_path / "run" / "ppo" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["episode"] for e in state["log_history"] if "episode" in e] == [8, 16, 24, 32]
    assert (tmp_path / "run" / "logs" / "pipeline.log").is_file()
    # PPO's card: one Python block that parses; the policy came from the local SFT stage, so no base_model
    card = (tmp_path / "run" / "ppo" / "final" / "README.md").read_text()
    assert card.count("```python\n") == 1 and "base_model" not in card
    ast.parse(card.split("```python\n")[1].split("\n```")[0])
    policy = AutoModelForCausalLM.from_pretrained(outputs["ppo"])
    AutoModelForSequenceClassification.from_pretrained(os.path.join(outputs["ppo"], "value_model"))
    reward_model = AutoModelForSequenceClassification.from_pretrained(outputs["reward_model"])
    assert reward_model.config.num_labels == 1
    assert not torch.equal(flat(policy), flat(AutoModelForCausalLM.from_pretrained(outputs["sft"])))
    assert not any(
        name.endswith(".pt") for _, _, names in os.walk(tmp_path / "run" / "sft" / "final") for name in names
    )

    results = pipeline.evaluate()
    assert results == json.loads((tmp_path / "run" / "logs" / "eval.json").read_text())
    assert results["reward_model/accuracy"] == 1.0  # the toy pairs are easy: held-out accuracy
    for key in ("sft/perplexity", "ppo/perplexity", "sft/reward_score", "ppo/reward_score", "ppo/bleu", "ppo/rougeL"):
        assert key in results

    # a finished stage is skipped: nothing is rewritten
    marker = tmp_path / "run" / "ppo" / "final" / "stage_complete.json"
    assert len(json.loads(marker.read_text())["scores"]) == 4  # one reward-model score per PPO rollout batch
    stamp = marker.stat().st_mtime_ns
    RLHFPipeline(config).run()
    assert marker.stat().st_mtime_ns == stamp

    # PPO killed after its checkpoint at step 2: the rerun resumes there and reproduces the uninterrupted weights
    final = flat(policy)
    shutil.rmtree(tmp_path / "run" / "ppo" / "final")
    shutil.rmtree(tmp_path / "run" / "ppo" / "checkpoint-4")
    sft_stamp = (tmp_path / "run" / "sft" / "final" / "stage_complete.json").stat().st_mtime_ns
    RLHFPipeline(config).run()
    assert (tmp_path / "run" / "sft" / "final" / "stage_complete.json").stat().st_mtime_ns == sft_stamp
    resumed = json.loads(marker.read_text())
    assert resumed["steps"] == 4
    torch.testing.assert_close(flat(AutoModelForCausalLM.from_pretrained(outputs["ppo"])), final, rtol=0, atol=0)

    # the reward-model stage (transformers' Trainer) killed while writing its last checkpoint: the model is there,
    # trainer_state.json (written last) is not; the rerun resumes from the checkpoint before and ends where the
    # uninterrupted run ended
    reward_dir = tmp_path / "run" / "reward_model"
    checkpoints = sorted(reward_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert len(checkpoints) >= 2
    (checkpoints[-1] / "trainer_state.json").unlink()
    shutil.rmtree(reward_dir / "final")
    RLHFPipeline(config).run()
    assert (reward_dir / "final" / "stage_complete.json").is_file()
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())  # saved again by the resumed run
    assert state["global_step"] == int(checkpoints[-1].name.split("-")[1])
    resumed_reward_model = AutoModelForSequenceClassification.from_pretrained(outputs["reward_model"])
    torch.testing.assert_close(flat(resumed_reward_model), flat(reward_model), rtol=0, atol=0)


def test_rerun_with_changed_settings_refuses_or_retrains_the_stale_stages_only(tmp_path):
    model_dir = save_tiny_qwen2(tmp_path / "base", hidden_size=32, intermediate_size=64)
    data = tmp_path / "data"
    data.mkdir()
    for path in bundled_rlhf_data().values():  # copies: the test edits one
        shutil.copy(path, data / os.path.basename(path))
    files = {key: str(data / os.path.basename(path)) for key, path in bundled_rlhf_data().items()}
    run = tmp_path / "run"
    config = tiny_config(model_dir, str(run), sft_epochs=1, reward_epochs=1, ppo_max_steps=1, **files)
    RLHFPipeline(config).run()

    def stamps() -> dict:
        return {
            s: (run / s / "final" / "stage_complete.json").stat().st_mtime_ns for s in ("sft", "reward_model", "ppo")
        }

    def logged_config() -> dict:
        return json.loads((run / "logs" / "config.json").read_text())

    first = stamps()
    # sft_lr changed: SFT and everything after it would be stale; refused before anything runs, naming the key
    with pytest.raises(RuntimeError, match=r"sft: .*differ in \['sft_lr'\].*\['sft', 'reward_model', 'ppo'\]"):
        RLHFPipeline({**config, "sft_lr": 1e-3, "ppo_max_steps": 2}).run()
    # a PPO-only setting: only PPO is stale
    with pytest.raises(RuntimeError, match=r"ppo: .*differ in \['ppo_max_steps'\].*\['ppo'\]"):
        RLHFPipeline({**config, "ppo_max_steps": 2}).run()
    # the same file path with other content: the reward model and PPO are stale
    with open(files["reward_data_path"], "a") as f:
        row = {"prompt": "Greet Zoe.", "chosen": "Hello Zoe, it is lovely to meet you!", "rejected": "No, Zoe."}
        f.write(
            json.dumps({k: [{"role": "user" if k == "prompt" else "assistant", "content": v}] for k, v in row.items()})
        )
        f.write("\n")
    with pytest.raises(
        RuntimeError, match=r"reward_model: .*\['reward_data_path:sha256'\].*\['reward_model', 'ppo'\]"
    ):
        RLHFPipeline(config).run()
    assert stamps() == first
    assert logged_config()["sft_lr"] == 3e-3 and logged_config()["ppo_max_steps"] == 1  # still the run that trained

    # overwrite_stages: the reward model and PPO retrain, SFT is kept; config.json then holds the new settings
    pipeline = RLHFPipeline({**config, "ppo_max_steps": 2, "overwrite_stages": True})
    pipeline.run()
    second = stamps()
    assert second["sft"] == first["sft"]
    assert second["reward_model"] != first["reward_model"] and second["ppo"] != first["ppo"]
    assert json.loads((run / "ppo" / "final" / "stage_complete.json").read_text())["steps"] == 2
    assert logged_config()["ppo_max_steps"] == 2 and logged_config()["overwrite_stages"] is True
    # the rerun with the same settings skips all three; an evaluation under other settings is refused
    RLHFPipeline({**config, "ppo_max_steps": 2}).run()
    assert stamps() == second
    with pytest.raises(RuntimeError, match=r"ppo: .*\['ppo_max_steps'\]"):
        RLHFPipeline(config).evaluate()
    # PPO killed after its checkpoint: the rerun would resume it, but not under other settings
    shutil.rmtree(run / "ppo" / "final")
    assert (run / "ppo" / "checkpoint-2").is_dir()
    with pytest.raises(RuntimeError, match=r"ppo: .*differ in \['ppo_num_ppo_epochs'\]"):
        RLHFPipeline({**config, "ppo_max_steps": 2, "ppo_num_ppo_epochs": 1}).run()


def test_every_mistake_fails_before_the_first_stage_naming_the_key_file_and_line(tmp_path):
    model_dir = save_tiny_qwen2(tmp_path / "base", hidden_size=32, intermediate_size=64)
    run = tmp_path / "run"

    def write(name: str, *rows: str) -> str:
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        return str(tmp_path / name)

    empty_prompt = write("empty.jsonl", '{"prompt": "Hi"}', '{"prompt": ""}')
    null_completion = write("sft.jsonl", '{"prompt": "p", "completion": null}')
    number_prompt = write("number.jsonl", '{"prompt": "Hi"}', '{"prompt": 5}')
    cases = [
        ({"reward_data_path": None}, "reward_data_path is required"),
        ({"ppo_args": {"response_length": "twelve"}}, "ppo_args: response_length must be int, got 'twelve' \\(str\\)"),
        ({"ppo_data_path": empty_prompt}, f"ppo_data_path: {empty_prompt}:2: 'prompt' is empty"),
        ({"eval_ppo_data_path": str(tmp_path / "nope.jsonl")}, "eval_ppo_data_path: .*nope.jsonl: no such file"),
        ({"freeze_reward_backbone": "false"}, "freeze_reward_backbone must be bool, got 'false'"),
        ({"ppo_batch_size": "8"}, "ppo_batch_size must be int, got '8' \\(str\\)"),
        (
            {"sft_data_path": null_completion},
            f"{null_completion}:1: 'completion' must be a non-empty string .* NoneType",
        ),
        ({"ppo_data_path": number_prompt}, f"{number_prompt}:2: 'prompt' must be a non-empty string .* int \\(5\\)"),
        ({"ppo_args": {"lr_scheduler_type": "cosine_typo"}}, "ppo_args: PPOConfig rejects the ppo settings"),
    ]
    for overrides, message in cases:
        config = tiny_config(model_dir, str(run), sft_epochs=1, reward_epochs=1, ppo_max_steps=1, **overrides)
        with pytest.raises(ValueError, match=message):
            RLHFPipeline(config).run()
        assert not (run / "sft").exists() and not (run / "reward_model").exists(), overrides
    with pytest.raises(ValueError, match="sft_lr must be float, got '1e-5' .*write 1.0e-5"):
        (tmp_path / "c.yaml").write_text(f"model_name: {model_dir}\nsft_lr: 1e-5\n")
        RLHFConfig.from_file(tmp_path / "c.yaml")


def test_config_from_dict_json_yaml_and_unknown_keys(tmp_path):
    values = {"model_name": "m", "save_dir": str(tmp_path), "ppo_args": {"response_length": 8}}
    (tmp_path / "c.json").write_text(json.dumps(values))
    (tmp_path / "c.yaml").write_text("model_name: m\nppo_args:\n  response_length: 8\n")
    assert RLHFConfig.from_json(tmp_path / "c.json").ppo_args == {"response_length": 8}
    assert RLHFConfig.from_file(tmp_path / "c.yaml").ppo_args == {"response_length": 8}
    with pytest.raises(ValueError, match="Unknown RLHFConfig keys: \\['sft_epoch'\\]"):
        RLHFConfig.from_dict({"model_name": "m", "sft_epoch": 2})
    with pytest.raises(ValueError, match="not PPOConfig fields: \\['cliprange_vf'\\]"):
        RLHFConfig(model_name="m", ppo_args={"cliprange_vf": 0.2})
    with pytest.raises(ValueError, match="must divide"):
        RLHFConfig(model_name="m", ppo_batch_size=6, ppo_mini_batch_size=4)


def test_earlier_ppo_names_are_aliases_with_the_same_config_and_fingerprint(tmp_path):
    from trl import TrlParser

    # ppo_iterations (rollout batches) -> ppo_max_steps, ppo_epochs (passes over a rollout batch) -> ppo_num_ppo_epochs
    new = {"model_name": "m", "save_dir": str(tmp_path / "new"), "ppo_max_steps": 7, "ppo_num_ppo_epochs": 3}
    old = {"model_name": "m", "save_dir": str(tmp_path / "old"), "ppo_iterations": 7, "ppo_epochs": 3}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "old.yaml").write_text("model_name: m\nppo_iterations: 7\nppo_epochs: 3\n")
    (cli,) = TrlParser((RLHFConfig,)).parse_args_and_config(["--model_name", "m", "--ppo_iterations", "7"])
    configs = [
        RLHFConfig.from_dict(old),
        RLHFConfig.from_json(tmp_path / "old.json"),
        RLHFConfig.from_file(tmp_path / "old.yaml"),
        RLHFConfig(**{**old, "ppo_epochs": None}, ppo_num_ppo_epochs=3),  # keyword arguments, one of each
    ]
    for config in configs:
        assert config.ppo_max_steps == 7 and config.ppo_num_ppo_epochs == 3
        assert config.ppo_iterations is None and config.ppo_epochs is None  # cleared: one value, one name
    assert cli.ppo_max_steps == 7 and cli.ppo_num_ppo_epochs == 4  # the default
    to_dict = RLHFConfig.from_dict(old).to_dict()
    assert "ppo_iterations" not in to_dict and "ppo_epochs" not in to_dict and to_dict["ppo_max_steps"] == 7
    # what the PPO stage trains with, and the stage fingerprint (stage_settings.json), are the same under both names
    old_pipeline = RLHFPipeline({**old, "ppo_data_path": "p"})
    new_pipeline = RLHFPipeline({**new, "ppo_data_path": "p"})
    assert old_pipeline.stage_settings("ppo") == new_pipeline.stage_settings("ppo")
    assert old_pipeline.fingerprint("ppo") == new_pipeline.fingerprint("ppo")
    args = old_pipeline._stage_args("ppo")
    assert args.max_steps == 7 and args.num_ppo_epochs == 3
    # a PPO stage recorded by an earlier release (stage_settings.json under the old names) still matches: it resumes
    recorded = old_pipeline.stage_settings("ppo")
    recorded["ppo_iterations"], recorded["ppo_epochs"] = (
        recorded.pop("ppo_max_steps"),
        recorded.pop("ppo_num_ppo_epochs"),
    )
    os.makedirs(old_pipeline.stage_dir("ppo"))
    with open(os.path.join(old_pipeline.stage_dir("ppo"), "stage_settings.json"), "w") as f:
        json.dump(recorded, f)
    assert old_pipeline.stage_mismatch("ppo") == [] and new_pipeline.stage_mismatch("ppo") is None
    recorded["ppo_epochs"] = 2
    with open(os.path.join(old_pipeline.stage_dir("ppo"), "stage_settings.json"), "w") as f:
        json.dump(recorded, f)
    assert old_pipeline.stage_mismatch("ppo") == ["ppo_num_ppo_epochs"]
    # both names with different values: an error naming the new one
    with pytest.raises(ValueError, match="ppo_epochs is an alias of ppo_num_ppo_epochs.*give ppo_num_ppo_epochs"):
        RLHFConfig.from_dict({**new, "ppo_epochs": 2})
    assert RLHFConfig.from_dict({**new, "ppo_epochs": 3}).ppo_num_ppo_epochs == 3  # the same value: fine


def test_data_errors_name_the_file_and_line(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(ValueError, match=f"{path}:3: missing 'rejected'"):
        load_stage_data(str(path), "reward")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Hello"\n\n\n{"prompt": "Bye"}\n')
    import logging

    with caplog.at_level(logging.WARNING):
        assert load_stage_data(str(prompts), "ppo")["prompt"] == ["Hello", "Bye"]
    assert "skipped 2 empty line(s)" in caplog.text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=f"{bad}:2: not valid JSON"):
        load_stage_data(str(bad), "ppo")
    sft = tmp_path / "sft.json"
    sft.write_text(json.dumps([{"prompt": "p", "completion": "c"}, {"prompt": "p"}]))
    with pytest.raises(ValueError, match="record 1: missing 'messages', or 'prompt' and 'completion'"):
        load_stage_data(str(sft), "sft")


def test_bleu_and_rouge_against_hand_computed_values():
    # hypothesis "the cat sat on the mat", reference "the cat sat on a mat": n-gram precisions 5/6, 3/5, 2/4, 1/3,
    # equal lengths (brevity penalty 1): BLEU = 100 · (5/6 · 3/5 · 2/4 · 1/3)^(1/4) = 53.73
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(53.73, abs=0.01)
    assert bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    # "the cat sat" vs "the cat sat on the mat": ROUGE-1 P = 3/3, R = 3/6, F = 2/3; bigrams P = 2/2, R = 2/5, F = 4/7
    scores = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)


def run_example(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, *launcher, os.path.join(root, "examples", "rlhf_pipeline.py"), "--tiny", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_example_runs_all_stages_offline_with_tiny_then_reruns_as_told(tmp_path):
    out = tmp_path / "example"
    # --max_steps (what TRL users type for a short run) caps every stage: SFT / reward steps, PPO rollout batches
    result = run_example("--output_dir", str(out), "--max_steps", "2", "--save_interval", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PPO reward-model score" in result.stdout
    # the default log_level keeps transformers' INFO (config dumps, per-step logs) off the console (it printed 1,089
    # lines at "info"); logs/pipeline.log still records it
    assert "Model config" not in result.stderr and len((result.stdout + result.stderr).splitlines()) < 100
    assert "Model config" in (out / "logs" / "pipeline.log").read_text()
    assert json.loads((out / "logs" / "eval.json").read_text())["reward_model/accuracy"] >= 0.5
    assert (out / "ppo" / "checkpoint-2").is_dir() and (out / "ppo" / "final" / "stage_complete.json").is_file()
    for stage in ("sft", "reward_model", "ppo"):
        assert json.loads((out / stage / "final" / "stage_complete.json").read_text())["steps"] == 2

    # a changed PPO setting: refused with the key, nothing retrained, config.json still the first run's
    result = run_example(
        "--output_dir", str(out), "--max_steps", "2", "--save_interval", "2", "--ppo_num_ppo_epochs", "1"
    )
    assert result.returncode != 0
    assert "ppo: " in result.stderr and "['ppo_num_ppo_epochs']" in result.stderr
    assert "--overwrite_stages" in result.stderr
    assert json.loads((out / "logs" / "config.json").read_text())["ppo_num_ppo_epochs"] == 2

    # --overwrite_stages retrains PPO only; the skips show on the console, not only in logs/pipeline.log
    sft_stamp = (out / "sft" / "final" / "stage_complete.json").stat().st_mtime_ns
    result = run_example(
        *("--output_dir", str(out), "--max_steps", "2", "--save_interval", "2", "--ppo_epochs", "1"),  # the alias
        *("--overwrite_stages", "--evaluate", "false"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sft: done already" in result.stderr and "reward_model: done already" in result.stderr
    assert "retraining ['ppo']" in result.stderr
    assert (out / "sft" / "final" / "stage_complete.json").stat().st_mtime_ns == sft_stamp
    assert json.loads((out / "logs" / "config.json").read_text())["ppo_num_ppo_epochs"] == 1


def test_example_on_two_processes_prints_its_summary_once(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = ("-m", "accelerate.commands.launch", "--config_file")
    launcher += (os.path.join(root, "accelerate_configs", "cpu_2proc.yaml"), "--main_process_port", str(port))
    out = tmp_path / "example"
    steps = ("--sft_epochs", "1", "--reward_epochs", "1", "--ppo_max_steps", "1")
    result = run_example("--output_dir", str(out), *steps, "--evaluate", "false", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("stages done:") == 1
    assert result.stdout.count("PPO reward-model score") == 1
