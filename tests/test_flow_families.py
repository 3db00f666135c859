"""Every diffusers text-to-image flow-matching family the flow trainers support (SD3, FLUX.1, Qwen-Image; the
Qwen-Image-Edit editor's tests are in test_flow_edit.py), each loaded from a tiny directory
through `DiffusionPipeline.from_pretrained` as users load real ones: the SDE sampler's deterministic limit is the
pipeline's own sampler, the ratio is exactly 1 on-policy, the KL to the base model is the Gaussian KL, the LoRA loads
with the pipeline's `load_lora_weights`, FLUX learns the brightness toy task (SD3's is in test_flow_grpo.py), two
processes keep identical weights, and an unsupported pipeline class is a clear error."""

import os

import numpy as np
import pytest
import torch
from test_flow_grpo import PROMPTS, TINY_FLOW_ARGS, brightness

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.models.flow import FlowSamplingConfig, sample_trajectories, trajectory_step_log_prob
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH, save_tiny_flux, save_tiny_qwen_image, save_tiny_sd3


pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = {
    "sd3": (save_tiny_sd3, "StableDiffusion3Pipeline"),
    "flux": (save_tiny_flux, "FluxPipeline"),
    "qwen_image": (save_tiny_qwen_image, "QwenImagePipeline"),
}
GUIDANCE = {  # how each pipeline's own __call__ takes a guidance scale of 4.5
    "StableDiffusion3Pipeline": {"guidance_scale": 4.5},  # true CFG with the empty prompt
    "FluxPipeline": {"guidance_scale": 4.5},  # the guidance embedding
    "QwenImagePipeline": {"true_cfg_scale": 4.5, "negative_prompt": " "},  # true CFG, norm-rescaled
}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """The tiny directory of a family by name, built once per module."""
    paths = {}

    def get(name: str) -> str:
        if name not in paths:
            paths[name] = FAMILIES[name][0](tmp_path_factory.mktemp(name))
        return paths[name]

    return get


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tiny_path):
    """(pipeline class name, tiny directory) of each family."""
    return FAMILIES[request.param][1], tiny_path(request.param)


@pytest.fixture(scope="module")
def flux_path(tiny_path):
    return tiny_path("flux")


def load(path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _args(tmp_path, **overrides):
    return FlowGRPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path), **overrides})


def _perturb_lora(trainer, seed=0):
    """Random LoRA B matrices (they start at 0), so that the policy differs from the base model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in trainer.transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))


def test_the_pipeline_class_picks_the_family(family):
    class_name, path = family
    pipe = load(path)
    assert type(pipe).__name__ == class_name


# Qwen-Image keeps the first `max_sequence_length` tokens after its system template; with the tiny byte-level tokenizer
# the template's rest is 115 tokens, so a shorter length never reaches the prompt (and true CFG would be a no-op)
MAX_SEQUENCE_LENGTH = {"QwenImagePipeline": 160}


def test_deterministic_limit_is_the_pipelines_own_sampler(family):
    """With noise level 0 the SDE step is Euler's: the images equal the pipeline's own `__call__` with the same seed
    (packing, conditioning, guidance, timestep shift, transformer call and decoding all as diffusers does them), and the
    guidance does change them (so that it is checked too)."""
    pipe = load(family[1])
    length = MAX_SEQUENCE_LENGTH.get(family[0], TINY_SD3_MAX_SEQUENCE_LENGTH)
    config = FlowSamplingConfig(
        num_inference_steps=4, guidance_scale=4.5, noise_level=0.0, height=32, width=32, max_sequence_length=length
    )
    ours = sample_trajectories(pipe, PROMPTS[:2], config, generator=torch.Generator().manual_seed(0))
    reference = pipe(
        PROMPTS[:2],
        height=32,
        width=32,
        num_inference_steps=4,
        max_sequence_length=length,
        generator=torch.Generator().manual_seed(0),
        **GUIDANCE[family[0]],
        output_type="pt",
    ).images
    assert ours.log_probs.abs().max() == 0
    torch.testing.assert_close(ours.images, reference, rtol=0, atol=1e-5)
    config.guidance_scale = 1.0
    unguided = sample_trajectories(pipe, PROMPTS[:2], config, generator=torch.Generator().manual_seed(0))
    assert (unguided.images - ours.images).abs().max() > 1e-4


def test_ratio_is_exactly_one_before_the_first_update(family, tmp_path):
    trainer = FlowGRPOTrainer(family[1], brightness, _args(tmp_path, beta=0.04, num_mini_batches=1), PROMPTS)
    _perturb_lora(trainer)
    trajectory = sample_trajectories(
        trainer.adapter,
        PROMPTS,
        trainer.sampling,
        generator=torch.Generator().manual_seed(0),
        transformer=trainer.accelerator.unwrap_model(trainer.transformer),
    )
    for step in range(trainer.sampling.num_inference_steps):  # recomputed through the prepared (trained) module
        out = trajectory_step_log_prob(trainer.transformer, trajectory, step, trainer.sampling)
        torch.testing.assert_close(out.log_prob, trajectory.log_probs[:, step], rtol=0, atol=0)
    logs = trainer.training_step()
    assert logs["flow/ratio"] == pytest.approx(1.0, abs=1e-6) and logs["clip_ratio/region_mean"] == 0.0
    assert logs["kl"] > 0 and logs["grad_norm"] > 0


def test_kl_to_the_base_model_is_the_gaussian_kl(family, tmp_path):
    """The KL term equals KL(N(μ_θ, s²) ‖ N(μ_ref, s²)) averaged over latent elements, computed by
    `torch.distributions` from the policy's means and those of a separately loaded base pipeline (no LoRA)."""
    trainer = FlowGRPOTrainer(family[1], brightness, _args(tmp_path, beta=0.04), PROMPTS)
    _perturb_lora(trainer)
    base = load(family[1])
    trajectory = sample_trajectories(
        trainer.adapter,
        PROMPTS,
        trainer.sampling,
        generator=torch.Generator().manual_seed(1),
        transformer=trainer.accelerator.unwrap_model(trainer.transformer),
    )
    check_kl_is_the_gaussian_kl(trainer, base, trajectory, torch.tensor([3, 1]))


