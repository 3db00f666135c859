"""PPOTrainer on tiny Qwen2 models, offline on CPU: on-policy first mini-batch, score placement, learning, LoRA,
resume, two processes, and bad input."""

import ast
import json
import os

import pytest
import torch
from datasets import Dataset
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Qwen2ForSequenceClassification,
)

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.rewards.reward_model import SequenceClassificationReward
from trl_ext.testing import build_tiny_tokenizer
from trl_ext.trainers.ppo.data import truncate_after_stop


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tiny_ppo_models):
    return tiny_ppo_models


def prompts(n: int = 32) -> Dataset:
    return Dataset.from_dict({"prompt": [f"Q{i}:" for i in range(n)]})


def letter_a_frequency(prompts, completions, **kwargs):
    return [c.count("a") / max(len(c), 1) for c in completions]


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
    )
    values.update(overrides)
    return PPOConfig(**values)


def make_trainer(tiny, tmp_path, reward=letter_a_frequency, dataset=None, **overrides) -> PPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    return PPOTrainer(
        make_args(tmp_path, **overrides),
        tokenizer,
        AutoModelForCausalLM.from_pretrained(tiny["policy"]),
        None,
        reward,
        dataset if dataset is not None else prompts(),
    )


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_first_mini_batch_is_on_policy_and_optimizer_steps_per_mini_batch(tiny, tmp_path):
    trainer = make_trainer(
        tiny,
        tmp_path,
        reward=AutoModelForSequenceClassification.from_pretrained(tiny["reward"]),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        num_mini_batches=2,
    )
    micro_batch_rows = []
    trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: micro_batch_rows.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    trainer.train()
    logs = trainer.state.log_history[0]
    assert logs["policy/on_policy_ratio_dev"] == 0.0  # exactly 1 on the first mini-batch of the first epoch
    assert logs["objective/kl"] == 0.0  # the reference is the initial policy
    assert logs["val/ratio"] != 1.0  # later mini-batches are off-policy
    # TRL: 2 · 4 = 8 rollout rows, mini-batches of 8 / 2 = 4 rows in micro-batches of 2: one rollout forward of 8,
    # then 2 epochs x 2 mini-batches x 2 micro-batches; 4 optimizer steps, each accumulating 2 micro-batches
    assert micro_batch_rows == [8] + [2] * 8
    steps = {int(s["step"]) for s in trainer.optimizer.optimizer.state.values()}
    assert steps == {4}
    for name in (
        "objective/entropy",
        "objective/non_score_reward",
        "objective/rlhf_reward",
        "objective/scores",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "loss/policy_avg",
        "loss/value_avg",
        "val/clipfrac_avg",
        "policy/entropy_avg",
        "val/num_eos_tokens",
        "val/ratio_var",
        "episode",
        "lr",
        "eps",
        "grad_norm",
    ):
        assert name in logs and logs[name] == logs[name], name


def test_policy_and_value_have_their_own_learning_rates(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, learning_rate=1e-3, value_learning_rate=5e-3, lr_scheduler_type="constant")
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    policy_ids = {id(p) for p in wrapper.policy.parameters()}
    lrs = {(any(id(p) in policy_ids for p in g["params"]), g["lr"]) for g in trainer.optimizer.param_groups}
    assert lrs == {(True, 1e-3), (False, 5e-3)}
    decays = sorted(g["weight_decay"] for g in trainer.optimizer.param_groups)
    assert decays == [0.0, 0.0, 0.0, 0.0]  # the loop splits each group by weight decay (default 0)


