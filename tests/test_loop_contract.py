"""The loop contract of `RLLoopTrainer` (the guarantees listed in `trl_ext.trainers.loop`'s docstring), on the SEDD
trainers (the fastest loop trainers): the `TrainingArguments` fields, checkpoints that are complete or absent,
bit-identical resume, reward checks."""

import ast
import glob
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from trl_ext import (
    DiscreteDiffusionPPOConfig,
    DiscreteDiffusionPPOTrainer,
    DiscreteDiffusionSFTConfig,
    DiscreteDiffusionSFTTrainer,
    SEDDModel,
)
from trl_ext.data import generate_latex_corpus
from trl_ext.rewards import LaTeXReward
from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd
from trl_ext.trainers.checkpointing import last_complete_checkpoint


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = Dataset.from_dict({"prompt": ["x=", "y=", "z=", "w=", "$a", "$b"]})
CORPUS = generate_latex_corpus(64)  # 64 documents -> 50 blocks of 32 tokens with the tiny tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def sedd_path(tmp_path_factory, tokenizer):
    return save_tiny_sedd(tmp_path_factory.mktemp("sedd") / "tiny-sedd", tokens=len(tokenizer))


def sft_args(output_dir, **overrides) -> DiscreteDiffusionSFTConfig:
    values = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        block_size=32,
        learning_rate=1e-2,
        max_steps=4,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    return DiscreteDiffusionSFTConfig(**{**values, **overrides})


def ppo_args(output_dir, **overrides) -> DiscreteDiffusionPPOConfig:
    values = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=8,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=8,
        sampling_steps=4,
        num_sigma_samples=2,
        learning_rate=3e-3,
        max_steps=3,
        num_iterations=2,
        num_mini_batches=2,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    return DiscreteDiffusionPPOConfig(**{**values, **overrides})


def weights(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()]


def assert_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# TrainingArguments


def test_num_train_epochs_sets_the_steps_and_zero_steps_is_an_error(sedd_path, tokenizer, tmp_path):
    trainer = DiscreteDiffusionSFTTrainer(
        sedd_path, sft_args(tmp_path, max_steps=-1, num_train_epochs=2), CORPUS, tokenizer
    )
    num_blocks = len(trainer.blocks)
    assert trainer.max_steps == 2 * math.ceil(num_blocks / 4)  # two passes over the blocks, 4 blocks a step
    # a pass visits every block once: the rows of the first epoch are a permutation
    rows = [row for step in range(num_blocks // 4) for row in trainer.rows_for_step(step)]
    assert len(set(rows)) == len(rows) == 4 * (num_blocks // 4)
    with pytest.raises(ValueError, match="train 0 steps"):
        DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path, max_steps=-1, num_train_epochs=0), CORPUS, tokenizer)


def test_gradient_accumulation_makes_every_step_one_optimizer_step_over_n_micro_batches(
    sedd_path, tokenizer, tmp_path
):
    """Issue 18, item 9, as in transformers' Trainer: with `gradient_accumulation_steps=2` a step is an optimizer
    step over twice the rows (it used to step every second training step and drop a trailing half accumulation), so
    an epoch takes half the steps; SEDD PPO's SGD weight change and gradient norms equal those of the same rollouts
    trained with each minibatch in one micro-batch (unscored samples weigh 0 over the whole update, not over a
    micro-batch)."""
    one = DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path, max_steps=-1), CORPUS, tokenizer)
    two = DiscreteDiffusionSFTTrainer(
        sedd_path, sft_args(tmp_path, max_steps=-1, gradient_accumulation_steps=2), CORPUS, tokenizer
    )
    assert two.max_steps == math.ceil(one.max_steps / 2)
    two = DiscreteDiffusionSFTTrainer(
        sedd_path, sft_args(tmp_path, max_steps=3, gradient_accumulation_steps=2), CORPUS, tokenizer
    )
    two.train()
    assert [h["step"] for h in two.state.log_history if h.get("grad_norm", 0) > 0] == [1, 2, 3]

    def some_unscored(prompts, completions, **kwargs):
        return [None if i % 3 == 0 else float(c.count("a")) for i, c in enumerate(completions)]

    changes, grad_norms = {}, {}
    for accumulation, batch_size in ((4, 2), (1, 8)):  # rollouts of 8, two minibatches of 4: micro-batches of 2 or 4
        args = ppo_args(
            tmp_path,
            optim="sgd",
            learning_rate=0.1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        trainer = DiscreteDiffusionPPOTrainer(sedd_path, some_unscored, args, PROMPTS, tokenizer)
        before = weights(trainer)
        trainer.train()
        changes[accumulation] = torch.cat([(a - b).flatten() for a, b in zip(weights(trainer), before)])
        grad_norms[accumulation] = [h["grad_norm"] for h in trainer.state.log_history]
    torch.testing.assert_close(grad_norms[4], grad_norms[1], rtol=1e-4, atol=0)
    scale = changes[1].abs().max().item()
    print(
        f"SEDD PPO weight change: max {scale:.3e}, accumulated - one batch {(changes[4] - changes[1]).abs().max():.3e}"
    )
    assert scale > 0
    torch.testing.assert_close(changes[4], changes[1], rtol=0, atol=1e-4 * scale)


def test_fields_the_loop_cannot_honour_are_rejected(sedd_path, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="torch_compile=True"):
        DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path, torch_compile=True), CORPUS, tokenizer)
    with pytest.raises(ValueError, match="eval_strategy"):
        DiscreteDiffusionSFTTrainer(
            sedd_path, sft_args(tmp_path, eval_strategy="steps", eval_steps=1), CORPUS, tokenizer
        )
    with pytest.raises(ValueError, match="gradient_checkpointing is not supported by SEDDModel"):
        DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path, gradient_checkpointing=True), CORPUS, tokenizer)


