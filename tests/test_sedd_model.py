import json
import math
import os

import pytest
import torch

from trl_ext import SEDDModel
from trl_ext.models.sedd import (
    GeometricNoise,
    LogLinearNoise,
    SEDDConfig,
    dwdse,
    elbo,
    generate,
    get_noise,
    sample_elbo_draws,
    transition_probabilities,
)
from trl_ext.models.sedd.sampling import predictor_kappa
from trl_ext.testing import save_tiny_sedd


V = 50257  # GPT-2's vocabulary: the lean code must cope with the real size
MASK = V


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return SEDDModel.from_pretrained(save_tiny_sedd(tmp_path_factory.mktemp("sedd"))).eval()


def dense_dwdse(model, x0, noise, draws, prompt_mask=None):
    """Reference: the full (B, L, V) output and the reference's `score_entropy`, masked positions only."""
    k, (b, length) = draws.num_samples, x0.shape
    x0k = x0.repeat(k, 1)
    t = draws.t.reshape(-1)
    sigma, dsigma = noise.total_noise(t), noise.rate_noise(t)
    masked = draws.u.reshape(k * b, length) < 1 - torch.exp(-sigma)[:, None]
    if prompt_mask is not None:
        masked &= ~prompt_mask.repeat(k, 1)
    xt = torch.where(masked, torch.full_like(x0k, MASK), x0k)
    score = model(xt, sigma)  # (B, L, V)
    esigm1 = torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1)[:, None].expand_as(xt)
    ratio = 1 / esigm1
    neg = ratio * torch.gather(score, -1, x0k[..., None]).squeeze(-1)
    pos = score[:, :, :-1].exp().sum(-1)
    const = ratio * (ratio.log() - 1)
    entropy = torch.where(masked, pos - neg + const, torch.zeros_like(pos))
    return (dsigma * entropy.sum(-1)).view(k, b).mean(0)


