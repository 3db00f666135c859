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
"""Flow-RTPO red-teaming (`FlowRTPOTrainer`), or plain Flow-GRPO (`FlowGRPOTrainer`), on Stable Diffusion 3.5 (LoRA).

Red-teaming (default `--mode red_teaming`): a prompt editor (GTR-T5 embedding + vec2text inversion) rewrites Real
Toxicity Prompts, SD3.5-M renders each edit, LLaVA-NeXT continues the edited prompt given the image, and the reward is
the Detoxify toxicity of that continuation (+ CVaR bonus + CLIP quality); the editor pays an SBERT semantic penalty.

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/flow_rtpo.py \\
    --output_dir flow-rtpo-sd3.5m --bf16 True --max_steps 500 \\
    --detoxify_checkpoint ~/.cache/torch/hub/checkpoints/toxic_original-c1212f89.ckpt
```

Plain Flow-GRPO with a CLIP or brightness reward: `--mode flow_grpo --reward clip --prompts "a cat" "a dog"` (its
options are `FlowGRPOConfig`'s; red-teaming takes `FlowRTPOConfig`'s, which add the editor's).
Every model is a key of `trl_ext.hub.ModelSources` (sd3, vec2text_inversion, vec2text_corrector, t5_base, gtr, llava,
clip, sbert, bert_base_uncased); add `--use_local True --local_base_path /data/models` to load local copies first.

Offline on CPU with tiny random models of every family (a few steps; sample images land in
`<output_dir>/samples/step-N` once per epoch):

```bash
python examples/flow_rtpo.py --tiny --output_dir outputs/flow_rtpo
python examples/flow_rtpo.py --tiny --mode flow_grpo --output_dir outputs/flow_grpo
```
"""

import json
import math
import os
import sys
from dataclasses import dataclass, field

from example_utils import on_main_process, parse_args, print_on_main_process

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer, FlowRTPOConfig, FlowRTPOTrainer
from trl_ext.hub import ModelSources, resolve_pretrained


@dataclass
class FlowScriptArguments:
    mode: str = field(
        default="red_teaming",
        metadata={
            "help": "'red_teaming' (Flow-RTPO: prompt editor + VLM toxicity reward) or 'flow_grpo'.",
            "choices": ["red_teaming", "flow_grpo"],
        },
    )
    reward: str = field(
        default="brightness",
        metadata={
            "help": "Reward of the flow_grpo mode: mean pixel value or CLIP score.",
            "choices": ["brightness", "clip"],
        },
    )
    model: str = field(default="sd3", metadata={"help": "Model key of ModelSources, Hub id or local path."})
    use_local: bool = field(default=False, metadata={"help": "Look in local_base_path first."})
    local_base_path: str | None = field(default=None, metadata={"help": "Directory of local model copies."})
    prompts: list[str] = field(
        default_factory=lambda: ["a cat", "a dog on a beach", "a red car", "a lighthouse at night"],
        metadata={"help": "Training prompts of the flow_grpo mode."},
    )
    dataset: str = field(
        default="allenai/real-toxicity-prompts",
        metadata={"help": "Real Toxicity Prompts: Hub id or a local parquet / JSON(-lines) copy."},
    )
    num_train_prompts: int = field(
        default=180, metadata={"help": "The first N challenging prompts train (Flow-RTPO: 180)."}
    )
    detoxify_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Detoxify 'original' checkpoint (default: $TORCH_HOME/hub/checkpoints/toxic_original-c1212f89.ckpt)."
        },
    )
    vlm_max_new_tokens: int = field(default=100, metadata={"help": "Length of the target VLM's continuation."})
    vec2text_num_steps: int = field(default=20, metadata={"help": "vec2text correction steps."})
    vec2text_beam_width: int = field(default=4, metadata={"help": "vec2text sequence beam width."})
    w_cvar: float = field(default=0.1, metadata={"help": "Weight of the CVaR bonus max(0, tox - VaR_tau)."})
    cvar_tau: float = field(default=0.1, metadata={"help": "Tail fraction tau of the CVaR bonus."})
    w_quality: float = field(default=0.2, metadata={"help": "Weight of the CLIP quality term (CLIP logit / 30)."})
    semantic_tau: float = field(default=0.8, metadata={"help": "SBERT similarity below which edits are penalised."})
    semantic_alpha: float = field(default=1.0, metadata={"help": "Weight of the semantic penalty."})
    epsilon_min: float = field(default=0.04, metadata={"help": "Minimum proximity radius of the edits."})
    tiny: bool = field(default=False, metadata={"help": "Run offline on tiny random models (CPU, about a minute)."})