def check_kl_is_the_gaussian_kl(trainer, base, trajectory, indices: torch.Tensor) -> None:
    """At every step, the trainer's KL of the samples `indices` equals `torch.distributions`' Gaussian KL between the
    policy's transition and the `base` pipeline's (whose LoRA-free transformer is loaded separately)."""
    for step in range(trainer.sampling.num_inference_steps):
        policy = trajectory_step_log_prob(trainer.transformer, trajectory, step, trainer.sampling, indices)
        reference = trajectory_step_log_prob(base.transformer, trajectory, step, trainer.sampling, indices)
        std = policy.std.expand_as(policy.mean)
        expected = torch.distributions.kl_divergence(
            torch.distributions.Normal(policy.mean, std), torch.distributions.Normal(reference.mean, std)
        ).mean(dim=tuple(range(1, policy.mean.dim())))
        kl = trainer._kl_to_reference(trajectory, step, indices, policy.mean, policy.std)
        assert (expected > 1e-6).all()  # the LoRA does move the policy away from the base
        torch.testing.assert_close(kl, expected, rtol=1e-4, atol=0)


def test_saved_lora_loads_with_the_pipelines_own_loader(family, tmp_path):
    class_name, path = family
    trainer = FlowGRPOTrainer(path, brightness, _args(tmp_path, max_steps=1), PROMPTS)
    trainer.train()
    check_saved_lora_loads(trainer, load(path), class_name)


def check_saved_lora_loads(trainer, pipe, class_name: str) -> None:
    """`trainer.save_model()` writes LoRA weights that `pipe.load_lora_weights` (a fresh base pipeline) loads bit for
    bit, and a card that loads them with `class_name`."""
    directory = trainer.args.output_dir
    trainer.save_model()
    trained = {
        n: p for n, p in trainer.accelerator.unwrap_model(trainer.transformer).named_parameters() if "lora" in n
    }
    assert any(p.abs().max() > 0 for n, p in trained.items() if "lora_B" in n)  # the update moved B off 0
    pipe.load_lora_weights(directory)
    loaded = {n: p for n, p in pipe.transformer.named_parameters() if "lora" in n}
    assert len(loaded) == len(trained) > 0
    for (_, a), (_, b) in zip(sorted(loaded.items()), sorted(trained.items())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    card = open(os.path.join(directory, "README.md")).read()
    assert f"from diffusers import {class_name}\n" in card and f"{class_name}.from_pretrained(" in card


def test_flux_learns_to_raise_brightness(flux_path, tmp_path):
    trainer = FlowGRPOTrainer(
        flux_path, brightness, _args(tmp_path, max_steps=60, learning_rate=0.3, num_mini_batches=2), PROMPTS
    )
    trainer.train()
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history]
    start, end, noise = np.mean(rewards[:10]), np.mean(rewards[-10:]), history[0]["reward_std"]
    print(f"FLUX brightness: first 10 steps {start:.4f}, last 10 steps {end:.4f} (within-batch std {noise:.4f})")
    assert end - start > max(0.1, 5 * noise)


