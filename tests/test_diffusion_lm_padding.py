"""Left-padded prompts of masked diffusion LMs: with the adapter's `pad_token_id`, the padding is out of the network's
attention, positions count from the first real token and no estimator masks it, so a padded prompt gives the
completion the unpadded prompt gives (the sampler's draws) and the same log-likelihood under every estimator; without
it (LLaDA's and d1's convention: the padding is seen) the values differ."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from trl_ext import DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer, MaskedDiffusionLMAdapter
from trl_ext.models.diffusion_lm import (
    Trajectory,
    load_masked_diffusion_lm,
    mean_field_log_likelihood,
    trace_log_likelihood,
)
from trl_ext.models.sedd import ElboDraws
from trl_ext.testing import save_tiny_masked_diffusion_lm


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    path = save_tiny_masked_diffusion_lm(tmp_path_factory.mktemp("masked_lm"))
    return path, AutoTokenizer.from_pretrained(path), load_masked_diffusion_lm(path).eval()


def _adapter(tokenizer, padded: bool = True) -> MaskedDiffusionLMAdapter:
    pad = tokenizer.pad_token_id if padded else None
    return MaskedDiffusionLMAdapter(
        tokenizer.mask_token_id, steps=4, block_length=4, pad_token_id=pad, position_ids=padded
    )


def test_padded_prompt_samples_the_unpadded_completion(masked):
    _, tokenizer, model = masked
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    padded = torch.cat([torch.full((2, 2), tokenizer.pad_token_id), prompt], dim=1)
    adapter = _adapter(tokenizer)
    plain = adapter.sample(model, prompt, 8, torch.Generator().manual_seed(0))
    got = adapter.sample(model, padded, 8, torch.Generator().manual_seed(0))
    assert torch.equal(got.sequences[:, 5:], plain.sequences[:, 3:])
    torch.testing.assert_close(got.trajectory.token_probs[:, 5:], plain.trajectory.token_probs[:, 3:])
    seen = _adapter(tokenizer, padded=False).sample(model, padded, 8, torch.Generator().manual_seed(0))
    assert not torch.allclose(seen.trajectory.token_probs[:, 5:], plain.trajectory.token_probs[:, 3:])


def _estimates(adapter, model, sequences, t, u, steps) -> torch.Tensor:
    """(elbo, mean_field at p_mask_prompt 0.5, trace) of each row (3, B); the last 4 positions are the completion."""
    completion_mask = torch.zeros_like(sequences, dtype=torch.bool)
    completion_mask[:, -4:] = True
    draws, trajectory = ElboDraws(t=t, u=u), Trajectory(steps, torch.ones_like(sequences, dtype=torch.float))
    with torch.no_grad():
        return torch.stack(
            [
                adapter.elbo(model, sequences, completion_mask, draws).mean(0),
                mean_field_log_likelihood(adapter, model, sequences, completion_mask, draws, 0.5).mean(0),
                trace_log_likelihood(adapter, model, sequences, trajectory)[0],
            ]
        )


def test_every_estimator_gives_a_padded_row_its_unpadded_value(masked):
    _, tokenizer, model = masked
    pad, rows = tokenizer.pad_token_id, [[5, 6, 7], [8, 9, 10, 11, 12]]
    completion = [[20, 21, 22, 23], [24, 25, 26, 27]]
    width = 5  # the batch: row 0 left-padded by 2, row 1 unpadded
    batch = torch.tensor([[pad] * (width - len(r)) + r + c for r, c in zip(rows, completion)])
    generator = torch.Generator().manual_seed(1)
    t, u = torch.rand(2, 2, generator=generator), torch.rand(2, 2, width + 4, generator=generator)
    u[:, 0, :2] = 0.0  # the padding's uniforms: mean-field would mask it if padding were ever masked
    steps = torch.tensor([[-1] * width + [0, 1, 1, 0]] * 2)
    adapter = _adapter(tokenizer)
    together = _estimates(adapter, model, batch, t, u, steps)
    for row, (real, completed) in enumerate(zip(rows, completion)):
        alone = torch.tensor([real + completed])
        start = width - len(real)  # the row's draws without its padding
        row_steps = torch.tensor([[-1] * len(real) + [0, 1, 1, 0]])
        expected = _estimates(adapter, model, alone, t[:, row : row + 1], u[:, row : row + 1, start:], row_steps)
        torch.testing.assert_close(together[:, row], expected[:, 0], rtol=1e-5, atol=1e-5)
    seen = _estimates(_adapter(tokenizer, padded=False), model, batch, t, u, steps)
    assert (seen[:, 0] - together[:, 0]).abs().min() > 1e-3  # padding seen (and masked by mean-field): other values


def test_the_trainer_excludes_the_padding_where_the_network_takes_an_attention_mask(masked, tmp_path):
    path, tokenizer, _ = masked
    args = DiffusionLMGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_prompt_length=6, max_completion_length=8
    )
    trainer = DiffusionLMGRPOTrainer(
        path, lambda prompts, completions, **kw: [0.0] * len(prompts), args, Dataset.from_dict({"prompt": ["x ="]})
    )
    assert trainer.adapter.pad_token_id == tokenizer.pad_token_id and trainer.adapter.position_ids
    ids, mask = trainer._encode_prompts(["x =", "a b c d e f g"], return_mask=True)
    assert torch.equal(trainer.adapter.padding(ids), ~mask)
