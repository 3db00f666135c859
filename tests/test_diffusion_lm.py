"""Discrete diffusion LMs beyond SEDD: the masked-diffusion family adapter and its sampler, the likelihood estimators
("elbo", "mean_field") against exact computations on a toy model with known posteriors, and DiffusionLMGRPOTrainer
(ratio 1 before an update, a toy reward rises, two processes keep identical weights)."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForMaskedLM, AutoTokenizer

from trl_ext import DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer, MaskedDiffusionLMAdapter, SEDDAdapter
from trl_ext.models.diffusion_lm import (
    load_masked_diffusion_lm,
    masked_diffusion_elbo,
    mean_field_log_likelihood,
    num_transfer_tokens,
    sample_likelihood_draws,
)
from trl_ext.models.sedd import ElboDraws, elbo
from trl_ext.testing import build_tiny_tokenizer, save_tiny_masked_diffusion_lm, save_tiny_sedd


V, L = 3, 4  # toy vocabulary (the mask token is V) and sequence length: position 0 is the prompt
MASK = V


class JointOracle(torch.nn.Module):
    """A "network" whose conditionals are the exact posteriors of a known joint distribution p over V^L: at every
    position, softmax(logits) = p(x_i | the unmasked positions of the input)."""

    def __init__(self, joint: torch.Tensor):
        super().__init__()
        self.joint = joint.double()  # (V,) * length
        self.table = torch.tensor(
            list(itertools.product(range(V), repeat=joint.dim()))
        )  # (V^length, length), row order of joint.flatten()

    def forward(self, input_ids: torch.Tensor):
        visible = input_ids != MASK  # (N, L)
        agrees = (self.table[None] == input_ids[:, None]) | ~visible[:, None]  # (N, S, L)
        weights = agrees.all(-1).double() * self.joint.flatten()[None]  # (N, S)
        one_hot = torch.nn.functional.one_hot(self.table, V).double()  # (S, L, V)
        posterior = torch.einsum("ns,slv->nlv", weights, one_hot) / weights.sum(1)[:, None, None]
        logits = torch.cat([posterior.log(), torch.full((*posterior.shape[:2], 1), -math.inf).double()], -1)
        return SimpleNamespace(logits=logits)


def marginal(joint: torch.Tensor, condition: dict[int, int], target: int, value: int) -> float:
    """p(x_target = value | x_j = v_j for j, v_j in condition), by summing the joint directly."""
    numerator = denominator = 0.0
    for x in itertools.product(range(V), repeat=joint.dim()):
        if all(x[j] == v for j, v in condition.items()):
            denominator += joint[x].item()
            numerator += joint[x].item() if x[target] == value else 0.0
    return numerator / denominator


@pytest.fixture(scope="module")
def joint():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand((V,) * L, generator=generator, dtype=torch.float64) ** 3  # far from factorised
    return probs / probs.sum()


def _completion_mask(batch: int) -> torch.Tensor:
    mask = torch.ones(batch, L, dtype=torch.bool)
    mask[:, 0] = False
    return mask


def test_elbo_one_draw_matches_a_hand_computation(joint):
    adapter, y = MaskedDiffusionLMAdapter(MASK), torch.tensor([[2, 0, 1, 1]])
    # t = 0.5: positions with u < 0.5 are masked -> 1 and 3 (position 0 is the prompt: never masked)
    draws = ElboDraws(t=torch.tensor([[0.5]]), u=torch.tensor([[[0.1, 0.2, 0.9, 0.3]]]))
    got = masked_diffusion_elbo(adapter, JointOracle(joint), y, _completion_mask(1), draws)
    condition = {0: 2, 2: 1}
    expected = (math.log(marginal(joint, condition, 1, 0)) + math.log(marginal(joint, condition, 3, 1))) / 0.5
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_elbo_is_the_exact_log_likelihood_for_exact_posteriors(joint):
    # with the data's exact posteriors the MDLM bound is tight: E_t,mask[(1/t) sum_masked log p(y_i | y_t)] =
    # log p(y | c). Dense: sum over masked subsets S of Beta(|S|, n - |S| + 1) * sum_{i in S} log p(y_i | y_{not S}).
    y = (2, 0, 1, 1)
    truth = math.log(joint[y].item() / joint[y[0]].sum().item())
    n, dense = L - 1, 0.0
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(1, L), size):
            condition = {j: y[j] for j in range(L) if j not in subset}
            weight = math.factorial(size - 1) * math.factorial(n - size) / math.factorial(n)
            dense += weight * sum(math.log(marginal(joint, condition, i, y[i])) for i in subset)
    assert dense == pytest.approx(truth, rel=1e-9)
    # Monte Carlo with our estimator: one draw per row of many copies of y
    rows, generator = 20000, torch.Generator().manual_seed(1)
    sequences = torch.tensor([y]).repeat(rows, 1)
    for pairing in ("iid", "antithetic"):
        draws = sample_likelihood_draws(rows // 2, L, 2, pairing, generator=generator)
        draws = ElboDraws(t=draws.t.reshape(1, rows), u=draws.u.reshape(1, rows, L))
        estimates = masked_diffusion_elbo(
            MaskedDiffusionLMAdapter(MASK), JointOracle(joint), sequences, _completion_mask(rows), draws
        )
        mean, stderr = estimates.mean().item(), estimates.std().item() / math.sqrt(rows)
        assert abs(mean - truth) < 4 * stderr, (pairing, mean, truth, stderr)


def test_mean_field_is_the_sum_of_one_step_marginals(joint):
    adapter, y = MaskedDiffusionLMAdapter(MASK), torch.tensor([[2, 0, 1, 1], [1, 2, 2, 0]])
    # draw 0: prompt kept (u = 0.9 >= p); draw 1: prompt masked (u = 0.1 < p)
    u = torch.tensor([[[0.9] * L] * 2, [[0.1] * L] * 2])
    draws = ElboDraws(t=torch.ones(2, 2), u=u)
    got = mean_field_log_likelihood(adapter, JointOracle(joint), y, _completion_mask(2), draws, p_mask_prompt=0.5)
    for row, x in enumerate(y.tolist()):
        kept = sum(math.log(marginal(joint, {0: x[0]}, i, x[i])) for i in range(1, L))
        masked = sum(math.log(marginal(joint, {}, i, x[i])) for i in range(1, L))
        assert got[0, row].item() == pytest.approx(kept, rel=1e-6)
        assert got[1, row].item() == pytest.approx(masked, rel=1e-6)


def test_mean_field_and_elbo_are_exact_for_a_factorised_model():
    q = torch.softmax(torch.randn(L, V, generator=torch.Generator().manual_seed(2), dtype=torch.float64), -1)
    joint = q[0][:, None, None, None] * q[1][None, :, None, None] * q[2][None, None, :, None] * q[3][None, None, None]
    y = torch.tensor([[0, 1, 2, 0]])
    truth = sum(math.log(q[i, y[0, i]].item()) for i in range(1, L))
    draws = sample_likelihood_draws(1, L, 3, generator=torch.Generator().manual_seed(3))
    got = mean_field_log_likelihood(MaskedDiffusionLMAdapter(MASK), JointOracle(joint), y, _completion_mask(1), draws)
    torch.testing.assert_close(got, torch.full((3, 1), truth, dtype=got.dtype))


def test_num_transfer_tokens_spreads_the_remainder_on_the_first_steps():
    assert num_transfer_tokens(torch.tensor([10, 8, 3]), 4).tolist() == [[3, 3, 2, 2], [2, 2, 2, 2], [1, 1, 1, 0]]


@pytest.fixture(scope="module")
def masked_path(tmp_path_factory):
    return save_tiny_masked_diffusion_lm(tmp_path_factory.mktemp("masked_lm"))


def test_tiny_masked_lm_loads_through_from_pretrained(masked_path):
    tokenizer = AutoTokenizer.from_pretrained(masked_path)
    model = AutoModelForMaskedLM.from_pretrained(masked_path)
    assert tokenizer.mask_token_id is not None and model.config.vocab_size == len(tokenizer)
    assert type(load_masked_diffusion_lm(masked_path)) is type(model)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_trajectory_replays(masked_path, temperature):
    """Each position is committed once, within its block, as many per step as LLaDA's schedule says, and the recorded
    probability of each committed token is the tempered softmax of a forward on the sequence as it was before."""
    tokenizer, model = AutoTokenizer.from_pretrained(masked_path), load_masked_diffusion_lm(masked_path).eval()
    adapter = MaskedDiffusionLMAdapter(tokenizer.mask_token_id, steps=6, block_length=4, temperature=temperature)
    prompt = torch.tensor([[5, 6, 7]] * 3)
    out = adapter.sample(model, prompt, 8, torch.Generator().manual_seed(0))
    x, step, probs = out.sequences, out.trajectory.step, out.trajectory.token_probs
    assert torch.equal(x[:, :3], prompt) and (x != tokenizer.mask_token_id).all()
    assert (step[:, :3] == -1).all() and (step[:, 3:7] < 3).all() and (step[:, 7:] >= 3).all()
    for s, count in enumerate([2, 1, 1, 2, 1, 1]):
        assert ((step == s).sum(1) == count).all()
    for s in range(6):
        before = torch.where((step >= s) & (step >= 0), tokenizer.mask_token_id, x)
        with torch.no_grad():
            logits = model(input_ids=before).logits.double()
        logits[..., tokenizer.mask_token_id] = -math.inf
        tempered = torch.softmax(logits / temperature, -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(probs[step == s].double(), tempered[step == s], rtol=1e-4, atol=1e-7)


def a_frequency(prompts, completions, **kwargs):
    """Toy reward: the fraction of the completion's words that are "a"."""
    return [c.split().count("a") / max(len(c.split()), 1) for c in completions]


