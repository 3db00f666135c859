"""PPOTrainer against TRL's last PPOTrainer (trl/experimental/ppo/ppo_trainer.py at fd09025): its batch sizes, its
recipe of a `[PAD]` token the embeddings lack, and the work of a rollout (one policy-and-value forward, the reward
model on the generated ids when it shares the policy's tokenizer)."""

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    HfArgumentParser,
    Qwen2ForSequenceClassification,
)

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.testing import (
    build_tiny_bert_tokenizer,
    build_tiny_tokenizer,
)
from trl_ext.testing.text import init_tiny_weights, tiny_qwen2_config
from trl_ext.trainers.ppo.config import PPOBatchSizes


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tiny_ppo_models):
    return tiny_ppo_models


def make_args(tmp_path, **overrides) -> PPOConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        max_steps=1,
        per_device_train_batch_size=8,
        num_ppo_epochs=2,
        response_length=6,
        temperature=1.0,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        local_rollout_forward_batch_size=8,
        num_sample_generations=0,
    )
    return PPOConfig(**{**values, **overrides})


# TRL's last PPOTrainer.__init__:
#   local_batch_size = per_device_train_batch_size * gradient_accumulation_steps
#   micro_batch_size = per_device_train_batch_size * world_size
#   batch_size = local_batch_size * world_size
#   mini_batch_size = exact_div(batch_size, num_mini_batches)
#   local_mini_batch_size = exact_div(local_batch_size, num_mini_batches)
# and its update loop runs range(0, local_mini_batch_size, per_device_train_batch_size) micro-batches per mini-batch.
@pytest.mark.parametrize(
    ("per_device", "accumulation", "mini_batches", "world", "expected"),
    [
        # (local_batch_size, batch_size, local_mini_batch_size, mini_batch_size, micro_batch_size, micro per mini)
        ((8, 2, 2, 1, (16, 16, 8, 8, 8, 1))),  # issue 18's config: 16 rollout rows per update, not 32
        ((4, 4, 2, 2, (16, 32, 8, 16, 8, 2))),
        ((8, 1, 2, 1, (8, 8, 4, 4, 8, 1))),  # a mini-batch smaller than per_device: one micro-batch of 4
        ((8, 3, 2, 1, (24, 24, 12, 12, 8, 2))),  # 12 rows: micro-batches of 8 and 4
        ((64, 1, 1, 8, (64, 512, 64, 512, 512, 1))),  # TRL's ppo.py command line on 8 GPUs
    ],
)
def test_batch_sizes_are_trls(tmp_path, per_device, accumulation, mini_batches, world, expected):
    args = make_args(
        tmp_path,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_mini_batches=mini_batches,
    )
    sizes = PPOBatchSizes.from_config(args, world_size=world)
    got = (
        sizes.local_batch_size,
        sizes.batch_size,
        sizes.local_mini_batch_size,
        sizes.mini_batch_size,
        sizes.micro_batch_size,
        sizes.micro_batches_per_mini_batch,
    )
    assert got == expected


def test_batch_sizes_reject_what_trl_rejected_and_are_not_written_on_the_config(tmp_path):
    with pytest.raises(ValueError, match="num_mini_batches=3 must divide"):  # TRL: exact_div(4, 3) raises
        make_args(tmp_path, per_device_train_batch_size=4, num_mini_batches=3)
    with pytest.raises(TypeError, match="local_batch_size"):  # not a field: the trainer derives it
        make_args(tmp_path, local_batch_size=16)


def test_trls_derived_sizes_are_not_config_fields_and_world_size_counts_the_processes(tmp_path):
    args = make_args(tmp_path)
    # TRL's PPOTrainer set args.world_size = accelerator.num_processes; a None field shadowed TrainingArguments'
    assert args.world_size == 1
    for name in ("batch_size", "local_batch_size", "mini_batch_size"):
        with pytest.raises(AttributeError, match=f"trainer.batch_sizes.{name}"):
            getattr(args, name)
    with pytest.raises(AttributeError, match="trainer.max_steps"):
        _ = args.num_total_batches
    assert getattr(args, "not_a_field", "default") == "default"  # other missing names: a plain AttributeError
    with pytest.raises(ValueError, match="--batch_size"):  # a command line that sets one is refused, not ignored
        HfArgumentParser(PPOConfig).parse_args_into_dataclasses(["--output_dir", "o", "--batch_size", "8"])


