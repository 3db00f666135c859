import ast
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.models.flow import (
    FlowSamplingConfig,
    sample_trajectories,
    sde_step_with_logprob,
    trajectory_step_log_prob,
)
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH, save_tiny_sd3


PROMPTS = ["a cat", "a dog", "a red car", "the sky"]


def brightness(prompts, images, **kwargs):
    return images.mean(dim=(1, 2, 3)).tolist()


@pytest.fixture(scope="module")
def sd3_path(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture
def pipeline(sd3_path):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


SAMPLING = FlowSamplingConfig(
    num_inference_steps=4,
    guidance_scale=4.5,
    noise_level=0.7,
    height=32,
    width=32,
    max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
)


def test_sde_log_prob_equals_gaussian_density():
    torch.manual_seed(0)
    sample, velocity = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    sigma, sigma_next, sigma_max, a = 0.8, 0.6, 0.95, 0.7
    out = sde_step_with_logprob(
        velocity, sample, sigma, sigma_next, sigma_max, a, generator=torch.Generator().manual_seed(1)
    )
    dt = sigma_next - sigma
    std_dev = a * math.sqrt(sigma / (1 - sigma))
    mean = sample * (1 + std_dev**2 / (2 * sigma) * dt) + velocity * (1 + std_dev**2 * (1 - sigma) / (2 * sigma)) * dt
    density = torch.distributions.Normal(mean, std_dev * math.sqrt(-dt)).log_prob(out.prev_sample)
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.log_prob, density.mean(dim=(1, 2, 3)))
    # at sigma = 1 the std uses the scheduler's second sigma instead of the singular 1 - sigma
    at_one = sde_step_with_logprob(velocity, sample, 1.0, 0.9, sigma_max, a)
    torch.testing.assert_close(
        at_one.std[0].flatten(), torch.tensor([a * math.sqrt(1 / (1 - sigma_max)) * math.sqrt(0.1)])
    )


def test_zero_noise_level_is_the_euler_step(pipeline):
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(4)
    sample, velocity = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    euler = scheduler.step(velocity, scheduler.timesteps[1], sample, return_dict=False)[0]
    sigmas = scheduler.sigmas
    out = sde_step_with_logprob(velocity, sample, sigmas[1], sigmas[2], sigmas[1], noise_level=0.0)
    torch.testing.assert_close(out.prev_sample, euler)


def test_recomputed_log_probs_equal_the_rollout(pipeline):
    trajectory = sample_trajectories(pipeline, PROMPTS, SAMPLING, generator=torch.Generator().manual_seed(0))
    assert trajectory.images.shape == (4, 3, 32, 32) and trajectory.latents.shape[1] == 5
    assert trajectory.log_probs.shape == (4, 4)
    for step in range(4):
        out = trajectory_step_log_prob(pipeline.transformer, trajectory, step, SAMPLING)
        torch.testing.assert_close(out.log_prob, trajectory.log_probs[:, step], rtol=0, atol=0)
    sub = trajectory_step_log_prob(pipeline.transformer, trajectory, 1, SAMPLING, indices=torch.tensor([2, 0]))
    torch.testing.assert_close(sub.log_prob, trajectory.log_probs[[2, 0], 1], rtol=1e-5, atol=1e-6)


# the tiny runs' settings (tests/test_flow_rtpo.py uses them too)
TINY_FLOW_ARGS = dict(
    use_cpu=True,
    report_to="none",
    per_device_train_batch_size=8,
    num_generations=4,
    num_inference_steps=4,
    resolution=32,
    max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
    lora_r=4,
    lora_alpha=8,
    learning_rate=3e-2,
    epsilon=0.2,
    beta=0.0,
    max_steps=1,
    disable_tqdm=True,
    save_strategy="no",
    seed=0,
    logging_steps=1,
    lr_scheduler_type="constant",
)


def _args(tmp_path, **overrides):
    return FlowGRPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path), **overrides})


