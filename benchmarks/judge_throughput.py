"""Judged items per second of VLMJudgeReward, batched (8 per judge call) against one at a time.

Same tiny random Qwen3-VL judge, same inputs (edited images of mixed sizes with their instructions) for both; the
two settings are timed in alternating rounds after a warm-up round, and the medians are compared. JSON last line.

    python benchmarks/judge_throughput.py [--items 32] [--rounds 5] [--mode expected|generate]
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from PIL import Image

from trl_ext.rewards import LocalVLMJudge, VLMJudgeReward
from trl_ext.testing import save_tiny_qwen3_vl


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--mode", choices=["expected", "generate"], default="expected")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        judge = LocalVLMJudge.from_pretrained(save_tiny_qwen3_vl(os.path.join(tmp, "judge")), device="cpu")
    judge.max_new_tokens = 16
    generator = torch.Generator().manual_seed(0)
    sizes = [(64, 48), (48, 64), (64, 64), (96, 48)]
    images = [
        Image.fromarray((torch.rand(h, w, 3, generator=generator) * 255).byte().numpy()) for w, h in sizes * args.items
    ][: args.items]
    prompts = [f"edit number {i}: make the sky red" for i in range(args.items)]
    categories = [["physics", "environment", "social", "causal", "referential"][i % 5] for i in range(args.items)]
    settings = {
        "batched": VLMJudgeReward(judge, mode=args.mode, min_digit_mass=0.0, batch_size=args.batch_size),
        "one_at_a_time": VLMJudgeReward(judge, mode=args.mode, min_digit_mass=0.0, batch_size=1),
    }
    times = {name: [] for name in settings}
    scores = {}
    for round_index in range(args.rounds + 1):
        order = list(settings) if round_index % 2 == 0 else list(reversed(settings))
        for name in order:
            start = time.perf_counter()
            scores[name] = settings[name](prompts, images=images, category=categories)
            elapsed = time.perf_counter() - start
            if round_index:  # round 0 is the warm-up
                times[name].append(elapsed)
    throughput = {name: args.items / statistics.median(values) for name, values in times.items()}
    agree = all(
        (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-4)
        for a, b in zip(scores["batched"], scores["one_at_a_time"])
    )
    result = {
        "mode": args.mode,
        "items": args.items,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "batched_items_per_s": round(throughput["batched"], 2),
        "one_at_a_time_items_per_s": round(throughput["one_at_a_time"], 2),
        "batched_speedup": round(throughput["batched"] / throughput["one_at_a_time"], 3),
        "scores_agree": agree,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
