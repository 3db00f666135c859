"""The published architectures of `trl_ext.testing.published` (built on the meta device: no memory, no time) have the
parameter counts of the checkpoints they stand for, and the sized tokenizer has the published vocabulary size."""

import pytest
import torch

from trl_ext.testing import published
from trl_ext.testing.text import build_tiny_tokenizer


# parameter counts of the published checkpoints: SEDD from the reference code's model (research notes, sedd.md), Qwen
# from the Hub's safetensors metadata of each repository
@pytest.mark.parametrize(
    "hub_id, count", [("louaaron/sedd-small", 169_627_218), ("louaaron/sedd-medium", 424_477_010)]
)
def test_sedd_architectures_have_the_published_parameter_counts(hub_id, count):
    model = published.sedd_model(hub_id, device="meta")
    assert sum(p.numel() for p in model.parameters()) == count
    assert model.config.tokens == 50257 and model.config.length == 1024


def test_qwen_architectures_have_the_published_parameter_counts():
    tokenizer = build_tiny_tokenizer(151665)
    policy = published.qwen2_5_causal_lm(tokenizer, torch.bfloat16, "meta")
    assert sum(p.numel() for p in policy.parameters()) == 1_543_714_304
    reward = published.qwen2_5_causal_lm(tokenizer, torch.bfloat16, "meta", num_labels=1)
    assert sum(p.numel() for p in reward.parameters()) == 1_543_714_304 + 1536  # the score head, no LM head
    vlm = published.qwen2_5_vl_3b(tokenizer, torch.bfloat16, "meta")
    assert sum(p.numel() for p in vlm.parameters()) == 3_754_622_976
    assert policy.dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32  # the context restores it


def test_unknown_sedd_checkpoint_is_refused():
    with pytest.raises(ValueError, match="louaaron/sedd-small"):
        published.sedd_model("louaaron/sedd-large", device="meta")


def test_tokenizer_grown_to_a_vocabulary_size_decodes_every_id():
    tokenizer = build_tiny_tokenizer(50257)
    assert len(tokenizer) == 50257
    text = "x^2 + y = 1, naïve"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    ids = torch.randint(0, 50250, (64,), generator=torch.Generator().manual_seed(0)).tolist()
    assert all(tokenizer.decode([i]) for i in ids)  # a random model's samples decode to text, not to nothing
    assert tokenizer.eos_token_id == 50257 - 5  # the specials come after the regular tokens, as in Qwen's vocabulary


def test_sd3_5_medium_components_fit_together():
    """The MMDiT's input widths are the text encoders' output widths (T5-XXL's 4096; CLIP-L 768 + bigG 1280 pooled),
    and the T5-XXL encoder is the 4.76B parameters that dominate the pipeline's memory."""
    pipeline = published.sd3_5_medium_pipeline(torch.bfloat16, "meta")
    transformer = pipeline.transformer.config
    assert transformer.joint_attention_dim == pipeline.text_encoder_3.config.d_model == 4096
    assert transformer.pooled_projection_dim == (
        pipeline.text_encoder.config.projection_dim + pipeline.text_encoder_2.config.projection_dim
    )
    assert sum(p.numel() for p in pipeline.text_encoder_3.parameters()) == 4_762_310_656
    assert pipeline.vae.dtype == torch.float32 and pipeline.transformer.dtype == torch.bfloat16
