"""GAE, returns, whitening, per-token KL and the PPO losses against hand-computed numbers (one example worked
by hand: γ = 1, λ = 0.95, β = 0.05, score 2 on the last response token; response [a, b, EOS, PAD])."""

import math
import statistics

import pytest
import torch

from trl_ext.rl.advantages import masked_whiten, outcome_token_rewards
from trl_ext.rl.gae import compute_gae
from trl_ext.rl.kl import kl_divergence
from trl_ext.rl.losses import clipped_surrogate_loss, clipped_value_loss


LOGP = torch.tensor([[-1.0, -0.5, -0.2, 0.0]])
REF_LOGP = torch.tensor([[-1.2, -0.4, -0.3, 0.0]])
VALUES = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
MASK = torch.tensor([[True, True, True, False]])


def test_per_token_kl_of_the_worked_example():
    k1 = torch.where(MASK, kl_divergence(LOGP, REF_LOGP, "k1"), 0.0)
    k3 = torch.where(MASK, kl_divergence(LOGP, REF_LOGP, "k3"), 0.0)
    torch.testing.assert_close(k1, torch.tensor([[0.2, -0.1, 0.1, 0.0]]))
    torch.testing.assert_close(k3, torch.tensor([[0.0187, 0.0052, 0.0048, 0.0]]), atol=5e-5, rtol=0)


def test_gae_and_returns_with_the_score_on_eos():
    kl = torch.where(MASK, kl_divergence(LOGP, REF_LOGP, "k1"), 0.0)
    rewards = -0.05 * kl + outcome_token_rewards(torch.tensor([2.0]), MASK)
    torch.testing.assert_close(rewards, torch.tensor([[-0.01, 0.005, 1.995, 0.0]]))
    advantages, returns = compute_gae(rewards, VALUES, MASK, gamma=1.0, lam=0.95)
    torch.testing.assert_close(advantages, torch.tensor([[1.7195, 1.7152, 1.6950, 0.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(returns, torch.tensor([[1.8195, 1.9152, 1.995, 0.0]]), atol=1e-4, rtol=0)


def test_gae_reproduces_trls_legacy_placement_one_token_past_eos():
    rewards = torch.tensor([[-0.01, 0.005, -0.005, 2.0]])
    advantages, returns = compute_gae(rewards, VALUES, torch.ones_like(MASK), gamma=1.0, lam=0.95)
    torch.testing.assert_close(advantages, torch.tensor([[1.6473, 1.6393, 1.6150, 1.6000]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(returns, torch.tensor([[1.7473, 1.8393, 1.9150, 2.0]]), atol=1e-4, rtol=0)


def test_gae_discounts_by_hand_and_skips_padding():
    # γ = 0.5, λ = 0.5, one row of two valid tokens, rewards [1, 2], values [0, 1]:
    # δ_1 = 2 − 1 = 1, A_1 = 1; δ_0 = 1 + 0.5·1 − 0 = 1.5, A_0 = 1.5 + 0.25·1 = 1.75
    rewards = torch.tensor([[1.0, 2.0, 9.0]])
    values = torch.tensor([[0.0, 1.0, 9.0]])
    advantages, returns = compute_gae(rewards, values, torch.tensor([[1, 1, 0]]), gamma=0.5, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[1.75, 1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.75, 2.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        compute_gae(rewards, values[:, :2], torch.ones(1, 3))


def test_whitening_uses_the_unbiased_variance_of_valid_entries():
    advantages = [1.7195, 1.7152, 1.6950]
    mean, std = statistics.mean(advantages), statistics.stdev(advantages)  # stdev: the n − 1 estimator
    values = torch.tensor([[*advantages, 5.0]])
    whitened = masked_whiten(values, MASK)
    expected = [(a - mean) / math.sqrt(std**2 + 1e-8) for a in advantages]
    torch.testing.assert_close(whitened, torch.tensor([[*expected, 0.0]]), atol=1e-4, rtol=0)
    kept_mean = masked_whiten(values, MASK, shift_mean=False)
    torch.testing.assert_close(kept_mean, torch.tensor([[*(e + mean for e in expected), 0.0]]), atol=1e-4, rtol=0)
    assert masked_whiten(values, torch.zeros_like(MASK)).abs().sum() == 0


def test_clipped_policy_loss_on_hand_made_tensors():
    # ρ = [1.5, 0.5, 1.1], A = [1, −1, −2], ε = 0.2:
    # −min(1.5, 1.2) = −1.2 (clipped); −min(−0.5, −0.8) = 0.8 (clipped); −min(−2.2, −2.2) = 2.2 (not clipped)
    log_ratio = torch.tensor([1.5, 0.5, 1.1]).log()
    loss, clipped = clipped_surrogate_loss(log_ratio, torch.tensor([1.0, -1.0, -2.0]), 0.2)
    torch.testing.assert_close(loss, torch.tensor([-1.2, 0.8, 2.2]))
    assert clipped.tolist() == [True, True, False]
    # dual clip c = 3 with A = −1 and ρ = 4: max(4, 1.2)·1 = 4 is capped at c·|A| = 3
    loss, _ = clipped_surrogate_loss(torch.tensor([4.0]).log(), torch.tensor([-1.0]), 0.2, delta=3.0)
    torch.testing.assert_close(loss, torch.tensor([3.0]))


def test_clipped_value_loss_on_hand_made_tensors():
    # V_old = 0, ε_v = 0.2, R = 1: V = 0.5 -> clipped V 0.2: ½·max(0.25, 0.64) = 0.32 (clipped term);
    # V = 0.1 -> within range: ½·0.81 = 0.405; V = 1.5 (R = 1) -> clipped 0.2: ½·max(0.25, 0.64) = 0.32
    values = torch.tensor([0.5, 0.1, 1.5])
    loss, clipped = clipped_value_loss(values, torch.zeros(3), torch.ones(3), cliprange_value=0.2)  # TRL's name
    torch.testing.assert_close(loss, torch.tensor([0.32, 0.405, 0.32]))
    assert clipped.tolist() == [True, False, True]
    loss, clipped = clipped_value_loss(values, torch.zeros(3), torch.ones(3), None)
    torch.testing.assert_close(loss, torch.tensor([0.125, 0.405, 0.125]))
    assert not clipped.any()
