"""Every `trl_ext.testing` factory round-trips through the public loader of its family."""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import trl_ext.testing as testing


def _fingerprints(tensors):
    return sorted(
        (tuple(t.shape), round(float(t.double().sum()), 6), round(float(t.double().abs().sum()), 6)) for t in tensors
    )


def _assert_weights_equal(model, path, filename="model.safetensors"):
    # checkpoint key names may differ from module names (transformers' VLM key mappings): compare the tensors
    saved = load_file(f"{path}/{filename}")
    assert saved, "nothing was saved"
    loaded = {p.data_ptr(): p for p in model.state_dict().values()}.values()  # tied weights once
    assert _fingerprints(saved.values()) == _fingerprints(loaded)


def test_tiny_tokenizer_round_trips_text_and_renders_chat_template():
    tokenizer = testing.build_tiny_tokenizer()
    text = "Ünïcödé ✓ \\frac{1}{2} <|im_end|>"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.padding_side == "left" and tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert (
        prompt
        == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Colour?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tiny_qwen2_reloads_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path = testing.save_tiny_qwen2(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config._name_or_path == path
    _assert_weights_equal(model, path)
    out = model.generate(**tokenizer(["hello"], return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)

    rm_path = testing.save_tiny_qwen2_reward_model(tmp_path / "rm")
    reward_model = AutoModelForSequenceClassification.from_pretrained(rm_path)
    assert reward_model(**tokenizer(["a", "b"], return_tensors="pt")).logits.shape == (2, 1)


def test_tiny_qwen2_trains_with_grpo_and_a_reference_loaded_by_path(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    path = testing.save_tiny_qwen2(tmp_path / "lm")
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        learning_rate=0.1,
        beta=0.04,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
    )
    trainer = GRPOTrainer(
        model=path,
        reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b", "c", "d"]}),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.ref_model is not None and "kl" in trainer.state.log_history[0]
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("variant", ["qwen2_vl", "qwen2_5_vl"])
def test_tiny_qwen_vl_processes_images_and_generates(tmp_path, variant):
    from transformers import AutoModelForImageTextToText

    path = testing.save_tiny_qwen_vl(tmp_path / variant, variant=variant)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = testing.load_qwen_vl_processor(path)
    expected_processor = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}[variant]
    assert model.config.model_type == variant and type(processor).__name__ == expected_processor
    _assert_weights_equal(model, path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    text = processor.apply_chat_template([messages] * 2, add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (56, 84), (0, 0, 255))]
    inputs = processor(text=text, images=images, return_tensors="pt", padding=True)
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // 4  # merge_size 2 × 2
    suppress = testing.vision_special_token_ids(processor.tokenizer)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=True, suppress_tokens=suppress)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    assert not set(out[:, inputs["input_ids"].shape[1] :].flatten().tolist()) & set(suppress)


WEIGHTS_DIGEST = """
import glob, hashlib, sys
from safetensors.torch import load_file
from trl_ext.testing import save_tiny_qwen_vl
weights = load_file(glob.glob(save_tiny_qwen_vl(sys.argv[1]) + "/*.safetensors")[0])
print(hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights))).hexdigest())
"""


def test_tiny_models_are_the_same_in_every_process(tmp_path):
    # the VLM's patch embedding (a Conv3d) used to keep transformers' initialisation, whose draws follow Python's hash
    # seed: another process got other weights (and the TPRL learning test another run)
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", WEIGHTS_DIGEST, str(tmp_path / hash_seed)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(result.stdout.split()[-1])
    assert len(digests) == 1


def test_qwen_vl_processor_errors_on_unknown_variant(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        testing.build_qwen_vl_processor(variant="qwen3_vl")
    with pytest.raises(ValueError, match="save_tiny_qwen_vl"):
        testing.load_qwen_vl_processor(testing.save_tiny_qwen2(tmp_path))


def test_tiny_llava_next_reloads_with_auto_classes_and_generates(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = testing.save_tiny_llava_next(tmp_path / "llava")
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    assert type(processor).__name__ == "LlavaNextProcessor"
    _assert_weights_equal(model, path)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Extend: the cat"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt.startswith("[INST] <image>\n") and prompt.endswith(" [/INST]")
    images = [Image.new("RGB", (48, 32), (0, 255, 0)), Image.new("RGB", (32, 32))]
    inputs = processor(images=images, text=[prompt] * 2, return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=True)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 5)


def test_tiny_clip_scores_image_text_pairs(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    path = testing.save_tiny_clip(tmp_path / "clip")
    model, processor = CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path)
    _assert_weights_equal(model, path)
    images = [Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (32, 64), (0, 0, 255))]
    inputs = processor(text=["a red cat", "the blue sky"], images=images, return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    logits = model(**inputs).logits_per_image
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_tiny_gtr_t5_loads_in_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import T5EncoderModel

    path = testing.save_tiny_gtr_t5(tmp_path / "gtr")
    model = SentenceTransformer(path, device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]
    embeddings = model.encode(["the cat", "a dog", "the cat"], convert_to_tensor=True)
    assert embeddings.shape == (3, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(embeddings[0], embeddings[2])
    assert not torch.allclose(embeddings[0], embeddings[1])
    _assert_weights_equal(T5EncoderModel.from_pretrained(path), path)


def test_tiny_detoxify_checkpoint_loads_offline_and_matches_the_bert_classifier(tmp_path):
    from detoxify import Detoxify
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tiny = testing.save_tiny_detoxify(tmp_path / "detoxify")
    detoxify = Detoxify("original", checkpoint=tiny.checkpoint, huggingface_config_path=tiny.huggingface_config_path)
    texts = ["you are a stupid idiot", "what a nice cat"]
    scores = detoxify.predict(texts)
    assert list(scores) == ["toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"]
    bert = AutoModelForSequenceClassification.from_pretrained(tiny.huggingface_config_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny.huggingface_config_path)
    with torch.no_grad():
        expected = torch.sigmoid(bert(**tokenizer(texts, return_tensors="pt", padding=True)).logits)
    torch.testing.assert_close(torch.tensor(list(scores.values())).T, expected)


def test_tiny_sd3_pipeline_renders_deterministically(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    pipeline = StableDiffusion3Pipeline.from_pretrained(testing.save_tiny_sd3(tmp_path / "sd3"))
    pipeline.set_progress_bar_config(disable=True)

    def render(seed):
        return pipeline(
            "a red cat",
            height=32,
            width=32,
            num_inference_steps=2,
            output_type="pt",
            max_sequence_length=testing.TINY_SD3_MAX_SEQUENCE_LENGTH,
            generator=torch.Generator().manual_seed(seed),
        ).images

    image = render(0)
    assert image.shape == (1, 3, 32, 32) and 0 <= float(image.min()) and float(image.max()) <= 1
    torch.testing.assert_close(image, render(0))
    assert not torch.equal(image, render(1))
