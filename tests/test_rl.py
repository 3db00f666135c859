import math

import pytest
import torch

from trl_ext.rl.advantages import compute_advantages
from trl_ext.rl.kl import kl_divergence
from trl_ext.rl.losses import clipped_surrogate_loss


def test_group_advantages_match_per_group_formula():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 4.0])
    groups = torch.tensor([0, 1, 0, 1, 0, 1])  # non-contiguous groups
    adv = compute_advantages(rewards, groups, scale="group", eps=0.0)
    for g in (0, 1):
        r = rewards[groups == g]
        torch.testing.assert_close(adv[groups == g], (r - r.mean()) / r.std())


def test_batch_and_none_scaling():
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0])
    groups = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(compute_advantages(rewards, groups, scale="none"), torch.tensor([-0.5, 0.5, -1.5, 1.5]))
    adv = compute_advantages(rewards, groups, scale="batch", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([-0.5, 0.5, -1.5, 1.5]) / rewards.std())


def test_nan_rewards_are_masked_not_zeroed():
    rewards = torch.tensor([1.0, float("nan"), 3.0, 0.0])
    adv = compute_advantages(rewards, torch.tensor([0, 0, 0, 1]), scale="none")
    # mean of group 0 ignores the NaN sample (2.0, not 4/3); the NaN sample and the lone sample get 0
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0]))


def test_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        compute_advantages(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="scale"):
        compute_advantages(torch.zeros(2), scale="grp")


def test_clipped_surrogate_against_reference():
    log_ratio = torch.log(torch.tensor([0.5, 0.9, 1.0, 1.1, 1.5, 0.5, 1.5]))
    adv = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0])
    loss, clipped = clipped_surrogate_loss(log_ratio, adv, 0.2, 0.28)
    ratio = log_ratio.exp()
    expected = [-min(r * a, min(max(r, 0.8), 1.28) * a) for r, a in zip(ratio.tolist(), adv.tolist())]
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert clipped.tolist() == [False, False, False, False, True, True, False]


def test_dual_clip_caps_negative_advantage_loss():
    # ρ = 10: A = −1 -> −min(−10, −1.2) = 10, capped at −δ·A = 3; A = 1 -> −min(10, 1.2) = −1.2 (upper clip)
    log_ratio = torch.log(torch.tensor([10.0, 10.0]))
    adv = torch.tensor([-1.0, 1.0])
    loss, clipped = clipped_surrogate_loss(log_ratio, adv, 0.2, delta=3.0)  # GRPOConfig's name of the dual clip
    torch.testing.assert_close(loss, torch.tensor([3.0, -1.2]))
    assert clipped.tolist() == [True, True]
    with pytest.raises(ValueError, match="delta"):
        clipped_surrogate_loss(log_ratio, adv, 0.2, delta=0.5)


def test_dual_clip_is_trl_grpo_two_sided_clipping():
    # TRL's GRPOTrainer with `delta`: −min(min(ρ, δ)·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A); equal for δ >= 1 + ε_high
    ratio = torch.tensor([0.5, 0.9, 1.1, 1.3, 2.0, 5.0, 0.5, 1.3, 2.0, 5.0])
    adv = torch.tensor([-2.0, -2.0, -2.0, -2.0, -2.0, -2.0, 1.5, 1.5, 1.5, 1.5])
    delta, eps_low, eps_high = 3.0, 0.2, 0.28
    loss, _ = clipped_surrogate_loss(ratio.log(), adv, eps_low, eps_high, delta=delta)
    trl = -torch.min(ratio.clamp(max=delta) * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    torch.testing.assert_close(loss, trl)


@pytest.mark.parametrize(
    "estimator, by_hand",  # at p(x) = 0.4, q(x) = 0.2: r = q/p = 1/2, log r = -ln 2
    [("k1", 0.6931472), ("k2", 0.2402265), ("k3", 0.1931472), ("abs", 0.6931472)],
)
def test_kl_estimators_on_a_known_ratio_and_unbiased_on_samples(estimator, by_hand):
    # Schulman's estimators of KL(p || q) from x ~ p: k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r
    one = kl_divergence(torch.tensor([math.log(0.4)]), torch.tensor([math.log(0.2)]), estimator)
    torch.testing.assert_close(one, torch.tensor([by_hand]))
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    est = kl_divergence(p.log()[x], q.log()[x], estimator)
    if estimator in ("k1", "k3"):
        true_kl = float((p * (p / q).log()).sum())
        assert math.isclose(float(est.mean()), true_kl, rel_tol=0.02)


def test_kl_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="k4"):
        kl_divergence(torch.zeros(1), torch.zeros(1), "k4")


def test_images_convert_between_the_two_conventions():
    from PIL import Image

    from trl_ext.rewards.base import to_image_tensor, to_pil_images

    pil = [Image.new("RGB", (4, 2), (255, 0, 51)), Image.new("RGB", (4, 2), (0, 102, 255))]
    tensor = to_image_tensor(pil)
    assert tensor.shape == (2, 3, 2, 4)
    torch.testing.assert_close(tensor[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    torch.testing.assert_close(tensor[1, :, 1, 3], torch.tensor([0.0, 0.4, 1.0]))
    assert [image.getpixel((3, 1)) for image in to_pil_images(tensor)] == [(255, 0, 51), (0, 102, 255)]
    with pytest.raises(ValueError, match="different sizes"):
        to_image_tensor([Image.new("RGB", (4, 2)), Image.new("RGB", (2, 2))])


def test_remax_advantages_subtract_the_greedy_reward_of_the_prompt():
    from trl_ext.rl.advantages import remax_advantages

    rewards = torch.tensor([1.0, 0.25, float("nan"), 3.0])
    greedy = torch.tensor([0.5, 0.5, 0.5, 2.0])  # the greedy completion's reward, per sample's prompt
    torch.testing.assert_close(remax_advantages(rewards, greedy), torch.tensor([0.5, -0.25, 0.0, 1.0]))