def test_score_lands_on_the_stop_token_and_missing_eos_penalty_uses_the_stop_token(tiny, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    stop = tokenizer.convert_tokens_to_ids("!")  # a configured stop token that is not the EOS
    a, b, eos = tokenizer.convert_tokens_to_ids("a"), tokenizer.convert_tokens_to_ids("b"), tokenizer.eos_token_id
    trainer = make_trainer(
        tiny,
        tmp_path,
        reward=lambda prompts, completions, **kw: [2.0] * len(prompts),
        per_device_train_batch_size=3,
        stop_token_id=stop,
        kl_coef=0.05,
        missing_eos_penalty=1.5,
        response_length=4,
    )
    fixed = torch.tensor([[a, b, stop, a], [a, a, a, b], [stop, b, b, b]])
    trainer._generate = lambda *args: truncate_after_stop(fixed, stop, tokenizer.pad_token_id)
    batch = trainer._rollout(trainer.train_dataset.select(range(3)))
    assert batch.mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    # past the stop token: the filled id 0 (as TRL fed its models), never the pad id, which a model may lack
    assert batch.responses[0, 3] == 0 and batch.sequences[0, -1] == 0
    # the EOS of the tokenizer does not count as a stop: row 1 has no stop token and is penalised
    assert batch.scores.tolist() == [2.0, 0.5, 2.0]
    assert eos not in fixed
    kl = batch.logps - batch.ref_logps  # k1
    last = [2, 3, 0]
    for row, position in enumerate(last):
        expected = batch.scores[row] - 0.05 * kl[row, position]
        torch.testing.assert_close(batch.token_rewards[row, position], expected)
        others = [t for t in range(4) if t != position and batch.mask[row, t]]
        torch.testing.assert_close(batch.token_rewards[row, others], -0.05 * kl[row, others])
    assert batch.token_rewards[0, 3] == 0 and batch.advantages[2, 1:].abs().sum() == 0


def test_learns_a_rule_based_reward(tiny, tmp_path):
    trainer = make_trainer(
        tiny,
        tmp_path,
        max_steps=20,
        per_device_train_batch_size=16,
        num_ppo_epochs=4,
        response_length=8,
        kl_coef=0.0,
        learning_rate=2e-2,
        value_learning_rate=6e-2,
        local_rollout_forward_batch_size=16,
    )
    trainer.train()
    scores = [entry["objective/scores"] for entry in trainer.state.log_history]
    print(f"letter-a frequency: {scores[0]:.3f} -> {scores[-1]:.3f}")
    assert sum(scores[:3]) / 3 < 0.05
    assert sum(scores[-3:]) / 3 > 0.3


def test_raises_a_reward_models_score(tiny, tmp_path):
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny["reward"])
    trainer = make_trainer(
        tiny,
        tmp_path,
        reward=reward_model,
        max_steps=30,
        per_device_train_batch_size=16,
        num_ppo_epochs=4,
        response_length=8,
        kl_coef=0.0,
        learning_rate=3e-2,
        value_learning_rate=9e-2,
        local_rollout_forward_batch_size=16,
    )
    trainer.train()
    scores = [entry["objective/scores"] for entry in trainer.state.log_history]
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    print(
        f"reward-model score: {first:.3f} -> {last:.3f} (std at start {trainer.state.log_history[0]['reward_std']:.3f})"
    )
    assert last > first + 1.0  # the score's standard deviation over completions is about 1 at the start


