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
"""Image statistics that drift when an image policy hacks its reward: the share of dark pixels, the entropy of the
colours and the share of high-frequency energy. A policy trained on an aesthetic or brightness reward that starts
washing images out, collapsing to a few colours or painting noise moves these before a human looks at a sample."""

import torch


# ITU-R BT.601 luma weights
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B of float images (B, 3, H, W) in [0, 1], as (B, H, W)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, weights)


def dark_pixel_fraction(images: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Per image (B,), the share of pixels whose luma is below `threshold`."""
    return (luminance(images) < threshold).float().mean(dim=(1, 2))


def colour_entropy(images: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """Per image (B,), the Shannon entropy in bits of its colours quantised to `bins` levels per channel:
    H = -Σ_c p_c log2 p_c over the bins³ colours, from 0 (one colour) to log2(min(bins³, H·W))."""
    levels = (images.clamp(0, 1) * bins).long().clamp(max=bins - 1)  # (B, 3, H, W)
    codes = (levels[:, 0] * bins + levels[:, 1]) * bins + levels[:, 2]  # (B, H, W)
    counts = torch.stack([torch.bincount(row.flatten(), minlength=bins**3) for row in codes]).float()
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(dim=1)


def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """Per image (B,), the share of the luma's spectral energy (DC left out) at radial frequencies above `cutoff`
    times Nyquist: Σ_{|f| > cutoff·f_N} |F(f)|² / Σ_{f ≠ 0} |F(f)|², with |f| = sqrt(f_x² + f_y²) in cycles per pixel
    and f_N = 1/2. A constant image has no such energy: 0."""
    luma = luminance(images.float())
    spectrum = torch.fft.fft2(luma).abs().pow(2)  # (B, H, W)
    fy = torch.fft.fftfreq(luma.size(1), device=luma.device)
    fx = torch.fft.fftfreq(luma.size(2), device=luma.device)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()
    non_dc = radius > 0
    high = radius > cutoff * 0.5
    total = (spectrum * non_dc).sum(dim=(1, 2))
    return torch.where(
        total > 0, (spectrum * high).sum(dim=(1, 2)) / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0
    )


def image_statistics(images: torch.Tensor) -> dict[str, float]:
    """Batch means of the three statistics for float images (B, 3, H, W) in [0, 1], keyed as a trainer logs them:
    `images/dark_fraction`, `images/colour_entropy` (bits, at most log2(512) = 9) and `images/high_frequency`."""
    if images.dim() != 4 or images.size(1) != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got shape {tuple(images.shape)}.")
    return {
        "images/dark_fraction": dark_pixel_fraction(images).mean().item(),
        "images/colour_entropy": colour_entropy(images).mean().item(),
        "images/high_frequency": high_frequency_energy(images).mean().item(),
    }
