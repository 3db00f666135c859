import os

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_ext import DiscreteDiffusionPPOConfig, DiscreteDiffusionPPOTrainer, SEDDModel
from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd


PROMPTS = Dataset.from_dict({"prompt": ["x=", "y=", "z=", "w="]})


def letter_a_frequency(prompts, completions, **kwargs):
    """Toy reward: the fraction of characters of the completion that are "a"."""
    return [c.count("a") / max(len(c), 1) for c in completions]


def distinct_characters(prompts, completions, **kwargs):
    """Toy reward: the number of distinct characters of the completion."""
    return [float(len(set(c))) for c in completions]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def sedd_path(tmp_path_factory, tokenizer):
    return save_tiny_sedd(tmp_path_factory.mktemp("sedd"), tokens=len(tokenizer))


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=16,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=12,
        sampling_steps=8,
        num_sigma_samples=2,
        learning_rate=3e-3,
        max_steps=1,
        num_iterations=1,
        num_mini_batches=1,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
        logging_steps=1,
        lr_scheduler_type="constant",
    )
    values.update(overrides)
    return DiscreteDiffusionPPOConfig(**values)


@pytest.mark.parametrize("graph_type", ["absorb", "uniform"])
def test_ratio_is_one_and_kl_zero_before_the_first_update(sedd_path, tokenizer, tmp_path, graph_type):
    if graph_type == "uniform":  # sampled with the default analytic predictor
        sedd_path = save_tiny_sedd(
            tmp_path / "uniform", tokens=len(tokenizer), graph_type="uniform", noise_type="geometric"
        )
    trainer = DiscreteDiffusionPPOTrainer(
        sedd_path, distinct_characters, _args(tmp_path, beta=0.1), PROMPTS, tokenizer
    )
    assert trainer.args.predictor == "analytic"
    logs = trainer.training_step()
    assert logs["sedd/ratio"] == 1.0 and logs["clip_ratio/region_mean"] == 0.0
    assert logs["kl"] == 0.0 and logs["grad_norm"] > 0
    assert logs["sedd/elbo_nll"] == pytest.approx(logs["sedd/old_elbo_nll"])


def test_ppo_raises_a_token_frequency_reward(sedd_path, tokenizer, tmp_path):
    args = _args(tmp_path, max_steps=30, num_iterations=2, num_mini_batches=2)
    trainer = DiscreteDiffusionPPOTrainer(sedd_path, letter_a_frequency, args, PROMPTS, tokenizer)
    trainer.train()
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history]
    start, end = np.mean(rewards[:5]), np.mean(rewards[-5:])
    print(f"letter-a frequency: first 5 steps {start:.3f}, last 5 steps {end:.3f}")
    assert start < 0.1 and end > 0.5
    assert any(h["clip_ratio/region_mean"] > 0 for h in history) and all(h["sedd/ratio"] > 0 for h in history)


def test_lora_trains_only_adapters_and_saves_a_merged_model(sedd_path, tokenizer, tmp_path):
    args = _args(tmp_path, max_steps=2, use_peft=True, lora_r=4, lora_alpha=8, beta=0.05, learning_rate=1e-2)
    trainer = DiscreteDiffusionPPOTrainer(sedd_path, letter_a_frequency, args, PROMPTS, tokenizer)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    history = trainer.state.log_history
    assert history[0]["kl"] == 0.0  # reference = LoRA disabled = the initial policy
    assert all(torch.equal(p, base_before[n]) for n, p in trainer.model.named_parameters() if not p.requires_grad)
    trainer.save_model()
    merged = SEDDModel.from_pretrained(str(tmp_path))
    assert "2310.16834" in open(os.path.join(tmp_path, "README.md")).read()
    x, sigma = torch.randint(0, len(tokenizer), (1, 16)), torch.tensor([0.5])
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(x, sigma), trainer.model(x, sigma), rtol=1e-4, atol=1e-4)


