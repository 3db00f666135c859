import numpy as np
import torch

from trl_ext.models.prompt_editor import PromptEditorPolicy
from trl_ext.rl.advantages import compute_advantages
from trl_ext.rl.losses import clipped_surrogate_loss


def _toy_editor(dim=16, **kwargs):
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
    return PromptEditorPolicy(encode, decode, dim, hidden_dim=32, perturbation_scale=1.0, init_log_std=-3.0, **kwargs)


def test_log_prob_is_the_gaussian_density_and_has_gradients():
    editor = _toy_editor()
    edits = editor.sample(["a", "b", "c"])
    dist = editor.distribution(edits.embeddings)
    manual = (
        -((edits.deltas - dist.mean) ** 2) / (2 * dist.stddev**2) - dist.stddev.log() - 0.5 * np.log(2 * np.pi)
    ).sum(-1)
    torch.testing.assert_close(edits.log_probs, manual)
    torch.testing.assert_close(editor.log_prob(edits.embeddings, edits.deltas), edits.log_probs)
    edits.log_probs.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in editor.parameters())
    assert edits.edited[0].startswith("edit ") and edits.semantic_penalty.tolist() == [0.0, 0.0, 0.0]


def test_proximity_projection_keeps_the_mean_inside_the_radius():
    editor = _toy_editor(epsilon_min=0.05, gamma=0.5)
    embeddings = torch.randn(8, 16)
    assert editor.distribution(embeddings).mean.norm(dim=-1).max() <= editor.radius + 1e-6
    for _ in range(50):
        editor.update_radius(1.0)
    assert (
        abs(editor.radius - (0.05 + 0.5 * editor.reward_variance.item() / (editor.reward_variance.item() + 0.01)))
        < 1e-6
    )
    assert editor.radius > 0.5  # a high reward variance widens the radius


def test_semantic_penalty_formula():
    editor = _toy_editor(alpha=2.0, tau=0.8)
    editor.similarity = lambda originals, edited: torch.tensor([0.9, 0.5])
    edits = editor.sample(["a", "b"])
    torch.testing.assert_close(edits.semantic_penalty, torch.tensor([0.0, 0.6]))


def test_edits_move_toward_higher_reward_by_policy_gradient():
    editor = _toy_editor(epsilon_min=0.3, gamma=0.0)
    direction = torch.nn.functional.normalize(torch.ones(16), dim=0)
    optimizer = torch.optim.Adam(editor.parameters(), lr=3e-3)
    prompts = [p for p in ["a", "b", "c", "d"] for _ in range(4)]
    means = []
    for _ in range(60):
        edits = editor.sample(prompts)
        rewards = edits.deltas @ direction - edits.semantic_penalty  # toy reward: move along `direction`
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
