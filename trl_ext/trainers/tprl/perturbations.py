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
"""Image perturbations I → I′ used by Token Perception RL to measure how much each generated token depends on the image."""

from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image


PerturbationName = Literal["patch_blackening", "gaussian_noise", "blank"]
Perturbation = Callable[[Image.Image, np.random.Generator], Image.Image]


def random_patch_blackening(
    image: Image.Image, rng: np.random.Generator, patch_size: int = 14, probability: float = 0.5
) -> Image.Image:
    """Black out each `patch_size`×`patch_size` patch of a grid anchored at (0, 0) with probability `probability`.

    This is VPPO's default perturbation (14-pixel patches, p = 0.5), vectorised and driven by a seeded generator.
    """
    pixels = np.array(image.convert("RGB"))
    height, width = pixels.shape[:2]
    grid = rng.random((-(-height // patch_size), -(-width // patch_size))) < probability
    drop = np.kron(grid, np.ones((patch_size, patch_size), dtype=bool))[:height, :width]
    pixels[drop] = 0
    return Image.fromarray(pixels)


def gaussian_noise(image: Image.Image, rng: np.random.Generator, std: float = 64.0) -> Image.Image:
    """Add N(0, std²) noise to every pixel value (0–255 scale), clipped to [0, 255]."""
    pixels = np.array(image.convert("RGB")).astype(np.float32)
    pixels += rng.normal(0.0, std, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def blank_image(image: Image.Image, rng: np.random.Generator, value: int = 0) -> Image.Image:
    """Replace the image by a uniform image of the same size (`value` in every channel)."""
    return Image.new("RGB", image.size, (value, value, value))


def get_perturbation(
    name: PerturbationName | Perturbation,
    patch_size: int = 14,
    probability: float = 0.5,
    noise_std: float = 64.0,
) -> Perturbation:
    """Resolve a perturbation by name (or return a user callable `fn(image, rng) -> image` unchanged)."""
    if callable(name):
        return name
    if name == "patch_blackening":
        return lambda image, rng: random_patch_blackening(image, rng, patch_size, probability)
    if name == "gaussian_noise":
        return lambda image, rng: gaussian_noise(image, rng, noise_std)
    if name == "blank":
        return blank_image
    raise ValueError(
        f"Unknown perturbation {name!r}; choose 'patch_blackening', 'gaussian_noise', 'blank' or pass a callable."
    )
