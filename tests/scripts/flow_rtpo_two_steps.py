"""Two Flow-RTPO steps (LoRA + prompt editor; mode `flow_grpo`: LoRA only) under `accelerate launch` with two CPU
processes; each rank writes its trainable weights, its sampled prompts and the editor's radius to
`output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer, FlowRTPOConfig, FlowRTPOTrainer, PromptEditorPolicy
from trl_ext.models.prompt_editor import PromptEditorConfig
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH


def main(model_path: str, mode: str, output_dir: str) -> None:
    common = dict(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        num_generations=2,
        num_inference_steps=2,
        resolution=32,
        max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
        lora_r=4,
        lora_alpha=8,
        learning_rate=0.1,
        epsilon=0.2,
        beta=0.0,
        max_steps=2,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    seen = []

    def brightness(prompts, images, original_prompt=None, **kwargs):
        seen.extend(original_prompt or prompts)
        return images.mean(dim=(1, 2, 3)).tolist()

    def encode(prompts):  # stands in for GTR: a fixed random embedding per prompt
        return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(len(p))) for p in prompts])

    def decode(embeddings):  # stands in for vec2text
        return [f"a cat {'bright' if e[0] > 0 else 'dark'}" for e in embeddings]

    torch.manual_seed(0)
    config = PromptEditorConfig(hidden_dim=16, perturbation_scale=1.0, init_log_std=-2.0)
    editor = PromptEditorPolicy(encode, decode, 16, config)
    prompts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "hhhhhhhh"]
    if mode == "flow_grpo":
        editor = None
        trainer = FlowGRPOTrainer(model_path, brightness, FlowGRPOConfig(**common), prompts)
    else:
        args = FlowRTPOConfig(**common, num_edits_per_prompt=2, editor_learning_rate=0.05)
        trainer = FlowRTPOTrainer(model_path, brightness, args, prompts, prompt_editor=editor)
    trainer.train()
    state = PartialState()
    weights = {
        "lora": torch.cat([p.detach().flatten() for p in trainer.trainable_params]).double().tolist(),
    }
    if editor is not None:
        weights.update(
            editor=torch.cat([p.detach().flatten() for p in editor.parameters()]).double().tolist(),
            radius=editor.radius,
        )
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"world_size": state.num_processes, "prompts": seen, **weights}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
