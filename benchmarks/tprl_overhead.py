"""Wall time per training step: trl.GRPOTrainer vs TPRLGRPOTrainer (all features off / on), same tiny VLM and data.

    python benchmarks/tprl_overhead.py [--rounds 30] [--warmup 3] [--completion_length 16] [--batch 16]
        [--model PATH --device cuda --bf16]

By default a tiny random Qwen2.5-VL on one CPU thread; `--model` takes a real VLM directory or Hub id (e.g.
Qwen/Qwen2.5-VL-3B-Instruct) and `--device cuda` a GPU, where generation, not the extra forward, dominates a step.

The three trainers are built once, then stepped in turn, one step each per round with the order rotating every round,
so that drift in machine load hits all three alike (as benchmarks/flow_sde.py times its pair). A step is TRL's
`training_step` (generate, score, TPRL's extra pass, loss, backward) plus the optimizer update; the first `--warmup`
rounds are discarded. Every completion runs to `--completion_length` tokens, so the three policies, which drift apart as
they train, generate the same number of tokens. "Features on" is perception filtering (k = 0.4), entropy filtering
(k = 0.2) and trajectory shaping, on-policy: one extra no-grad forward with the perturbed images; log π(o_t|I) and the
entropies come from TRL's loss forward.

Each round also times one no-grad forward of a fixed rollout batch through TRL's log-probability pass
(`_get_per_token_logps_and_entropies`): `forward_fraction`, its median ratio to the GRPO step, is what one extra pass
costs at least, so ratio_on cannot go below about 1 + forward_fraction.

Prints a table (median s/step and interquartile range per trainer), then a JSON object as the last line with
"ratio_on" and "ratio_off": the median over rounds of each round's TPRL / GRPO step time, with their quartiles, min
and max, and "forward_fraction". Targets: ratio_on <= 1.15, ratio_off <= 1.03.
"""

import argparse
import json
import statistics
import tempfile
import time

import torch
from trl import GRPOConfig, GRPOTrainer

from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
from trl_ext.data import ColourTokenReward, colour_question_dataset
from trl_ext.models.processors import load_vlm_processor
from trl_ext.testing import load_qwen_vl_processor, save_tiny_qwen_vl, vision_special_token_ids


FEATURES_ON = dict(enable_perception_filtering=True, enable_entropy_filtering=True, enable_trajectory_reweighting=True)