def test_resume_from_checkpoint_reproduces_training(sedd_path, tokenizer, tmp_path):
    trainer = DiscreteDiffusionPPOTrainer(
        sedd_path,
        letter_a_frequency,
        _args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1),
        PROMPTS,
        tokenizer,
    )
    trainer.train()
    resumed = DiscreteDiffusionPPOTrainer(
        sedd_path, letter_a_frequency, _args(tmp_path / "r", max_steps=2), PROMPTS, tokenizer
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert resumed.global_step == 2
    for a, b in zip(resumed.model.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(a, b)


def test_bad_inputs_raise_clear_errors(sedd_path, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="multiple of"):
        _args(tmp_path, per_device_train_batch_size=6)
    with pytest.raises(ValueError, match="predictor"):
        _args(tmp_path, predictor="ddim")
    with pytest.raises(ValueError, match="'prompt' column"):
        DiscreteDiffusionPPOTrainer(
            sedd_path, letter_a_frequency, _args(tmp_path), Dataset.from_dict({"text": ["a"]}), tokenizer
        )
    small = save_tiny_sedd(tmp_path / "small", tokens=100)
    with pytest.raises(ValueError, match="tokenizer has"):
        DiscreteDiffusionPPOTrainer(small, letter_a_frequency, _args(tmp_path), PROMPTS, tokenizer)
    with pytest.raises(ValueError, match="reward_weights"):
        DiscreteDiffusionPPOTrainer(
            sedd_path, letter_a_frequency, _args(tmp_path, reward_weights=[1.0, 2.0]), PROMPTS, tokenizer
        )


def test_elbo_of_draws_that_mask_nothing_is_zero_and_backpropagates(sedd_path):
    """Issue 18, item 2, on PPO's likelihood: with draws that noise no position (u = 1 is never below 1 − e^{−σ̄}), the
    DWDSE is a sum over no masked position, exactly 0 by the formula; it must still backpropagate (zero gradients on
    every parameter, as a non-empty draw gives them), so a minibatch of such draws neither crashes nor leaves one
    process without the gradients the others average."""
    from trl_ext.models.sedd import ElboDraws, elbo, get_noise

    model = SEDDModel.from_pretrained(sedd_path)
    x0 = torch.randint(model.config.vocab_size, (3, 8), generator=torch.Generator().manual_seed(0))
    draws = ElboDraws(t=torch.full((2, 3), 0.01), u=torch.ones(2, 3, 8))
    nll = elbo(model, x0, get_noise(model.config), draws=draws)
    assert torch.equal(nll, torch.zeros(3)) and nll.requires_grad
    nll.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_trace_ratio_is_one_recorded_probabilities_recomputed_and_it_trains(sedd_path, tokenizer, tmp_path):
    """SEDD 'trace' (absorbing graph): the old policy's trace is the sampler's recorded transition probabilities
    recomputed, the ratio is 1 and the KL 0 before the update; a letter-a reward rises; the uniform graph refuses it."""
    trainer = DiscreteDiffusionPPOTrainer(
        sedd_path, distinct_characters, _args(tmp_path, beta=0.1, estimator="trace"), PROMPTS, tokenizer
    )
    logs = trainer.training_step()
    assert logs["sedd/ratio"] == 1.0 and logs["kl"] == 0.0 and logs["grad_norm"] > 0
    assert logs["sedd/trace_recompute_error"] < 1e-3
    args = _args(tmp_path, estimator="trace", max_steps=30, num_iterations=2, num_mini_batches=2)
    trainer = DiscreteDiffusionPPOTrainer(sedd_path, letter_a_frequency, args, PROMPTS, tokenizer)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history]
    assert np.mean(rewards[:5]) < 0.1 and np.mean(rewards[-5:]) > 0.5, rewards
    trainer.save_model(tmp_path / "trace")  # the card says which likelihood trained it (it said "ELBO" for every run)
    card = (tmp_path / "trace" / "README.md").read_text()
    assert "PPO whose sequence log-likelihood is the `trace` estimate" in card and "ELBO" not in card
    assert 'SEDDModel.from_pretrained("trace")' in card and SEDDModel.from_pretrained(str(tmp_path / "trace"))
    uniform = save_tiny_sedd(tmp_path / "uniform", tokens=len(tokenizer), graph_type="uniform", noise_type="geometric")
    with pytest.raises(ValueError, match="supports elbo"):
        DiscreteDiffusionPPOTrainer(
            uniform, letter_a_frequency, _args(tmp_path, estimator="trace"), PROMPTS, tokenizer
        )
