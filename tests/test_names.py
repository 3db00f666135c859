"""One name per concept: the names table of `trl_ext.trainers` (its module docstring) against the configs it names,
and the renamed config fields, `rl.losses` arguments and trainer attribute."""

import dataclasses
import inspect
import re

import pytest
import trl
from transformers import TrainingArguments

import trl_ext.trainers
from trl_ext import (
    DiffusionLMGRPOConfig,
    DiscreteDiffusionPPOConfig,
    ExtendedGRPOConfig,
    FlowGRPOConfig,
    FlowRTPOConfig,
    PPOConfig,
    RLHFConfig,
)
from trl_ext.rl.losses import clipped_surrogate_loss, clipped_value_loss
from trl_ext.trainers.group_config import GroupPolicyConfig


COLUMNS = (
    ExtendedGRPOConfig,
    FlowRTPOConfig,
    DiscreteDiffusionPPOConfig,
    DiffusionLMGRPOConfig,
    PPOConfig,
    RLHFConfig,
)


def fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def config_table() -> list[list[str]]:
    """The rows of the first table of the docstring (concept, then one cell per config of `COLUMNS`)."""
    table = trl_ext.trainers.__doc__.split("\n| Concept |")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]  # after the header and its |---|
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_names_table_names_real_fields():
    rows = config_table()
    assert len(rows) >= 12 and all(len(row) == 1 + len(COLUMNS) for row in rows)
    for concept, *cells in rows:
        for cls, cell in zip(COLUMNS, cells):
            for name in names(cell):
                nested = re.fullmatch(r'(\w+)\["(\w+)"\]', name)  # the pipeline's `ppo_args["cliprange"]`
                if nested:
                    assert nested[1] == "ppo_args" and cls is RLHFConfig, (concept, name)
                    assert nested[2] in fields(PPOConfig), (concept, name)
                else:
                    assert name in fields(cls), f"{concept}: {name} is not a {cls.__name__} field"


def test_sedd_and_flow_use_the_grpo_columns_names():
    for concept, grpo, flow, sedd, diffusion_lm, *_ in config_table():
        if grpo.startswith("—"):
            continue
        for cell in (flow, sedd, diffusion_lm):
            assert cell.startswith("—") or set(names(grpo)) <= set(names(cell)), concept


def test_renamed_fields_are_gone_and_group_configs_use_grpo_names():
    grpo_only = fields(trl.GRPOConfig) - fields(TrainingArguments)
    for cls in (DiscreteDiffusionPPOConfig, DiffusionLMGRPOConfig, FlowGRPOConfig, FlowRTPOConfig, ExtendedGRPOConfig):
        assert not fields(cls) & {"generation_length", "dual_clip", "ppo_epochs", "clip_range", "cliprange"}
    assert {"max_completion_length", "num_iterations", "epsilon", "beta"} <= fields(DiscreteDiffusionPPOConfig)
    assert {"max_completion_length", "num_iterations", "epsilon", "delta", "beta"} <= grpo_only
    # PPOConfig: TRL's last PPOConfig names, and GRPOConfig's `delta` for its own dual clip (TRL's PPO had none)
    ppo = fields(PPOConfig)
    assert {"num_ppo_epochs", "cliprange", "cliprange_value", "kl_coef", "response_length"} <= ppo
    assert "delta" in ppo and "dual_clip" not in ppo
    assert PPOConfig(output_dir="o", use_cpu=True, delta=3.0).delta == 3.0
    with pytest.raises(ValueError, match="delta"):
        PPOConfig(output_dir="o", use_cpu=True, delta=0.5)
    # the pipeline: new names, and the earlier ones only as aliases
    assert {"ppo_max_steps", "ppo_num_ppo_epochs"} <= fields(RLHFConfig)


def test_loss_arguments_have_trls_names():
    assert list(inspect.signature(clipped_surrogate_loss).parameters) == [
        "log_ratio",
        "advantages",
        "epsilon_low",
        "epsilon_high",
        "delta",
    ]
    assert list(inspect.signature(clipped_value_loss).parameters) == [
        "values",
        "old_values",
        "returns",
        "cliprange_value",
    ]


GROUP_CONFIGS = (DiffusionLMGRPOConfig, DiscreteDiffusionPPOConfig, FlowGRPOConfig, FlowRTPOConfig)


@pytest.mark.parametrize("cls", GROUP_CONFIGS)
@pytest.mark.parametrize(
    "field, value",
    [("epsilon", 0.0), ("epsilon_high", -0.1), ("beta", -1.0), ("num_mini_batches", 0), ("lora_r", 0)],
)
def test_group_configs_share_one_validation(cls, field, value):
    assert issubclass(cls, GroupPolicyConfig)
    with pytest.raises(ValueError, match=field):
        cls(output_dir="o", use_cpu=True, **{field: value})


@pytest.mark.parametrize("cls", GROUP_CONFIGS)
def test_group_configs_check_the_group_batch_and_default_bf16_off_on_cpu(cls):
    assert cls(output_dir="o", use_cpu=True).bf16 is False  # TRL's True would make TrainingArguments raise on a CPU
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        cls(output_dir="o", use_cpu=True, num_generations=1)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        cls(output_dir="o", use_cpu=True, per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="scale_rewards must be one of"):
        cls(output_dir="o", use_cpu=True, scale_rewards="prompt")


def test_group_configs_keep_their_methods_published_defaults():
    # Flow-GRPO's published settings (its config/base.py), GRPO's for the diffusion LMs
    flow = FlowGRPOConfig(output_dir="o", use_cpu=True)
    assert (flow.scale_rewards, flow.epsilon, flow.beta, flow.learning_rate) == ("batch", 1e-4, 0.04, 3e-4)
    assert (flow.lora_r, flow.lora_alpha, "attn.to_q" in flow.lora_target_modules) == (32, 64, True)
    for cls in (DiffusionLMGRPOConfig, DiscreteDiffusionPPOConfig):
        config = cls(output_dir="o", use_cpu=True)
        assert (config.scale_rewards, config.epsilon, config.beta, config.learning_rate) == ("group", 0.2, 0.0, 1e-5)
    assert DiffusionLMGRPOConfig(output_dir="o", use_cpu=True).lora_target_modules is None
    assert DiscreteDiffusionPPOConfig(output_dir="o", use_cpu=True).lora_target_modules[0] == "attn_qkv"
