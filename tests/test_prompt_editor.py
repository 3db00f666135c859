import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from trl_ext.models.prompt_editor import PromptEditorConfig, PromptEditorPolicy
from trl_ext.trainers.flow.editor import edit_rewards, editor_step, semantic_penalty, update_radius


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
    accelerator = Accelerator(cpu=True)
    for _ in range(60):
        edits = editor.sample(prompts)
        rewards = edits.deltas @ direction  # toy reward: move along `direction`
        editor_step(
            editor,
            optimizer,
            edits,
            rewards,
            num_generations=1,
            num_edits_per_prompt=4,
            scale_rewards="group",
            epsilon=0.2,
            accelerator=accelerator,
        )
        means.append(rewards.mean().item())
    print(f"toy editor reward: first 10 {np.mean(means[:10]):.3f}, last 10 {np.mean(means[-10:]):.3f}")
    assert np.mean(means[-10:]) > max(2 * np.mean(means[:10]), np.mean(means[:10]) + 0.05)  # bounded by the radius 0.3


def test_editor_learns_to_write_the_rewarded_word():
    """The editor learns, through the trainer's own update (`editor_step`), to edit prompts into the rewarded word.

    The decoder maps one embedding direction u to a word: decode(e') = "a cat bright" if e'·u > 0, else "a cat"; an
    edit's (one) image reward is 1 when its prompt has "bright". Every original direction ê has ê·u = -0.01, so an edit
    is rewarded when δ·u > 0.01. At the start μ ≈ 0 and σ = exp(-4) (Flow-RTPO's defaults), so the rewarded fraction is
    P(N(0, σ²) > 0.01) = Φ(-0.01/exp(-4)) ≈ 0.29; a learned μ·u of a few σ makes it close to 1.
    """
    dim, offset = 16, 0.01
    generator = torch.Generator().manual_seed(0)
    directions = {}
    for name in ["a cat", "a dog", "a tree", "a house"]:  # unit vectors with first coordinate -offset
        rest = torch.nn.functional.normalize(torch.randn(dim - 1, generator=generator), dim=0)
        directions[name] = torch.cat([torch.tensor([-offset]), math.sqrt(1 - offset**2) * rest])

    def encode(prompts):
        return torch.stack(
            [3.0 * directions[p] for p in prompts]
        )  # norm 3: the edit keeps it, the sign is what counts

    def decode(embeddings):
        return ["a cat bright" if e[0] > 0 else "a cat" for e in embeddings]

    torch.manual_seed(0)
    editor = PromptEditorPolicy(encode, decode, dim, PromptEditorConfig(hidden_dim=32))
    optimizer = torch.optim.AdamW(editor.parameters(), lr=3e-3)
    accelerator = Accelerator(cpu=True)
    prompts = [p for p in directions for _ in range(8)]  # 8 edits per original prompt
    fractions = []
    for _ in range(150):  # about 1 s
        edits = editor.sample(prompts)
        rewards = torch.tensor([float("bright" in prompt.split()) for prompt in edits.edited])
        fractions.append(rewards.mean().item())
        editor_step(
            editor,
            optimizer,
            edits,
            rewards,
            num_generations=1,
            num_edits_per_prompt=8,
            scale_rewards="group",
            epsilon=0.2,
            accelerator=accelerator,
        )
    before, after = np.mean(fractions[:10]), np.mean(fractions[-10:])
    print(f"rewarded fraction of edits: first 10 steps {before:.3f}, last 10 steps {after:.3f}")
    expected_before = 0.5 * math.erfc(offset / math.exp(-4.0) / math.sqrt(2))  # Φ(-0.01/σ) = 0.292
    assert abs(before - expected_before) < 0.08  # 320 edits: standard error 0.025
    assert after > 0.8