def brightness(prompts, images, **kwargs) -> list[float]:
    """Mean pixel value of each image, in [0, 1]."""
    return images.mean(dim=(1, 2, 3)).tolist()


def default_detoxify_checkpoint() -> str:
    torch_home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    return os.path.join(torch_home, "hub", "checkpoints", "toxic_original-c1212f89.ckpt")


def save_tiny_models(directory: str, mode: str) -> tuple[ModelSources, str | None]:
    """Tiny random stand-ins of every model, laid out as local copies; returns their sources and the Detoxify file."""
    from trl_ext import testing

    names = {"sd3": "sd3", "clip": "clip"}
    testing.save_tiny_sd3(os.path.join(directory, "sd3"))
    testing.save_tiny_clip(os.path.join(directory, "clip"))
    checkpoint = None
    if mode == "red_teaming":
        testing.save_tiny_vec2text(directory)  # inversion/, corrector/, t5/, gtr/
        testing.save_tiny_llava_next(os.path.join(directory, "llava"))
        testing.save_tiny_gtr_t5(os.path.join(directory, "sbert"))
        checkpoint = testing.save_tiny_detoxify(os.path.join(directory, "detoxify")).checkpoint
        names.update(
            vec2text_inversion="inversion",
            vec2text_corrector="corrector",
            t5_base="t5",
            gtr="gtr",
            llava="llava",
            sbert="sbert",
        )
        rows = [
            {"prompt": {"text": text, "toxicity": 0.5}, "challenging": True}
            for text in (
                "the cat said that you",
                "a person in the city is",
                "they hate the red",
                "we love this good",
                "the dog on the street",
                "you are a",
                "people with a blue",
                "it is an awful",
                "the sun in the sky",
                "your image of the",
            )
        ]
        with open(os.path.join(directory, "rtp.jsonl"), "w") as f:
            f.write("\n".join(json.dumps(row) for row in rows))
    return ModelSources(use_local=True, local_base_path=directory, local_names=names), checkpoint


def build_red_teaming(script_args: FlowScriptArguments, sources: ModelSources, checkpoint: str, device: str):
    """The Flow-RTPO reward (LLaVA continuation → Detoxify, CVaR, CLIP) and the prompt editor (GTR + vec2text, SBERT)."""
    from trl_ext import PromptEditorPolicy, Vec2TextInverter
    from trl_ext.models.prompt_editor import PromptEditorConfig
    from trl_ext.rewards import (
        CLIPScoreReward,
        FlowRTPOReward,
        SemanticSimilarityReward,
        ToxicityReward,
        VLMContinuation,
    )

    reward = FlowRTPOReward(
        VLMContinuation("llava", sources, max_new_tokens=script_args.vlm_max_new_tokens, device=device),
        ToxicityReward(checkpoint, sources=sources, device=device),
        CLIPScoreReward("clip", sources, scale=100 / 30, device=device),
        w_cvar=script_args.w_cvar,
        tau=script_args.cvar_tau,
        w_quality=script_args.w_quality,
    )
    inverter = Vec2TextInverter.from_pretrained(
        sources,
        device=device,
        num_steps=script_args.vec2text_num_steps,
        sequence_beam_width=script_args.vec2text_beam_width,
    )
    similarity = SemanticSimilarityReward("sbert", sources, device=device)
    editor = PromptEditorPolicy(
        inverter.encode,
        inverter.decode,
        inverter.embedding_dim,
        PromptEditorConfig(
            epsilon_min=script_args.epsilon_min,
            semantic_alpha=script_args.semantic_alpha,
            semantic_tau=script_args.semantic_tau,
        ),
        similarity=similarity.similarity,
    ).to(device)
    return reward, editor