def test_scheduler_warmup_and_optimizer_follow_the_arguments(sedd_path, tokenizer, tmp_path):
    args = sft_args(
        tmp_path,
        max_steps=6,
        warmup_steps=2,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        adam_beta1=0.8,
        adam_beta2=0.95,
        weight_decay=0.1,
    )
    trainer = DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer)
    assert type(trainer.optimizer.optimizer) is torch.optim.AdamW
    assert trainer.optimizer.param_groups[0]["betas"] == (0.8, 0.95)
    # decay on matrices only, as transformers.Trainer (biases and norm weights are 1-D)
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.1, 0.0}
    trainer.train()
    # linear warm-up over 2 steps, then linear decay to 0 at step 6: lr * [0, 1/2, 1, 3/4, 1/2, 1/4]
    expected = [1e-2 * f for f in (0.0, 0.5, 1.0, 0.75, 0.5, 0.25)]
    assert [h["learning_rate"] for h in trainer.state.log_history] == pytest.approx(expected)
    sgd = DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path, optim="sgd"), CORPUS, tokenizer)
    assert type(sgd.optimizer.optimizer) is torch.optim.SGD


def test_logs_reach_trainer_state_json_and_tensorboard(sedd_path, tokenizer, tmp_path):
    args = sft_args(tmp_path, max_steps=4, logging_steps=2, report_to=["tensorboard"])
    trainer = DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer)
    trainer.train()
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"]] == [2, 4]
    assert all("loss" in h and "grad_norm" in h for h in state["log_history"])
    events = glob.glob(str(tmp_path / "runs" / "**" / "events.out.tfevents.*"), recursive=True)
    assert events, "report_to=tensorboard wrote no event file under output_dir/runs"


