"""Fewer stochastic steps per update: the SDE window (Flow-GRPO-Fast / MixGRPO) and coefficient-preserving sampling
(CPS, `sde_type="cps"`). The CPS step is derived again here from the research note's formula (with σ'·cos(aπ/2) for
the noise coefficient, not the implementation's sqrt(σ'² − std²)) and its log-probability from `torch.distributions`;
the steps outside a window are checked against diffusers' own Euler step."""

import math

import numpy as np
import pytest
import torch
from test_flow_grpo import PROMPTS, TINY_FLOW_ARGS, brightness

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.models.flow import (
    FlowSamplingConfig,
    sample_trajectories,
    sde_step_with_logprob,
    trajectory_step_log_prob,
)
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH, save_tiny_sd3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd3_path(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture
def pipeline(sd3_path):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sampling(sde_type: str = "sde", noise_level: float = 0.7) -> FlowSamplingConfig:
    return FlowSamplingConfig(
        num_inference_steps=4,
        guidance_scale=4.5,
        noise_level=noise_level,
        height=32,
        width=32,
        max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
        sde_type=sde_type,
    )


def test_cps_step_equals_the_formula_of_the_research_note():
    torch.manual_seed(0)
    sample, velocity = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    sigma, sigma_next, a = 0.8, 0.6, 0.7
    out = sde_step_with_logprob(
        velocity, sample, sigma, sigma_next, 0.95, a, generator=torch.Generator().manual_seed(1), sde_type="cps"
    )
    # x0_hat = x - sigma v (the clean image), x1_hat = x + (1 - sigma) v (the noise); the noise that the step keeps
    # and the noise it adds share sigma' between them as cos and sin of a pi / 2
    x0_hat, x1_hat = sample - sigma * velocity, sample + (1 - sigma) * velocity
    std = sigma_next * math.sin(a * math.pi / 2)
    mean = (1 - sigma_next) * x0_hat + sigma_next * math.cos(a * math.pi / 2) * x1_hat
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.std.flatten(), torch.full((3,), std))
    # the noise really is std * N(0, 1) with the generator's draw
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.prev_sample, mean + std * noise)
    density = torch.distributions.Normal(mean, std).log_prob(out.prev_sample).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob, density)
    # the original code's "log-probability" is -mean((x' - mean)^2): ours is it / (2 std^2) minus the normalising terms
    original = -((out.prev_sample - mean) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob, original / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi))
    # per-row sigmas (a batch at different noise levels) give the same step as the scalar ones
    rows = sde_step_with_logprob(
        velocity,
        sample,
        torch.full((3,), sigma),
        torch.full((3,), sigma_next),
        0.95,
        a,
        prev_sample=out.prev_sample,
        sde_type="cps",
    )
    torch.testing.assert_close(rows.mean, out.mean)
    torch.testing.assert_close(rows.log_prob, out.log_prob)


def test_cps_limits_noise_free_is_euler_and_the_last_step_is_the_clean_prediction(pipeline):
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(4)
    sample, velocity = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    sigmas = scheduler.sigmas
    euler = scheduler.step(velocity, scheduler.timesteps[1], sample, return_dict=False)[0]
    out = sde_step_with_logprob(velocity, sample, sigmas[1], sigmas[2], sigmas[1], 0.0, sde_type="cps")
    torch.testing.assert_close(out.prev_sample, euler, rtol=0, atol=1e-5)
    assert out.log_prob.abs().max() == 0
    # sigma' = 0: std = 0, no noise drawn, x' = x0_hat; its log-probability is 0, never NaN
    last = sde_step_with_logprob(velocity, sample, sigmas[3], 0.0, sigmas[1], 0.7, sde_type="cps")
    torch.testing.assert_close(last.prev_sample, sample - sigmas[3] * velocity)
    assert last.log_prob.abs().max() == 0
    with pytest.raises(ValueError, match="sde_type"):
        sde_step_with_logprob(velocity, sample, 0.5, 0.4, 0.9, 0.7, sde_type="ode")


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_window_steps_are_stochastic_and_on_policy_the_others_are_noise_free_euler_steps(pipeline, sde_type):
    config = _sampling(sde_type)
    trajectory = sample_trajectories(
        pipeline, PROMPTS, config, generator=torch.Generator().manual_seed(0), sde_window=(1, 3)
    )
    assert trajectory.sde_window == (1, 3) and trajectory.latents.shape[1] == 5
    scheduler = pipeline.scheduler  # (set up by the rollout)
    conditioning = trajectory.conditioning
    for step in range(4):
        latents = trajectory.latents[:, step]
        velocity = trajectory.adapter.predict_velocity(
            pipeline.transformer, latents, trajectory.timesteps[step], conditioning, config
        )
        euler = scheduler.step(velocity, trajectory.timesteps[step], latents, return_dict=False)[0]
        scheduler._step_index = None  # (diffusers counts steps: look the timestep up again next time)
        distance = (trajectory.latents[:, step + 1] - euler).abs().max().item()
        if step in (1, 2):  # SDE steps: noise drawn, a log-probability, recomputed exactly (ratio 1)
            assert distance > 1e-2 and (trajectory.log_probs[:, step] != 0).all()
            recomputed = trajectory_step_log_prob(pipeline.transformer, trajectory, step, config)
            torch.testing.assert_close(recomputed.log_prob, trajectory.log_probs[:, step], rtol=0, atol=0)
        else:  # ODE steps: the deterministic Euler step, no log-probability, refused by the recomputation
            assert distance < 1e-5 and (trajectory.log_probs[:, step] == 0).all()
            with pytest.raises(ValueError, match=f"Step {step} is outside the trajectory's SDE window"):
                trajectory_step_log_prob(pipeline.transformer, trajectory, step, config)