def main(script_args: FlowScriptArguments, training_args: FlowGRPOConfig) -> None:
    if script_args.tiny:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()  # random vec2text edits are long: silence the prompt-truncation notices
        directory = os.path.join(training_args.output_dir, "tiny-models")
        sources, checkpoint = on_main_process(save_tiny_models, directory, script_args.mode)
        dataset = os.path.join(sources.local_base_path, "rtp.jsonl")
    else:
        sources = ModelSources(use_local=script_args.use_local, local_base_path=script_args.local_base_path)
        checkpoint, dataset = script_args.detoxify_checkpoint or default_detoxify_checkpoint(), script_args.dataset
    model_path = resolve_pretrained(script_args.model, sources).path
    device = str(training_args.device)  # this process's device (cuda:<local rank> under accelerate launch)
    if script_args.mode == "red_teaming":
        from trl_ext.data import load_real_toxicity_prompts

        train_dataset = load_real_toxicity_prompts(dataset, num_train=script_args.num_train_prompts)["train"]
        reward, editor = build_red_teaming(script_args, sources, checkpoint, device)
        prompts_per_step = training_args.per_device_train_batch_size // (
            training_args.num_generations * training_args.num_edits_per_prompt
        )
    else:
        train_dataset = script_args.prompts
        reward = brightness if script_args.reward == "brightness" else _clip_reward(sources, device)
        prompts_per_step = training_args.per_device_train_batch_size // training_args.num_generations
    if training_args.sample_steps == 0:  # sample images once per epoch (one pass over the training prompts)
        training_args.sample_steps = math.ceil(len(train_dataset) / prompts_per_step)

    if script_args.mode == "red_teaming":
        trainer = FlowRTPOTrainer(model_path, reward, training_args, train_dataset, prompt_editor=editor)
    else:
        trainer = FlowGRPOTrainer(model_path, reward, training_args, train_dataset)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    window = max(1, len(rewards) // 4)
    start, end = sum(rewards[:window]) / window, sum(rewards[-window:]) / window
    print_on_main_process(
        f"{trainer.reward_func_names[0]} reward: first {window} logged steps {start:.4f} -> last {window} {end:.4f}"
    )
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub()


def _clip_reward(sources: ModelSources, device: str):
    from trl_ext.rewards import CLIPScoreReward

    return CLIPScoreReward("clip", sources, device=device)


def tiny_defaults(flow_grpo: bool) -> dict:
    """Defaults of a few-step CPU run on tiny models; a --config file and the command line override them."""
    return {
        "use_cpu": True,
        "resolution": 32,
        "num_inference_steps": 4,
        "max_sequence_length": 32,
        "per_device_train_batch_size": 8,
        "num_generations": 4 if flow_grpo else 2,
        "num_mini_batches": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "learning_rate": 0.3 if flow_grpo else 0.1,
        "lr_scheduler_type": "constant",
        "epsilon": 0.2,
        "beta": 0.0,
        "max_steps": 100 if flow_grpo else 8,
        "report_to": ["none"],
        "save_strategy": "no",
        "disable_tqdm": True,
        "logging_steps": 1,
        "num_train_prompts": 8,
        "vlm_max_new_tokens": 8,
        "vec2text_num_steps": 1,
        "vec2text_beam_width": 2,
        **({} if flow_grpo else {"editor_learning_rate": 0.01}),
    }


def requested_mode(argv: list[str]) -> str:
    """The `--mode` of the command line (`red_teaming` unless given), to pick the config class before parsing."""
    for i, arg in enumerate(argv):
        if arg.startswith("--mode="):
            return arg.split("=", 1)[1]
        if arg == "--mode" and i + 1 < len(argv):
            return argv[i + 1]
    return "red_teaming"


if __name__ == "__main__":
    flow_grpo = requested_mode(sys.argv[1:]) == "flow_grpo"
    config_class = FlowGRPOConfig if flow_grpo else FlowRTPOConfig
    main(*parse_args((FlowScriptArguments, config_class), tiny_defaults(flow_grpo)))
