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
"""The Flow-RTPO example runs its red-teaming mode end to end on tiny models of every family, offline."""

import json
import os
import subprocess
import sys

import pytest


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def test_flow_rtpo_red_teaming_example_runs_offline_on_tiny_models(tmp_path):
    command = [
        sys.executable,
        os.path.join(EXAMPLES, "flow_rtpo.py"),
        "--tiny",
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "2",
        "--num_train_prompts",
        "4",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "flow_rtpo reward" in result.stdout
    # 4 training prompts, 2 original prompts per step: one epoch is 2 steps, and each epoch saves its samples
    assert sorted(os.listdir(tmp_path / "samples" / "step-2")) == [
        "000.png",
        "001.png",
        "002.png",
        "003.png",
        "prompts.txt",
    ]
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file() and "Flow-GRPO" in (
        tmp_path / "README.md"
    ).read_text()
    assert (tmp_path / "prompt_editor.safetensors").is_file() and not (tmp_path / "tmp_trainer").exists()


# Every training example under `accelerate launch` with two CPU processes, as users scale them: (script, arguments,
# the summary line the main process prints). The RLHF pipeline's run is in test_rlhf_pipeline.py.
TWO_PROCESS_RUNS = {
    "flow_rtpo_red_teaming": (
        "flow_rtpo.py",
        ("--tiny", "--max_steps", "1", "--num_train_prompts", "4"),
        "flow_rtpo reward: first",
    ),
    "flow_grpo": ("flow_rtpo.py", ("--tiny", "--mode", "flow_grpo", "--max_steps", "1"), "brightness reward: first"),
    "sedd_sft": ("sedd_sft.py", ("--tiny", "--max_steps", "2"), "score-entropy loss per token"),
    "sedd_latex_ppo": ("sedd_latex_ppo.py", ("--tiny", "--sft_steps", "2", "--max_steps", "1"), "LaTeX reward: first"),
    "diffusion_lm_grpo": ("diffusion_lm_grpo.py", ("--tiny", "--max_steps", "1"), "word_share reward (elbo): first"),
    "diffusion_lm_grpo_diffusion_gemma": (
        "diffusion_lm_grpo.py",
        ("--tiny", "--family", "diffusion_gemma", "--estimator", "trace", "--max_steps", "1"),
        "word_share reward (trace): first",
    ),
    "diffusion_lm_grpo_sedd": (
        "diffusion_lm_grpo.py",
        ("--tiny", "--family", "sedd", "--max_steps", "1"),
        "word_share reward (elbo): first",
    ),
    "tprl_grpo_vlm": ("tprl_grpo_vlm.py", ("--tiny", "--max_steps", "1"), "reward: first"),
    "grpo_extended": ("grpo_extended.py", ("--tiny", "--max_steps", "2"), "letter_share reward: first"),
    "edit_grpo": (
        "edit_grpo.py",
        ("--tiny", "--max_steps", "1", "--max_records", "4"),
        "Held-out benchmark (2 records)",
    ),
}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(TWO_PROCESS_RUNS))
def test_example_runs_in_two_processes_and_prints_its_summary_once(name, run_example, tmp_path):
    script, args, summary = TWO_PROCESS_RUNS[name]
    result = run_example(script, *args, "--output_dir", tmp_path / "out", processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(summary) == 1, result.stdout


def test_every_example_lists_config_in_its_help_and_tiny_models_refuses_max_steps(run_example, tmp_path):
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py") and f != "example_utils.py")
    # each example's `--help` as `python examples/<script> --help` prints it, in one interpreter (seven cost 50 s)
    helps = tmp_path / "helps.py"
    helps.write_text(
        "import contextlib, io, json, runpy, sys\n"
        f"sys.path.insert(0, {EXAMPLES!r})\n"
        "out = {}\n"
        f"for script in {scripts!r}:\n"
        f"    sys.argv = [script, '--help']\n"
        "    buffer = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):\n"
        f"        runpy.run_path({EXAMPLES!r} + '/' + script, run_name='__main__')\n"
        "    out[script] = buffer.getvalue()\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, helps], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    helps_by_script = json.loads(result.stdout.splitlines()[-1])
    assert sorted(helps_by_script) == scripts
    for script, text in helps_by_script.items():
        assert text.startswith("usage:") and "--config CONFIG" in text, (script, text[:500])
    result = run_example("tiny_models.py", "--max_steps", "3")
    assert result.returncode == 2 and "--max_steps does not apply" in result.stderr


def test_tprl_example_on_a_model_directory_without_tiny(run_example, tmp_path):
    """Issue 18's repro: a Qwen2.5-VL directory without `--tiny` needed torchvision (`AutoProcessor`)."""
    from trl_ext.testing import save_tiny_qwen_vl

    model = save_tiny_qwen_vl(tmp_path / "qwen2.5-vl")
    args = ("--model_name_or_path", model, "--max_steps", "1", "--use_cpu", "true", "--bf16", "false")
    small = ("--num_prompts", "8", "--per_device_train_batch_size", "8", "--max_completion_length", "4")
    result = run_example("tprl_grpo_vlm.py", *args, *small, "--report_to", "none", "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "reward: first" in result.stdout and (tmp_path / "out" / "processor_config.json").is_file()


CPU_ONE_STEP = ("--max_steps", "1", "--use_cpu", "true", "--bf16", "false", "--report_to", "none")


def _save_sedd_setup(directory):
    """A tiny SEDD, its tokenizer and a local copy of S1K-1.1's `solution` column, as relative paths."""
    from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd

    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(directory / "tokenizer")
    save_tiny_sedd(directory / "sedd", tokens=len(tokenizer), hidden_size=64)
    rows = [{"solution": f"We get $x^{{{i}}} + \\frac{{1}}{{{i + 1}}}$, so $\\sqrt{{{i}}}$."} for i in range(32)]
    (directory / "s1k.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return (
        "--model",
        "sedd",
        "--tokenizer",
        "tokenizer",
        "--dataset",
        "s1k.jsonl",
        "--per_device_train_batch_size",
        "4",
    )


def _save_sd3(directory):
    from trl_ext.testing import save_tiny_sd3

    save_tiny_sd3(directory / "sd3")  # the directory is named like the model key "sd3": the directory wins
    small = ("--resolution", "64", "--num_inference_steps", "2", "--max_sequence_length", "16")
    return ("--mode", "flow_grpo", "--model", "sd3", "--per_device_train_batch_size", "4", *small)


def _save_qwen2(directory):
    from trl_ext.testing import save_tiny_qwen2

    save_tiny_qwen2(directory / "qwen2")
    small = ("--per_device_train_batch_size", "8", "--max_completion_length", "4", "--num_prompts", "8")
    return ("--model_name_or_path", "qwen2", *small)


def _save_edit_models(directory):
    from trl_ext.testing import save_tiny_qwen3_vl, save_tiny_qwen_image_edit

    save_tiny_qwen_image_edit(directory / "qwen_image_edit")
    save_tiny_qwen3_vl(directory / "judge")
    small = ("--resolution", "32", "--condition_area", "4096", "--num_inference_steps", "2", "--max_sequence_length")
    return (
        *("--model", "qwen_image_edit", "--judge", "judge", "--max_records", "4", "--min_digit_mass", "0"),
        *(*small, "32", "--per_device_train_batch_size", "2", "--num_generations", "2"),
        *("--eval_num_inference_steps", "2", "--logging_steps", "1"),
    )


# (script, how to write its model directory and the arguments that name it, further arguments, the summary line)
MODEL_DIRECTORY_RUNS = {
    "sedd_sft": ("sedd_sft.py", _save_sedd_setup, (), "score-entropy loss per token"),
    "sedd_latex_ppo": (
        "sedd_latex_ppo.py",
        _save_sedd_setup,
        ("--sft_steps", "1", "--max_prompt_length", "8", "--max_completion_length", "16", "--sampling_steps", "8"),
        "LaTeX reward: first",
    ),
    "flow_grpo": ("flow_rtpo.py", _save_sd3, (), "brightness reward: first"),
    "grpo_extended": ("grpo_extended.py", _save_qwen2, (), "letter_share reward: first"),
    "edit_grpo": ("edit_grpo.py", _save_edit_models, (), "Held-out benchmark (2 records)"),
}


@pytest.mark.parametrize("name", sorted(MODEL_DIRECTORY_RUNS))
def test_example_on_model_directories_without_tiny(name, run_example, tmp_path):
    """Users point the examples at their own directories (relative paths, a tokenizer and a dataset beside the model):
    `--tokenizer <dir>` and `--model sd3` next to a directory `sd3` failed while every `--tiny` run passed."""
    script, save, extra, summary = MODEL_DIRECTORY_RUNS[name]
    result = run_example(script, *save(tmp_path), *extra, *CPU_ONE_STEP, "--output_dir", "out")
    assert result.returncode == 0, result.stderr[-4000:]
    assert summary in result.stdout and (tmp_path / "out" / "README.md").is_file()


def test_tiny_models_writes_and_reloads_every_family(run_example, tmp_path):
    import trl_ext.testing

    result = run_example("tiny_models.py", "--output_dir", "tiny")
    assert result.returncode == 0, result.stderr[-4000:]
    reloaded = [line.split()[0] for line in result.stdout.splitlines() if " saved and reloaded from " in line]
    factories = [name.removeprefix("save_tiny_") for name in trl_ext.testing.__all__ if name.startswith("save_tiny_")]
    assert sorted(reloaded) == sorted(factories) == sorted(os.listdir(tmp_path / "tiny"))
