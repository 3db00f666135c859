"""Wall time per training step: trl.GRPOTrainer vs TPRLGRPOTrainer (all features off / on), same tiny VLM and data.

    python benchmarks/tprl_overhead.py [--steps 20] [--completion_length 16]

Prints a table, then a JSON object as the last line with "ratio_on" and "ratio_off" (TPRL time / GRPO time).
Targets: ratio_on <= 1.35 (one extra no-grad forward; on-policy TPRL needs two), ratio_off <= 1.03.
"""

import argparse
import json
import tempfile

import torch
from trl import GRPOConfig, GRPOTrainer

from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
from trl_ext.data import ColourTokenReward, colour_question_dataset
from trl_ext.testing import load_qwen_vl_processor, save_tiny_qwen_vl, vision_special_token_ids


def step_time(trainer_class, config_class, path, processor, output_dir, steps, length, **features) -> float:
    args = config_class(
        output_dir=output_dir, per_device_train_batch_size=16, num_generations=4, max_completion_length=length,
        max_steps=steps + 2, learning_rate=1e-4, bf16=False, use_cpu=True, report_to="none", save_strategy="no",
        logging_steps=1, seed=0, disable_tqdm=True,
        generation_kwargs={"suppress_tokens": vision_special_token_ids(processor.tokenizer)}, **features,
    )  # fmt: skip
    trainer = trainer_class(
        model=path, reward_funcs=ColourTokenReward(length), args=args, train_dataset=colour_question_dataset(32),
        processing_class=processor,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.train()
    times = [entry["step_time"] for entry in trainer.state.log_history if "step_time" in entry][2:]  # skip warm-up
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--completion_length", type=int, default=16)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_qwen_vl(f"{tmp}/model")
        processor = load_qwen_vl_processor(path)
        on = dict(
            enable_perception_filtering=True, enable_entropy_filtering=True, enable_trajectory_reweighting=True
        )
        runs = {
            "trl.GRPOTrainer": step_time(GRPOTrainer, GRPOConfig, path, processor, tmp, cli.steps, cli.completion_length),
            "TPRL, features off": step_time(TPRLGRPOTrainer, TPRLGRPOConfig, path, processor, tmp, cli.steps, cli.completion_length),
            "TPRL, features on": step_time(TPRLGRPOTrainer, TPRLGRPOConfig, path, processor, tmp, cli.steps, cli.completion_length, **on),
        }
    base = runs["trl.GRPOTrainer"]
    print(f"{'trainer':<22} {'s/step':>8} {'ratio':>6}")
    for name, seconds in runs.items():
        print(f"{name:<22} {seconds:8.4f} {seconds / base:6.3f}")
    print(json.dumps({
        "grpo_s_per_step": base, "ratio_off": runs["TPRL, features off"] / base,
        "ratio_on": runs["TPRL, features on"] / base, "steps": cli.steps, "completion_length": cli.completion_length,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
