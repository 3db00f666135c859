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
"""One PPOTrainer update against one update of TRL's last PPOTrainer and one trl.GRPOTrainer step, on the same tiny
Qwen2 policy, reward model, batch and completion length (β > 0 for all).

A PPO update is a rollout (generation, no-grad policy-and-value / reference forwards, reward model on the generated
ids), GAE, and `num_ppo_epochs` passes of mini-batch updates of policy and value model. TRL's last PPOTrainer
(`trl/experimental/ppo/ppo_trainer.py` at fd09025; TRL deleted it, so [`TRLPPOStepper`] replays the forwards and
backwards of its `train()` loop on the same models) took the policy's log-probabilities from the generation's scores,
ran the reference, the value model and the reward model in the rollout, and a full-length policy and value forward per
micro-batch; its two `gc.collect()` per update (about 0.45 s on a loaded 2-core CPU) are left out. A GRPO step is its
generation, reference and reward model forwards and one update. The trainers step in turn (the order rotates every
round, warm-up rounds dropped); time per step is the median over rounds, the ratios the medians of the per-round
ratios; the two PPOs' rollout and update phases are timed apart. Peak memory is the extra resident memory of one step
over the memory before it (Linux VmHWM after resetting it), median over steps, each trainer in its own worker process
(with a fixed glibc mmap threshold so that freed tensors go back to the OS).

```bash
python benchmarks/ppo_step.py --rounds 20 --batch 16 --completion_length 16
```

The last line is JSON with "ratio_vs_trl_ppo", "rollout_ratio_vs_trl_ppo", "update_ratio_vs_trl_ppo",
"ratio_vs_grpo" and "peak_mem_ratio_vs_grpo".
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GenerationConfig
from transformers.utils import logging
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import selective_log_softmax

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.rl.advantages import masked_whiten
from trl_ext.testing import save_tiny_qwen2, save_tiny_qwen2_reward_model
from trl_ext.trainers.ppo.modeling import value_model_from


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

        self.rollout_seconds = 0.0
        rollout = self.trainer._rollout

        def timed_rollout(*args, **kwargs):
            start = time.perf_counter()
            batch = rollout(*args, **kwargs)
            self.rollout_seconds = time.perf_counter() - start
            return batch

        self.trainer._rollout = timed_rollout

    def step(self) -> tuple[float, float]:
        trainer = self.trainer
        start = time.perf_counter()
        logs = trainer.training_step()
        trainer.lr_scheduler.step()
        trainer.state.global_step += 1
        seconds = time.perf_counter() - start
        self.phases = (self.rollout_seconds, seconds - self.rollout_seconds)
        return seconds, logs["val/response_length"]


def trl_forward(model, query_responses: torch.Tensor, pad_token_id: int, **kwargs):
    """TRL's `forward`: padding found by the pad id, replaced by 0, positions from the mask, every hidden state."""
    attention_mask = query_responses != pad_token_id
    position_ids = attention_mask.cumsum(1) - attention_mask.long()
    input_ids = torch.masked_fill(query_responses, ~attention_mask, 0)
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        return_dict=True,
        output_hidden_states=True,
        **kwargs,
    )


def trl_get_reward(model, query_responses: torch.Tensor, pad_token_id: int, context_length: int):
    """TRL's `get_reward`: the backbone with every hidden state, the `score` head at every position, and the score at
    the last token before the first pad of the response."""
    output = trl_forward(getattr(model, model.base_model_prefix), query_responses, pad_token_id, use_cache=False)
    reward_logits = model.score(output.hidden_states[-1])
    is_pad = query_responses[:, context_length:] == pad_token_id
    first_pad = torch.where(is_pad.any(1), is_pad.int().argmax(1), is_pad.size(1))
    sequence_lengths = first_pad - 1 + context_length
    return reward_logits, reward_logits[torch.arange(len(reward_logits)), sequence_lengths].squeeze(-1)


class TRLPolicyAndValue(torch.nn.Module):
    """TRL's `PolicyAndValueWrapper`: the value backbone with every hidden state and the policy's full-length logits."""

    def __init__(self, policy, value_model):
        super().__init__()
        self.policy, self.value_model = policy, value_model

    def forward(self, **kwargs):
        output = getattr(self.value_model, self.value_model.base_model_prefix)(**kwargs)
        return self.policy(**kwargs), self.value_model.score(output.hidden_states[-1])


