"""RLHFPipeline: the three stages offline on a tiny Qwen2 and the bundled toy data, skip on rerun, resume of a killed
stage, config and data errors, and the offline BLEU / ROUGE against hand-computed values."""

import json
import os
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from trl_ext import RLHFConfig, RLHFPipeline
from trl_ext.pipelines.data import bleu, bundled_rlhf_data, load_stage_data, rouge
from trl_ext.testing import save_tiny_qwen2


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        ppo_iterations=4,
        ppo_batch_size=8,
        ppo_mini_batch_size=4,
        ppo_epochs=2,
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
    assert json.loads((tmp_path / "run" / "logs" / "config.json").read_text())["ppo_iterations"] == 4
    assert (tmp_path / "run" / "logs" / "pipeline.log").is_file()
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


def test_example_runs_all_stages_offline_with_tiny(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "example"
    result = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "rlhf_pipeline.py"), "--tiny", "--output_dir", str(out)]
        + ["--sft_epochs", "2", "--reward_epochs", "2", "--ppo_iterations", "3", "--save_interval", "2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PPO reward-model score" in result.stdout
    assert json.loads((out / "logs" / "eval.json").read_text())["reward_model/accuracy"] >= 0.5
    assert (out / "ppo" / "checkpoint-2").is_dir() and (out / "ppo" / "final" / "stage_complete.json").is_file()