@pytest.fixture(scope="module")
def fitted_qwen_path(tmp_path_factory):
    """A tiny Qwen-Image whose VAE decodes latent colour (60 steps of `fit_tiny_qwen_vae_decoder`), fitted on one thread
    (module fixtures start before `one_thread`): the fit, and so the brightness scale, moves with the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return save_tiny_qwen_image(tmp_path_factory.mktemp("qwen_image_fitted"), vae_fit_steps=60)
    finally:
        torch.set_num_threads(threads)


def test_qwen_image_learns_to_raise_brightness(fitted_qwen_path, tmp_path):
    """At 128 px: the tiny Qwen-Image's VAE downsamples 8x and its latents are packed 2x2, so 32 px images are 4 tokens
    (FLUX's tiny test: 64). Measured (60 steps, lr 0.3, seed 0): at 32 px the within-batch brightness std is 0.056 and
    the reward rose 0.625 -> 0.665 (40 steps; 0.60 -> 0.67 in 100), at 64 px (16 tokens) std 0.039 and +0.10 in 100
    steps, at 128 px (64 tokens, as FLUX's) std 0.015 and 0.496 -> 0.681 (seeds 1, 2: +0.25, +0.21): the same rise as
    FLUX (0.522 -> 0.717, std 0.013). Guidance 1: with the byte-level tokenizer a 32-token `max_sequence_length` holds
    only the system template's tokens, so true CFG is a no-op here (it only doubled the cost)."""
    args = _args(tmp_path, max_steps=60, learning_rate=0.3, num_mini_batches=2, resolution=128, guidance_scale=1.0)
    trainer = FlowGRPOTrainer(fitted_qwen_path, brightness, args, PROMPTS)
    trainer.train()
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history]
    start, end, noise = np.mean(rewards[:10]), np.mean(rewards[-10:]), history[0]["reward_std"]
    print(f"Qwen-Image brightness: first 10 steps {start:.4f}, last 10 steps {end:.4f} (within-batch std {noise:.4f})")
    assert end - start > max(0.1, 5 * noise)


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["flux", "qwen_image"])
def test_two_processes_keep_identical_weights(name, tiny_path, launch_two_processes):
    """FLUX and Qwen-Image with the prompt editor (FlowRTPOTrainer); SD3's runs are in test_flow_rtpo.py. (A LoRA
    weight outside the velocity's graph, such as Qwen-Image's last text projection, would make DDP fail here.)"""
    ranks = launch_two_processes("flow_rtpo_two_steps.py", tiny_path(name), "flow_rtpo")
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["prompts"] and set(ranks[0]["prompts"]).isdisjoint(ranks[1]["prompts"])
    for name in ("lora", "editor"):
        torch.testing.assert_close(torch.tensor(ranks[0][name]), torch.tensor(ranks[1][name]), rtol=0, atol=0)


def test_an_unsupported_pipeline_class_is_a_clear_error(tmp_path):
    class StableDiffusionPipeline:  # a UNet pipeline, not flow matching
        pass

    with pytest.raises(
        ValueError,
        match=r"StableDiffusionPipeline is not a supported .* support FluxPipeline, QwenImageEditPipeline, QwenImagePipeline, StableDiffusion3Pipeline\.",
    ):
        FlowGRPOTrainer(StableDiffusionPipeline(), brightness, _args(tmp_path), PROMPTS)


def test_fitted_tiny_qwen_image_vae_decodes_latent_colour(fitted_qwen_path):
    """After `vae_fit_steps`, image brightness follows the latents (a random tiny decoder's moves by about 0.02)."""
    from diffusers import AutoencoderKLQwenImage

    vae = AutoencoderKLQwenImage.from_pretrained(fitted_qwen_path, subfolder="vae")
    latents = torch.zeros(2, 4, 1, 4, 4)
    latents[0, :3], latents[1, :3] = 1.5, -1.5
    with torch.no_grad():
        images = vae.decode(latents).sample[:, :, 0]
    assert images[0].mean() - images[1].mean() > 0.3