PROMPTS = Dataset.from_dict({"prompt": ["x =", "y =", "z =", "w ="]})


def _args(tmp_path, **overrides) -> DiffusionLMGRPOConfig:
    values = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=16,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=8,
        sampling_steps=8,
        block_length=4,
        num_likelihood_samples=2,
        learning_rate=3e-3,
        max_steps=1,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
        logging_steps=1,
        lr_scheduler_type="constant",
    )
    values.update(overrides)
    return DiffusionLMGRPOConfig(**values)


@pytest.mark.parametrize("estimator", ["elbo", "mean_field", "trace"])
def test_ratio_is_one_and_kl_zero_before_the_first_update(masked_path, tmp_path, estimator):
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, _args(tmp_path, beta=0.1, estimator=estimator), PROMPTS)
    logs = trainer.training_step()
    assert logs["diffusion_lm/ratio"] == 1.0 and logs["clip_ratio/region_mean"] == 0.0
    assert logs["kl"] == 0.0 and logs["grad_norm"] > 0
    # (the means differ only by the order of the rows: the minibatch is a permutation of the rollout batch)
    assert logs["diffusion_lm/log_likelihood"] == pytest.approx(logs["diffusion_lm/old_log_likelihood"], rel=1e-6)
    if estimator != "trace":  # (trace has no draws)
        assert logs["diffusion_lm/log_likelihood_draw_std"] > 0


