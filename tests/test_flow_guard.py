"""The reward-hacking guard of the flow trainers: held-out rewards and image statistics of the `sample_steps` samples,
checked against numpy computations on the saved PNG files; the held-out rewards never reach the update."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_flow_grpo import PROMPTS, TINY_FLOW_ARGS, brightness

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer, FlowRTPOConfig, FlowRTPOTrainer
from trl_ext.testing import save_tiny_sd3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd3_path(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3"))


def _pngs(directory) -> np.ndarray:
    """The saved samples as float RGB arrays (N, H, W, 3) in [0, 1]."""
    files = sorted(p for p in directory.iterdir() if p.suffix == ".png")
    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255 for p in files])


def _statistics(images: np.ndarray) -> dict[str, float]:
    """Dark-pixel fraction (luma < 0.05), colour entropy over 8 levels per channel (bits) and the share of the luma's
    non-DC spectral energy above half the Nyquist frequency, by numpy, averaged over the images."""
    luma = images @ np.array([0.299, 0.587, 0.114])
    dark = (luma < 0.05).mean(axis=(1, 2))
    entropy = []
    for image in images:
        levels = np.minimum((image * 8).astype(int), 7).reshape(-1, 3)
        _, counts = np.unique(levels, axis=0, return_counts=True)
        p = counts / counts.sum()
        entropy.append(-(p * np.log2(p)).sum())
    high = []
    for y in luma:
        power = np.abs(np.fft.fft2(y)) ** 2
        fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
        radius = np.hypot(fy, fx)
        high.append(power[radius > 0.25].sum() / power[radius > 0].sum())
    return {
        "images/dark_fraction": dark.mean(),
        "images/colour_entropy": np.mean(entropy),
        "images/high_frequency": np.mean(high),
    }


def redness(prompts, images, **kwargs):  # a held-out reward: the red channel's share
    return (images[:, 0].mean(dim=(1, 2)) / images.mean(dim=(1, 2, 3)).clamp(min=1e-6) / 3).tolist()


def test_held_out_rewards_and_image_statistics_are_logged_per_sample_steps_and_never_trained_on(sd3_path, tmp_path):
    calls = []

    def recorded_redness(prompts, images, **kwargs):
        calls.append((list(prompts), images.shape[0], sorted(kwargs)))
        return redness(prompts, images)

    recorded_redness.__name__ = "redness"
    dataset = {"prompt": PROMPTS + ["a lighthouse"], "topic": ["a", "b", "c", "d", "e"]}
    from datasets import Dataset

    runs = {}
    for name, held_out in (("guarded", [recorded_redness]), ("plain", None)):
        args = FlowGRPOConfig(
            **{**TINY_FLOW_ARGS, "output_dir": str(tmp_path / name), "max_steps": 2, "sample_steps": 1},
            num_sample_prompts=3,
        )
        trainer = FlowGRPOTrainer(
            sd3_path, brightness, args, Dataset.from_dict(dataset), held_out_reward_funcs=held_out
        )
        trainer.train()
        runs[name] = trainer
    guarded, plain = runs["guarded"], runs["plain"]
    # called on the 3 sample images of each sample step only (with the dataset's other columns), never on rollouts
    assert calls == [(PROMPTS[:3], 3, ["topic"])] * 2
    history = guarded.state.log_history
    training, samples = history[0::2], history[1::2]
    assert [h["step"] for h in samples] == [1, 2] and all("reward" in h for h in training)
    for entry in samples:
        images = _pngs(tmp_path / "guarded" / "samples" / f"step-{entry['step']}")
        for key, value in _statistics(images).items():
            assert entry[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        red = images[..., 0].mean(axis=(1, 2)) / np.maximum(images.mean(axis=(1, 2, 3)), 1e-6) / 3
        assert entry["held_out/rewards/redness/mean"] == pytest.approx(red.mean(), rel=1e-5)
        assert entry["held_out/reward"] == pytest.approx(red.mean(), rel=1e-5)
        assert entry["held_out/rewards/redness/masked_count"] == 0
        assert "reward" not in entry  # the examples' `if "reward" in h` still reads the training rewards only
    # the held-out reward changes nothing of the training: same weights, same training logs as without it
    for a, b in zip(guarded.trainable_params, plain.trainable_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    plain_history = plain.state.log_history
    assert [h for h in plain_history if "reward" in h] == training
    assert all("held_out/reward" not in h for h in plain_history)
    assert {k for h in plain_history if "reward" not in h for k in h} >= {"images/dark_fraction", "step"}


def test_flow_rtpo_takes_held_out_rewards_too(sd3_path, tmp_path):
    args = FlowRTPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path), "sample_steps": 1}, num_sample_prompts=2)
    trainer = FlowRTPOTrainer(sd3_path, brightness, args, PROMPTS, held_out_reward_funcs=redness)
    trainer.train()
    assert "held_out/rewards/redness/mean" in trainer.state.log_history[-1]