class TRLPPOStepper:
    """One update of TRL's last PPOTrainer (`train()` at fd09025, without its two `gc.collect()` calls): the same
    forwards, backwards and optimizer steps on the models PPOStepper trains (a value model from the policy)."""

    def __init__(self, policy: str, reward: str, output_dir: str, cli):
        self.cli, self.temperature, self.kl_coef, self.gamma, self.lam = cli, 1.0, 0.05, 1.0, 0.95
        self.tokenizer = AutoTokenizer.from_pretrained(policy)
        self.policy = AutoModelForCausalLM.from_pretrained(policy)
        self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.model = TRLPolicyAndValue(self.policy, value_model_from(self.policy)).train()
        self.reward = AutoModelForSequenceClassification.from_pretrained(reward).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, eps=1e-5)
        self.generation_config = GenerationConfig(
            max_new_tokens=cli.completion_length,
            temperature=self.temperature + 1e-7,
            top_k=0,
            top_p=1.0,
            do_sample=True,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        encoded = [self.tokenizer(p)["input_ids"] for p in prompts()["prompt"]]
        self.queries = torch.full((len(encoded), max(map(len, encoded))), self.tokenizer.pad_token_id)
        for i, row in enumerate(encoded):
            self.queries[i, self.queries.size(1) - len(row) :] = torch.tensor(row)
        self.next_row = 0

    @torch.no_grad()
    def rollout(self, queries: torch.Tensor) -> dict:
        pad, context_length = self.tokenizer.pad_token_id, queries.size(1)
        attention_mask = queries != pad
        output = self.policy.generate(
            input_ids=torch.masked_fill(queries, ~attention_mask, 0),
            attention_mask=attention_mask,
            generation_config=self.generation_config,
            return_dict_in_generate=True,
            output_scores=True,
        )
        logits = torch.stack(output.scores, 1)
        query_responses = torch.cat((queries, output.sequences[:, context_length:]), dim=1)
        responses = query_responses[:, context_length:]
        logprobs = selective_log_softmax(logits, responses)
        ref_logits = trl_forward(self.ref, query_responses, pad).logits[:, context_length - 1 : -1]
        ref_logprobs = selective_log_softmax(ref_logits / (self.temperature + 1e-7), responses)
        is_stop = responses == self.tokenizer.eos_token_id
        first_stop = torch.where(is_stop.any(1), is_stop.int().argmax(1), responses.size(1))
        positions = torch.arange(responses.size(1)).repeat(len(responses), 1)
        postprocessed = torch.masked_fill(responses, positions > first_stop[:, None], pad)
        full_value, _ = trl_get_reward(self.model.value_model, query_responses, pad, context_length)
        values = full_value[:, context_length - 1 : -1].squeeze(-1)
        _, scores = trl_get_reward(self.reward, torch.cat((queries, postprocessed), 1), pad, context_length)
        is_pad = postprocessed == pad
        sequence_lengths = torch.where(is_pad.any(1), is_pad.int().argmax(1), is_pad.size(1)) - 1
        padding_mask = positions > sequence_lengths[:, None]
        logprobs = torch.masked_fill(logprobs, padding_mask, 1.0)
        ref_logprobs = torch.masked_fill(ref_logprobs, padding_mask, 1.0)
        padding_mask_p1 = positions > (sequence_lengths + 1)[:, None]
        values = torch.masked_fill(values, padding_mask_p1, 0)
        rewards = -self.kl_coef * (logprobs - ref_logprobs)
        end = torch.where(sequence_lengths + 1 < rewards.size(1), sequence_lengths + 1, sequence_lengths)
        rewards[torch.arange(len(rewards)), end] += scores
        last_advantage, advantages = 0, []
        for t in reversed(range(responses.size(1))):
            next_values = values[:, t + 1] if t < responses.size(1) - 1 else 0.0
            delta = rewards[:, t] + self.gamma * next_values - values[:, t]
            last_advantage = delta + self.gamma * self.lam * last_advantage
            advantages.append(last_advantage)
        advantages = torch.stack(advantages[::-1], dim=1)
        returns = advantages + values
        advantages = torch.masked_fill(masked_whiten(advantages, ~padding_mask), padding_mask, 0)
        return {
            "query_responses": query_responses,
            "responses": responses,
            "logprobs": logprobs,
            "values": values,
            "returns": returns,
            "advantages": advantages,
            "padding_mask": padding_mask,
            "padding_mask_p1": padding_mask_p1,
            "length": (~padding_mask).sum(1).float().mean().item(),
        }

    def update(self, batch: dict) -> None:
        """`num_ppo_epochs` passes of one mini-batch of one micro-batch (per_device = batch, no accumulation)."""
        pad, context_length = (
            self.tokenizer.pad_token_id,
            batch["query_responses"].size(1) - batch["responses"].size(1),
        )
        for _ in range(self.cli.num_ppo_epochs):
            index = torch.randperm(len(batch["responses"]))
            output, vpred_temp = trl_forward(self.model, batch["query_responses"][index], pad)
            logits = output.logits[:, context_length - 1 : -1] / (self.temperature + 1e-7)
            new_logprobs = selective_log_softmax(logits, batch["responses"][index])
            new_logprobs = torch.masked_fill(new_logprobs, batch["padding_mask"][index], 1.0)
            vpred = torch.masked_fill(
                vpred_temp[:, context_length - 1 : -1].squeeze(-1), batch["padding_mask_p1"][index], 0
            )
            old_values, returns = batch["values"][index], batch["returns"][index]
            vpred_clipped = torch.clamp(vpred, old_values - 0.2, old_values + 0.2)
            value_mask = ~batch["padding_mask_p1"][index]
            vf_losses = torch.max(torch.square(vpred - returns), torch.square(vpred_clipped - returns))
            vf_loss = 0.5 * (vf_losses * value_mask).sum() / value_mask.sum()
            ratio = torch.exp(new_logprobs - batch["logprobs"][index])
            advantages, mask = batch["advantages"][index], ~batch["padding_mask"][index]
            pg_losses = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 0.8, 1.2))
            loss = (pg_losses * mask).sum() / mask.sum() + 0.1 * vf_loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            with torch.no_grad():  # TRL's per-micro-batch statistics
                prob_dist = torch.nn.functional.softmax(logits, dim=-1)
                (torch.logsumexp(logits, dim=-1) - torch.sum(prob_dist * logits, dim=-1)).mean().item()

    def step(self) -> tuple[float, float]:
        rows = torch.arange(self.next_row, self.next_row + self.cli.batch) % len(self.queries)
        self.next_row += self.cli.batch
        queries = self.queries[rows]
        queries = queries[:, (queries != self.tokenizer.pad_token_id).any(0).int().argmax() :]  # TRL's collator
        start = time.perf_counter()
        batch = self.rollout(queries)
        middle = time.perf_counter()
        self.update(batch)
        end = time.perf_counter()
        self.phases = (middle - start, end - middle)
        return end - start, batch["length"]


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