@pytest.mark.parametrize("estimator", ["elbo", "mean_field"])
def test_grpo_raises_a_token_frequency_reward(masked_path, tmp_path, estimator):
    args = _args(tmp_path, max_steps=30, num_iterations=2, num_mini_batches=2, estimator=estimator)
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, args, PROMPTS)
    trainer.train()  # ~1.5 s on an idle 2-core machine; speed lives in benchmarks/, never in a timed test
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(rewards) == 30
    # (the first reward is the untrained policy's; with the padding out of attention mean-field learns within 5 steps)
    assert rewards[0] < 0.1 and sum(rewards[-5:]) / 5 > 0.5, rewards


def test_saved_model_reloads(masked_path, tmp_path):
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, _args(tmp_path), PROMPTS)
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    for (name, a), b in zip(trainer.policy.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert AutoTokenizer.from_pretrained(tmp_path / "out").mask_token_id is not None


def test_bad_settings_raise_clear_errors(masked_path, tmp_path):
    with pytest.raises(ValueError, match="block_length"):
        _args(tmp_path, max_completion_length=8, block_length=3)
    with pytest.raises(ValueError, match="number of blocks"):
        _args(tmp_path, max_completion_length=8, block_length=2, sampling_steps=6)
    with pytest.raises(ValueError, match="estimator"):
        _args(tmp_path, estimator="exact")


@pytest.mark.parametrize("estimator", ["elbo", "mean_field", "trace"])
def test_two_processes_keep_identical_weights(tmp_path, launch_two_processes, estimator):
    ranks = launch_two_processes(
        "diffusion_lm_two_steps.py", save_tiny_masked_diffusion_lm(tmp_path / "model"), estimator
    )
    assert set(ranks[0]["prompts"]).isdisjoint(ranks[1]["prompts"])
    final = [torch.tensor(rank["final"]) for rank in ranks]
    torch.testing.assert_close(final[0], final[1], rtol=0, atol=0)
    assert not torch.equal(final[0], torch.tensor(ranks[0]["initial"]))


def test_sedd_adapter_gives_normalised_conditionals_and_the_dwdse_bound(tmp_path):
    path = save_tiny_sedd(tmp_path / "sedd", tokens=len(build_tiny_tokenizer()))
    from trl_ext import SEDDModel

    model = SEDDModel.from_pretrained(path).eval()
    adapter = SEDDAdapter(model.config, steps=4)
    prompt = torch.randint(0, model.config.tokens, (2, 3), generator=torch.Generator().manual_seed(0))
    sample = adapter.sample(model, prompt, 5, torch.Generator().manual_seed(0))
    assert torch.equal(sample.sequences[:, :3], prompt) and sample.trajectory is not None
    noisy = sample.sequences.clone()
    noisy[:, 4:] = adapter.mask_token_id
    t = torch.full((2,), 0.5)
    with torch.no_grad():  # sum over every candidate token of p(x0^i = y | x_t) is 1 at each masked position
        total = sum(
            adapter.token_log_probs(model, noisy, torch.full_like(noisy, y), t).exp()
            for y in range(model.config.tokens)
        )
    torch.testing.assert_close(total[:, 4:], torch.ones(2, 4))
    assert (total[:, :4] == model.config.tokens).all()  # unmasked positions: log-prob 0 for every candidate
    completion = torch.zeros_like(noisy, dtype=torch.bool)
    completion[:, 3:] = True
    draws = sample_likelihood_draws(2, 8, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bound = adapter.elbo(model, sample.sequences, completion, draws)
        torch.testing.assert_close(
            bound[0], -elbo(model, sample.sequences, adapter.noise, prompt_mask=~completion, draws=draws)
        )


def test_sedd_adapter_trajectory_replays(tmp_path):
    """Absorbing SEDD: each completion position is unmasked once, and its recorded probability is the transition
    probability of its token recomputed on the sequence as it was before that step."""
    from trl_ext import SEDDModel
    from trl_ext.models.sedd import transition_probabilities
    from trl_ext.models.sedd.sampling import masked_row_log_scores, predictor_kappa

    model = SEDDModel.from_pretrained(save_tiny_sedd(tmp_path / "sedd", tokens=len(build_tiny_tokenizer()))).eval()
    steps, adapter = 4, SEDDAdapter(model.config, steps=4)
    prompt = torch.randint(0, model.config.tokens, (3, 2), generator=torch.Generator().manual_seed(0))
    out = adapter.sample(model, prompt, 6, torch.Generator().manual_seed(0))
    x, step, probs = out.sequences, out.trajectory.step, out.trajectory.token_probs
    assert (step[:, :2] == -1).all() and (step[:, 2:] >= 0).all() and (step[:, 2:] <= steps).all()
    times = torch.linspace(1.0, 1e-5, steps + 1)
    for s in range(steps + 1):
        before = torch.where(step >= s, model.config.mask_index, x)
        if s < steps:
            sigma = adapter.noise.total_noise(times[s]).expand(3)
            kappa = predictor_kappa(adapter.noise, times[s], times[s + 1], "analytic")
        else:
            sigma = adapter.noise.total_noise(torch.tensor(1e-5)).expand(3)
        with torch.no_grad():
            for rows, cols, log_scores in masked_row_log_scores(model, before, sigma):
                p = transition_probabilities(log_scores, kappa) if s < steps else torch.softmax(log_scores, -1)
                p = p.clamp(min=0) / p.clamp(min=0).sum(-1, keepdim=True)
                moved = step[rows, cols] == s
                expected = p[moved].gather(-1, x[rows, cols][moved].unsqueeze(-1)).squeeze(-1)
                torch.testing.assert_close(probs[rows, cols][moved], expected)


def test_lora_trains_only_adapters_with_the_base_model_as_reference(masked_path, tmp_path):
    args = _args(tmp_path, use_peft=True, lora_r=4, beta=0.1, max_steps=2)
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, args, PROMPTS)
    assert trainer.ref_model is None
    trained = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in name for name in trained)
    base = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if not p.requires_grad}
    logs = trainer.training_step()
    assert logs["diffusion_lm/ratio"] == 1.0 and logs["kl"] == 0.0  # adapters start at zero: policy = reference
    trainer.state.global_step += 1
    logs = trainer.training_step()
    assert logs["kl"] > 0  # the adapters moved the policy away from the base model
    for name, p in trainer.model.named_parameters():
        if name in base:
            assert torch.equal(p, base[name]), name
    trainer.save_model(str(tmp_path / "merged"))
    merged = AutoModelForMaskedLM.from_pretrained(tmp_path / "merged")
    original = AutoModelForMaskedLM.from_pretrained(masked_path)
    assert not any("lora" in name for name in merged.state_dict())
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, original.state_dict()[n])]
    assert changed and all("query" in n or "value" in n for n in changed), changed


