"""The DiffusionGemma family: the tiny factory loads through `from_pretrained`, our sampler in argmax mode is transformers'
`generate`, the recorded trajectory follows the sampler's rules (uniform canvas, entropy-bound acceptance, uniform
re-draws, self-conditioning on the previous step's tempered logits), the "trace" estimator is the product of the
step probabilities computed by hand on a toy, and DiffusionLMGRPOTrainer trains it (ratio 1, a reward rises, two
processes keep identical weights)."""

import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

from trl_ext import DiffusionGemmaAdapter, DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer
from trl_ext.models.diffusion_lm import CanvasTrajectory, load_diffusion_lm, trace_log_likelihood
from trl_ext.testing import save_tiny_diffusion_gemma


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    return save_tiny_diffusion_gemma(tmp_path_factory.mktemp("diffusion_gemma"))


@pytest.fixture(scope="module")
def gemma(gemma_path):
    return DiffusionGemmaForBlockDiffusion.from_pretrained(gemma_path).eval()


def test_tiny_diffusion_gemma_loads_through_from_pretrained(gemma_path, gemma):
    tokenizer = AutoTokenizer.from_pretrained(gemma_path)
    assert gemma.config.text_config.vocab_size == len(tokenizer) and gemma.config.canvas_length == 4
    assert type(load_diffusion_lm(gemma_path)) is DiffusionGemmaForBlockDiffusion
    again = DiffusionGemmaForBlockDiffusion.from_pretrained(gemma_path)
    for (name, a), b in zip(gemma.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("padded", [False, True])
def test_argmax_sampler_is_generate(gemma, padded):
    """Same random stream (canvas, then per step multinomial and re-noising), generate's temperature schedule and entropy
    bound: the argmax output equals `generate`'s over two blocks (the tiny random model never triggers generate's early
    stop on confident canvases, which our sampler does not have)."""
    prompt = torch.randint(0, 250, (3, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompt, dtype=torch.bool)
    kwargs = {}
    if padded:
        prompt[0, :2] = gemma.config.text_config.pad_token_id
        mask[0, :2] = False
        kwargs["attention_mask"] = mask.long()
    torch.manual_seed(3)
    expected = gemma.generate(
        prompt, max_new_tokens=8, max_denoising_steps=3, disable_compile=True, eos_token_id=None, **kwargs
    ).sequences
    adapter = DiffusionGemmaAdapter.from_model(gemma, steps=3, output="argmax")
    got = adapter.sample(gemma, prompt, 8, torch.Generator().manual_seed(3), prompt_mask=mask)
    assert got.trajectory is None  # an argmax output is no sample: nothing for "trace"
    assert torch.equal(got.sequences, expected)


def test_sampled_trajectory_follows_the_sampler_rules(gemma):
    steps, adapter = 3, DiffusionGemmaAdapter.from_model(gemma, steps=3, entropy_bound=2.0)
    prompt = torch.randint(0, 250, (2, 4), generator=torch.Generator().manual_seed(1))
    out = adapter.sample(gemma, prompt, 8, torch.Generator().manual_seed(0))
    x, trajectory = out.sequences, out.trajectory
    assert trajectory.canvases.shape == (2, 6, 4) and torch.equal(x[:, :4], prompt)
    for g in range(6):
        block, within = divmod(g, steps)
        prefix = x[:, : 4 + 4 * block]
        sc = None if within == 0 else trajectory.self_conditioning[:, g]
        with torch.no_grad():
            logits = gemma(input_ids=prefix, decoder_input_ids=trajectory.canvases[:, g], self_conditioning_logits=sc)
        temperature = 0.4 + 0.4 * (steps - within) / steps  # generate's linear schedule over the remaining steps
        tempered = logits.logits.double() / temperature
        probs = torch.softmax(tempered, -1)
        torch.testing.assert_close(
            trajectory.token_probs[:, g].double(),
            probs.gather(-1, trajectory.tokens[:, g, :, None])[..., 0],
            rtol=1e-4,
            atol=1e-7,
        )
        if within < steps - 1:  # the next step reads these logits and keeps the accepted draws
            torch.testing.assert_close(trajectory.self_conditioning[:, g + 1].double(), tempered, rtol=1e-4, atol=1e-4)
            kept = trajectory.canvases[:, g + 1] == trajectory.tokens[:, g]
            assert kept[trajectory.accepted[:, g]].all()
            # entropy bound, by hand: the k lowest entropies with sum - max <= bound
            entropy = -(probs * probs.log()).sum(-1)
            for row in range(2):
                order = sorted(range(4), key=lambda i: entropy[row, i].item())
                accepted, total = set(), 0.0
                for i in order:
                    total += entropy[row, i].item()
                    if total - entropy[row, i].item() > 2.0:
                        break
                    accepted.add(i)
                assert {i for i in range(4) if trajectory.accepted[row, g, i]} == accepted
        else:  # the last step of a block accepts every draw: the block is that sample
            assert trajectory.accepted[:, g].all()
            assert torch.equal(x[:, 4 + 4 * block : 8 + 4 * block], trajectory.tokens[:, g])
        if within == 0:
            assert (trajectory.self_conditioning[:, g] == 0).all()
    assert 1 < trajectory.accepted[:, :2].sum() < 16  # the bound accepts some positions, not all


class ToyGemma(torch.nn.Module):
    """DiffusionGemma's call signature with logits known by hand: logits[i, v] = bias[i, v] + 0.5·[canvas_i = v] +
    0.25·sc[i, v] + 0.1·(number of prefix tokens equal to v)."""

    config = SimpleNamespace(model_type="diffusion_gemma")

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = torch.nn.Parameter(bias)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, self_conditioning_logits=None, **kwargs):
        vocab = self.bias.size(-1)
        logits = self.bias + 0.5 * torch.nn.functional.one_hot(decoder_input_ids, vocab)
        logits = logits + 0.1 * torch.nn.functional.one_hot(input_ids, vocab).sum(1, keepdim=True)
        if self_conditioning_logits is not None:
            logits = logits + 0.25 * self_conditioning_logits
        return SimpleNamespace(logits=logits)


def test_trace_is_the_product_of_the_step_probabilities_by_hand():
    vocab, canvas, steps = 3, 2, 2
    bias = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, -0.5]])
    adapter = DiffusionGemmaAdapter(canvas, vocab, steps=steps, t_min=0.5, t_max=1.0)
    prompt = [2, 0]
    blocks = [[1, 2], [0, 0]]  # the sampled completion
    canvases = [[[0, 1], [1, 0], [2, 2], [0, 1]]]
    tokens = [[[1, 1], [1, 2], [2, 0], [0, 0]]]
    accepted = [[[True, False], [True, True], [False, True], [True, True]]]
    sc = torch.zeros(1, 4, canvas, vocab)
    sc[0, 1] = torch.tensor([[0.2, -0.1, 0.0], [1.0, 0.0, -1.0]])
    sc[0, 3] = torch.tensor([[-0.3, 0.3, 0.0], [0.0, 0.5, 0.5]])
    trajectory = CanvasTrajectory(
        torch.tensor(canvases),
        torch.tensor(tokens),
        torch.tensor(accepted),
        torch.ones(1, 4, canvas),
        sc,
        torch.ones(1, 2, dtype=torch.bool),
        steps,
    )
    sequences = torch.tensor([prompt + blocks[0] + blocks[1]])
    got = trace_log_likelihood(adapter, ToyGemma(bias), sequences, trajectory)
    expected = 0.0
    for g in range(4):
        block, within = divmod(g, steps)
        prefix = prompt + (blocks[0] if block else [])
        temperature = 0.5 + 0.5 * (steps - within) / steps  # 1.0 at a block's first step, 0.75 at its second
        for i in range(canvas):
            if not accepted[0][g][i]:
                continue
            logits = [
                bias[i, v].item()
                + 0.5 * (canvases[0][g][i] == v)
                + 0.1 * prefix.count(v)
                + (0.25 * sc[0, g, i, v].item() if within else 0.0)
                for v in range(vocab)
            ]
            numerator = math.exp(logits[tokens[0][g][i]] / temperature)
            expected += math.log(numerator / sum(math.exp(z / temperature) for z in logits))
    assert got.shape == (1, 1) and got.item() == pytest.approx(expected, rel=1e-6)
    # a subset of steps is the partial sum; a wrong temperature or self-conditioning changes the value
    partial = trace_log_likelihood(adapter, ToyGemma(bias), sequences, trajectory, [1, 3])
    assert partial.item() != pytest.approx(expected) and partial.item() < 0
    other = DiffusionGemmaAdapter(canvas, vocab, steps=steps, t_min=1.0, t_max=1.0)
    assert trace_log_likelihood(other, ToyGemma(bias), sequences, trajectory).item() != pytest.approx(expected)


