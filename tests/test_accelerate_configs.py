import glob
import json
import os
import socket
import subprocess
import sys
from unittest import mock

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "accelerate_configs")


def _launch_env(config_file: str) -> dict[str, str]:
    """The environment `accelerate launch --config_file <file>` gives the training processes."""
    args = launch_command_parser().parse_args(["--config_file", config_file, "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if defaults.distributed_type == DistributedType.DEEPSPEED:
        # as accelerate's deepspeed launcher does before building the environment
        args.deepspeed_fields_from_accelerate_config = ",".join(list(defaults.deepspeed_config) + ["mixed_precision"])
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_every_config_loads_with_accelerate():
    expected = {
        "single_gpu": (DistributedType.NO, 1),
        "multi_gpu": (DistributedType.MULTI_GPU, 8),
        "deepspeed_zero2": (DistributedType.DEEPSPEED, 8),
        "deepspeed_zero3": (DistributedType.DEEPSPEED, 8),
        "fsdp2": (DistributedType.FSDP, 8),
        "cpu_2proc": (DistributedType.MULTI_GPU, 2),  # torchrun; the processes fall back to gloo on CPU
    }
    found = {os.path.basename(f)[: -len(".yaml")] for f in glob.glob(os.path.join(CONFIGS, "*.yaml"))}
    assert found == set(expected)
    for name, (distributed_type, num_processes) in expected.items():
        config = load_config_from_file(os.path.join(CONFIGS, f"{name}.yaml"))
        assert isinstance(config, ClusterConfig)
        assert (config.distributed_type, config.num_processes) == (distributed_type, num_processes)
        assert config.mixed_precision == ("no" if name == "cpu_2proc" else "bf16")


@pytest.mark.parametrize("name, stage", [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_configs_build_a_deepspeed_plugin(name, stage):
    with mock.patch.dict(os.environ, _launch_env(os.path.join(CONFIGS, f"{name}.yaml"))):
        plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage and zero["offload_optimizer"]["device"] == "none"
    assert plugin.zero3_init_flag == (stage == 3)
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp2_config_builds_an_fsdp2_plugin():
    from torch.distributed.fsdp import StateDictType

    with mock.patch.dict(os.environ, _launch_env(os.path.join(CONFIGS, "fsdp2.yaml"))):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT and plugin.cpu_ram_efficient_loading


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_grpo_two_processes_on_cpu_keep_identical_weights(tmp_path):
    from trl_ext.testing import save_tiny_qwen2

    model_path = save_tiny_qwen2(tmp_path / "model")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", os.path.join(CONFIGS, "cpu_2proc.yaml"),
        "--main_process_port", str(_free_port()),
        os.path.join(ROOT, "tests", "scripts", "grpo_two_steps.py"), model_path, str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.load(open(output_dir / f"rank{rank}.json")) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    weights = [torch.tensor(r["weights"], dtype=torch.float64) for r in ranks]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    from transformers import AutoModelForCausalLM

    initial = torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(model_path).parameters()])
    assert not torch.allclose(weights[0], initial.double()), "training did not change the weights"