def test_a_window_over_every_step_samples_what_no_window_samples(pipeline):
    config = _sampling()
    full = sample_trajectories(pipeline, PROMPTS, config, generator=torch.Generator().manual_seed(3))
    window = sample_trajectories(
        pipeline, PROMPTS, config, generator=torch.Generator().manual_seed(3), sde_window=(0, 4)
    )
    assert full.sde_window == (0, 4)
    torch.testing.assert_close(window.latents, full.latents, rtol=0, atol=0)
    torch.testing.assert_close(window.log_probs, full.log_probs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="sde_window"):
        sample_trajectories(pipeline, PROMPTS, config, sde_window=(2, 5))


# Trainer: which steps are sampled and trained, and what they are trained on


def _args(tmp_path, **overrides):
    return FlowGRPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path), **overrides})


def _trained_steps(monkeypatch) -> list[int]:
    """Records the step of every log-probability the trainer recomputes (with gradient: the trained steps)."""
    import trl_ext.trainers.flow.trainer as flow_trainer

    steps, recompute = [], flow_trainer.trajectory_step_log_prob

    def recording(transformer, trajectory, step, *args, **kwargs):
        if torch.is_grad_enabled():
            steps.append(step)
        return recompute(transformer, trajectory, step, *args, **kwargs)

    monkeypatch.setattr(flow_trainer, "trajectory_step_log_prob", recording)
    return steps


def test_a_window_over_every_step_trains_exactly_as_without_one(sd3_path, tmp_path):
    runs = []
    for name, window in (("full", {}), ("window", {"sde_window_size": 4})):
        args = _args(tmp_path / name, max_steps=2, timestep_fraction=1.0, beta=0.04, num_mini_batches=2, **window)
        trainer = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
        trainer.train()
        runs.append((trainer.trainable_params, trainer.state.log_history))
    (full, full_logs), (window, window_logs) = runs
    for a, b in zip(full, window):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(full_logs) == len(window_logs) == 2
    for logged, expected in zip(window_logs, full_logs):
        assert logged.pop("flow/sde_window_start") == 0
        assert logged == expected


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_only_the_window_is_trained_on_policy_and_the_kl_is_the_gaussian_kl(sd3_path, tmp_path, monkeypatch, sde_type):
    if sde_type == "sde":  # a window that may reach the last step
        args = _args(tmp_path, sde_window_size=2, sde_window_range=[1, 4], timestep_fraction=1.0, beta=0.04)
    else:  # CPS's last step is deterministic: its windows end before it
        args = _args(tmp_path, sde_type="cps", sde_window_size=2, sde_window_range=[0, 3], beta=0.04)
    trainer = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
    trained = _trained_steps(monkeypatch)
    window = trainer.sde_window()
    logs = trainer.training_step()
    assert trained == list(range(*window))  # one micro-batch: each window step once
    assert logs["flow/sde_window_start"] == window[0]
    assert logs["flow/ratio"] == pytest.approx(1.0, abs=1e-6) and logs["clip_ratio/region_mean"] == 0.0
    if sde_type == "sde":
        return
    # CPS's KL to the base model is KL(N(mu, s^2) || N(mu_ref, s^2)) from torch.distributions, s = sigma' sin(a pi / 2)
    from diffusers import StableDiffusion3Pipeline

    base = StableDiffusion3Pipeline.from_pretrained(sd3_path)
    with torch.no_grad():
        for name, param in trainer.transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    trajectory = sample_trajectories(
        trainer.adapter,
        PROMPTS,
        trainer.sampling,
        generator=torch.Generator().manual_seed(1),
        transformer=trainer.accelerator.unwrap_model(trainer.transformer),
        sde_window=(0, 3),
    )
    indices = torch.tensor([3, 1])
    for step in range(3):
        policy = trajectory_step_log_prob(trainer.transformer, trajectory, step, trainer.sampling, indices)
        reference = trajectory_step_log_prob(base.transformer, trajectory, step, trainer.sampling, indices)
        std = float(trajectory.sigmas[step + 1]) * math.sin(0.7 * math.pi / 2)
        torch.testing.assert_close(policy.std.flatten(), torch.full((2,), std))
        expected = torch.distributions.kl_divergence(
            torch.distributions.Normal(policy.mean, std), torch.distributions.Normal(reference.mean, std)
        ).mean(dim=(1, 2, 3))
        assert (expected > 1e-6).all()
        kl = trainer._kl_to_reference(trajectory, step, indices, policy.mean, policy.std)
        torch.testing.assert_close(kl, expected, rtol=1e-4, atol=0)


