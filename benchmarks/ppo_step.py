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
"""One PPOTrainer update against one trl.GRPOTrainer step, on the same tiny Qwen2 policy, reward model, batch and
completion length (β > 0 for both).

A PPO update is a rollout (generation, no-grad policy / reference / value forwards, reward model), GAE, and
`num_ppo_epochs` passes of mini-batch updates of policy and value model; a GRPO step is its generation, reference and
reward model forwards and one update. The two trainers step in turn (the order alternates every round, warm-up
rounds dropped); time per step is the median over rounds, and the ratio the median of the per-round ratios. Peak
memory is the extra resident memory of one step over the memory before it (Linux VmHWM after resetting it), median
over steps, each trainer in its own worker process (with a fixed glibc mmap threshold so that freed tensors go back to
the OS).

```bash
python benchmarks/ppo_step.py --rounds 20 --batch 16 --completion_length 16
```

The last line is JSON with "ratio_vs_grpo" and "peak_mem_ratio_vs_grpo".
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging
from trl import GRPOConfig, GRPOTrainer

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.testing import save_tiny_qwen2, save_tiny_qwen2_reward_model


MODEL_SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)


def prompts() -> Dataset:
    return Dataset.from_dict({"prompt": [f"Question {i}: say something." for i in range(64)]})


class PPOStepper:
    def __init__(self, policy: str, reward: str, output_dir: str, cli):
        args = PPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=cli.batch,
            num_ppo_epochs=cli.num_ppo_epochs,
            response_length=cli.completion_length,
            temperature=1.0,
            kl_coef=0.05,
            learning_rate=1e-4,
            max_steps=10_000,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
            num_sample_generations=0,
        )
        tokenizer = AutoTokenizer.from_pretrained(policy)
        self.trainer = PPOTrainer(
            args,
            tokenizer,
            AutoModelForCausalLM.from_pretrained(policy),
            None,
            AutoModelForSequenceClassification.from_pretrained(reward),
            prompts(),
        )

    def step(self) -> tuple[float, float]:
        trainer = self.trainer
        start = time.perf_counter()
        logs = trainer.training_step()
        trainer.lr_scheduler.step()
        trainer.state.global_step += 1
        return time.perf_counter() - start, logs["val/response_length"]


class GRPOStepper:
    def __init__(self, policy: str, reward: str, output_dir: str, cli):
        args = GRPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=cli.batch,
            num_generations=4,
            max_completion_length=cli.completion_length,
            temperature=1.0,
            beta=0.05,
            learning_rate=1e-4,
            bf16=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        tokenizer = AutoTokenizer.from_pretrained(policy)
        self.trainer = GRPOTrainer(
            model=policy,
            reward_funcs=AutoModelForSequenceClassification.from_pretrained(reward),
            args=args,
            train_dataset=prompts(),
            processing_class=tokenizer,
            reward_processing_classes=tokenizer,
        )
        self.trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
        self.trainer.current_gradient_accumulation_steps = 1
        self.batches = self._batches()

    def _batches(self):
        while True:
            yield from self.trainer.get_train_dataloader()

    def step(self) -> tuple[float, float]:
        trainer = self.trainer
        batch = next(self.batches)
        start = time.perf_counter()
        trainer.training_step(trainer.model, batch, None)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.optimizer.zero_grad()
        seconds = time.perf_counter() - start
        lengths = trainer._metrics["train"].get("completions/mean_length", [float("nan")])
        return seconds, lengths[-1]


STEPPERS = {"ppo": PPOStepper, "grpo": GRPOStepper}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_worker(name: str, policy: str, reward: str, cli) -> dict:
    """Extra peak resident memory of one step (median over `cli.memory_steps` steps after one warm-up step)."""
    with tempfile.TemporaryDirectory() as tmp:
        stepper = STEPPERS[name](policy, reward, tmp, cli)
        stepper.step()
        extra = []
        for _ in range(cli.memory_steps):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident size
            before = _status_kib("VmRSS")
            stepper.step()
            extra.append((_status_kib("VmHWM") - before) * 1024)
    return {"extra_peak_bytes": statistics.median(extra)}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    return tuple(statistics.quantiles(values, n=4, method="inclusive"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="Completions per step (GRPO: 4 per prompt).")
    parser.add_argument("--completion_length", type=int, default=16)
    parser.add_argument("--num_ppo_epochs", type=int, default=4, help="TRL's PPOConfig default.")
    parser.add_argument("--memory_steps", type=int, default=3)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    logging.set_verbosity_error()
    if cli.worker:
        print(json.dumps(memory_worker(*cli.worker, cli)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        policy = save_tiny_qwen2(os.path.join(tmp, "policy"), **MODEL_SIZE)
        reward = save_tiny_qwen2_reward_model(os.path.join(tmp, "reward"), seed=1, **MODEL_SIZE)
        steppers = {name: cls(policy, reward, os.path.join(tmp, name), cli) for name, cls in STEPPERS.items()}
        names = list(steppers)
        times, lengths = {n: [] for n in names}, {n: [] for n in names}
        for round_index in range(cli.warmup + cli.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                seconds, length = steppers[name].step()
                if round_index >= cli.warmup:
                    times[name].append(seconds)
                    lengths[name].append(length)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
        memory = {}
        for name in names:
            command = [sys.executable, __file__, "--worker", name, policy, reward]
            command += ["--batch", str(cli.batch), "--completion_length", str(cli.completion_length)]
            command += ["--num_ppo_epochs", str(cli.num_ppo_epochs), "--memory_steps", str(cli.memory_steps)]
            output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
            memory[name] = json.loads(output.strip().splitlines()[-1])["extra_peak_bytes"]
    ratios = [p / g for p, g in zip(times["ppo"], times["grpo"])]
    print(
        f"B={cli.batch} completions of <= {cli.completion_length} tokens, num_ppo_epochs={cli.num_ppo_epochs}, "
        f"{cli.rounds} rounds"
    )
    print(f"{'trainer':<18} {'median s/step':>14} {'IQR':>17} {'mean length':>12} {'extra peak MiB':>15}")
    for name, label in (("ppo", "trl_ext.PPOTrainer"), ("grpo", "trl.GRPOTrainer")):
        q1, median, q3 = quartiles(times[name])
        print(
            f"{label:<18} {median:14.4f} {q1:8.4f}-{q3:.4f} {statistics.mean(lengths[name]):12.1f} "
            f"{memory[name] / 2**20:15.1f}"
        )
    q1, median, q3 = quartiles(ratios)
    result = {
        "ratio_vs_grpo": median,
        "ratio_iqr": [q1, q3],
        "peak_mem_ratio_vs_grpo": memory["ppo"] / memory["grpo"],
        "ppo_s_per_step": statistics.median(times["ppo"]),
        "grpo_s_per_step": statistics.median(times["grpo"]),
        "ppo_extra_peak_mib": memory["ppo"] / 2**20,
        "grpo_extra_peak_mib": memory["grpo"] / 2**20,
        "batch": cli.batch,
        "completion_length": cli.completion_length,
        "num_ppo_epochs": cli.num_ppo_epochs,
        "rounds": cli.rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