def test_first_update_is_on_policy_with_kl_and_lora(sd3_path, tmp_path):
    trainer = FlowGRPOTrainer(sd3_path, brightness, _args(tmp_path, beta=0.04, num_mini_batches=1), PROMPTS)
    assert all("lora" in name for name, p in trainer.transformer.named_parameters() if p.requires_grad)
    logs = trainer.training_step()
    assert logs["flow/ratio"] == pytest.approx(1.0, abs=1e-6) and logs["clip_ratio/region_mean"] == 0.0
    assert logs["kl"] == pytest.approx(0.0, abs=1e-10)  # LoRA B starts at 0: policy == reference before the update
    assert logs["grad_norm"] > 0


def test_bf16_loads_frozen_weights_in_bf16_trains_fp32_lora_and_stays_on_policy(sd3_path, tmp_path):
    trainer = FlowGRPOTrainer(sd3_path, brightness, _args(tmp_path, bf16=True, beta=0.04, num_mini_batches=1), PROMPTS)
    pipeline = trainer.pipeline
    assert pipeline.text_encoder_3.dtype == torch.bfloat16 and pipeline.vae.dtype == torch.float32
    dtypes = {name: p.dtype for name, p in trainer.transformer.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora" not in n} == {torch.bfloat16}
    logs = trainer.training_step()
    assert logs["flow/ratio"] == pytest.approx(1.0, abs=1e-6) and logs["kl"] == pytest.approx(0.0, abs=1e-10)
    assert math.isfinite(logs["loss"]) and logs["grad_norm"] > 0


def test_none_rewards_are_masked_and_counted(sd3_path, tmp_path):
    def half_unscored(prompts, images, **kwargs):
        return [None if i % 2 else float(images[i].mean()) for i in range(len(prompts))]

    trainer = FlowGRPOTrainer(sd3_path, half_unscored, _args(tmp_path), PROMPTS)
    logs = trainer.training_step()
    assert logs["unscored_count"] == 4 and logs["rewards/half_unscored/masked_count"] == 4
    assert not math.isnan(logs["reward"])


def test_learns_to_raise_brightness(sd3_path, tmp_path):
    trainer = FlowGRPOTrainer(
        sd3_path, brightness, _args(tmp_path, max_steps=100, learning_rate=0.3, num_mini_batches=2), PROMPTS
    )
    trainer.train()
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history]
    start, end, noise = np.mean(rewards[:10]), np.mean(rewards[-10:]), history[0]["reward_std"]
    print(f"brightness: first 10 steps {start:.4f}, last 10 steps {end:.4f} (within-batch std at start {noise:.4f})")
    assert end - start > max(0.1, 5 * noise)
    assert any(h["clip_ratio/region_mean"] > 0 for h in history)  # off-policy minibatches do get clipped