def lowercase_share(prompts, completions, **kwargs):
    """Toy reward: the share of the completion's characters that are lowercase letters (random bytes: ~10%)."""
    return [sum(ch.islower() for ch in c) / max(len(c), 1) for c in completions]


def a_share(prompts, completions, **kwargs):
    """Toy reward: the share of the completion's characters that are "a" (the target token's frequency)."""
    return [c.count("a") / max(len(c), 1) for c in completions]


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
        sampling_steps=4,
        estimator="trace",
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


def test_ratio_is_one_and_the_recorded_probabilities_are_recomputed(gemma_path, tmp_path):
    trainer = DiffusionLMGRPOTrainer(gemma_path, lowercase_share, _args(tmp_path, beta=0.1), PROMPTS)
    assert isinstance(trainer.adapter, DiffusionGemmaAdapter) and trainer.adapter.steps == 2
    assert not any(p.requires_grad for p in trainer.policy.model.encoder.vision_tower.parameters())
    logs = trainer.training_step()
    assert logs["diffusion_lm/ratio"] == 1.0 and logs["clip_ratio/region_mean"] == 0.0
    assert logs["kl"] == 0.0 and logs["grad_norm"] > 0
    assert logs["diffusion_lm/trace_recompute_error"] < 1e-4
    trainer.save_model(str(tmp_path / "out"))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "DiffusionGemmaForBlockDiffusion" in card and "sampled trajectory's log-probability" in card


