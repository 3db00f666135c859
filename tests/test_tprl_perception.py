import math

import pytest
import torch

from trl_ext.rl.advantages import (
    group_keep_mask,
    outcome_token_rewards,
    reinforce_plus_plus_advantages,
    rloo_advantages,
)
from trl_ext.rl.kl import AdaptiveKLController, FixedKLController
from trl_ext.trainers.tprl.perception import sampled_token_dependency, top_k_per_row_mask, trajectory_scaling_factors


def test_top_k_per_row_keeps_ceil_n_k_tokens_per_response():
    torch.manual_seed(0)
    scores = torch.rand(5, 12)
    lengths = torch.tensor([12, 7, 1, 3, 0])
    mask = (torch.arange(12)[None] < lengths[:, None]).float()
    for k in (0.2, 0.4, 1.0):
        keep = top_k_per_row_mask(scores, mask, k)
        assert keep.sum(1).tolist() == [math.ceil(n * k) for n in lengths.tolist()]
        assert not (keep & ~mask.bool()).any()
        for row in range(5):  # every kept score is >= every dropped valid score
            kept, dropped = scores[row][keep[row]], scores[row][mask[row].bool() & ~keep[row]]
            if kept.numel() and dropped.numel():
                assert kept.min() >= dropped.max()
    with pytest.raises(ValueError):
        top_k_per_row_mask(scores, mask, 0.0)


def test_trajectory_scaling_rules_match_their_formulas():
    dependency = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]]).float()
    s, alpha = trajectory_scaling_factors(dependency, mask, 0.9, "mean_preserving")
    torch.testing.assert_close(s, torch.tensor([2.0, 0.0, 4.0, 0.0]))
    n = torch.tensor([0.5, 0.0, 1.0])  # rows with tokens, min-max normalised
    beta_max = 0.9 + 0.1 / n.mean()
    torch.testing.assert_close(alpha, torch.cat([0.9 + n * (beta_max - 0.9), torch.ones(1)]))
    torch.testing.assert_close(alpha[:3].mean(), torch.tensor(1.0))
    _, bounded = trajectory_scaling_factors(dependency, mask, 0.9, "bounded")
    torch.testing.assert_close(bounded, torch.tensor([0.95, 0.9, 1.0, 1.0]))
    _, flat = trajectory_scaling_factors(torch.ones(3, 2), torch.ones(3, 2), 0.5)
    torch.testing.assert_close(flat, torch.ones(3))


def test_sampled_dependency_is_clamped_k3():
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    perturbed = torch.tensor([-1.0, -1.0, -30.0, -3.5])
    # x = log-ratio [0, 1, -29.5 -> -20, -0.5]; e^x - x - 1 = [0, e - 2, 19 (clamped to 10), e^-0.5 - 0.5]
    expected = torch.tensor([0.0, 0.7182818, 10.0, 0.1065307])
    torch.testing.assert_close(sampled_token_dependency(logp, perturbed), expected)
    assert sampled_token_dependency(logp, logp).abs().max() == 0


def test_adaptive_kl_controller_follows_its_update_rule():
    controller = AdaptiveKLController(coef=0.1, target=0.05, horizon=1000)
    assert math.isclose(controller.update(0.06, n_steps=100), 0.1 * (1 + 0.2 * 100 / 1000))
    coef = controller.coef
    assert math.isclose(controller.update(10.0, n_steps=50), coef * (1 + 0.2 * 50 / 1000))  # error clipped at +0.2
    coef = controller.coef
    assert math.isclose(controller.update(0.0, n_steps=50), coef * (1 - 0.2 * 50 / 1000))
    assert FixedKLController(0.3).update(5.0, 10) == 0.3
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_group_keep_mask_drops_solved_and_unsolved_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, float("nan")])
    keep = group_keep_mask(rewards, group_size=2, low=0.01, high=0.99)
    assert keep.tolist() == [False, False, True, True, False, False, False, False]
    with pytest.raises(ValueError):
        group_keep_mask(rewards, group_size=3, low=0.0, high=1.0)


def test_rloo_and_reinforce_plus_plus():
    rewards = torch.tensor([1.0, 0.0, 2.0, 3.0])
    torch.testing.assert_close(rloo_advantages(rewards, 2), torch.tensor([1.0, -1.0, -1.0, 1.0]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).float()
    token_rewards = outcome_token_rewards(torch.tensor([1.0, 2.0]), mask) - 0.1 * mask  # outcome + per-token KL
    torch.testing.assert_close(token_rewards, torch.tensor([[-0.1, -0.1, 0.9], [-0.1, 1.9, 0.0]]))
    advantages = reinforce_plus_plus_advantages(token_rewards, mask, gamma=0.5)
    returns = torch.tensor([[-0.1 - 0.05 + 0.225, -0.1 + 0.45, 0.9], [-0.1 + 0.95, 1.9, 0.0]])
    valid = returns[mask.bool()]
    expected = torch.where(mask.bool(), (returns - valid.mean()) / (valid.std() + 1e-8), torch.zeros(1))
    torch.testing.assert_close(advantages, expected)
