"""Image statistics of the reward-hacking guard, against hand-computed values."""

import math

import pytest
import torch

from trl_ext.evaluation.image_statistics import (
    colour_entropy,
    dark_pixel_fraction,
    high_frequency_energy,
    image_statistics,
)


def _constant(rgb, size=8):
    return torch.tensor(rgb, dtype=torch.float32)[None, :, None, None].expand(1, 3, size, size).clone()


def test_dark_pixel_fraction():
    half = torch.ones(1, 3, 4, 4)
    half[..., :2, :] = 0.0
    assert dark_pixel_fraction(half).item() == 0.5
    assert dark_pixel_fraction(_constant([0.0, 0.0, 0.0])).item() == 1.0
    # luma of pure blue is 0.114: dark below a 0.2 threshold, not below 0.1
    assert dark_pixel_fraction(_constant([0.0, 0.0, 1.0]), threshold=0.2).item() == 1.0
    assert dark_pixel_fraction(_constant([0.0, 0.0, 1.0]), threshold=0.1).item() == 0.0


def test_colour_entropy():
    assert colour_entropy(_constant([0.3, 0.6, 0.9])).item() == 0.0
    two = _constant([1.0, 0.0, 0.0])
    two[..., :, :4] = 0.0  # half red, half black: one bit
    assert colour_entropy(two).item() == pytest.approx(1.0)
    four = torch.zeros(1, 3, 2, 2)
    four[0, :, 0, 0], four[0, :, 0, 1], four[0, :, 1, 0] = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), 1.0
    assert colour_entropy(four).item() == pytest.approx(2.0)  # four different colours, equally often
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert math.log2(512) - 0.2 < colour_entropy(noise).item() <= math.log2(512)


def test_high_frequency_energy():
    assert high_frequency_energy(_constant([0.5, 0.5, 0.5])).item() == 0.0
    checkerboard = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float().expand(1, 3, 8, 8)
    assert high_frequency_energy(checkerboard).item() == pytest.approx(1.0)  # all energy at (1/2, 1/2)
    # one cosine period across the image: frequency 1/32 cycles per pixel, below half Nyquist
    ramp = (0.5 + 0.5 * torch.cos(2 * math.pi * torch.arange(32) / 32))[None, None, None, :].expand(1, 3, 32, 32)
    assert high_frequency_energy(ramp).item() == pytest.approx(0.0, abs=1e-6)
    # stripes of period 2 along x only: |f| = 1/2 > cutoff 1/4
    stripes = (torch.arange(16) % 2).float()[None, None, None, :].expand(1, 3, 16, 16)
    assert high_frequency_energy(stripes).item() == pytest.approx(1.0)


def test_image_statistics_keys_and_bad_shape():
    stats = image_statistics(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert set(stats) == {"images/dark_fraction", "images/colour_entropy", "images/high_frequency"}
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        image_statistics(torch.rand(3, 16, 16))