class RecordingCallback(TrainerCallback):
    """Records the events `transformers.Trainer` would send, and stops training after `stop_at` steps."""

    def __init__(self, stop_at: int):
        self.stop_at, self.events = stop_at, []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.events.append(("train_begin", state.global_step, model is not None and optimizer is not None))

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(("step_end", state.global_step))
        if state.global_step == self.stop_at:
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(("log", state.global_step, "loss" in logs))

    def on_save(self, args, state, control, **kwargs):
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.events.append(("save", state.global_step, os.path.isfile(os.path.join(checkpoint, "trainer_state.json"))))

    def on_epoch_end(self, args, state, control, **kwargs):
        self.events.append(("epoch_end", state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append(("train_end", state.global_step))


def test_callbacks_see_transformers_events_and_can_stop_training(sedd_path, tokenizer, tmp_path):
    callback = RecordingCallback(stop_at=10)
    args = sft_args(
        tmp_path, per_device_train_batch_size=16, max_steps=20, logging_steps=4, save_strategy="steps", save_steps=6
    )
    trainer = DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer, callbacks=[callback])
    assert trainer.steps_per_epoch == 7  # 112 blocks of 32 tokens, 16 per step
    trainer.train()
    assert trainer.global_step == 10
    events = [e for e in callback.events if e[0] != "step_end"]
    assert events == [
        ("train_begin", 0, True),
        ("log", 4, True),
        ("save", 6, True),
        ("epoch_end", 7),
        ("log", 8, True),
        ("log", 10, True),  # the step that stops training is logged
        ("train_end", 10),
    ]
    assert [e[1] for e in callback.events if e[0] == "step_end"] == list(range(1, 11))
    assert trainer.pop_callback(RecordingCallback) is callback
    # at max_steps transformers' flow also saves, as Trainer does
    args = sft_args(tmp_path / "final", max_steps=5, save_strategy="steps", save_steps=3)
    DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer).train()
    assert sorted(glob.glob(str(tmp_path / "final" / "checkpoint-*"))) == [
        str(tmp_path / "final" / f"checkpoint-{n}") for n in (3, 5)
    ]


class CountingCallback(TrainerCallback, ExportableState):
    """A callback with a state: the steps it has seen (and a constructor argument)."""

    def __init__(self, offset: int = 0):
        self.offset, self.steps = offset, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def state(self) -> dict:
        return {"args": {"offset": self.offset}, "attributes": {"steps": self.steps}}


def test_stateful_callbacks_are_checkpointed_and_restored_on_request(sedd_path, tokenizer, tmp_path):
    args = sft_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer, callbacks=[CountingCallback(offset=7)]).train()
    saved = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["CountingCallback"] == {"args": {"offset": 7}, "attributes": {"steps": 2}}
    assert saved["TrainerControl"]["args"]["should_training_stop"] is False
    assert json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"][
        "TrainerControl"
    ]["args"]["should_training_stop"]
    for restore, (offset, steps) in ((True, (7, 4)), (False, (0, 2))):
        args = sft_args(tmp_path, max_steps=4, restore_callback_states_from_checkpoint=restore)
        trainer = DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer, callbacks=[CountingCallback()])
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
        (callback,) = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, CountingCallback)]
        assert (callback.offset, callback.steps) == (offset, steps) and trainer.global_step == 4
    # resuming from the last step's checkpoint ("stop" in its control) with more steps to go still trains them
    args = sft_args(tmp_path, max_steps=6, restore_callback_states_from_checkpoint=True)
    trainer = DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert trainer.global_step == 6


# Checkpoints and resume


def test_last_complete_checkpoint_skips_torn_ones(tmp_path):
    for name, state in [
        ("checkpoint-2", '{"global_step": 2}'),
        ("checkpoint-9", '{"global_step": 9}'),
        ("checkpoint-10", '{"global_st'),  # killed while writing trainer_state.json
        ("checkpoint-11", None),  # killed before it
        ("tmp-checkpoint-12", '{"global_step": 12}'),  # this trainer's unfinished save
    ]:
        (tmp_path / name).mkdir()
        if state is not None:
            (tmp_path / name / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-9")
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None


def test_save_total_limit_and_resume_true_reproduce_the_uninterrupted_run(sedd_path, tokenizer, tmp_path):
    full = DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path / "full", max_steps=6), CORPUS, tokenizer)
    full.train()
    # the same run, stopped by a callback after step 4 (the learning-rate schedule is the full run's 6 steps)
    args = sft_args(tmp_path / "run", max_steps=6, save_strategy="steps", save_steps=1, save_total_limit=2)
    DiscreteDiffusionSFTTrainer(sedd_path, args, CORPUS, tokenizer, callbacks=[RecordingCallback(stop_at=4)]).train()
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-3", "checkpoint-4", "trainer_state.json"]
    # a new trainer resumes from the latest complete checkpoint and ends where the uninterrupted run ended
    resumed = DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path / "run", max_steps=6), CORPUS, tokenizer)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path / "empty"), CORPUS, tokenizer).train(
            resume_from_checkpoint=True
        )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.global_step == 6 and [h["step"] for h in resumed.state.log_history] == [1, 2, 3, 4, 5, 6]
    assert_identical(weights(resumed), weights(full))
    # every logged value (loss, grad_norm, learning_rate, ...) of the six steps, bit for bit
    assert resumed.state.log_history == full.state.log_history


