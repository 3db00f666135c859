# Copyright 2026 The trl_ext Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Every Python block of the README runs as written, offline, after only swapping each Hub id (model or dataset) or
`/data/models` for a local copy built by `trl_ext.testing` and cutting `max_steps` to 1 (one added where the block
has none). A block without a case here, or a case whose swapped text is gone from its block, fails the suite."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from trl_ext import testing


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_python_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)


def _tprl(directory: str) -> list[tuple[str, str]]:
    path = testing.save_tiny_qwen_vl(os.path.join(directory, "qwen2.5-vl"))
    return [
        ('"Qwen/Qwen2.5-VL-3B-Instruct"', repr(path)),
        ('output_dir="tprl-qwen2.5-vl",', 'output_dir="tprl-qwen2.5-vl", max_steps=1,'),
    ]


def _grpo_extended(directory: str) -> list[tuple[str, str]]:
    path = testing.save_tiny_qwen2(os.path.join(directory, "qwen2"))
    return [
        ('"Qwen/Qwen2.5-0.5B-Instruct"', repr(path)),
        ('output_dir="grpo-extended-qwen2.5",', 'output_dir="grpo-extended-qwen2.5", max_steps=1,'),
    ]


def _sedd_ppo(directory: str) -> list[tuple[str, str]]:
    tokenizer = testing.build_tiny_tokenizer()
    tokenizer_path = os.path.join(directory, "gpt2")
    tokenizer.save_pretrained(tokenizer_path)
    model_path = testing.save_tiny_sedd(os.path.join(directory, "sedd-small"), tokens=len(tokenizer))
    data = os.path.join(directory, "s1k.jsonl")  # S1K-1.1's "solution" column
    with open(data, "w") as f:
        for i in range(16):
            f.write(
                json.dumps({"solution": f"Hence $x^{i} + y = \\frac{{1}}{{{i + 2}}}$ and $$\\sqrt{{{i}}}$$."}) + "\n"
            )
    return [
        ('"louaaron/sedd-small"', repr(model_path)),
        ('"openai-community/gpt2"', repr(tokenizer_path)),
        ("load_s1k_latex()", f"load_s1k_latex({data!r})"),
        ("max_steps=500", "max_steps=1"),
    ]


def _diffusion_lm_grpo(directory: str) -> list[tuple[str, str]]:
    path = testing.save_tiny_masked_diffusion_lm(os.path.join(directory, "masked-lm"))
    return [
        ('"GSAI-ML/LLaDA-8B-Instruct"', repr(path)),
        ("mask_token_id=126336", f"mask_token_id={testing.build_tiny_bert_tokenizer().mask_token_id}"),
        (
            "max_prompt_length=64, max_completion_length=256, block_length=32, sampling_steps=128",
            "max_prompt_length=8, max_completion_length=16, block_length=8, sampling_steps=4",
        ),
        ("max_steps=200", "max_steps=1"),
    ]


def _flow_grpo(directory: str) -> list[tuple[str, str]]:
    # SD3.5's latent geometry (VAE 8x, patch 2), so that the config's default 512 px works as on the real model
    path = testing.save_tiny_sd3(os.path.join(directory, "sd3"), published_geometry=True, vae_fit_steps=0)
    return [('"stabilityai/stable-diffusion-3.5-medium"', repr(path)), ("max_steps=300", "max_steps=1")]


def _edit_grpo(directory: str) -> list[tuple[str, str]]:
    editor = testing.save_tiny_qwen_image_edit(os.path.join(directory, "qwen-image-edit"))
    judge = testing.save_tiny_qwen3_vl(os.path.join(directory, "qwen3-vl"))
    return [
        ('"Qwen/Qwen-Image-Edit"', repr(editor)),
        ('"Qwen/Qwen3-VL-8B-Instruct"', repr(judge)),
        ("max_steps=300", "max_steps=1"),
        ("resolution=512, condition_area=512 * 512", "resolution=32, condition_area=64 * 64, max_sequence_length=32"),
    ]


def _flow_grpo_flux(directory: str) -> list[tuple[str, str]]:
    # FLUX.1's latent geometry (VAE 8x, 2x2 packing), so that the config's default 512 px works as on the real model
    path = testing.save_tiny_flux(os.path.join(directory, "flux"), published_geometry=True, vae_fit_steps=0)
    return [('"black-forest-labs/FLUX.1-dev"', repr(path)), ("max_steps=300", "max_steps=1")]


def _flow_grpo_qwen_image(directory: str) -> list[tuple[str, str]]:
    path = testing.save_tiny_qwen_image(os.path.join(directory, "qwen-image"))
    return [('"Qwen/Qwen-Image"', repr(path)), ("max_steps=300", "max_steps=1"), ("sample_steps=50", "sample_steps=1")]


