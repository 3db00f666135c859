"""Time per Flow-GRPO update with an SDE window of 2 steps (Flow-GRPO-Fast / MixGRPO) vs the full trajectory.

    python benchmarks/flow_step.py [--repeats 3] [--batch 8] [--steps 10] [--window 2] [--layers 4] [--heads 4]

One update is `FlowGRPOTrainer.training_step`: sample `--batch` images with `--steps` denoising steps (CFG, as the
config's defaults), score them, and train on the trained steps (the full trajectory: the first int(steps · 0.99), the
config's `timestep_fraction`; the window: `--window` steps) with the KL to the base model (β = 0.04, the default).
The pipeline is the tiny SD3 of `trl_ext.testing` with a bigger transformer (`--layers` joint blocks of `--heads` × 32
channels instead of one block of 4 × 8), so that the transformer's forward and backward passes dominate as on a real
model. CPU, one thread. Prints a table, then a JSON object as the last line with "ratio_window_vs_full" (goal <= 0.35;
the floor is sampling `--steps` steps plus training `--window` instead of 9).
"""

import argparse
import json
import os
import tempfile

import torch
from flow_sde import timed_pair  # (benchmarks/ is the script's directory)

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH, save_tiny_sd3


def save_bigger_sd3(path: str, layers: int, heads: int) -> tuple[str, int]:
    """The tiny SD3 pipeline with its transformer replaced by one of `layers` joint blocks of `heads` × 32 channels
    (same input geometry and text widths). Returns the path and the transformer's parameter count."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(save_tiny_sd3(path, vae_fit_steps=0))
    config = dict(pipe.transformer.config)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=config["sample_size"],
        patch_size=config["patch_size"],
        in_channels=config["in_channels"],
        num_layers=layers,
        attention_head_dim=32,
        num_attention_heads=heads,
        caption_projection_dim=32 * heads,
        joint_attention_dim=config["joint_attention_dim"],
        pooled_projection_dim=config["pooled_projection_dim"],
        out_channels=config["out_channels"],
    )
    pipe.transformer = transformer
    pipe.register_modules(transformer=transformer)
    pipe.save_pretrained(path)
    return path, sum(p.numel() for p in transformer.parameters())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    prompts = ["a cat", "a dog", "a red car", "the sky"]

    def brightness(prompts, images, **kwargs):
        return images.mean(dim=(1, 2, 3)).tolist()

    with tempfile.TemporaryDirectory() as tmp:
        path, parameters = save_bigger_sd3(os.path.join(tmp, "sd3"), cli.layers, cli.heads)
        trainers = {}
        for name, window in (("full", {}), ("window", {"sde_window_size": cli.window})):
            args = FlowGRPOConfig(
                output_dir=os.path.join(tmp, name),
                use_cpu=True,
                report_to="none",
                per_device_train_batch_size=cli.batch,
                num_generations=4,
                num_inference_steps=cli.steps,
                resolution=32,
                max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
                lora_r=8,
                lora_alpha=16,
                disable_tqdm=True,
                save_strategy="no",
                **window,
            )
            trainers[name] = FlowGRPOTrainer(path, brightness, args, prompts)
        full, windowed = timed_pair(trainers["full"].training_step, trainers["window"].training_step, cli.repeats)
    trained_full = int(cli.steps * trainers["full"].args.timestep_fraction)
    print(
        f"SD3 transformer: {cli.layers} joint blocks x {cli.heads * 32} channels, {parameters / 1e6:.2f} M parameters"
    )
    print(f"{'update (sample + score + train)':<44} {'s':>8}")
    print(f"{f'full trajectory ({trained_full} of {cli.steps} steps trained)':<44} {full:8.3f}")
    print(f"{f'SDE window ({cli.window} of {cli.steps} steps trained)':<44} {windowed:8.3f}")
    print(
        json.dumps(
            {
                "ratio_window_vs_full": windowed / full,
                "full_s": full,
                "window_s": windowed,
                "steps": cli.steps,
                "window": cli.window,
                "trained_steps_full": trained_full,
                "batch": cli.batch,
                "transformer_parameters": parameters,
                "repeats": cli.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
