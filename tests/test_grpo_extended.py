"""ExtendedGRPOTrainer on a text-only model against independent references: GRPOTrainer itself (options off),
hand-computed RLOO advantages and the adaptive controller's formula, and a task it must learn."""

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from trl_ext import ExtendedGRPOConfig, ExtendedGRPOTrainer
from trl_ext.testing import save_tiny_qwen2


MAX_COMPLETION_LENGTH = 8


def letter_share(completions, **kwargs):
    """The share of the completion budget spent on ASCII letters (a random byte-level model starts near 0.2)."""
    return [min(sum(c.isascii() and c.isalpha() for c in text) / MAX_COMPLETION_LENGTH, 1.0) for text in completions]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = save_tiny_qwen2(tmp_path_factory.mktemp("tiny_lm"))
    return path, Dataset.from_dict({"prompt": [f"Write {i}:" for i in range(32)]})


def _args(config_class, tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=MAX_COMPLETION_LENGTH,
        max_steps=1,
        learning_rate=0.01,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    values.update(overrides)
    return config_class(**values)


def _loss_and_grads(trainer):
    """One rollout and one loss / backward, as `Trainer.training_step` runs them."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the loss directly
    batch = next(iter(trainer.get_train_dataloader()))
    torch.manual_seed(1)
    inputs = trainer._prepare_inputs(batch)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, inputs


@pytest.mark.parametrize(
    "trl_options",
    [
        {"beta": 0.04},  # TRL's defaults (loss_type="dapo", scale_rewards="group") with a KL term
        {"beta": 0.04, "loss_type": "grpo", "scale_rewards": "batch", "top_entropy_quantile": 0.8},
        {"beta": 0.04, "loss_type": "dr_grpo", "num_iterations": 2},  # old log-probs computed by TRL
        {"beta": 0.0, "loss_type": "bnpo", "delta": 1.5, "epsilon_high": 0.28},  # TRL's dual clip
        {"beta": 0.0, "loss_type": "sapo", "scale_rewards": "none"},
    ],
)
def test_options_off_match_grpo_trainer_on_a_text_model(lm, tmp_path, trl_options):
    """Every extension off: the loss and every gradient are GRPOTrainer's on a text-only Qwen2, under TRL's options."""
    path, dataset = lm
    results = []
    for trainer_class, config_class in [(GRPOTrainer, GRPOConfig), (ExtendedGRPOTrainer, ExtendedGRPOConfig)]:
        torch.manual_seed(0)
        args = _args(config_class, tmp_path, **trl_options)
        trainer = trainer_class(model=path, reward_funcs=letter_share, args=args, train_dataset=dataset)
        results.append(_loss_and_grads(trainer))
    (loss_ref, grads_ref, inputs_ref), (loss, grads, inputs) = results
    assert torch.equal(inputs_ref["completion_ids"], inputs["completion_ids"])
    torch.testing.assert_close(inputs["advantages"], inputs_ref["advantages"], atol=0, rtol=0)
    assert grads_ref and grads.keys() == grads_ref.keys() and any(g.abs().sum() > 0 for g in grads.values())
    torch.testing.assert_close(loss, loss_ref, atol=1e-6, rtol=0)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-6, rtol=1e-5)
    assert trainer.beta == trl_options["beta"]


def test_rloo_advantages_are_leave_one_out_on_a_text_model(lm, tmp_path):
    path, dataset = lm
    calls = []

    def recording(completions, **kwargs):
        calls.append(letter_share(completions))
        return calls[-1]

    args = _args(ExtendedGRPOConfig, tmp_path, advantage_estimator="rloo", seed=1)
    trainer = ExtendedGRPOTrainer(model=path, reward_funcs=recording, args=args, train_dataset=dataset)
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    rewards = calls[0]
    expected = []
    for group in range(2):  # 8 rows, 4 generations per prompt: r_i minus the mean of the 3 others of its group
        values = rewards[4 * group : 4 * group + 4]
        expected += [values[i] - (sum(values) - values[i]) / 3 for i in range(4)]
    assert len(set(rewards)) > 1  # not a degenerate batch
    torch.testing.assert_close(output["advantages"][:, 0], torch.tensor(expected), atol=1e-6, rtol=0)
    assert (output["advantages"] == output["advantages"][:, :1]).all()  # the sequence's advantage on every token


def test_the_kl_controller_alone_holds_beta(lm, tmp_path):
    path, dataset = lm
    args = _args(
        ExtendedGRPOConfig,
        tmp_path,
        max_steps=2,
        beta=0.1,
        kl_penalty="reward",
        kl_estimator="k1",
        kl_controller="adaptive",
        kl_target=1.0,
        kl_horizon=100,
    )
    trainer = ExtendedGRPOTrainer(model=path, reward_funcs=letter_share, args=args, train_dataset=dataset)
    trainer.train()
    coefs = [h["grpo/kl_coef"] for h in trainer.state.log_history if "grpo/kl_coef" in h]
    # step 1 is on-policy (KL 0 < target): e = -0.2 on 8 samples, so beta <- 0.1 * (1 - 0.2 * 8 / 100)
    assert coefs[0] == pytest.approx(0.1) and coefs[1] == pytest.approx(0.1 * (1 - 0.2 * 8 / 100))
    assert trainer.beta == trainer.kl_controller.coef < coefs[1]
    with pytest.raises(AttributeError, match="belongs to the KL controller"):
        trainer.beta = 0.5


def test_learns_the_letter_task_with_rloo_kl_in_reward_and_online_filtering(lm, tmp_path):
    path, dataset = lm
    args = _args(
        ExtendedGRPOConfig,
        tmp_path,
        per_device_train_batch_size=16,
        max_steps=30,
        logging_steps=5,
        lr_scheduler_type="constant",
        advantage_estimator="rloo",
        beta=0.01,
        kl_penalty="reward",
        kl_estimator="k1",
        online_filtering=True,
        filter_reward="letter_share",
        filter_low=0.0,
        filter_high=1.0,
    )
    trainer = ExtendedGRPOTrainer(model=path, reward_funcs=letter_share, args=args, train_dataset=dataset)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(f"letter_share reward per 5 steps: {[round(r, 3) for r in rewards]}")
    assert len(rewards) == 6 and rewards[-1] > rewards[0] + 0.25
    assert any("grpo/filtered_group_fraction" in h for h in trainer.state.log_history)


def test_model_card_names_the_base_model_by_hub_id_only(lm, tmp_path):
    """TRL links a local base model as "[None](https://huggingface.co/None)"; ours says it has no Hub id, and names a
    model of the Hugging Face cache by its Hub id."""
    from huggingface_hub import ModelCard

    path, dataset = lm
    trainer = ExtendedGRPOTrainer(
        model=path, reward_funcs=letter_share, args=_args(ExtendedGRPOConfig, tmp_path / "out"), train_dataset=dataset
    )
    trainer.save_model()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model is None and "huggingface.co/None" not in card.text and path not in card.content
    assert "a local model (no Hub id)" in card.text and "trl_ext" in card.data.tags
    cache = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "0123abc"
    cache.mkdir(parents=True)
    trainer.model.config._name_or_path = str(cache)
    trainer.create_model_card()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B-Instruct" and str(cache) not in card.content
    assert "[Qwen/Qwen2.5-0.5B-Instruct](https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct)" in card.text
