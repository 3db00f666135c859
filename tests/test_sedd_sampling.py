"""SEDD samplers against the reference's formulas and against exact scores of a known toy distribution.

The toy distribution is an independent categorical p_i per position over a tiny vocabulary, whose concrete scores
are analytic (the ratio of the noised marginals at one position). References are written out from the paper and the
reference code (louaaron/Score-Entropy-Discrete-Diffusion: `sampling.AnalyticPredictor`, `sampling.Denoiser`,
`graph_lib.{Absorbing,Uniform}.{staggered_score,transp_transition}`, `catsample.sample_categorical`).
"""

import math
from types import SimpleNamespace

import pytest
import torch

from trl_ext.models.sedd import GeometricNoise, LogLinearNoise, generate, transition_probabilities
from trl_ext.models.sedd.sampling import inverse_cdf_sample, predictor_kappa, uniform_denoise_probabilities


class ExactScoreModel:
    """Stands in for a SEDD: the exact log concrete score of independent per-position categoricals `log_p` (L, V).

    Absorbing graph, masked position: p_σ(y) = e^{−σ}·p(y), p_σ(MASK) = 1 − e^{−σ}, so log s_y = log p(y) −
    log(e^σ − 1) and log s_MASK = 0. Uniform graph: p_σ(y) = e^{−σ}·p(y) + (1 − e^{−σ})/V, log s_y = log p_σ(y) −
    log p_σ(x). Records (σ̄, masked fraction of the input) and the input itself at every call of the trunk, i.e. at
    every sampler step.
    """

    def __init__(self, log_p: torch.Tensor, graph_type: str = "absorb"):
        tokens = log_p.size(-1)
        self.log_p, self.device, self.calls, self.inputs = log_p, torch.device("cpu"), [], []
        self.config = SimpleNamespace(
            graph_type=graph_type, mask_index=tokens, vocab_size=tokens + (graph_type == "absorb")
        )

    def trunk(self, x, sigma):
        self.calls.append((sigma[0].item(), (x == self.config.mask_index).double().mean().item()))
        self.inputs.append(x.clone())
        return self.log_p.expand(x.size(0), -1, -1), sigma[:, None]

    def head(self, hidden, c, indices, sigma):
        sigma = sigma.double()[:, None]
        if self.config.graph_type == "absorb":
            log_scores = torch.cat([hidden - torch.expm1(sigma).log(), torch.zeros_like(hidden[:, :1])], -1)
        else:
            log_scores = torch.logaddexp(hidden - sigma, torch.log(-torch.expm1(-sigma)) - math.log(hidden.size(-1)))
            log_scores = log_scores - log_scores.gather(-1, indices[:, None])
        return log_scores.scatter(-1, indices[:, None], 0.0)


def reference_analytic_masked_row(log_scores: torch.Tensor, delta: float) -> torch.Tensor:
    """Reference `AnalyticPredictor` for masked rows (absorbing): staggered_score(s, Δσ̄) * transp_transition(MASK, Δσ̄)
    on the full (V + 1)-vector (the mask entry's log-score is 0), then sample_categorical's law: ∝ positive part."""
    full = torch.cat([log_scores.exp(), torch.ones_like(log_scores[:, :1])], -1)
    staggered = full * math.exp(delta)
    staggered[:, -1] += (1 - math.exp(delta)) * full.sum(-1)
    transp = torch.full_like(full, 1 - math.exp(-delta))  # (1 − e^{−Δ})·1[x = MASK] on every column ...
    transp[:, -1] += math.exp(-delta)  # ... plus e^{−Δ}·onehot(x = MASK)
    probabilities = (staggered * transp).clamp(min=0)
    return probabilities / probabilities.sum(-1, keepdim=True)


