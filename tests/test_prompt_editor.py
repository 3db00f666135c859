import math

import numpy as np
import pytest
import torch

from trl_ext.models.prompt_editor import PromptEditorConfig, PromptEditorPolicy
from trl_ext.rl.advantages import compute_advantages
from trl_ext.rl.losses import clipped_surrogate_loss
from trl_ext.trainers.flow.editor import edit_rewards, semantic_penalty, update_radius


def _toy_editor(dim=16, **config):
    table = {}

    def encode(prompts):
        return torch.stack(
            [
                table.setdefault(p, torch.randn(dim, generator=torch.Generator().manual_seed(len(table))))
                for p in prompts
            ]
        )

    def decode(embeddings):  # stands in for vec2text: names the edited embedding by its first coordinate
        return [f"edit {e[0].item():+.3f}" for e in embeddings]

    torch.manual_seed(0)
    values = {"hidden_dim": 32, "perturbation_scale": 1.0, "init_log_std": -3.0, **config}
    return PromptEditorPolicy(encode, decode, dim, PromptEditorConfig(**values))


def _constant_mean(editor, raw_mean: torch.Tensor) -> None:
    """Make the MLP output `raw_mean` for every input (zero weights, bias = raw_mean)."""
    with torch.no_grad():
        editor.mean_head[-1].weight.zero_()
        editor.mean_head[-1].bias.copy_(raw_mean)


def test_log_prob_is_the_gaussian_density_and_has_gradients():
    editor = _toy_editor(init_log_std=-1.0)
    _constant_mean(editor, torch.zeros(16))  # mean 0, σ = e^-1: the density is written out by hand below
    edits = editor.sample(["a", "b", "c"])
    sigma = math.exp(-1.0)
    by_hand = (-(edits.deltas**2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(edits.log_probs, by_hand)
    log_prob = editor.log_prob(edits.embeddings, edits.deltas)
    torch.testing.assert_close(log_prob, by_hand)
    log_prob.sum().backward()
    assert editor.log_std.grad is not None and editor.log_std.grad.abs().sum() > 0
    assert edits.edited[0].startswith("edit ")


def test_proximity_projection_of_a_known_mean_and_the_adaptive_radius():
    editor = _toy_editor(epsilon_min=0.05, gamma=0.5, perturbation_scale=2.0)
    raw = torch.zeros(16)
    raw[:2] = torch.tensor([0.3, 0.4])  # s · raw has norm 2 · 0.5 = 1.0
    _constant_mean(editor, raw)
    # μ = s·raw · min(1, ε/‖s·raw‖) · (0.1 + 0.9 exp(−‖s·raw‖/ε)), ε = ε_min = 0.05 at zero reward variance
    expected = 2.0 * raw * (0.05 / 1.0) * (0.1 + 0.9 * math.exp(-1.0 / 0.05))
    torch.testing.assert_close(editor.distribution(torch.randn(3, 16)).mean[0], expected)
    # σ_R² ← 0.9 σ_R² + 0.1 · 1 each update: after 3, σ_R² = 1 − 0.9³ = 0.271; ε = 0.05 + 0.5 · 0.271 / (0.271 + 0.01)
    for _ in range(3):
        radius = update_radius(editor, 1.0)
    assert editor.reward_variance.item() == pytest.approx(0.271)
    assert radius == pytest.approx(0.05 + 0.5 * 0.271 / 0.281)


def test_semantic_penalty_and_edit_rewards():
    editor = _toy_editor(semantic_alpha=2.0, semantic_tau=0.8)
    editor.similarity = lambda originals, edited: torch.tensor([0.9, 0.5])
    edits = editor.sample(["a", "b"])
    penalty = semantic_penalty(editor, edits)
    torch.testing.assert_close(penalty, torch.tensor([0.0, 0.6]))  # 2 · max(0, 0.8 − sim)
    # two images per edit: the first edit's images score 1 and 3 (one unscored image is ignored), the second's 0 and 2
    image_rewards = torch.tensor([1.0, 3.0, float("nan"), 2.0])
    torch.testing.assert_close(edit_rewards(image_rewards, penalty, 2), torch.tensor([2.0, 1.4]))


def test_edits_move_toward_higher_reward_by_policy_gradient():
    editor = _toy_editor(epsilon_min=0.3, gamma=0.0)
    direction = torch.nn.functional.normalize(torch.ones(16), dim=0)
    optimizer = torch.optim.Adam(editor.parameters(), lr=3e-3)
    prompts = [p for p in ["a", "b", "c", "d"] for _ in range(4)]
    means = []
    for _ in range(60):
        edits = editor.sample(prompts)
        rewards = edits.deltas @ direction  # toy reward: move along `direction`
        groups = torch.arange(len(prompts)) // 4
        advantages = compute_advantages(rewards, groups)
        loss, _ = clipped_surrogate_loss(
            editor.log_prob(edits.embeddings, edits.deltas) - edits.log_probs.detach(), advantages, 0.2
        )
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        means.append(rewards.mean().item())
    print(f"toy editor reward: first 10 {np.mean(means[:10]):.3f}, last 10 {np.mean(means[-10:]):.3f}")
    assert np.mean(means[-10:]) > max(2 * np.mean(means[:10]), np.mean(means[:10]) + 0.05)  # bounded by the radius 0.3