def test_save_load_lora_and_resume(sd3_path, tmp_path, pipeline):
    args = _args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    trainer = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
    trainer.train()
    trainer.save_model()
    assert os.path.isfile(tmp_path / "pytorch_lora_weights.safetensors")
    card = (tmp_path / "README.md").read_text()
    assert "Flow-GRPO" in card and "brightness" in card and "2505.05470" in card
    pipeline.load_lora_weights(str(tmp_path))
    lora = {n: p for n, p in pipeline.transformer.named_parameters() if "lora" in n}
    trained = {
        n: p for n, p in trainer.accelerator.unwrap_model(trainer.transformer).named_parameters() if "lora" in n
    }
    assert len(lora) == len(trained) > 0
    for (_, loaded), (_, saved) in zip(sorted(lora.items()), sorted(trained.items())):
        torch.testing.assert_close(loaded, saved)

    # a local directory: no base_model, no path; the usage is one Python block whose placeholder the user replaces
    assert "base_model" not in card and str(sd3_path) not in card and card.count("```python\n") == 1
    usage = card.split("```python\n")[1].split("\n```")[0]
    ast.parse(usage)
    assert 'StableDiffusion3Pipeline.from_pretrained("<the base model\'s Hub id or local directory>")' in usage
    # loaded from the Hub: its id, in the metadata and in the usage
    trainer.pipeline.register_to_config(_name_or_path="stabilityai/stable-diffusion-3.5-medium")
    (tmp_path / "hub").mkdir()
    trainer.create_model_card(str(tmp_path / "hub"))
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "\nbase_model: stabilityai/stable-diffusion-3.5-medium\n" in card
    assert 'StableDiffusion3Pipeline.from_pretrained("stabilityai/stable-diffusion-3.5-medium")' in card
    # resuming from checkpoint-1 and training one more step reproduces checkpoint-2's weights, bit for bit
    resumed = FlowGRPOTrainer(sd3_path, brightness, _args(tmp_path / "resumed", max_steps=2), PROMPTS)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert resumed.global_step == 2
    for (_, a), (_, b) in zip(
        sorted((n, p) for n, p in resumed.transformer.named_parameters() if p.requires_grad),
        sorted((n, p) for n, p in trainer.transformer.named_parameters() if p.requires_grad),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ema_of_the_lora_weights_is_saved_checkpointed_and_swapped_back(sd3_path, tmp_path):
    decay = 0.5
    live = []

    class RecordingTrainer(FlowGRPOTrainer):  # records the live LoRA weights after every step
        def _on_step_end(self):
            live.append([p.detach().clone() for p in self.trainable_params])

    args = _args(tmp_path, max_steps=3, ema_decay=decay, save_strategy="steps", save_steps=3)
    trainer = RecordingTrainer(sd3_path, brightness, args, PROMPTS)
    trainer.train()
    # diffusers' EMAModel: the n-th update uses d_n = min(decay, n / (9 + n)) for n >= 2 (the first copies the weights)
    expected = live[0]
    for n, weights in enumerate(live[1:], start=2):
        d = min(decay, n / (9 + n))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    assert any((e - w).abs().max() > 1e-6 for e, w in zip(expected, live[-1]))  # the average differs from the weights
    with trainer.ema_weights():
        for p, e in zip(trainer.trainable_params, expected):
            torch.testing.assert_close(p.detach(), e)
    for p, w in zip(trainer.trainable_params, live[-1]):  # live weights are back after the block
        torch.testing.assert_close(p.detach(), w, rtol=0, atol=0)

    trainer.save_model()
    saved = load_file(str(tmp_path / "pytorch_lora_weights.safetensors"))
    with trainer.ema_weights():
        ema_state = get_peft_model_state_dict(trainer.accelerator.unwrap_model(trainer.transformer))
    assert len(saved) == len(ema_state) > 0
    for value, reference in zip(sorted(saved.items()), sorted(ema_state.items())):
        torch.testing.assert_close(value[1], reference[1])

    resumed = FlowGRPOTrainer(sd3_path, brightness, _args(tmp_path / "resumed", max_steps=3, ema_decay=decay), PROMPTS)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))  # nothing left to train: the state only
    assert resumed.ema.optimization_step == 3
    for a, b in zip(resumed.ema.shadow_params, expected):
        torch.testing.assert_close(a, b)


