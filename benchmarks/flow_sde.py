"""Cost of SDE sampling with log-probabilities vs the plain StableDiffusion3Pipeline, and of one training step.

    python benchmarks/flow_sde.py [--repeats 20] [--batch 8] [--steps 10]

Runs on the tiny SD3 pipeline of `trl_ext.testing` (CPU). Prints a table, then a JSON object as the last line with
"sampling_ratio" (SDE sampling with log-probs / plain pipeline sampling; target <= 1.05).
"""

import argparse
import json
import statistics
import tempfile
import time

import torch
from diffusers import StableDiffusion3Pipeline

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.models.flow import FlowSamplingConfig, sample_trajectories
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH, save_tiny_sd3


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two functions, run alternately so that drift in machine load affects both alike."""
    first(), second()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, record in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    prompts = ["a cat", "a dog"] * (cli.batch // 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_sd3(f"{tmp}/sd3")
        pipe = StableDiffusion3Pipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        config = FlowSamplingConfig(  # Flow-GRPO's CFG scale and noise level (FlowGRPOConfig's defaults)
            num_inference_steps=cli.steps,
            guidance_scale=4.5,
            noise_level=0.7,
            height=32,
            width=32,
            max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
        )
        with torch.no_grad():
            plain, sde = timed_pair(
                lambda: pipe(
                    prompts,
                    num_inference_steps=cli.steps,
                    guidance_scale=config.guidance_scale,
                    height=32,
                    width=32,
                    max_sequence_length=config.max_sequence_length,
                    output_type="pt",
                ),
                lambda: sample_trajectories(pipe, prompts, config),
                cli.repeats,
            )
        args = FlowGRPOConfig(
            output_dir=tmp,
            use_cpu=True,
            report_to="none",
            per_device_train_batch_size=cli.batch,
            num_generations=4,
            num_inference_steps=cli.steps,
            resolution=32,
            max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
            lora_r=4,
            lora_alpha=8,
            beta=0.04,
            disable_tqdm=True,
            save_strategy="no",
        )
        trainer = FlowGRPOTrainer(
            path, lambda prompts, images, **kw: images.mean(dim=(1, 2, 3)).tolist(), args, prompts
        )
        step = timed(trainer.training_step, max(1, cli.repeats // 2))
    print(f"{'what':<40} {'s':>8}")
    print(f"{'pipeline sampling (ODE, CFG)':<40} {plain:8.4f}")
    print(f"{'SDE sampling with log-probs (CFG)':<40} {sde:8.4f}")
    print(f"{'training step (sample + score + update)':<40} {step:8.4f}")
    print(
        json.dumps(
            {
                "sampling_ratio": sde / plain,
                "pipeline_s": plain,
                "sde_s": sde,
                "train_step_s": step,
                "batch": cli.batch,
                "steps": cli.steps,
            }
        )
    )


if __name__ == "__main__":
    main()
