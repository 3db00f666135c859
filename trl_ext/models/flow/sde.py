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
r"""The SDE form of flow-matching sampling, with per-step Gaussian log-probabilities (Flow-GRPO).

A rectified-flow model predicts a velocity v_θ(x_t, t) for x_t = (1 − t)·x_0 + t·ε, and diffusers'
`FlowMatchEulerDiscreteScheduler` integrates the ODE dx = v dt from σ = 1 to 0. Flow-GRPO
([arXiv 2505.05470](https://huggingface.co/papers/2505.05470)) replaces it by the marginal-preserving SDE

    dx = [v + σ_t²/(2t)·(x + (1 − t)·v)] dt + σ_t dw,    σ_t = a·sqrt(t / (1 − t)),

whose Euler–Maruyama step from σ to σ' (dt = σ' − σ < 0) is Gaussian:

    std  = a·sqrt(σ / (1 − σ))                (at σ = 1 the denominator uses 1 − σ_1)
    mean = x·(1 + std²/(2σ)·dt) + v·(1 + std²·(1 − σ)/(2σ))·dt
    x'   = mean + std·sqrt(−dt)·z,            z ~ N(0, I)

and log π(x' | x) is the mean over latent elements of log N(x'; mean, std²·(−dt)). a = `noise_level`; a → 0 gives
the Euler ODE step. Rollout and recompute share one [`FlowSamplingConfig`], so the recomputed log-probability of a
recorded transition equals the rollout's exactly (ratio 1 before the first update).

`sde_type="cps"` takes the coefficient-preserving step of Flow-CPS / Flow-GRPO-Fast instead: from the predictions
x̂₀ = x − σ·v (the clean image) and x̂₁ = x + (1 − σ)·v (the noise),

    std  = σ'·sin(a·π/2)
    mean = (1 − σ')·x̂₀ + sqrt(σ'² − std²)·x̂₁
    x'   = mean + std·z,

so x' keeps the marginal's coefficients (1 − σ') on the image and σ' on the noise (σ'² = (σ'² − std²) + std²); a → 0
is again the Euler step, and the last step (σ' = 0) is deterministic. Its log-probability here is the Gaussian's, the
mean over latent elements of log N(x'; mean, std²), and the KL between two such steps is ‖μ − μ'‖² / (2·std²).
Difference from the original code (`yifan123/flow_grpo`, `sde_step_with_logprob(..., sde_type="cps")`): the same
mean and std, but its "log-probability" is −mean((x' − mean)²), without the 1/(2·std²) factor and the normalising
terms, so its log-ratios are ours times 2·std² (a per-step constant): the ratio is 1 on-policy in both, but a clip
range tuned for the original's CPS (1e-5 in its fast configs) is far tighter than the same value here. CPS's std
shrinks with σ', so the density of a late step (small σ') is very sharp and its ratio moves far with a small update:
train CPS on early steps (Flow-GRPO-Fast's windows lie in the first half of the trajectory).

An SDE window (Flow-GRPO-Fast, MixGRPO) samples only the steps [start, end) with the SDE (or CPS) and takes the
deterministic noise-free step everywhere else ([`sample_trajectories`]'s `sde_window`): the ODE steps have no
log-probability and are not trained.

The sampler is one for every pipeline family: what differs between families (latent packing, conditioning, guidance,
timestep schedule, the transformer's call, decoding) comes from the family's adapter
([`~trl_ext.models.flow.flow_adapter`]).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .base import FlowAdapter


@dataclass
class FlowSamplingConfig:
    """Settings shared by rollouts and by the recomputation of their log-probabilities (they must never differ).

    No defaults here: trainers build it from their config ([`~trl_ext.FlowGRPOConfig.sampling_config`]), where the
    defaults are declared once.

    Args:
        num_inference_steps: Denoising steps per rollout.
        guidance_scale: Guidance scale: classifier-free guidance (SD3; <= 1: none) or the guidance embedding's value
            (FLUX.1-dev), as the family's adapter applies it.
        noise_level: SDE noise level a (0: deterministic ODE sampling).
        height, width: Image size in pixels.
        max_sequence_length: Prompt length of the (T5) text encoder.
        condition_area: Pixel area an editing family resizes the condition image to (`None`: the pipeline's own).
        sde_type: The stochastic step: `"sde"` (Flow-GRPO's SDE) or `"cps"` (coefficient-preserving sampling).
        true_cfg_scale: True classifier-free guidance of a family whose `guidance_scale` feeds a guidance embedding
            (FLUX.1: `FluxPipeline`'s `true_cfg_scale`; <= 1: none).
        negative_prompt: The unconditional prompt of that true CFG.
    """

    num_inference_steps: int
    guidance_scale: float
    noise_level: float
    height: int
    width: int
    max_sequence_length: int
    condition_area: int | None = None
    sde_type: Literal["sde", "cps"] = "sde"
    true_cfg_scale: float = 1.0
    negative_prompt: str = ""


@dataclass
class SDEStepOutput:
    """One SDE transition: the next latent, its log-probability (B,), and the Gaussian's mean and std."""

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    sigma_max: torch.Tensor | float,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sde_type: Literal["sde", "cps"] = "sde",
) -> SDEStepOutput:
    """Take (or score) one stochastic step from noise level `sigma` to `sigma_next`: Flow-GRPO's SDE step or the
    coefficient-preserving one (formulas in the module doc).

    Args:
        velocity (`torch.Tensor`): The model's (CFG-mixed) velocity at `sample`.
        sample (`torch.Tensor`): x at `sigma`, shape (B, ...) (e.g. (B, C, H, W), or FLUX's packed (B, L, 4C)).
        sigma, sigma_next (`float` or `torch.Tensor`): Scheduler sigmas of this step and the next (scalars or (B,)).
        sigma_max (`float` or `torch.Tensor`): The scheduler's second sigma, used instead of σ when σ = 1 (`"sde"`).
        noise_level (`float`): a ≥ 0.
        prev_sample (`torch.Tensor`, *optional*): A recorded next latent to score; sampled when omitted.
        generator (`torch.Generator`, *optional*): For the noise when sampling.
        sde_type (`str`, *optional*, defaults to `"sde"`): `"sde"` or `"cps"`.

    Returns:
        [`SDEStepOutput`]. With `noise_level=0` (or a zero std: CPS's last step) the step is deterministic (Euler's,
        up to rounding) and the log-probability is 0.
    """
    if sde_type not in ("sde", "cps"):
        raise ValueError(f"sde_type must be 'sde' or 'cps', got {sde_type!r}.")
    velocity, sample = velocity.float(), sample.float()
    batch, dims = sample.size(0), tuple(range(1, sample.dim()))
    scalar = torch.as_tensor(sigma).dim() == 0 and torch.as_tensor(sigma_next).dim() == 0
    if scalar:
        # one noise level for the batch (rollouts and their recomputation): scalar coefficients, a few ops per step
        sigma, sigma_next, sigma_max = float(sigma), float(sigma_next), float(sigma_max)
    else:
        shape = (-1,) + (1,) * (sample.dim() - 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=sample.device).reshape(shape)
        sigma_next = torch.as_tensor(sigma_next, dtype=torch.float32, device=sample.device).reshape(shape)
    if sde_type == "cps":
        std_dev = sigma_next * math.sin(noise_level * math.pi / 2)
        keep = sigma_next**2 - std_dev**2  # the noise prediction's coefficient, squared (>= 0 up to rounding)
        keep = math.sqrt(max(keep, 0.0)) if scalar else keep.clamp(min=0).sqrt()
        mean = (1 - sigma_next) * (sample - sigma * velocity) + keep * (sample + (1 - sigma) * velocity)
        std = torch.as_tensor(std_dev, dtype=torch.float32, device=sample.device)
    else:
        if scalar:
            denominator = 1 - (sigma_max if sigma == 1 else sigma)
        else:
            denominator = 1 - torch.where(sigma == 1, torch.as_tensor(sigma_max, dtype=torch.float32), sigma)
        dt = sigma_next - sigma
        std_dev = noise_level * (sigma / denominator) ** 0.5
        mean = sample * (1 + std_dev**2 / (2 * sigma) * dt) + velocity * (
            (1 + std_dev**2 * (1 - sigma) / (2 * sigma)) * dt
        )
        std = torch.as_tensor(std_dev * (-dt) ** 0.5, dtype=torch.float32, device=sample.device)
    std_per_sample = std.reshape(-1).expand(batch)
    std = std_per_sample.reshape((batch,) + (1,) * len(dims))
    if noise_level == 0 or (scalar and std_dev == 0):
        prev = mean if prev_sample is None else prev_sample.float()
        return SDEStepOutput(prev, torch.zeros(batch, device=sample.device), mean, std)
    if prev_sample is None:
        # drawn where the generator lives (the trainers seed one on the CPU), then moved, as diffusers' randn_tensor
        # does: a CPU generator cannot draw on a CUDA device
        noise_device = generator.device if generator is not None else sample.device
        noise = torch.randn(sample.shape, generator=generator, device=noise_device, dtype=torch.float32)
        noise = noise.to(sample.device)
        prev_sample = mean + std * noise
    prev_sample = prev_sample.float()
    squared_error = (prev_sample.detach() - mean).pow(2).mean(dim=dims)
    log_prob = -squared_error / (2 * std_per_sample**2) - torch.log(std_per_sample) - 0.5 * math.log(2 * math.pi)
    return SDEStepOutput(prev_sample, log_prob, mean, std)


@dataclass
class FlowTrajectory:
    """A batch of recorded SDE rollouts.

    Attributes:
        images (`torch.Tensor`): Decoded images (B, 3, H, W) in [0, 1].
        latents (`torch.Tensor`): x at every step, (B, T + 1, ...) in the family's latent layout (FLUX: packed);
            `latents[:, i + 1]` follows `latents[:, i]`.
        log_probs (`torch.Tensor`): log π(x_{i+1} | x_i), (B, T); 0 at the deterministic steps outside the SDE window.
        sigmas (`torch.Tensor`): The scheduler's T + 1 sigmas.
        timesteps (`torch.Tensor`): The scheduler's T timesteps.
        conditioning (`dict[str, torch.Tensor]`): The transformer's conditioning inputs, one row per image (under
            true CFG 2B rows, the unconditional half first), as the adapter encoded them.
        adapter ([`FlowAdapter`]): The family adapter that sampled them (and recomputes their log-probabilities).
        sde_window (`tuple[int, int]`): The steps [start, end) sampled with the SDE (the others are deterministic and
            have no log-probability); (0, T) without a window (the default).
    """

    images: torch.Tensor
    latents: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    conditioning: dict[str, torch.Tensor]
    adapter: FlowAdapter
    sde_window: tuple[int, int] | None = None

    def __post_init__(self):
        if self.sde_window is None:
            self.sde_window = (0, self.log_probs.size(1))


def as_flow_adapter(pipeline) -> FlowAdapter:
    """`pipeline` itself if it is a [`FlowAdapter`], else the adapter of its family."""
    from .registry import flow_adapter

    return pipeline if isinstance(pipeline, FlowAdapter) else flow_adapter(pipeline)


@torch.no_grad()
def sample_trajectories(
    pipeline,
    prompts: list[str],
    config: FlowSamplingConfig,
    generator: torch.Generator | None = None,
    transformer=None,
    show_progress: bool = False,
    images: list | None = None,
    sde_window: tuple[int, int] | None = None,
) -> FlowTrajectory:
    """Sample images for `prompts` with the SDE, recording latents, timesteps and per-step log-probabilities.

    Args:
        pipeline (a supported diffusers pipeline or its [`FlowAdapter`]): Supplies the text encoders, scheduler, VAE
            and (by default) transformer.
        prompts (`list[str]`): One prompt per image (repeat a prompt for a group).
        config ([`FlowSamplingConfig`]): Steps, guidance, noise level, resolution.
        generator (`torch.Generator`, *optional*): For the initial noise and the SDE noise.
        transformer (*optional*): The transformer to sample with (e.g. the LoRA-wrapped one); defaults to the
            pipeline's.
        images (`list[PIL.Image.Image]`, *optional*): The condition image of each prompt, for a family that edits
            images (Qwen-Image-Edit: required there, refused elsewhere).
        sde_window (`tuple[int, int]`, *optional*): Sample only the steps [start, end) with the SDE (`config.sde_type`)
            and the others with the deterministic noise-free step, which draws no noise and has no log-probability
            (Flow-GRPO-Fast / MixGRPO); every step by default.
    """
    from tqdm.auto import tqdm

    adapter = as_flow_adapter(pipeline)
    transformer = transformer if transformer is not None else adapter.pipeline.transformer
    device = transformer.device
    conditioning = adapter.encode(prompts, config, device, images=images)
    latents, sigmas, timesteps = adapter.prepare_latents(len(prompts), config, transformer, device, generator)
    start, end = sde_window if sde_window is not None else (0, len(timesteps))
    if not 0 <= start < end <= len(timesteps):
        raise ValueError(f"sde_window={sde_window} must be steps [start, end) within the {len(timesteps)} steps.")
    all_latents, log_probs = [latents], []
    for i in tqdm(range(len(timesteps)), desc="sampling", disable=not show_progress):
        velocity = adapter.predict_velocity(transformer, latents, timesteps[i], conditioning, config)
        step = sde_step_with_logprob(
            velocity,
            latents,
            sigmas[i],
            sigmas[i + 1],
            sigmas[1],
            config.noise_level if start <= i < end else 0.0,
            generator=generator,
            sde_type=config.sde_type,
        )
        latents = step.prev_sample
        all_latents.append(latents)
        log_probs.append(step.log_prob)
    images = adapter.decode(latents, config)
    return FlowTrajectory(
        images,
        torch.stack(all_latents, 1),
        torch.stack(log_probs, 1),
        sigmas,
        timesteps,
        conditioning,
        adapter,
        (start, end),
    )


def trajectory_step_log_prob(
    transformer, trajectory: FlowTrajectory, step: int, config: FlowSamplingConfig, indices: torch.Tensor | None = None
) -> SDEStepOutput:
    """Recompute log π(x_{step+1} | x_step) of recorded transitions under `transformer` (differentiable).

    `indices` selects a sub-batch of the trajectory (for minibatches); the conditioning is sliced to match.

    Raises:
        `ValueError`: `step` is outside the trajectory's SDE window (a deterministic step has no log-probability).
    """
    if not trajectory.sde_window[0] <= step < trajectory.sde_window[1]:
        raise ValueError(
            f"Step {step} is outside the trajectory's SDE window {trajectory.sde_window}: it was sampled "
            "deterministically and has no log-probability."
        )
    adapter = trajectory.adapter
    indices = indices if indices is not None else torch.arange(trajectory.latents.size(0))
    conditioning = adapter.select_conditioning(trajectory.conditioning, indices, trajectory.latents.size(0), config)
    latents = trajectory.latents[indices, step]
    velocity = adapter.predict_velocity(transformer, latents, trajectory.timesteps[step], conditioning, config)
    sigmas = trajectory.sigmas
    return sde_step_with_logprob(
        velocity,
        latents,
        sigmas[step],
        sigmas[step + 1],
        sigmas[1],
        config.noise_level,
        prev_sample=trajectory.latents[indices, step + 1],
        sde_type=config.sde_type,
    )
