"""Test-suite wide settings: nothing may touch the network, and TRL's telemetry stays off."""

import json
import os
import socket
import subprocess
import sys
import warnings

import pytest


os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def launch_two_processes(tmp_path):
    """Run `tests/scripts/<script> <args...> <output_dir>` under `accelerate launch` with two CPU processes
    (`accelerate_configs/cpu_2proc.yaml`) and return what each rank wrote to `output_dir/rank<i>.json`."""

    def run(script: str, *args: str) -> list[dict]:
        output_dir = tmp_path / "ranks"
        output_dir.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            os.path.join(ROOT, "accelerate_configs", "cpu_2proc.yaml"),
            "--main_process_port",
            str(port),
            os.path.join(ROOT, "tests", "scripts", script),
            *map(str, args),
            str(output_dir),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-4000:]
        ranks = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
        assert [r["world_size"] for r in ranks] == [2, 2]
        return ranks

    return run


NATIVE_ABORT = "terminate called without an active exception"


@pytest.fixture
def run_example(tmp_path):
    """Run `examples/<script> <args...>` offline as a user does, with `python` or, with `processes=2`, under
    `accelerate launch` on two CPU processes (`accelerate_configs/cpu_2proc.yaml`); return the `CompletedProcess`."""

    def run(script: str, *args: str, processes: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
        command = [sys.executable]
        if processes > 1:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            config = os.path.join(ROOT, "accelerate_configs", "cpu_2proc.yaml")
            command += ["-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(processes)]
            command += ["--main_process_port", str(port)]
        command += [os.path.join(ROOT, "examples", script), *map(str, args)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if processes > 1 else dict(os.environ)
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 and NATIVE_ABORT in result.stderr:
            # a native abort of one rank (std::terminate, SIGABRT) seen once in ~10 CI runs of the 2-process
            # flow_rtpo example, never reproduced alone (0 in 6): run once more, and say so in the test's output
            warnings.warn(f"{script}: a rank aborted natively ({NATIVE_ABORT!r}); rerunning once")
            result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
        return result

    return run


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; two threads next to other busy processes run 10-40x slower. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_ppo_models(tmp_path_factory):
    """A tiny Qwen2 policy and a tiny Qwen2 reward model (another seed) sharing its tokenizer."""
    from trl_ext.testing import save_tiny_qwen2, save_tiny_qwen2_reward_model

    root = tmp_path_factory.mktemp("tiny_ppo")
    return {
        "policy": save_tiny_qwen2(root / "policy"),
        "reward": save_tiny_qwen2_reward_model(root / "reward", seed=1),
    }


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory):
    """A tiny Qwen3-VL judge saved to a directory (test_vlm_judge.py and test_vlm_judge_http.py share it)."""
    from trl_ext.testing import save_tiny_qwen3_vl

    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("judge") / "tiny_qwen3_vl")


@pytest.fixture(scope="module")
def judge(judge_dir):
    """The tiny judge loaded through `LocalVLMJudge.from_pretrained`, on the CPU (per module: tests change its
    settings)."""
    from trl_ext.rewards import LocalVLMJudge

    return LocalVLMJudge.from_pretrained(str(judge_dir), device="cpu")


@pytest.fixture(scope="session")
def judge_images():
    """Four source images of different sizes and modes, as real benchmark images come."""
    from PIL import Image

    return [
        Image.new("RGB", (64, 48), (200, 30, 30)),
        Image.new("RGBA", (40, 90), (10, 200, 10, 128)),
        Image.new("P", (128, 64), 3),
        Image.new("L", (70, 70), 90),
    ]


TPRL_MAX_COMPLETION_LENGTH = 4


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """A tiny Qwen2.5-VL, its torchvision-free processor, and 16 colour questions (test_tprl_grpo_trainer*.py)."""
    from trl_ext.data import colour_question_dataset
    from trl_ext.testing import load_qwen_vl_processor, save_tiny_qwen_vl

    path = save_tiny_qwen_vl(tmp_path_factory.mktemp("tiny_vl"), variant="qwen2_5_vl")
    return path, load_qwen_vl_processor(path), colour_question_dataset(16)


@pytest.fixture
def tprl_args():
    """Build a TPRL / GRPO config for one CPU step on the tiny VLM: `tprl_args(config_class, output_dir, processor,
    **overrides)`."""
    from trl_ext.testing import vision_special_token_ids

    def build(config_class, output_dir, processor, **overrides):
        values = dict(
            output_dir=str(output_dir),
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=TPRL_MAX_COMPLETION_LENGTH,
            max_steps=1,
            learning_rate=0.03,
            bf16=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=0,
            generation_kwargs={"suppress_tokens": vision_special_token_ids(processor.tokenizer)},
        )
        values.update(overrides)
        return config_class(**values)

    return build
