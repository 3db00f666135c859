import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_ext import DiscreteDiffusionSFTConfig, DiscreteDiffusionSFTTrainer, SEDDModel
from trl_ext.data import extract_latex, generate_latex_corpus, latex_from_rows
from trl_ext.rewards import LaTeXReward
from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd


def test_extract_latex_from_solution_text():
    text = r"We get $x^2+1$, costing $5, then $$\frac{a}{b}$$ and \[ \sum_{i=1}^n i \] and \(y\), also \begin{align} a &= b \end{align}."
    assert extract_latex(text) == ["x^2+1", r"\frac{a}{b}", r"\sum_{i=1}^n i", "a &= b"]
    rows = [{"question": "Q1", "solution": r"So $a+b=c$."}, {"question": "Q2", "solution": "No math here."}]
    dataset = latex_from_rows(rows)
    assert dataset["prompt"] == ["Q1"] and dataset["text"] == ["a+b=c"]


def test_generated_corpus_is_deterministic_and_scores_as_valid_latex():
    corpus = generate_latex_corpus(40, seed=1)
    assert corpus["text"] == generate_latex_corpus(40, seed=1)["text"]
    reward = LaTeXReward(weights={"explore": 0.0})
    scores = reward(None, corpus["text"])
    assert min(reward.last_components["valid"]) == 1.0 and min(reward.last_components["balance"]) == 1.0
    assert np.mean(scores) > 3.5


def test_sft_lowers_the_score_entropy_loss(tmp_path):
    tokenizer = build_tiny_tokenizer()
    model = SEDDModel.from_pretrained(save_tiny_sedd(tmp_path / "sedd", tokens=len(tokenizer), hidden_size=64))
    args = DiscreteDiffusionSFTConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=8,
        block_size=64,
        learning_rate=3e-3,
        max_steps=60,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
        logging_steps=1,
        lr_scheduler_type="constant",
    )
    trainer = DiscreteDiffusionSFTTrainer(model, args, generate_latex_corpus(200), tokenizer)
    trainer.train()
    history = trainer.state.log_history
    losses = [h["loss"] for h in history]
    print(f"SFT loss per token: first 10 steps {np.mean(losses[:10]):.3f}, last 10 {np.mean(losses[-10:]):.3f}")
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    trainer.save_model()
    assert SEDDModel.from_pretrained(str(tmp_path / "out")).config.tokens == len(tokenizer)
    assert "DiscreteDiffusionSFTTrainer" in (tmp_path / "out" / "README.md").read_text()
    with pytest.raises(ValueError, match="no 'content' column"):
        DiscreteDiffusionSFTTrainer(
            model,
            DiscreteDiffusionSFTConfig(output_dir=str(tmp_path), use_cpu=True, dataset_text_field="content"),
            Dataset.from_dict({"text": ["a"]}),
            tokenizer,
        )


def test_a_batch_without_masked_positions_is_a_zero_loss_step(tmp_path):
    """Issue 18, item 2: 2 blocks of 16 tokens at a small sampled t mask nothing; such a step used to crash in backward
    ("element 0 of tensors does not require grad"). Its score entropy is a sum over no position: exactly 0, with zero
    (present) gradients, hence a zero gradient norm."""
    tokenizer = build_tiny_tokenizer()
    args = DiscreteDiffusionSFTConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        block_size=16,
        per_device_train_batch_size=2,
        num_train_epochs=1,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
    )
    dataset = Dataset.from_dict({"text": ["x^2 + y = 1 and more text here"] * 40})
    trainer = DiscreteDiffusionSFTTrainer(
        save_tiny_sedd(tmp_path / "sedd", tokens=len(tokenizer)), args, dataset, tokenizer
    )
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert len(history) == trainer.max_steps
    empty = [h for h in history if h["loss"] == 0.0]
    assert empty, "no step drew a batch without masked positions: the edge case was not exercised"
    assert all(h["grad_norm"] == 0.0 for h in empty)
    assert all(h["loss"] > 0 and h["grad_norm"] > 0 for h in history if h not in empty)


@pytest.mark.distributed
def test_an_empty_loss_on_one_rank_neither_crashes_nor_hangs_the_other(tmp_path, launch_two_processes):
    """Issue 18, item 2, under `accelerate launch` with two processes: the SEDD loss bypasses DDP's wrapper, so the loop
    averages each parameter's gradient itself; a rank whose step masks nothing must still take part with zeros."""
    tokenizer = build_tiny_tokenizer()
    ranks = launch_two_processes("sedd_sft_empty_mask.py", save_tiny_sedd(tmp_path / "sedd", tokens=len(tokenizer)))
    pairs = list(zip(ranks[0]["losses"], ranks[1]["losses"]))
    assert len(pairs) == 12
    assert any(min(pair) == 0.0 < max(pair) for pair in pairs), f"no step was empty on one rank only: {pairs}"
    torch.testing.assert_close(torch.tensor(ranks[0]["weights"]), torch.tensor(ranks[1]["weights"]), rtol=0, atol=0)