def _synchronize() -> None:
    """Wait for the GPU's queued work, so that wall times include it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Stepper:
    """One trainer driven step by step: `step()` runs one generation + update and returns its wall time."""

    def __init__(self, trainer_class, config_class, path, processor, output_dir, cli, **features):
        args = config_class(
            output_dir=output_dir,
            per_device_train_batch_size=cli.batch,
            num_generations=4,
            max_completion_length=cli.completion_length,
            max_steps=cli.rounds,
            learning_rate=1e-4,
            bf16=cli.bf16,
            use_cpu=cli.device == "cpu",
            report_to="none",
            save_strategy="no",
            seed=0,
            disable_tqdm=True,
            # every completion runs to max_completion_length, so the three policies (which drift apart as they train)
            # generate the same number of tokens in every round
            generation_kwargs={
                # a random tiny model would otherwise write image placeholders
                "suppress_tokens": vision_special_token_ids(processor.tokenizer) if cli.model is None else None,
                "min_new_tokens": cli.completion_length,
            },
            **features,
        )
        torch.manual_seed(0)
        self.trainer = trainer_class(
            model=path,
            reward_funcs=ColourTokenReward(cli.completion_length),
            args=args,
            train_dataset=colour_question_dataset(32),
            processing_class=processor,
        )
        self.trainer.create_optimizer_and_scheduler(num_training_steps=cli.rounds)
        self.trainer.current_gradient_accumulation_steps = 1
        self.batches = self._batches()
        self._rollout = None

    def forward(self) -> float:
        """Wall time of one no-grad forward of a fixed rollout batch through TRL's log-probability pass."""
        trainer = self.trainer
        if self._rollout is None:
            self._rollout = trainer._generate_and_score_completions(next(self.batches))
        rollout = self._rollout
        vision_keys = ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids", "image_sizes")
        kwargs = {key: rollout[key] for key in vision_keys if key in rollout}
        start = time.perf_counter()
        with torch.no_grad():
            trainer._get_per_token_logps_and_entropies(
                trainer.model,
                torch.cat([rollout["prompt_ids"], rollout["completion_ids"]], dim=1),
                torch.cat([rollout["prompt_mask"], rollout["completion_mask"]], dim=1),
                rollout["completion_ids"].size(1),
                **kwargs,
            )
        _synchronize()
        return time.perf_counter() - start

    def _batches(self):
        while True:
            yield from self.trainer.get_train_dataloader()

    def step(self) -> float:
        trainer = self.trainer
        batch = next(self.batches)
        start = time.perf_counter()
        trainer.training_step(trainer.model, batch, None)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.optimizer.zero_grad()
        _synchronize()
        return time.perf_counter() - start


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--completion_length", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", default=None, help="A VLM directory or Hub id (default: a tiny random Qwen2.5-VL).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU).")
    cli = parser.parse_args()
    if cli.device == "cpu":
        torch.set_num_threads(1)
    names = ("trl.GRPOTrainer", "TPRL, features off", "TPRL, features on")
    with tempfile.TemporaryDirectory() as tmp:
        if cli.model is None:
            path = save_tiny_qwen_vl(f"{tmp}/model")
            processor = load_qwen_vl_processor(path)
        else:
            path, processor = cli.model, load_vlm_processor(cli.model)
        steppers = {
            names[0]: Stepper(GRPOTrainer, GRPOConfig, path, processor, tmp, cli),
            names[1]: Stepper(TPRLGRPOTrainer, TPRLGRPOConfig, path, processor, tmp, cli),
            names[2]: Stepper(TPRLGRPOTrainer, TPRLGRPOConfig, path, processor, tmp, cli, **FEATURES_ON),
        }
        times: dict[str, list[float]] = {name: [] for name in (*names, "forward")}
        for round_index in range(cli.warmup + cli.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds = steppers[name].step()
                if round_index >= cli.warmup:
                    times[name].append(seconds)
            seconds = steppers[names[0]].forward()
            if round_index >= cli.warmup:
                times["forward"].append(seconds)
    base = times[names[0]]
    ratios = {
        "off": [t / b for t, b in zip(times[names[1]], base)],
        "on": [t / b for t, b in zip(times[names[2]], base)],
    }
    print(f"{'trainer':<22} {'median s/step':>14} {'IQR':>17} {'ratio (median, IQR)':>26}")
    for name, key in zip(names, (None, "off", "on")):
        q1, median, q3 = quartiles(times[name])
        ratio = "1"
        if key is not None:
            r1, r, r3 = quartiles(ratios[key])
            ratio = f"{r:.3f} ({r1:.3f}-{r3:.3f})"
        print(f"{name:<22} {median:14.4f} {q1:8.4f}-{q3:.4f} {ratio:>26}")
    forward_fraction = statistics.median(f / b for f, b in zip(times["forward"], base))
    print(f"one no-grad forward: {statistics.median(times['forward']):.4f} s = {forward_fraction:.3f} of a GRPO step")
    result = {"grpo_s_per_step": quartiles(base)[1], "forward_fraction": forward_fraction}
    for key, values in ratios.items():
        q1, median, q3 = quartiles(values)
        result.update(
            {
                f"ratio_{key}": median,
                f"ratio_{key}_q1": q1,
                f"ratio_{key}_q3": q3,
                f"ratio_{key}_min": min(values),
                f"ratio_{key}_max": max(values),
            }
        )
    result.update(
        rounds=cli.rounds,
        completion_length=cli.completion_length,
        batch=cli.batch,
        model=cli.model or "tiny-qwen2.5-vl",
        device=cli.device,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