def test_sample_images_are_saved_every_sample_steps_and_reward_parts_are_logged(sd3_path, tmp_path):
    class BrightnessWithParts:  # a reward that exposes its parts, as FlowRTPOReward does
        __name__ = "brightness_parts"

        def __call__(self, prompts, images, **kwargs):
            values = brightness(prompts, images)
            self.last_components = {"doubled": [2 * v for v in values], "text": ["x"] * len(values), "masked": 0}
            return values

    args = _args(tmp_path, max_steps=2, sample_steps=1, num_sample_prompts=3)
    trainer = FlowGRPOTrainer(sd3_path, BrightnessWithParts(), args, PROMPTS + ["a lighthouse"])
    trainer.train()
    history = trainer.state.log_history
    assert history[0]["rewards/brightness_parts/doubled"] == pytest.approx(2 * history[0]["reward"], rel=1e-5)
    assert history[0]["rewards/brightness_parts/masked"] == 0 and "rewards/brightness_parts/text" not in history[0]
    for step in (1, 2):
        files = sorted(os.listdir(tmp_path / "samples" / f"step-{step}"))
        assert files == ["000.png", "001.png", "002.png", "prompts.txt"]
    assert (tmp_path / "samples" / "step-1" / "prompts.txt").read_text().splitlines() == (PROMPTS + ["a lighthouse"])[
        :3
    ]
    again = trainer.save_samples(directory=str(tmp_path / "again"))  # fixed seed: same weights, same images
    assert [Path(p).read_bytes() for p in again] == [
        (tmp_path / "samples" / "step-2" / f"{i:03d}.png").read_bytes() for i in range(3)
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_generations": 1}, "num_generations"),
        ({"per_device_train_batch_size": 6}, "multiple of"),
        ({"noise_level": 0.0}, "noise_level"),
        ({"scale_rewards": "prompt"}, "scale_rewards"),
        ({"timestep_fraction": 0.1}, "at least one step"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"beta": -0.04}, "beta"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **overrides)


def test_resolution_must_fit_the_vae_and_patch_factors_and_unscored_steps_are_skipped(sd3_path, tmp_path):
    with pytest.raises(ValueError, match="resolution=30 must be a multiple of"):
        FlowGRPOTrainer(sd3_path, brightness, _args(tmp_path, resolution=30), PROMPTS)
    # the config's default 512 px is 128 patches a side on the tiny SD3 (VAE 2 x patch 2), past its 96 positions
    with pytest.raises(
        ValueError, match=r"resolution=512 is 128 patches .*\(pos_embed_max_size=96\): use resolution <= 384"
    ):
        FlowGRPOTrainer(sd3_path, brightness, _args(tmp_path, resolution=512), PROMPTS)

    def unscored(prompts, images, **kwargs):
        return [None] * len(prompts)

    trainer = FlowGRPOTrainer(sd3_path, unscored, _args(tmp_path, max_steps=2), PROMPTS)
    before = [p.detach().clone() for p in trainer.trainable_params]
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.trainable_params))
    assert trainer.state.log_history[-1]["skipped_steps_count"] == 2


def test_gradient_accumulation_applies_every_micro_batch_as_one_batch_would(sd3_path, tmp_path):
    """Issue 18, item 9: with `gradient_accumulation_steps=2`, every step is an optimizer step (it used to step every
    second rollout: no grad_norm at step 3, whose gradient was never applied) over twice the images of a micro-batch;
    gradient norms and SGD weight changes equal those of the same rollouts trained with the whole minibatch in one
    micro-batch (unscored samples included: their weight is normalised over the update, not over the micro-batch)."""

    def some_unscored(prompts, images, **kwargs):
        return [None if i % 3 == 0 else float(images[i].mean()) for i in range(len(prompts))]

    changes, grad_norms = {}, {}
    for accumulation, batch_size in ((2, 4), (1, 8)):
        args = _args(
            tmp_path / f"ga{accumulation}",
            max_steps=3,
            beta=0.04,
            optim="sgd",
            learning_rate=1.0,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        trainer = FlowGRPOTrainer(sd3_path, some_unscored, args, PROMPTS)
        before = [p.detach().clone() for p in trainer.trainable_params]
        trainer.train()
        changes[accumulation] = torch.cat([(p - b).flatten() for p, b in zip(trainer.trainable_params, before)])
        grad_norms[accumulation] = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
        assert len(grad_norms[accumulation]) == 3
    # (float rounding differs with the split; the later rollouts are sampled with the slightly different weights)
    torch.testing.assert_close(grad_norms[2], grad_norms[1], rtol=1e-4, atol=0)
    scale = changes[1].abs().max().item()
    print(
        f"weight change: max {scale:.3e}, max difference accumulated - one batch {(changes[2] - changes[1]).abs().max():.3e}"
    )
    assert scale > 0
    torch.testing.assert_close(changes[2], changes[1], rtol=0, atol=1e-4 * scale)