def test_sedd_sft_resume_is_bit_identical(sedd_path, tokenizer, tmp_path):
    full = DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path / "full"), CORPUS, tokenizer)
    full.train()
    first = DiscreteDiffusionSFTTrainer(
        sedd_path, sft_args(tmp_path / "a", save_strategy="steps", save_steps=2), CORPUS, tokenizer
    )
    first.train()
    resumed = DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path / "b"), CORPUS, tokenizer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    assert_identical(weights(resumed), weights(full))
    assert [h["loss"] for h in resumed.state.log_history] == [h["loss"] for h in full.state.log_history]


def test_sedd_ppo_with_latex_reward_resume_is_bit_identical(sedd_path, tokenizer, tmp_path):
    # LaTeXReward's exploration history makes it stateful: it must be checkpointed for the resumed run to match
    full = DiscreteDiffusionPPOTrainer(sedd_path, LaTeXReward(), ppo_args(tmp_path / "full"), PROMPTS, tokenizer)
    full.train()
    args = ppo_args(tmp_path / "a", save_strategy="steps", save_steps=1)
    DiscreteDiffusionPPOTrainer(sedd_path, LaTeXReward(), args, PROMPTS, tokenizer).train()
    reward = LaTeXReward()
    resumed = DiscreteDiffusionPPOTrainer(sedd_path, reward, ppo_args(tmp_path / "b"), PROMPTS, tokenizer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1"))
    assert len(reward.history) == 3 * 8  # the restored history of step 1 plus the two steps run here
    assert_identical(weights(resumed), weights(full))
    assert [h["reward"] for h in resumed.state.log_history] == [h["reward"] for h in full.state.log_history]


@pytest.mark.slow
def test_killed_while_checkpointing_every_restart_resumes_a_complete_checkpoint(sedd_path, tmp_path):
    """SIGKILL a run that checkpoints every step, at random moments (half of them during a checkpoint write), 7 times;
    every restart resumes from a complete
    checkpoint, at most `save_total_limit` (+1 while a rename is not yet followed by the rotation) are kept, and the
    final weights equal those of an uninterrupted run."""
    script = os.path.join(ROOT, "tests", "scripts", "sft_checkpoint_every_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    max_steps = "200"  # about 16 ms a step with its checkpoint

    def start(output_dir):
        return subprocess.Popen(
            [sys.executable, script, sedd_path, str(output_dir), max_steps],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    (tmp_path / "reference").mkdir()
    reference = start(tmp_path / "reference" / "out")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-3000:]

    rng = random.Random(0)
    run_dir, marker = tmp_path / "killed" / "out", tmp_path / "killed" / "started"
    (tmp_path / "killed").mkdir()
    steps_at_kill, partial_saves = [], 0
    for attempt in range(7):
        marker.unlink(missing_ok=True)
        process = start(run_dir)
        while not marker.exists() and process.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.4))
        if attempt % 2:  # every other kill waits for a checkpoint write to begin, then strikes within ~1 ms
            while not glob.glob(str(run_dir / "tmp-checkpoint-*")) and process.poll() is None:
                time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoints = sorted(glob.glob(str(run_dir / "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
        assert len(checkpoints) <= 3
        for checkpoint in checkpoints:  # a directory named checkpoint-N is always complete
            assert os.path.isfile(os.path.join(checkpoint, "trainer_state.json"))
            assert os.path.isfile(os.path.join(checkpoint, "process_state_0.pt"))
            assert os.path.isfile(os.path.join(checkpoint, "optimizer.bin"))
        steps_at_kill.append(int(checkpoints[-1].rsplit("-", 1)[1]) if checkpoints else 0)
        partial_saves += bool(glob.glob(str(run_dir / "tmp-checkpoint-*")))
    print(f"checkpoint at each kill: {steps_at_kill}; kills during a checkpoint write: {partial_saves} of 7")
    assert partial_saves >= 1  # the kills did land while a checkpoint was being written
    assert steps_at_kill == sorted(steps_at_kill) and steps_at_kill[-1] > 0  # every restart went on from a checkpoint
    final = start(run_dir)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()[-3000:]
    assert len(glob.glob(str(run_dir / "checkpoint-*"))) == 2
    assert_identical(torch.load(run_dir / "weights.pt"), torch.load(tmp_path / "reference" / "out" / "weights.pt"))


# Rewards and bad input


def test_reward_checks_and_unscored_steps(sedd_path, tokenizer, tmp_path):
    def infinite(prompts, completions, **kwargs):
        return [float("inf")] * len(prompts)

    def scalar(prompts, completions, **kwargs):
        return 1.0

    def unscored(prompts, completions, **kwargs):
        return [None] * len(prompts)

    with pytest.raises(ValueError, match="infinite returned inf for sample 0"):
        DiscreteDiffusionPPOTrainer(sedd_path, infinite, ppo_args(tmp_path), PROMPTS, tokenizer).train()
    with pytest.raises(TypeError, match="scalar must return a list"):
        DiscreteDiffusionPPOTrainer(sedd_path, scalar, ppo_args(tmp_path), PROMPTS, tokenizer).train()
    trainer = DiscreteDiffusionPPOTrainer(sedd_path, unscored, ppo_args(tmp_path, max_steps=2), PROMPTS, tokenizer)
    before = weights(trainer)
    trainer.train()
    assert_identical(weights(trainer), before)  # no update without a scored sample
    last = trainer.state.log_history[-1]
    assert last["skipped_steps_count"] == 2 and last["unscored_count"] == 8


@pytest.mark.parametrize(
    "field, value",
    [("epsilon", -0.1), ("beta", -1.0), ("num_iterations", 0), ("sampling_steps", 0), ("max_prompt_length", 0)],
)
def test_ppo_config_rejects_out_of_range_values(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        ppo_args(tmp_path, **{field: value})


def test_model_cards_name_the_base_model_by_its_hub_id_only(sedd_path, tokenizer, tmp_path):
    # loaded from a local directory: no Hub id to name, so no base_model (as in TRL's cards) and no local path
    DiscreteDiffusionSFTTrainer(sedd_path, sft_args(tmp_path / "local"), CORPUS, tokenizer).save_model()
    card = (tmp_path / "local" / "README.md").read_text()
    assert "base_model" not in card and "tiny-sedd" not in card and "- Base model: a local model (no Hub id)" in card
    assert card.count("```") == 4 and card.count("```python\n") == 1  # one Python block, one JSON block
    usage = card.split("```python\n")[1].split("\n```")[0]
    ast.parse(usage)
    assert 'SEDDModel.from_pretrained("local")' in usage
    # loaded from the Hub, or from a directory of the Hugging Face cache: the Hub id, linked
    snapshot = tmp_path / "cache" / "models--org--tiny-sedd" / "snapshots" / "0123abc"
    for name_or_path in ("org/tiny-sedd", str(snapshot)):
        model = SEDDModel.from_pretrained(sedd_path)
        model.name_or_path = name_or_path
        DiscreteDiffusionSFTTrainer(model, sft_args(tmp_path / "hub"), CORPUS, tokenizer).save_model()
        card = (tmp_path / "hub" / "README.md").read_text()
        assert "\nbase_model: org/tiny-sedd\n" in card and str(snapshot) not in card
        assert "- Base model: [`org/tiny-sedd`](https://huggingface.co/org/tiny-sedd)" in card