def test_lora_trains_the_adapter_and_its_disabled_adapter_is_the_reference(tiny, tmp_path):
    from peft import LoraConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    base = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    trainer = PPOTrainer(
        make_args(tmp_path, max_steps=2),
        tokenizer,
        base,
        None,
        AutoModelForSequenceClassification.from_pretrained(tiny["reward"]),
        prompts(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None
    trainer.train()
    assert trainer.state.log_history[0]["objective/kl"] == 0.0
    assert trainer.state.log_history[0]["policy/on_policy_ratio_dev"] == 0.0
    policy = trainer.policy
    original = AutoModelForCausalLM.from_pretrained(tiny["policy"]).state_dict()
    for name, param in policy.named_parameters():
        if "lora_" not in name:  # the base weights are frozen and unchanged
            assert not param.requires_grad
            assert torch.equal(param, original[name.removeprefix("base_model.model.").replace(".base_layer", "")])
    assert any(p.abs().sum() > 0 for n, p in policy.named_parameters() if "lora_B" in n)
    trainer.save_model(str(tmp_path / "saved"))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved"))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert not torch.equal(flat(merged), flat(AutoModelForCausalLM.from_pretrained(tiny["policy"])))  # merged


def test_save_model_and_bit_identical_resume_with_adaptive_kl(tiny, tmp_path, caplog):
    common = dict(max_steps=4, kl_controller="adaptive", kl_target=0.01, kl_horizon=10, save_steps=2)
    full = make_trainer(tiny, tmp_path / "full", save_strategy="steps", **common)
    with caplog.at_level("WARNING"):
        full.train()
    # the policy's LM head is tied to its embeddings: saved once, as save_pretrained saves it, without accelerate's
    # "Removed shared tensor" warning at every checkpoint
    assert not [r for r in caplog.records if "shared tensor" in r.getMessage()]
    with safe_open(tmp_path / "full" / "out" / "checkpoint-2" / "model.safetensors", "pt") as f:
        assert "policy.model.embed_tokens.weight" in f.keys() and "policy.lm_head.weight" not in f.keys()
    resumed = make_trainer(tiny, tmp_path / "full", save_strategy="no", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-2"))
    assert torch.equal(flat(full.model), flat(resumed.model))
    assert full.kl_controller.coef == resumed.kl_controller.coef != 0.05
    # the checkpoint keeps the key "kl_coef" it had when the attribute was `kl_ctl`: older checkpoints resume
    saved = torch.load(tmp_path / "full" / "out" / "checkpoint-2" / "process_state_0.pt", weights_only=True)
    step_3 = next(e for e in full.state.log_history if e.get("step") == 3)  # its rollout's β: the checkpoint's
    assert saved["kl_coef"] == pytest.approx(step_3["objective/kl_coef"]) and not hasattr(full, "kl_ctl")
    assert [e["objective/scores"] for e in full.state.log_history[2:]] == [
        e["objective/scores"] for e in resumed.state.log_history[2:]
    ]
    out = tmp_path / "saved"
    full.save_model(str(out))
    policy = AutoModelForCausalLM.from_pretrained(out)
    value = AutoModelForSequenceClassification.from_pretrained(out / "value_model")
    torch.testing.assert_close(flat(policy), flat(full.policy))
    torch.testing.assert_close(flat(value), flat(full.value_model))
    card = (out / "README.md").read_text()
    # the policy was loaded from a local directory: no Hub id, so no base_model and no path; one Python block
    assert "PPOTrainer" in card and "base_model" not in card and str(tiny["policy"]) not in card
    assert card.count("```python\n") == 1 and card.count("```") == 4  # the usage and the configuration
    usage = card.split("```python\n")[1].split("\n```")[0]
    ast.parse(usage)
    assert 'AutoModelForCausalLM.from_pretrained("saved")' in usage


def test_critic_warm_up_trains_only_the_value_model(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, critic_warmup_steps=1, weight_decay=0.1)
    policy_before, value_before = flat(trainer.policy).clone(), flat(trainer.value_model).clone()
    trainer.train()
    assert torch.equal(flat(trainer.policy), policy_before)
    assert not torch.equal(flat(trainer.value_model), value_before)


def test_pretokenised_and_conversational_prompts_with_a_reward_model(tiny, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny["reward"])
    ids = Dataset.from_dict({"input_ids": [tokenizer(f"Q{i}:")["input_ids"] for i in range(8)]})
    trainer = make_trainer(tiny, tmp_path / "ids", reward=reward_model, dataset=ids, value_model_init="reward_model")
    torch.testing.assert_close(trainer.value_model.score.weight, reward_model.score.weight)
    trainer.train()
    chats = Dataset.from_dict({"prompt": [[{"role": "user", "content": f"Q{i}?"}] for i in range(8)]})
    seen = []

    def record(prompts, completions, **kwargs):
        seen.extend(completions)
        return [1.0] * len(prompts)

    trainer = make_trainer(tiny, tmp_path / "chat", reward=[reward_model, record], dataset=chats)
    trainer.train()
    assert isinstance(seen[0], list) and seen[0][0]["role"] == "assistant"
    assert "rewards/record/mean" in trainer.state.log_history[0]


def test_reward_model_with_its_own_tokenizer_scores_re_tokenised_text():
    from trl_ext.testing import build_tiny_bert_tokenizer
    from trl_ext.testing.text import init_tiny_weights, tiny_qwen2_config

    reward_tokenizer = build_tiny_bert_tokenizer()
    config = tiny_qwen2_config(build_tiny_tokenizer(), num_labels=1, vocab_size=len(reward_tokenizer))
    config.pad_token_id = reward_tokenizer.pad_token_id
    model = Qwen2ForSequenceClassification(config).eval()
    init_tiny_weights(model, seed=3)
    reward = SequenceClassificationReward(model, reward_tokenizer)
    scores = reward(["a b"], ["c"])
    text = "a bc" + (reward_tokenizer.eos_token or "")  # RewardTrainer's format: prompt + completion + EOS
    ids = reward_tokenizer(text, add_special_tokens=False, return_tensors="pt")
    torch.testing.assert_close(torch.tensor(scores), model(**ids).logits[:, 0].detach())


def test_unscored_samples_are_masked_and_a_batch_without_score_is_skipped(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, reward=lambda prompts, completions, **kw: [None] * len(prompts))
    before = flat(trainer.model).clone()
    trainer.train()
    assert trainer.state.log_history[-1]["skipped_steps_count"] == 1
    assert torch.equal(flat(trainer.model), before)


def test_bad_input_fails_early_with_a_clear_error(tiny, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    policy = AutoModelForCausalLM.from_pretrained(tiny["policy"])
    args = make_args(tmp_path)
    with pytest.raises(ValueError, match="'prompt' column"):
        PPOTrainer(args, tokenizer, policy, None, letter_a_frequency, Dataset.from_dict({"text": ["x"]}))
    with pytest.raises(ValueError, match="empty"):
        PPOTrainer(args, tokenizer, policy, None, letter_a_frequency, Dataset.from_dict({"prompt": []}))
    two_labels = AutoModelForSequenceClassification.from_pretrained(
        tiny["reward"], num_labels=2, ignore_mismatched_sizes=True
    )
    with pytest.raises(ValueError, match="num_labels=2"):
        PPOTrainer(args, tokenizer, policy, None, two_labels, prompts())
    pad_is_eos = AutoTokenizer.from_pretrained(tiny["policy"])
    pad_is_eos.pad_token = pad_is_eos.eos_token
    with pytest.raises(ValueError, match="differ from the stop token"):
        PPOTrainer(args, pad_is_eos, policy, None, letter_a_frequency, prompts())
    with pytest.raises(ValueError, match="response_length must be >= 1"):
        make_args(tmp_path, response_length=0)
    with pytest.raises(ValueError, match="reward_model is required"):
        PPOTrainer(args, tokenizer, policy, None, None, prompts())
    with pytest.raises(ValueError, match="mutually exclusive"):
        make_args(tmp_path, stop_token="eos", stop_token_id=3)


def test_two_processes_keep_identical_weights_and_draw_different_prompts(tiny, launch_two_processes):
    ranks = launch_two_processes("ppo_two_steps.py", tiny["policy"], tiny["reward"])
    assert ranks[0]["policy"] == ranks[1]["policy"]
    assert ranks[0]["value"] == ranks[1]["value"]
    assert ranks[0]["policy"] != ranks[0]["initial_policy"]
    for step in range(2):
        assert not set(ranks[0]["prompts"][step]) & set(ranks[1]["prompts"][step])
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"]
    assert json.dumps(ranks[0]["metrics"]) == json.dumps(ranks[1]["metrics"])  # gathered before logging
    assert os.path.isdir(ranks[0]["saved"])


def test_gradient_checkpointing_value_model_from_a_causal_lm_path_and_generate_completions(tiny, tmp_path):
    eval_prompts = Dataset.from_dict({"prompt": ["Q100:", "Q101:", "Q102:"]})
    tokenizer = AutoTokenizer.from_pretrained(tiny["policy"])
    trainer = PPOTrainer(
        make_args(tmp_path, gradient_checkpointing=True),
        tokenizer,
        tiny["policy"],
        None,
        letter_a_frequency,
        prompts(),
        value_model=tiny["policy"],  # a causal LM's directory: its backbone with a zero value head
        eval_dataset=eval_prompts,
    )
    assert trainer.value_model.score.weight.abs().sum() == 0
    trainer.train()
    assert trainer.state.log_history[0]["policy/on_policy_ratio_dev"] == 0.0
    assert trainer.accelerator.unwrap_model(trainer.model).is_gradient_checkpointing
    rows = trainer.generate_completions()
    assert [row["prompt"] for row in rows] == ["Q100:", "Q101:", "Q102:"]
    assert all(isinstance(row["completion"], str) and row["score"] >= 0 for row in rows)
    logged = [json.loads(line) for line in open(os.path.join(trainer.args.output_dir, "completions.jsonl"))]
    assert logged[-3:] == rows and logged[0]["step"] == 0  # the training step's sample table comes first