@pytest.mark.parametrize("steps", [16, 128])
def test_analytic_step_matches_the_reference_absorbing_formula(steps):
    noise = LogLinearNoise()
    generator = torch.Generator().manual_seed(0)
    t_grid = torch.linspace(1.0, 1e-5, steps + 1, dtype=torch.float64)
    for i in (0, steps // 2, steps - 1):  # the first step from t = 1, a middle one, the last
        t, t_next = t_grid[i], t_grid[i + 1]
        sigma = noise.total_noise(t).item()
        delta = sigma - noise.total_noise(t_next).item()
        exact = math.log(0.25) - math.log(math.expm1(sigma))  # true score of a uniform p over the 4 tokens
        log_scores = exact + 0.5 * torch.randn(6, 4, dtype=torch.float64, generator=generator)
        log_scores[5] += math.log(4 * math.expm1(sigma) / math.expm1(delta))  # κ·S > 1: the reference's stay is < 0
        ours = transition_probabilities(log_scores, predictor_kappa(noise, t, t_next, "analytic"))
        reference = reference_analytic_masked_row(log_scores, delta)
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)
        assert abs(ours[5, -1].item()) < 1e-12
        # with the true score, P(unmask) is the forward posterior P(unmasked at t_next | masked at t)
        posterior = (math.exp(-noise.total_noise(t_next).item()) - math.exp(-sigma)) / -math.expm1(-sigma)
        true_row = transition_probabilities(
            torch.full((1, 4), exact, dtype=torch.float64), predictor_kappa(noise, t, t_next, "analytic")
        )
        assert abs((1 - true_row[0, -1].item()) - posterior) < 1e-9


@pytest.mark.parametrize("noise", [LogLinearNoise(), GeometricNoise()], ids=["loglinear", "geometric"])
def test_analytic_chain_with_the_exact_score_tracks_the_forward_masking_probability(noise):
    torch.manual_seed(0)
    log_p = torch.log_softmax(1.5 * torch.randn(8, 4, dtype=torch.float64), -1)  # 8 positions, 4 tokens
    model, batch = ExactScoreModel(log_p), 4096
    out = generate(
        model,
        noise,
        batch,
        8,
        steps=16,
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
        chunk_size=4096,
    )
    n = batch * 8
    assert len(model.calls) == 17  # 16 predictor steps and the denoiser, each seeing the state at its own time
    for sigma, masked in model.calls[1:]:  # the chain starts fully masked at t = 1
        forward = -math.expm1(-sigma)
        # sampling error, plus the start: all masked vs 1 − e^{−σ̄(1)} = 0.999 (log-linear) scales the chain by 1/0.999
        tolerance = 4.5 * math.sqrt(max(forward * (1 - forward), 1 / n) / n) + 1.1e-3 * forward
        assert abs(masked - forward) < tolerance, (sigma, masked, forward)
    assert not (out == 4).any()
    # the denoised samples follow p_i at every position
    frequencies = torch.nn.functional.one_hot(out, 4).double().mean(0)
    p = log_p.exp()
    assert ((frequencies - p).abs() < 4.5 * (p * (1 - p) / batch).sqrt() + 1e-3).all()


def reference_uniform_denoiser(log_scores: torch.Tensor, current: torch.Tensor, sigma: float) -> torch.Tensor:
    """Reference `Denoiser` for the uniform graph: Uniform.staggered_score(s, σ) * Uniform.transition(x, σ)."""
    scores, vocab = log_scores.exp(), log_scores.size(-1)
    epow = math.exp(-sigma)
    staggered = ((epow - 1) / (vocab * epow)) * scores.sum(-1, keepdim=True) + scores / epow
    transition = torch.full_like(scores, (1 - epow) / vocab).scatter(-1, current[:, None], 0.0)
    transition = transition.scatter(-1, current[:, None], 1 - transition.sum(-1, keepdim=True))
    return staggered * transition


