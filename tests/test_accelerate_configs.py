import glob
import os
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


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["rollout_kl", "loss_shaping"])
def test_grpo_two_processes_on_cpu_keep_identical_weights(tmp_path, launch_two_processes, mode):
    """TPRLGRPOTrainer on TRL's loop with every TPRL option on (tiny Qwen2.5-VL): 2 ranks, 2 steps; the token weights
    computed at rollout time (adaptive KL in the reward) or, on-policy, in TRL's loss forward."""
    from trl_ext.testing import save_tiny_qwen_vl

    ranks = launch_two_processes("grpo_two_steps.py", save_tiny_qwen_vl(tmp_path / "model"), mode)
    weights = [torch.tensor(r["weights"], dtype=torch.float64) for r in ranks]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    assert ranks[0]["changed"] > 0, "training did not change the weights"
    assert len(ranks[0]["rows"]) == len(ranks[1]["rows"]) == 2  # one rollout per step
    for rows_0, rows_1 in zip(ranks[0]["rows"], ranks[1]["rows"]):
        assert not set(rows_0) & set(rows_1), "both ranks trained on the same prompts"
    assert {"tprl/perception_token_fraction", "tprl/scaling_factor_mean", "grpo/filtered_group_fraction"} <= set(
        ranks[0]["tprl_metrics"]
    )
    for rank in ranks:
        assert rank["shaped_in_loss"] == [mode == "loss_shaping"] * 2
    if mode == "rollout_kl":
        assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"] and len(set(ranks[0]["kl_coef"])) == 2  # one adaptive beta


@pytest.mark.distributed
def test_sedd_sft_and_ppo_two_processes_keep_identical_weights(tmp_path, launch_two_processes):
    # the SEDD likelihood calls the model's submodules directly, so DDP alone would not average the gradients
    from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd

    ranks = launch_two_processes(
        "sedd_two_steps.py", save_tiny_sedd(tmp_path / "model", tokens=len(build_tiny_tokenizer()))
    )
    # each process draws its own prompts: the two ranks cover disjoint halves of every pass over the data
    assert set(ranks[0]["prompts"]).isdisjoint(ranks[1]["prompts"])
    for stage in ("sft", "ppo"):
        torch.testing.assert_close(torch.tensor(ranks[0][stage]), torch.tensor(ranks[1][stage]), rtol=0, atol=0)