@pytest.mark.parametrize("use_peft", [False, True])
def test_resume_from_checkpoint_is_bit_identical(masked_path, tmp_path, use_peft):
    args = _args(tmp_path, max_steps=3, save_strategy="steps", save_steps=1, beta=0.1, use_peft=use_peft)
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, args, PROMPTS)
    trainer.train()
    resumed = DiffusionLMGRPOTrainer(
        masked_path, a_frequency, _args(tmp_path / "r", max_steps=3, beta=0.1, use_peft=use_peft), PROMPTS
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert resumed.global_step == 3
    for a, b in zip(resumed.model.parameters(), trainer.model.parameters()):
        assert torch.equal(a, b)
    assert [e.get("reward") for e in resumed.state.log_history[1:]] == [
        e.get("reward") for e in trainer.state.log_history[1:]
    ]


def test_sedd_trains_with_the_mean_field_estimator(tmp_path):
    from trl_ext import DiscreteDiffusionPPOConfig, DiscreteDiffusionPPOTrainer

    tokenizer = build_tiny_tokenizer()
    path = save_tiny_sedd(tmp_path / "sedd", tokens=len(tokenizer))
    values = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=16,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=12,
        sampling_steps=8,
        learning_rate=3e-3,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
        logging_steps=1,
        lr_scheduler_type="constant",
        estimator="mean_field",
    )
    prompts = Dataset.from_dict({"prompt": ["x=", "y=", "z=", "w="]})

    def letter_a(prompts, completions, **kwargs):
        return [c.count("a") / max(len(c), 1) for c in completions]

    first = DiscreteDiffusionPPOTrainer(
        path, letter_a, DiscreteDiffusionPPOConfig(**values, max_steps=1, beta=0.1), prompts, tokenizer
    )
    logs = first.training_step()
    assert logs["sedd/ratio"] == 1.0 and logs["kl"] == 0.0 and "sedd/old_log_likelihood" in logs
    args = DiscreteDiffusionPPOConfig(**values, max_steps=30, num_iterations=2, num_mini_batches=2)
    trainer = DiscreteDiffusionPPOTrainer(path, letter_a, args, prompts, tokenizer)
    trainer.train()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2, rewards
    uniform = save_tiny_sedd(tmp_path / "uniform", tokens=len(tokenizer), graph_type="uniform", noise_type="geometric")
    with pytest.raises(ValueError, match="absorbing graph"):
        DiscreteDiffusionPPOTrainer(
            uniform, letter_a, DiscreteDiffusionPPOConfig(**values, max_steps=1), prompts, tokenizer
        )