def test_uniform_denoiser_matches_the_reference_formula_and_the_bayes_posterior():
    generator = torch.Generator().manual_seed(0)
    vocab, current = 6, torch.tensor([0, 3, 5, 2])
    for sigma in (1e-4, 0.3, 2.0):
        log_scores = 0.7 * torch.randn(4, vocab, dtype=torch.float64, generator=generator)
        log_scores.scatter_(-1, current[:, None], 0.0)
        ours = uniform_denoise_probabilities(log_scores, current, torch.full((4,), sigma, dtype=torch.float64))
        torch.testing.assert_close(ours, reference_uniform_denoiser(log_scores, current, sigma), rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(ours.sum(-1), torch.ones(4, dtype=torch.float64))
        # the exact score of p_0 gives the posterior p_0(y)·T_σ(y → x)/p_σ(x)
        p0 = torch.softmax(torch.randn(vocab, dtype=torch.float64, generator=generator), -1)
        p_sigma = math.exp(-sigma) * p0 + -math.expm1(-sigma) / vocab
        exact = (p_sigma.log()[None, :] - p_sigma.log()[current][:, None]).contiguous()
        transition = torch.full((4, vocab), -math.expm1(-sigma) / vocab, dtype=torch.float64)
        transition[torch.arange(4), current] += math.exp(-sigma)
        posterior = p0[None, :] * transition / p_sigma[current][:, None]
        torch.testing.assert_close(
            uniform_denoise_probabilities(exact, current, torch.full((4,), sigma, dtype=torch.float64)), posterior
        )


def test_uniform_sampler_runs_the_denoiser():
    # with no predictor step and eps = 1, generate() is the denoiser alone at σ̄(1) = 20 from the uniform limit, where
    # the exact Tweedie step returns samples of p_0 itself (without it, the output would stay uniform)
    torch.manual_seed(1)
    log_p = torch.log_softmax(2.0 * torch.randn(4, 5, dtype=torch.float64), -1)
    model, batch = ExactScoreModel(log_p, graph_type="uniform"), 8192
    out = generate(
        model,
        GeometricNoise(),
        batch,
        4,
        steps=0,
        predictor="euler",
        eps=1.0,
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
        chunk_size=8192,
    )
    assert [sigma for sigma, _ in model.calls] == [pytest.approx(20.0)]
    frequencies, p = torch.nn.functional.one_hot(out, 5).double().mean(0), log_p.exp()
    assert ((frequencies - p).abs() < 4.5 * (p * (1 - p) / batch).sqrt()).all()
    assert (p - 0.2).abs().max() > 0.3  # far from the uniform output of a sampler without the denoiser
    # with predictor steps, the last trunk call is the denoiser at σ̄(eps)
    model.calls.clear()
    generate(model, GeometricNoise(), 16, 4, steps=3, predictor="euler", show_progress=False)
    assert len(model.calls) == 4 and model.calls[-1][0] == pytest.approx(
        GeometricNoise().total_noise(torch.tensor(1e-5)).item()
    )


@pytest.mark.parametrize("noise", [LogLinearNoise(), GeometricNoise()], ids=["loglinear", "geometric"])
def test_uniform_analytic_chain_with_the_exact_score_tracks_the_forward_marginals(noise):
    # the analytic step with the true score is each position's exact posterior, so after every step the tokens follow
    # the forward marginal p_σ̄(y) = e^{−σ̄}·p_0(y) + (1 − e^{−σ̄})/V; 8 Euler steps do not
    torch.manual_seed(0)
    log_p = torch.log_softmax(2.0 * torch.randn(6, 5, dtype=torch.float64), -1)  # 6 positions, 5 tokens
    p, batch, errors = log_p.exp(), 8192, {}
    for predictor in ("analytic", "euler"):
        model = ExactScoreModel(log_p, graph_type="uniform")
        out = generate(
            model,
            noise,
            batch,
            6,
            steps=8,
            predictor=predictor,
            generator=torch.Generator().manual_seed(0),
            show_progress=False,
            chunk_size=batch * 6,
        )
        assert len(model.inputs) == 9  # 8 predictor steps and the denoiser
        errors[predictor] = []
        for (sigma, _), x in zip(model.calls, model.inputs):
            forward = math.exp(-sigma) * p + -math.expm1(-sigma) / 5
            frequencies = torch.nn.functional.one_hot(x, 5).double().mean(0)
            errors[predictor].append(((frequencies - forward).abs() / (forward * (1 - forward) / batch).sqrt()).max())
        if predictor == "analytic":
            # z-scores of every (step, position, token) frequency; the start is uniform noise, ~e^{−σ̄(1)} off
            assert max(errors["analytic"]) < 5.0, errors["analytic"]
            frequencies = torch.nn.functional.one_hot(out, 5).double().mean(0)
            assert ((frequencies - p).abs() < 4.5 * (p * (1 - p) / batch).sqrt() + 1e-3).all()
    print({k: [round(float(e), 1) for e in v] for k, v in errors.items()})
    assert max(errors["euler"]) > 10.0


def test_inverse_cdf_sample_reproduces_each_rows_distribution():
    """The GPU path of the sampler (CPU generator, rows on the device): with evenly spaced uniforms, the share of each
    index is the row's normalised probability to within 1/N, and zero-probability columns are never chosen."""
    probabilities = torch.tensor([[0.0, 2.0, 0.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    n = 4000
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    for row in probabilities:
        samples = inverse_cdf_sample(row.expand(n, -1), uniforms)
        shares = torch.bincount(samples, minlength=row.numel()).double() / n
        torch.testing.assert_close(shares, (row / row.sum()).double(), atol=1.0 / n, rtol=0)
    # u -> 0 and u -> 1 stay inside the support
    edges = inverse_cdf_sample(probabilities, torch.tensor([0.0, 1 - 1e-7, 0.0]))
    assert edges.tolist() == [1, 4, 4]
