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
"""The likelihood estimators of `DiffusionLMGRPOTrainer` on one tiny masked diffusion LM and one tiny DiffusionGemma
(`"trace"`, its only estimator), in one run: per family and estimator (and K; trace over every sampler step; the
masked `"elbo"` is the block ELBO over the sampler's two blocks), the time of a training step (rollout + likelihoods + update) and, after that one update, the noise of the
log-ratio log p̂_new − log p̂_old across fresh draws (its standard deviation over draws, averaged over the completions;
0 for an estimator without draw noise; sequence log-ratios, not divided by the length; the K-draw column is the
one-draw spread / √K). Prints a table, then JSON as the last line.

```bash
python benchmarks/diffusion_lm_estimators.py --draws 64
```
"""

import argparse
import copy
import json
import os
import statistics
import tempfile
import time

import torch
from datasets import Dataset

from trl_ext import DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer
from trl_ext.testing import save_tiny_diffusion_gemma, save_tiny_masked_diffusion_lm


def vowel_share(prompts, completions, **kwargs):
    """The share of the completion's characters that are vowels: it varies within a group for random models of both
    families (BERT word pieces, bytes), so every step updates the policy."""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def measure(family: str, path: str, output_dir: str, estimator: str, k: int, args) -> dict:
    config = DiffusionLMGRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=16,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=args.completion_length,
        block_length=args.completion_length // 2,
        sampling_steps=args.completion_length,
        estimator=estimator,
        num_likelihood_samples=k,
        learning_rate=3e-3,
        max_steps=args.steps,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
        lr_scheduler_type="constant",
    )
    trainer = DiffusionLMGRPOTrainer(
        path, vowel_share, config, Dataset.from_dict({"prompt": ["x =", "y =", "z =", "w ="]})
    )
    before = copy.deepcopy(trainer.policy)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        trainer.training_step()
        times.append(time.perf_counter() - start)
        trainer.state.global_step += 1
    # the log-ratio of the updated policy to the initial one on fresh draws, for fresh completions
    prompt_ids, prompt_mask = trainer._encode_prompts(["x =", "y =", "z =", "w ="] * 4, return_mask=True)
    generator = torch.Generator().manual_seed(1)
    sample = trainer.adapter.sample(
        trainer.policy, prompt_ids, args.completion_length, generator, prompt_mask=prompt_mask
    )
    sequences, trajectory = sample.sequences, sample.trajectory
    trainer._trace_steps = None  # trace: every step
    completion_mask = torch.zeros_like(sequences, dtype=torch.bool)
    completion_mask[:, config.max_prompt_length :] = True
    draws = trainer.adapter.sample_draws(len(sequences), sequences.size(1), args.draws, "iid", generator=generator)
    with torch.no_grad():
        new = trainer.log_likelihood(trainer.policy, sequences, completion_mask, draws, trajectory)
        old = trainer.log_likelihood(before, sequences, completion_mask, draws, trajectory)
    log_ratio = new - old  # (draws, B): one draw each; a K-draw estimate averages K of them (trace: (1, B), no draws)
    per_draw_std = log_ratio.std(0).mean().item() if log_ratio.size(0) > 1 else 0.0
    return {
        "family": family,
        "estimator": estimator,
        "K": k,
        "step_seconds": statistics.median(times[1:] or times),
        "log_ratio_std_one_draw": per_draw_std,
        "log_ratio_std_K_draws": per_draw_std / k**0.5,
        "log_ratio_mean": log_ratio.mean().item(),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=64, help="Fresh draws for the log-ratio's spread.")
    parser.add_argument("--steps", type=int, default=6, help="Training steps timed (the first is a warm-up).")
    parser.add_argument("--completion_length", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_masked_diffusion_lm(os.path.join(tmp, "model"))
        for estimator, k in (("elbo", 1), ("elbo", 2), ("elbo", 4), ("mean_field", 1), ("trace", 1)):
            results.append(measure("masked", path, os.path.join(tmp, f"{estimator}{k}"), estimator, k, args))
        gemma = save_tiny_diffusion_gemma(os.path.join(tmp, "gemma"), canvas_length=args.completion_length // 2)
        results.append(measure("diffusion_gemma", gemma, os.path.join(tmp, "gemma_trace"), "trace", 1, args))
    header = f"{'family':<16} {'estimator':<11} {'K':>2} {'s/step':>7} {'std(log-ratio), 1 draw':>23} {'K draws':>8}"
    print(header + f" {'mean':>8}")
    for r in results:
        print(
            f"{r['family']:<16} {r['estimator']:<11} {r['K']:>2} {r['step_seconds']:>7.3f} "
            f"{r['log_ratio_std_one_draw']:>23.4f} {r['log_ratio_std_K_draws']:>8.4f} {r['log_ratio_mean']:>8.4f}"
        )
    print(json.dumps({"benchmark": "diffusion_lm_estimators", "device": "cpu", "results": results}))


if __name__ == "__main__":
    main()