STEPPERS = {"ppo": PPOStepper, "trl_ppo": TRLPPOStepper, "grpo": GRPOStepper}


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
        times, lengths, phases = {n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names}
        for round_index in range(cli.warmup + cli.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, length = steppers[name].step()
                if round_index >= cli.warmup:
                    times[name].append(seconds)
                    lengths[name].append(length)
                    phases[name].append(getattr(steppers[name], "phases", None))
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
        memory = {}
        for name in names:
            command = [sys.executable, __file__, "--worker", name, policy, reward]
            command += ["--batch", str(cli.batch), "--completion_length", str(cli.completion_length)]
            command += ["--num_ppo_epochs", str(cli.num_ppo_epochs), "--memory_steps", str(cli.memory_steps)]
            output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
            memory[name] = json.loads(output.strip().splitlines()[-1])["extra_peak_bytes"]

    def median_ratio(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
        return quartiles([a / b for a, b in zip(ours, theirs)])

    rollout = {n: [p[0] for p in phases[n]] for n in ("ppo", "trl_ppo")}
    update = {n: [p[1] for p in phases[n]] for n in ("ppo", "trl_ppo")}
    print(
        f"B={cli.batch} completions of <= {cli.completion_length} tokens, num_ppo_epochs={cli.num_ppo_epochs}, "
        f"{cli.rounds} rounds"
    )
    print(f"{'trainer':<18} {'median s/step':>14} {'IQR':>17} {'mean length':>12} {'extra peak MiB':>15}")
    labels = (("ppo", "trl_ext.PPOTrainer"), ("trl_ppo", "TRL's last PPO"), ("grpo", "trl.GRPOTrainer"))
    for name, label in labels:
        q1, median, q3 = quartiles(times[name])
        print(
            f"{label:<18} {median:14.4f} {q1:8.4f}-{q3:.4f} {statistics.mean(lengths[name]):12.1f} "
            f"{memory[name] / 2**20:15.1f}"
        )
    for name, label in labels[:2]:
        print(
            f"{label:<18} rollout {statistics.median(rollout[name]):.4f} s, update {statistics.median(update[name]):.4f} s"
        )
    q1, median, q3 = median_ratio(times["ppo"], times["grpo"])
    trl_q1, trl_median, trl_q3 = median_ratio(times["ppo"], times["trl_ppo"])
    result = {
        "ratio_vs_trl_ppo": trl_median,
        "ratio_vs_trl_ppo_iqr": [trl_q1, trl_q3],
        "rollout_ratio_vs_trl_ppo": median_ratio(rollout["ppo"], rollout["trl_ppo"])[1],
        "update_ratio_vs_trl_ppo": median_ratio(update["ppo"], update["trl_ppo"])[1],
        "ratio_vs_grpo": median,
        "ratio_iqr": [q1, q3],
        "peak_mem_ratio_vs_grpo": memory["ppo"] / memory["grpo"],
        "peak_mem_ratio_vs_trl_ppo": memory["ppo"] / memory["trl_ppo"],
        "ppo_s_per_step": statistics.median(times["ppo"]),
        "trl_ppo_s_per_step": statistics.median(times["trl_ppo"]),
        "grpo_s_per_step": statistics.median(times["grpo"]),
        "ppo_rollout_s": statistics.median(rollout["ppo"]),
        "ppo_update_s": statistics.median(update["ppo"]),
        "trl_ppo_rollout_s": statistics.median(rollout["trl_ppo"]),
        "trl_ppo_update_s": statistics.median(update["trl_ppo"]),
        "ppo_extra_peak_mib": memory["ppo"] / 2**20,
        "trl_ppo_extra_peak_mib": memory["trl_ppo"] / 2**20,
        "grpo_extra_peak_mib": memory["grpo"] / 2**20,
        "batch": cli.batch,
        "completion_length": cli.completion_length,
        "num_ppo_epochs": cli.num_ppo_epochs,
        "rounds": cli.rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