def test_lean_dwdse_matches_dense_reference_values_and_gradients(model):
    torch.manual_seed(0)
    x0 = torch.randint(0, V, (2, 24))
    prompt_mask = torch.zeros(2, 24, dtype=torch.bool)
    prompt_mask[:, :4] = True
    draws = sample_elbo_draws(2, 24, 3, generator=torch.Generator().manual_seed(1))
    noise = LogLinearNoise()
    lean = dwdse(model, x0, noise, draws, prompt_mask, chunk_size=7)
    lean_grads = torch.autograd.grad(lean.sum(), list(model.parameters()))
    dense = dense_dwdse(model, x0, noise, draws, prompt_mask)
    dense_grads = torch.autograd.grad(dense.sum(), list(model.parameters()))
    torch.testing.assert_close(lean, dense, rtol=1e-5, atol=1e-5)
    for a, b in zip(lean_grads, dense_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert (lean > 0).all()


def test_clean_sequences_are_never_scored_as_zero(model):
    # the seed scored clean samples (no masks), which gives 0 with zero gradient; every draw here masks tokens
    draws = sample_elbo_draws(4, 32, 4)
    masked_fraction = (draws.u < (1 - torch.exp(-LogLinearNoise().total_noise(draws.t)))[..., None]).float().mean()
    assert masked_fraction > 0.2
    value = elbo(model, torch.randint(0, V, (4, 32)), LogLinearNoise(), draws=draws)
    assert (value > 1.0).all()


def test_common_random_numbers_give_a_ratio_of_exactly_one(model, tmp_path):
    twin = SEDDModel.from_pretrained(save_tiny_sedd(tmp_path / "twin")).eval()
    x0 = torch.randint(0, V, (3, 32))
    draws = sample_elbo_draws(3, 32, 3)
    with torch.no_grad():
        log_ratio = elbo(twin, x0, LogLinearNoise(), draws=draws) - elbo(model, x0, LogLinearNoise(), draws=draws)
        independent = elbo(twin, x0, LogLinearNoise(), 3) - elbo(model, x0, LogLinearNoise(), 3)
    assert torch.equal(log_ratio, torch.zeros(3))
    assert independent.abs().max() > 1.0  # independent draws: nats of noise, the reason CRN is mandatory


def test_antithetic_estimator_has_lower_variance_than_iid(model):
    torch.manual_seed(0)
    x0 = torch.randint(0, V, (1, 32)).repeat(48, 1)  # 48 independent estimates of the same sequence's bound
    noise = LogLinearNoise()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        iid = elbo(model, x0, noise, 4, estimator="iid", generator=generator)
        antithetic = elbo(model, x0, noise, 4, estimator="antithetic", generator=generator)
    print(
        f"ELBO K=4: iid mean {iid.mean():.1f} std {iid.std():.1f}; antithetic mean {antithetic.mean():.1f} std {antithetic.std():.1f}"
    )
    assert antithetic.std() < iid.std()
    assert abs(antithetic.mean() - iid.mean()) < 3 * iid.std() / 48**0.5 + 3 * antithetic.std() / 48**0.5


def test_variance_falls_as_k_grows(model):
    x0 = torch.randint(0, V, (1, 32)).repeat(32, 1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        stds = [
            elbo(model, x0, LogLinearNoise(), k, estimator="iid", generator=generator).std().item() for k in (1, 8)
        ]
    assert stds[1] < stds[0] / 2


def test_transition_probabilities_match_the_dense_reference_formulas():
    torch.manual_seed(0)
    log_scores = torch.randn(5, 7) - 3.0  # 5 masked rows, 7 tokens (mask column dropped)
    noise = LogLinearNoise()
    t, dt = torch.tensor(0.6), torch.tensor(0.05)
    s = log_scores.exp()
    # Euler (reference): onehot(MASK) + dt·σ̄'(t)·reverse_rate, reverse_rate_y = s_y off the mask, −S on it
    euler_kappa = dt * noise.rate_noise(t)
    euler_dense = torch.cat([euler_kappa * s, 1 - euler_kappa * s.sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(transition_probabilities(log_scores, euler_kappa), euler_dense)
    torch.testing.assert_close(predictor_kappa(noise, t, t - dt, "euler"), euler_kappa)
    # analytic (reference): staggered_score(s, Δσ̄) * transp_transition(MASK, Δσ̄) on the full vector, whose mask
    # entry is s_MASK = 1 (the log-score at the current token is 0) and enters the staggered score's sum; it already
    # sums to 1 (the old slip summed over the tokens only, then normalised: κ = 1 − e^{−Δσ̄} instead of e^{Δσ̄} − 1)
    delta = noise.total_noise(t) - noise.total_noise(t - dt)
    full = torch.cat([s, torch.ones(5, 1)], -1)
    staggered = full * delta.exp()
    staggered[:, -1] += (1 - delta.exp()) * full.sum(-1)
    transp = torch.full_like(full, 1 - torch.exp(-delta))
    transp[:, -1] += torch.exp(-delta)
    dense = staggered * transp
    torch.testing.assert_close(dense.sum(-1), torch.ones(5))
    torch.testing.assert_close(
        transition_probabilities(log_scores, predictor_kappa(noise, t, t - dt, "analytic")), dense
    )


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_sampler_leaves_no_mask_and_keeps_prompt_positions(model, predictor):
    prompt_ids = torch.randint(0, V, (3, 40))
    prompt_mask = torch.zeros(3, 40, dtype=torch.bool)
    prompt_mask[:, :6] = True  # a prefix
    prompt_mask[:, 30] = True  # and an infill position
    out = generate(
        model,
        LogLinearNoise(),
        3,
        40,
        steps=8,
        predictor=predictor,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
    )
    assert out.shape == (3, 40) and not (out == MASK).any() and out.max() < V
    assert torch.equal(out[prompt_mask], prompt_ids[prompt_mask])
    with pytest.raises(ValueError, match="predictor"):
        generate(model, LogLinearNoise(), 1, 4, predictor="ddim", show_progress=False)


def test_published_layout_and_our_format_round_trip(tmp_path):
    published = save_tiny_sedd(tmp_path / "published", published_layout=True)
    assert os.path.isfile(os.path.join(published, "pytorch_model.bin"))
    config = json.load(open(os.path.join(published, "config.json")))
    assert {"ngpus", "training", "graph", "noise", "model", "tokens"} <= set(config)
    model = SEDDModel.from_pretrained(published)
    assert len(model.state_dict()) == 11 + 10 * model.config.n_blocks  # 131 keys for sedd-small's 12 blocks
    model.save_pretrained(tmp_path / "ours")
    reloaded = SEDDModel.from_pretrained(str(tmp_path / "ours"))
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    x, sigma = torch.randint(0, V, (1, 8)), torch.tensor([0.7])
    torch.testing.assert_close(model.eval()(x, sigma), reloaded.eval()(x, sigma))


def test_geometric_noise_parameters_round_trip_and_build_the_schedule(tmp_path):
    path = save_tiny_sedd(tmp_path / "geometric", tokens=50, noise_type="geometric", sigma_min=1e-3, sigma_max=7.5)
    hydra = json.load(open(os.path.join(path, "config.json")))
    # the reference's noise_lib.get_noise(config) reads config.noise.{type, sigma_min, sigma_max}
    assert hydra["noise"] == {"type": "geometric", "sigma_min": 1e-3, "sigma_max": 7.5}
    model = SEDDModel.from_pretrained(path)
    assert (model.config.noise_type, model.config.sigma_min, model.config.sigma_max) == ("geometric", 1e-3, 7.5)
    assert SEDDConfig.from_hydra(model.config.to_hydra()) == model.config
    t = torch.tensor([0.0, 0.3, 1.0])
    for noise in (get_noise(model.config), get_noise(hydra)):
        assert isinstance(noise, GeometricNoise)
        # the reference's GeometricNoise: σ̄(t) = σ_min^{1−t}·σ_max^t, σ̄'(t) = σ̄(t)·(log σ_max − log σ_min)
        torch.testing.assert_close(noise.total_noise(t), torch.tensor([1e-3, 1e-3**0.7 * 7.5**0.3, 7.5]))
        torch.testing.assert_close(noise.rate_noise(t), noise.total_noise(t) * (math.log(7.5) - math.log(1e-3)))
    # string calls and the published loglinear layout keep working; a config.json without sigmas gets the defaults
    assert isinstance(get_noise("loglinear"), LogLinearNoise) and get_noise("geometric").sigma_max == 20.0
    assert get_noise("geometric", sigma_min=0.01, sigma_max=2.0).sigma_min == 0.01
    published = json.load(
        open(os.path.join(save_tiny_sedd(tmp_path / "published", tokens=50, published_layout=True), "config.json"))
    )
    assert published["noise"] == {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20.0}
    assert isinstance(get_noise(SEDDConfig.from_hydra(published)), LogLinearNoise)
    del hydra["noise"]["sigma_min"], hydra["noise"]["sigma_max"]
    assert SEDDConfig.from_hydra(hydra).sigma_min == 1e-4 and get_noise(hydra).sigma_max == 20.0
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        SEDDConfig(noise_type="geometric", sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="noise type"):
        get_noise("cosine")


def test_strict_loading_lists_missing_and_unexpected_keys(tmp_path):
    path = save_tiny_sedd(tmp_path / "broken", published_layout=True)
    state = torch.load(os.path.join(path, "pytorch_model.bin"), weights_only=True)
    state["blocks.0.attn_q.weight"] = state.pop("blocks.0.attn_qkv.weight")
    torch.save(state, os.path.join(path, "pytorch_model.bin"))
    with pytest.raises(
        ValueError, match=r"missing keys \['blocks.0.attn_qkv.weight'\], unexpected keys \['blocks.0.attn_q.weight'\]"
    ):
        SEDDModel.from_pretrained(path)


def test_uniform_score_entropy_vanishes_at_the_true_ratios_and_is_positive_elsewhere():
    from trl_ext.models.sedd.likelihood import uniform_score_entropy

    vocab, sigma = 6, torch.tensor([0.3, 1.2])
    x0, x_t = torch.tensor([2, 4]), torch.tensor([2, 1])  # row 0 unchanged, row 1 noised
    e = torch.exp(-sigma)
    a, b = e + (1 - e) / vocab, (1 - e) / vocab
    true_ratios = torch.ones(2, vocab)
    true_ratios[0] = b[0] / a[0]
    true_ratios[1, 4] = a[1] / b[1]
    true_ratios[0, 2] = true_ratios[1, 1] = 1.0  # the current token: log-score 0
    zero = uniform_score_entropy(true_ratios.log(), sigma, x_t, x0, vocab)
    torch.testing.assert_close(zero, torch.zeros(2), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    noisy = true_ratios.log() + torch.randn(2, vocab)
    noisy.scatter_(-1, x_t[:, None], 0.0)
    assert (uniform_score_entropy(noisy, sigma, x_t, x0, vocab) > 0).all()


def test_uniform_graph_trains_and_samples(tmp_path):
    model = SEDDModel.from_pretrained(
        save_tiny_sedd(tmp_path / "uniform", tokens=50, graph_type="uniform", noise_type="geometric")
    )
    noise = get_noise(model.config)
    x0 = torch.randint(0, 50, (2, 16))
    value = elbo(model, x0, noise, 2)
    value.sum().backward()
    assert (value > 0).all() and model.output_layer.linear.weight.grad.abs().sum() > 0
    prompt_mask = torch.zeros(2, 16, dtype=torch.bool)
    prompt_mask[:, :3] = True
    for predictor in ("euler", "analytic"):
        out = generate(
            model,
            noise,
            2,
            16,
            steps=4,
            predictor=predictor,
            prompt_ids=x0,
            prompt_mask=prompt_mask,
            show_progress=False,
        )
        assert out.max() < 50 and torch.equal(out[:, :3], x0[:, :3])


def test_backward_is_deterministic_with_repeated_tokens(tmp_path):
    # repeated tokens accumulate into the same embedding rows: with `embedding[x]` the CPU backward summed them in a
    # thread-dependent order (gradients differed by ~5e-7 from one call to the next, so runs were not reproducible)
    model = SEDDModel.from_pretrained(save_tiny_sedd(tmp_path / "sedd", tokens=300, hidden_size=64))
    x = torch.randint(0, 200, (32, 56), generator=torch.Generator().manual_seed(0))
    sigma = torch.rand(32, generator=torch.Generator().manual_seed(1))
    grads = []
    for _ in range(3):
        model.zero_grad()
        hidden, _ = model.trunk(x, sigma)
        hidden.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    for grad in grads[1:]:
        torch.testing.assert_close(grad, grads[0], rtol=0, atol=0)