def _local_copies(directory: str) -> str:
    """The red-teaming models under the names `ModelSources` looks for by default (the last part of each Hub id)."""
    models = os.path.join(directory, "models")
    testing.save_tiny_sd3(
        os.path.join(models, "stable-diffusion-3.5-medium"), published_geometry=True, vae_fit_steps=0
    )
    testing.save_tiny_llava_next(os.path.join(models, "llava-v1.6-mistral-7b-hf"))
    testing.save_tiny_clip(os.path.join(models, "clip-vit-large-patch14-336"))
    testing.save_tiny_gtr_t5(os.path.join(models, "all-MiniLM-L6-v2"))
    parts = testing.save_tiny_vec2text(os.path.join(models, "vec2text"))
    names = {"gtr__nq__32": parts.inversion, "gtr__nq__32__correct": parts.corrector, "t5-base": parts.encoder_decoder}
    for name, part in {**names, "gtr-t5-base": parts.embedder}.items():
        os.symlink(part, os.path.join(models, name))
    detoxify = testing.save_tiny_detoxify(os.path.join(models, "detoxify"))
    os.symlink(detoxify.checkpoint, os.path.join(models, "toxic_original-c1212f89.ckpt"))
    return models


def _flow_rtpo(directory: str) -> list[tuple[str, str]]:
    models = _local_copies(directory)
    prompts = os.path.join(directory, "rtp.jsonl")  # Real Toxicity Prompts' columns
    with open(prompts, "w") as f:
        for i in range(200):
            f.write(json.dumps({"prompt": {"text": f"the cat number {i} said", "toxicity": 0.5}, "challenging": True}))
            f.write("\n")
    return [
        ('"/data/models"', repr(models)),
        ('"/data/models/toxic_original-c1212f89.ckpt"', repr(os.path.join(models, "toxic_original-c1212f89.ckpt"))),
        ('"allenai/real-toxicity-prompts"', repr(prompts)),
        ("max_steps=500", "max_steps=1"),
    ]


def _model_sources(directory: str) -> list[tuple[str, str]]:
    models = os.path.join(directory, "models")
    testing.save_tiny_sd3(os.path.join(models, "sd3.5-medium"), vae_fit_steps=0)
    return [('"/data/models"', repr(models))]


def _vlm_judge(directory: str) -> list[tuple[str, str]]:
    path = testing.save_tiny_qwen3_vl(os.path.join(directory, "qwen3-vl"))
    Image.new("RGB", (64, 48), (120, 90, 40)).save(os.path.join(directory, "edited.png"))
    return [('"Qwen/Qwen3-VL-8B-Instruct"', repr(path))]


def _ppo(directory: str) -> list[tuple[str, str]]:
    policy = testing.save_tiny_qwen2(os.path.join(directory, "qwen2"))
    reward_model = testing.save_tiny_qwen2_reward_model(os.path.join(directory, "reward"))
    return [
        ('"Qwen/Qwen2-0.5B-Instruct"', repr(policy)),
        ('"trl-lib/Qwen2-0.5B-Reward"', repr(reward_model)),
        ("max_steps=500", "max_steps=1"),
    ]


# a line that identifies each block -> what makes it run offline
CASES = {
    "from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer": _tprl,
    "from trl_ext import ExtendedGRPOConfig, ExtendedGRPOTrainer": _grpo_extended,
    "from trl_ext import DiscreteDiffusionPPOConfig, DiscreteDiffusionPPOTrainer, SEDDModel": _sedd_ppo,
    "def brightness(prompts, images, **kwargs):": _flow_grpo,
    'FlowGRPOTrainer("black-forest-labs/FLUX.1-dev"': _flow_grpo_flux,
    'FlowGRPOTrainer("Qwen/Qwen-Image", contrast': _flow_grpo_qwen_image,
    "records = edit_records_dataset(load_edit_items(": _edit_grpo,
    "from trl_ext.rewards import CLIPScoreReward, FlowRTPOReward,": _flow_rtpo,
    "from trl_ext.hub import ModelSources, resolve_pretrained\n\nsources = ModelSources(": _model_sources,
    "from trl_ext.rewards import OpenAICompatibleJudge, VLMJudgeReward": _vlm_judge,
    "from trl_ext import PPOConfig, PPOTrainer": _ppo,
    "from trl_ext import DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer": _diffusion_lm_grpo,
}


def _block(marker: str) -> str:
    blocks = [block for block in readme_python_blocks() if marker in block]
    assert len(blocks) == 1, f"{len(blocks)} README blocks hold {marker!r}"
    return blocks[0]


def test_every_python_block_of_the_readme_has_a_case():
    for block in readme_python_blocks():
        assert sum(marker in block for marker in CASES) == 1, f"no single case runs this README block:\n{block}"
    assert len(readme_python_blocks()) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("marker", list(CASES), ids=[f.__name__.strip("_") for f in CASES.values()])
def test_readme_block_runs_as_written(marker, tmp_path):
    block = _block(marker)
    for old, new in CASES[marker](str(tmp_path)):
        assert old in block, f"the README block no longer holds {old!r}"
        block = block.replace(old, new)
    script = tmp_path / "block.py"
    script.write_text(block)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{block}\n{result.stderr[-4000:]}"