def test_trace_is_the_chain_rule_for_one_token_per_step_with_exact_posteriors(joint):
    """One token per step, exact posteriors: the trace log-probability is log p(y | c) whatever the order; with a
    factorised joint it is sum_i log q_i(y_i) for any grouping of positions into steps."""
    from trl_ext.models.diffusion_lm import Trajectory, trace_log_likelihood

    y = torch.tensor([[2, 0, 1, 1]])
    truth = math.log(joint[tuple(y[0].tolist())].item() / joint[2].sum().item())
    adapter = MaskedDiffusionLMAdapter(MASK)
    for order in ([-1, 0, 1, 2], [-1, 2, 0, 1], [-1, 1, 2, 0]):
        trajectory = Trajectory(torch.tensor([order]), torch.ones(1, L))
        got = trace_log_likelihood(adapter, JointOracle(joint), y, trajectory)
        assert got.item() == pytest.approx(truth, rel=1e-6)
    # two tokens in one step: mean-field within the step, not log p(y | c)
    grouped = Trajectory(torch.tensor([[-1, 0, 0, 1]]), torch.ones(1, L))
    expected = (
        math.log(marginal(joint, {0: 2}, 1, 0))
        + math.log(marginal(joint, {0: 2}, 2, 1))
        + math.log(marginal(joint, {0: 2, 1: 0, 2: 1}, 3, 1))
    )
    got = trace_log_likelihood(adapter, JointOracle(joint), y, grouped)
    assert got.item() == pytest.approx(expected, rel=1e-6) and abs(got.item() - truth) > 1e-3
    q = torch.softmax(torch.randn(L, V, generator=torch.Generator().manual_seed(4), dtype=torch.float64), -1)
    factorised = (
        q[0][:, None, None, None] * q[1][None, :, None, None] * q[2][None, None, :, None] * q[3][None, None, None]
    )
    got = trace_log_likelihood(adapter, JointOracle(factorised), y, grouped)
    assert got.item() == pytest.approx(sum(math.log(q[i, y[0, i]].item()) for i in range(1, L)), rel=1e-6)