def test_grpo_raises_a_target_token_frequency(gemma_path, tmp_path):
    args = _args(tmp_path, max_steps=30, num_iterations=2, num_mini_batches=2)
    trainer = DiffusionLMGRPOTrainer(gemma_path, a_share, args, PROMPTS)
    trainer.train()  # ~11 s on one idle core; speed lives in benchmarks/
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(rewards) == 30
    assert sum(rewards[:5]) / 5 < 0.05 and sum(rewards[-5:]) / 5 > 0.5, rewards


@pytest.mark.parametrize("estimator", ["elbo", "mean_field"])
def test_elbo_and_mean_field_are_refused_with_the_reason(gemma_path, tmp_path, estimator):
    with pytest.raises(ValueError, match="supports trace"):
        DiffusionLMGRPOTrainer(gemma_path, a_share, _args(tmp_path, estimator=estimator), PROMPTS)
    adapter = DiffusionGemmaAdapter(4, 10)
    with pytest.raises(NotImplementedError, match="uniform"):
        adapter.elbo(None, None, None, None)
    with pytest.raises(NotImplementedError, match="no mask token"):
        adapter.token_log_probs(None, None, None, None)
    with pytest.raises(ValueError, match="canvas_length"):
        DiffusionLMGRPOTrainer(gemma_path, a_share, _args(tmp_path, block_length=8), PROMPTS)


def test_two_processes_keep_identical_weights(tmp_path, launch_two_processes):
    ranks = launch_two_processes("diffusion_lm_two_steps.py", save_tiny_diffusion_gemma(tmp_path / "model"), "trace")
    assert set(ranks[0]["prompts"]).isdisjoint(ranks[1]["prompts"])
    final = [torch.tensor(rank["final"]) for rank in ranks]
    torch.testing.assert_close(final[0], final[1], rtol=0, atol=0)
    assert not torch.equal(final[0], torch.tensor(ranks[0]["initial"]))