def test_the_window_is_drawn_from_the_seed_and_the_step(sd3_path, tmp_path):
    args = _args(tmp_path, num_inference_steps=10, sde_window_size=2, sde_window_range=[0, 5])
    trainer = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
    windows = []
    for step in range(40):
        trainer.state.global_step = step
        windows.append(trainer.sde_window())
    # Flow-GRPO-Fast's range: the window lies within steps [0, 5), so it starts at 0, 1, 2 or 3, each drawn
    assert {start for start, _ in windows} == {0, 1, 2, 3} and all(end == start + 2 for start, end in windows)
    trainer.state.global_step = 7
    again = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
    again.state.global_step = 7
    assert again.sde_window() == trainer.sde_window() == windows[7]  # a fresh trainer (another rank, a resume)
    args.seed = 1
    other_seed = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
    drawn = []
    for step in range(40):
        other_seed.state.global_step = step
        drawn.append(other_seed.sde_window())
    assert drawn != windows


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sde_type": "ode"}, "sde_type"),
        ({"sde_window_size": 0}, "sde_window_size"),
        ({"sde_window_size": 5}, "sde_window_size"),
        ({"sde_window_range": [0, 3]}, "sde_window_range needs sde_window_size"),
        ({"sde_window_size": 2, "sde_window_range": [2, 3]}, "sde_window_range"),
        ({"sde_window_size": 2, "sde_window_range": [0, 4]}, "timestep_fraction"),
        ({"sde_type": "cps", "timestep_fraction": 1.0}, "last step"),
        ({"sde_type": "cps", "noise_level": 1.2}, "noise_level"),
    ],
)
def test_config_rejects_bad_windows(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **overrides)


@pytest.mark.distributed
def test_two_processes_draw_the_same_windows_and_keep_identical_weights(sd3_path, launch_two_processes):
    ranks = launch_two_processes("flow_window_two_steps.py", sd3_path)
    windows = ranks[0]["windows"]
    assert len(windows) == 3 and ranks[1]["windows"] == windows
    assert len({tuple(w) for w in windows}) > 1  # drawn anew per step (seed 0: starts 2, 1, 2)
    assert set(ranks[0]["prompts"][:4]).isdisjoint(ranks[1]["prompts"][:4])  # the first step's prompts differ
    torch.testing.assert_close(torch.tensor(ranks[0]["lora"]), torch.tensor(ranks[1]["lora"]), rtol=0, atol=0)


def test_a_cps_window_of_two_learns_to_raise_brightness(sd3_path, tmp_path):
    """Training only a 2-step window of 4 (CPS, Flow-GRPO-Fast's set-up at toy size) still learns the toy task. The
    window is the first two steps: the tiny schedule's third step ends at sigma' = 0.009, where CPS's std
    sigma' sin(a pi / 2) is 0.008 and its Gaussian log-probability so sharp that the clipped updates stall (measured:
    no gain in 40 steps with windows in [0, 3), +0.13 in [0, 2))."""
    args = _args(
        tmp_path,
        max_steps=60,
        learning_rate=0.3,
        num_mini_batches=2,
        sde_type="cps",
        noise_level=0.8,
        sde_window_size=2,
        sde_window_range=[0, 2],
    )
    trainer = FlowGRPOTrainer(sd3_path, brightness, args, PROMPTS)
    trainer.train()
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history]
    start, end, noise = np.mean(rewards[:10]), np.mean(rewards[-10:]), history[0]["reward_std"]
    print(f"CPS window brightness: first 10 steps {start:.4f}, last 10 steps {end:.4f} (within-batch std {noise:.4f})")
    assert end - start > max(0.1, 5 * noise)
    assert {h["flow/sde_window_start"] for h in history} == {0}