def test_trace_recomputes_the_recorded_probabilities_and_trains(masked_path, tmp_path):
    args = _args(tmp_path, estimator="trace", beta=0.1, temperature=0.9)
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, args, PROMPTS)
    logs = trainer.training_step()
    assert logs["diffusion_lm/ratio"] == 1.0 and logs["kl"] == 0.0
    assert logs["diffusion_lm/trace_recompute_error"] < 1e-4  # the sampler's probabilities, recomputed
    args = _args(tmp_path, estimator="trace", num_trace_steps=4, max_steps=30, num_iterations=2, num_mini_batches=2)
    trainer = DiffusionLMGRPOTrainer(masked_path, a_frequency, args, PROMPTS)
    trainer.train()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert sum(rewards[:5]) / 5 < 0.1 and sum(rewards[-5:]) / 5 > 0.5, rewards
    with pytest.raises(ValueError, match="temperature"):
        _args(tmp_path, estimator="trace", temperature=0.0)


class ToySEDD(torch.nn.Module):
    """SEDD's interface (trunk, head, config) with log-scores known by hand: log s(x_t, σ)_{i, y} = table[i, y] − 0.1·σ
    at every masked position i (tokens 0, 1; the mask token is 2)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)
        self.config = SimpleNamespace(graph_type="absorb", mask_index=2, noise_type="loglinear")

    def trunk(self, x, sigma):
        positions = torch.arange(x.size(1)).expand_as(x)
        return positions, sigma

    def head(self, positions, sigma, x, sigma_rows):
        return torch.cat([self.table[positions] - 0.1 * sigma[:, None], torch.zeros(len(positions), 1)], -1)


def test_sedd_trace_is_the_product_of_the_step_transition_probabilities_by_hand():
    """Absorbing SEDD, analytic steps from t = 1 to 1e-5 over 3 steps then the denoising step: each unmasked token's
    probability is κ_s·exp(log s_y) (moves scaled to 1 when they exceed it), κ_s = exp(σ̄(t_s) − σ̄(t_{s+1})) − 1 with
    σ̄(t) = −log(1 − 0.999 t); at the denoising step softmax(log s). The trace is the sum of their logs."""
    from trl_ext.models.diffusion_lm import Trajectory, trace_log_likelihood

    table = torch.tensor([[0.0, 0.0], [0.5, -1.0], [2.0, 1.5], [-0.3, 0.2]])
    adapter = SEDDAdapter(ToySEDD(table).config, steps=3)
    sequences = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]])
    steps = torch.tensor([[-1, 0, 2, 3], [-1, 1, 1, 0]])
    trajectory = Trajectory(steps, torch.ones(2, L))

    def total_noise(t):
        return -math.log(1 - 0.999 * t)

    times = [1 - s * (1 - 1e-5) / 3 for s in range(4)]
    expected = [0.0, 0.0]
    for row in range(2):
        for i in range(1, L):
            s, y = steps[row, i].item(), sequences[row, i].item()
            if s < 3:
                sigma = total_noise(times[s])
                kappa = math.exp(sigma - total_noise(times[s + 1])) - 1
                moves = [kappa * math.exp(table[i, v].item() - 0.1 * sigma) for v in range(2)]
                expected[row] += math.log(moves[y] / max(1.0, sum(moves)))
            else:
                sigma = total_noise(1e-5)
                scores = [math.exp(table[i, v].item() - 0.1 * sigma) for v in range(2)]
                expected[row] += math.log(scores[y] / sum(scores))
    got = trace_log_likelihood(adapter, ToySEDD(table), sequences, trajectory)
    torch.testing.assert_close(got[0].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_block_elbo_one_draw_matches_a_hand_computation():
    """Prompt 1 position, completion of 4 in two blocks of 2: block b's positions with u < t masked, later blocks all
    masked, earlier ones clean; the estimate is the sum over blocks of (1/t) Σ log p(y_i | that input)."""
    probs = torch.rand((V,) * 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64) ** 3
    joint, y = probs / probs.sum(), torch.tensor([[2, 0, 1, 1, 2]])
    completion = torch.ones(1, 5, dtype=torch.bool)
    completion[:, 0] = False
    draws = ElboDraws(t=torch.tensor([[0.5]]), u=torch.tensor([[[0.0, 0.2, 0.9, 0.9, 0.3]]]))
    got = masked_diffusion_elbo(MaskedDiffusionLMAdapter(MASK), JointOracle(joint), y, completion, draws, 2)
    # block 0 (positions 1, 2): position 1 masked, 3 and 4 masked as a later block; block 1: position 4 masked
    first = math.log(marginal(joint, {0: 2, 2: 1}, 1, 0))
    second = math.log(marginal(joint, {0: 2, 1: 0, 2: 1, 3: 1}, 4, 2))
    assert got.item() == pytest.approx((first + second) / 0.5, rel=1e-6)
    whole = masked_diffusion_elbo(MaskedDiffusionLMAdapter(MASK), JointOracle(joint), y, completion, draws)
    assert whole.item() != pytest.approx(got.item())  # one block: position 4 sees positions 3 and 4 clean


def test_block_elbo_is_the_dense_bound_and_tight_for_exact_posteriors():
    r"""Dense block bound Σ_b Σ_{S ⊆ block b, S ≠ ∅} Beta(|S|, n_b − |S| + 1) Σ_{i ∈ S} log p(y_i | c, y_<b, y_b \ S)
    (later blocks marginalised) equals log p(y | c) for exact posteriors; our Monte Carlo estimate agrees with it."""
    probs = torch.rand((V,) * 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64) ** 3
    joint, y = probs / probs.sum(), (1, 2, 0, 0, 1)
    truth = math.log(joint[y].item() / joint[y[0]].sum().item())
    dense = 0.0
    for block in ((1, 2), (3, 4)):
        before = {j: y[j] for j in range(block[0])}
        for size in (1, 2):
            for subset in itertools.combinations(block, size):
                condition = {**before, **{j: y[j] for j in block if j not in subset}}
                weight = math.factorial(size - 1) * math.factorial(2 - size) / math.factorial(2)
                dense += weight * sum(math.log(marginal(joint, condition, i, y[i])) for i in subset)
    assert dense == pytest.approx(truth, rel=1e-9)
    rows = 20000
    sequences, completion = torch.tensor([y]).repeat(rows, 1), torch.ones(rows, 5, dtype=torch.bool)
    completion[:, 0] = False
    draws = sample_likelihood_draws(rows, 5, 1, "iid", generator=torch.Generator().manual_seed(7))
    estimates = masked_diffusion_elbo(
        MaskedDiffusionLMAdapter(MASK, block_length=2), JointOracle(joint), sequences, completion, draws, 2
    )
    mean, stderr = estimates.mean().item(), estimates.std().item() / math.sqrt(rows)
    assert abs(mean - dense) < 4 * stderr, (mean, dense, stderr)