def test_dataset_num_proc_tokenises_the_prompts_with_that_many_processes(tiny, tmp_path, monkeypatch):
    calls = []
    original_map = Dataset.map

    def recording_map(self, function, *args, **kwargs):
        calls.append(kwargs.get("num_proc"))
        return original_map(self, function, *args, **kwargs)

    monkeypatch.setattr(Dataset, "map", recording_map)
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    texts = ["Hello world", "Q1: a b", "an apple", "x"]
    seen = []
    trainer = PPOTrainer(
        make_args(tmp_path, per_device_train_batch_size=4, dataset_num_proc=2),
        tokenizer,
        AutoModelForCausalLM.from_pretrained(tiny["policy"]),
        reward_model=lambda prompts, completions, **kwargs: seen.append(sorted(kwargs)) or [0.0] * len(prompts),
        train_dataset=Dataset.from_dict({"prompt": texts, "label": [0, 1, 2, 3]}),
        eval_dataset=Dataset.from_dict({"prompt": texts[:2]}),
    )
    assert calls == [2, 2]  # train and eval datasets, each over 2 processes
    expected = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]  # the tokenizer's own ids
    assert trainer.train_dataset["prompt_ids"] == expected and trainer.eval_dataset["prompt_ids"] == expected[:2]
    _, prompt_ids, prompt_mask = trainer._encode(
        trainer.train_dataset
    )  # the rollout's prompts: those ids, left-padded
    assert [row[mask.bool()].tolist() for row, mask in zip(prompt_ids, prompt_mask)] == expected
    trainer.train()
    assert "label" in seen[0] and "prompt_ids" not in seen[0]  # reward functions get the dataset's columns only
    with pytest.raises(ValueError, match="dataset_num_proc must be >= 1"):
        make_args(tmp_path, dataset_num_proc=0)


def test_trl_recipe_adds_a_pad_token_without_resizing_and_no_pad_id_reaches_a_model(tiny, tmp_path):
    # TRL's examples/scripts/ppo/ppo.py: padding_side="left", add_special_tokens({"pad_token": "[PAD]"}), no resize;
    # value and reward model from the reward model's checkpoint, a separate reference, pre-tokenised prompts
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"], padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    policy = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    num_embeddings = policy.get_input_embeddings().num_embeddings
    assert len(tokenizer) == num_embeddings + 1 and tokenizer.pad_token_id == num_embeddings
    ref_policy = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    value_model = AutoModelForSequenceClassification.from_pretrained(tiny["reward"], num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny["reward"], num_labels=1)
    seen = []
    for model in (policy, ref_policy, value_model, reward_model):
        embedding = model.get_input_embeddings()
        embedding.register_forward_pre_hook(
            lambda module, args: seen.append((args[0].max().item(), module.num_embeddings))
        )
    prompts = [f"Question {i}:" * (1 + i % 3) for i in range(16)]  # different lengths: left padding
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p, padding=False)["input_ids"] for p in prompts]})
    trainer = PPOTrainer(
        args=make_args(tmp_path, max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2),
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset,
    )
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.train()
    assert trainer.state.global_step == 2 and len(trainer.state.log_history) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert len(seen) > 10 and all(largest < size for largest, size in seen)


def test_a_rollout_runs_one_policy_and_value_forward_and_scores_the_generated_ids(tiny, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny["reward"])
    reference = AutoModelForSequenceClassification.from_pretrained(tiny["reward"])
    scored, prompts_seen, completion_ids = [], [], []

    def record(prompts, completions, **kwargs):
        prompts_seen.extend(prompts)
        completion_ids.extend(kwargs["completion_ids"])
        return [0.0] * len(prompts)

    reward_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: scored.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone())),
        with_kwargs=True,
    )
    prompts = [f"Q{i}:" * (1 + i % 2) for i in range(8)]
    trainer = PPOTrainer(
        make_args(tmp_path, reward_weights=[1.0, 0.0]),
        tokenizer,
        AutoModelForCausalLM.from_pretrained(tiny["policy"]),
        reward_model=[reward_model, record],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
    )
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    calls = {"wrapper": 0, "policy": 0, "value": 0, "reference": 0}
    generating = []
    generate = trainer._generate

    def counted_generate(*args, **kwargs):
        generating.append(True)
        try:
            return generate(*args, **kwargs)
        finally:
            generating.pop()

    def count(name):
        def hook(module, args, kwargs):
            if not generating:
                calls[name] += 1

        return hook

    trainer._generate = counted_generate
    for name, module in (
        ("wrapper", wrapper),
        ("policy", wrapper.policy),
        ("value", wrapper.critic_backbone),
        ("reference", trainer.ref_model),
    ):
        module.register_forward_pre_hook(count(name), with_kwargs=True)
    trainer.train()
    # rollout: 1 forward of the policy-and-value module (8 rows <= local_rollout_forward_batch_size), 1 of the
    # reference, 1 of the reward model; update: 2 epochs x 1 mini-batch x 1 micro-batch of all 8 rows, the first of
    # which backpropagates through the rollout's forward (TRL ran the value model in the rollout and a policy-and-value
    # forward per micro-batch: 1 + 2 value forwards, 2 policy forwards after generation)
    assert calls == {"wrapper": 2, "policy": 2, "value": 2, "reference": 1}
    assert len(scored) == 1
    ids, mask = scored[0]
    # the reward model reads the prompt and the completion as generated (cut after the stop token), no re-tokenised
    # text: exactly the policy's tokens, and its score is the one it gives that unpadded sequence
    expected_scores = []
    for row, row_mask, prompt, completion in zip(ids, mask, prompts_seen, completion_ids, strict=True):
        expected = tokenizer(prompt, add_special_tokens=False)["input_ids"] + completion
        assert row[row_mask.bool()].tolist() == expected
        with torch.no_grad():
            expected_scores.append(reference(input_ids=torch.tensor([expected])).logits[0, 0].item())
    logged = trainer.state.log_history[0]["rewards/reward/mean"]
    assert logged == pytest.approx(sum(expected_scores) / len(expected_scores), abs=1e-5)
    del reference


