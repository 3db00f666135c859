"""FLUX.1's optional true classifier-free guidance (`true_cfg_scale` with a negative prompt, as `FluxPipeline` does it)
against the pipeline's own `__call__`, and each family's model card: its pipeline class, its base model id, and a usage
block that loads the trained LoRA with the pipeline's own `load_lora_weights` when run as written."""

import ast
import os
import subprocess
import sys

import pytest
import torch
from test_flow_grpo import PROMPTS, TINY_FLOW_ARGS, brightness

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.models.flow import FlowSamplingConfig, sample_trajectories, trajectory_step_log_prob
from trl_ext.testing import (
    TINY_FLUX_MAX_SEQUENCE_LENGTH,
    save_tiny_flux,
    save_tiny_qwen_image,
    save_tiny_sd3,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def load(path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flux_path(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux"))


def test_flux_true_cfg_noise_free_rollout_is_the_pipelines_own_call(flux_path):
    pipe = load(flux_path)
    config = FlowSamplingConfig(
        num_inference_steps=4,
        guidance_scale=3.5,
        noise_level=0.0,
        height=32,
        width=32,
        max_sequence_length=TINY_FLUX_MAX_SEQUENCE_LENGTH,
        true_cfg_scale=4.0,
        negative_prompt="blurry, dark",
    )
    ours = sample_trajectories(pipe, PROMPTS[:2], config, generator=torch.Generator().manual_seed(0))
    reference = pipe(
        PROMPTS[:2],
        height=32,
        width=32,
        num_inference_steps=4,
        max_sequence_length=TINY_FLUX_MAX_SEQUENCE_LENGTH,
        guidance_scale=3.5,
        true_cfg_scale=4.0,
        negative_prompt="blurry, dark",
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    torch.testing.assert_close(ours.images, reference, rtol=0, atol=1e-5)
    config.true_cfg_scale = 1.0  # the true CFG does change the images (so that it is checked)
    plain = sample_trajectories(pipe, PROMPTS[:2], config, generator=torch.Generator().manual_seed(0))
    assert (plain.images - ours.images).abs().max() > 1e-4


def test_flux_true_cfg_is_on_policy_per_sub_batch_and_refused_by_other_families(flux_path, tmp_path):
    args = FlowGRPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path)}, true_cfg_scale=3.0, negative_prompt="x")
    trainer = FlowGRPOTrainer(flux_path, brightness, args, PROMPTS)
    trajectory = sample_trajectories(
        trainer.adapter, PROMPTS, trainer.sampling, generator=torch.Generator().manual_seed(0)
    )
    assert {"negative_encoder_hidden_states", "negative_pooled_projections"} <= set(trajectory.conditioning)
    indices = torch.tensor([3, 0])
    for step in range(trainer.sampling.num_inference_steps):
        out = trajectory_step_log_prob(trainer.transformer, trajectory, step, trainer.sampling, indices)
        torch.testing.assert_close(out.log_prob, trajectory.log_probs[indices, step], rtol=1e-5, atol=1e-6)
    logs = trainer.training_step()
    assert logs["flow/ratio"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="true_cfg_scale"):
        FlowGRPOTrainer(save_tiny_sd3(tmp_path / "sd3"), brightness, args, PROMPTS)


CARD_FAMILIES = {  # factory, pipeline class, a Hub id, config overrides, how the card's call sets the guidance
    "sd3": (
        save_tiny_sd3,
        "StableDiffusion3Pipeline",
        "stabilityai/stable-diffusion-3.5-medium",
        {},
        "guidance_scale=4.5",
    ),
    "flux": (
        save_tiny_flux,
        "FluxPipeline",
        "black-forest-labs/FLUX.1-dev",
        {"guidance_scale": 3.5, "true_cfg_scale": 2.0, "negative_prompt": "blurry"},
        "guidance_scale=3.5, true_cfg_scale=2.0, negative_prompt='blurry'",
    ),
    "qwen_image": (
        save_tiny_qwen_image,
        "QwenImagePipeline",
        "Qwen/Qwen-Image",
        {},
        "true_cfg_scale=4.5, negative_prompt=' '",
    ),
}


@pytest.mark.parametrize("name", list(CARD_FAMILIES))
def test_each_familys_card_names_its_class_and_base_model_and_its_usage_runs(name, tmp_path):
    factory, class_name, hub_id, overrides, guidance = CARD_FAMILIES[name]
    base = factory(tmp_path / "base")
    args = FlowGRPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path / "my-lora"), **overrides})
    trainer = FlowGRPOTrainer(base, brightness, args, PROMPTS)
    trainer.save_model()
    card = (tmp_path / "my-lora" / "README.md").read_text()
    assert card.count("```python\n") == 1
    usage = card.split("```python\n")[1].split("\n```")[0]
    ast.parse(usage)
    assert usage == (
        f"from diffusers import {class_name}\n\n"
        f'pipe = {class_name}.from_pretrained("<the base model\'s Hub id or local directory>")\n'
        'pipe.load_lora_weights("my-lora")\n'
        "image = pipe('a cat', num_inference_steps=4, height=32, width=32, max_sequence_length=32, "
        f"{guidance}).images[0]"
    )
    # as written, with the base model's directory in place of the placeholder: loads the LoRA and renders
    script = usage.replace("<the base model's Hub id or local directory>", base)
    script += "\nassert any('lora' in n for n, _ in pipe.transformer.named_parameters())\nprint(image.size)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(32, 32)"
    # a base model from the Hub: its id in the metadata and in the usage
    trainer.pipeline.register_to_config(_name_or_path=hub_id)
    (tmp_path / "hub").mkdir()
    trainer.create_model_card(str(tmp_path / "hub"))
    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"\nbase_model: {hub_id}\n" in card and f'{class_name}.from_pretrained("{hub_id}")' in card