def test_a_reward_model_with_another_tokenizer_scores_re_tokenised_text(tiny, tmp_path):
    reward_tokenizer = build_tiny_bert_tokenizer()
    config = tiny_qwen2_config(build_tiny_tokenizer(), num_labels=1, vocab_size=len(reward_tokenizer))
    config.pad_token_id = reward_tokenizer.pad_token_id
    reward_model = Qwen2ForSequenceClassification(config).eval()
    init_tiny_weights(reward_model, seed=3)
    scored, prompts_seen, completions_seen = [], [], []
    reward_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: scored.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone())),
        with_kwargs=True,
    )

    def record(prompts, completions, **kwargs):
        prompts_seen.extend(prompts)
        completions_seen.extend(completions)
        return [0.0] * len(prompts)

    prompts = [f"q{i} a" for i in range(8)]
    trainer = PPOTrainer(
        make_args(tmp_path, num_ppo_epochs=1),
        AutoTokenizer.from_pretrained(tiny["policy"]),
        AutoModelForCausalLM.from_pretrained(tiny["policy"]),
        reward_model=[reward_model, record],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        reward_processing_class=reward_tokenizer,
    )
    assert reward_tokenizer.eos_token is None and not trainer.reward_funcs[0].reads_token_ids
    trainer.train()
    ids, mask = scored[0]
    for row, row_mask, prompt, completion in zip(ids, mask, prompts_seen, completions_seen, strict=True):
        text = prompt + completion  # RewardTrainer's format (this tokenizer has no EOS to append)
        assert row[row_mask.bool()].tolist() == reward_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_first_update_through_the_rollouts_forward_equals_a_fresh_forward(tiny, tmp_path):
    def train(chunk: int) -> PPOTrainer:
        trainer = PPOTrainer(
            make_args(tmp_path / str(chunk), num_ppo_epochs=2, local_rollout_forward_batch_size=chunk),
            AutoTokenizer.from_pretrained(tiny["policy"]),
            AutoModelForCausalLM.from_pretrained(tiny["policy"]),
            reward_model=AutoModelForSequenceClassification.from_pretrained(tiny["reward"]),
            train_dataset=Dataset.from_dict({"prompt": [f"Q{i}:" for i in range(8)]}),
        )
        trainer.train()
        assert trainer.state.log_history[0]["policy/on_policy_ratio_dev"] == 0.0
        return trainer

    # one micro-batch of all 8 rows: the rollout's forward trains; with rollout chunks of 4 it cannot (fresh forward)
    reused, fresh = train(8), train(4)
    assert reused._rollout_forward_trains and not fresh._rollout_forward_trains
    for a, b in zip(reused.model.parameters(), fresh.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_uneven_micro_batches_of_a_mini_batch_accumulate_into_one_optimizer_step(tiny, tmp_path):
    # TRL: 4 · 3 = 12 rollout rows, 2 mini-batches of 6 run as range(0, 6, 4): micro-batches of 4 and 2
    trainer = PPOTrainer(
        make_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=3, num_mini_batches=2),
        AutoTokenizer.from_pretrained(tiny["policy"]),
        AutoModelForCausalLM.from_pretrained(tiny["policy"]),
        reward_model=lambda prompts, completions, **kwargs: [c.count("a") / 6 for c in completions],
        train_dataset=Dataset.from_dict({"prompt": [f"Q{i}:" for i in range(12)]}),
    )
    rows = []
    trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    trainer.train()
    assert rows == [8, 4] + [4, 2] * 4  # rollout chunks of local_rollout_forward_batch_size=8, then 2 epochs x 2
    steps = {int(s["step"]) for s in trainer.optimizer.optimizer.state.values()}
    assert steps == {4}  # one optimizer step per mini-batch
