"""Two SEDD SFT steps, then two PPO steps, under `accelerate launch` with two CPU processes; each rank writes the
weights after each stage to `output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset

from trl_ext import (
    DiscreteDiffusionPPOConfig,
    DiscreteDiffusionPPOTrainer,
    DiscreteDiffusionSFTConfig,
    DiscreteDiffusionSFTTrainer,
    SEDDModel,
)
from trl_ext.data import generate_latex_corpus
from trl_ext.testing import build_tiny_tokenizer


def flatten(model) -> list[float]:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).double().tolist()


def main(model_path: str, output_dir: str) -> None:
    tokenizer = build_tiny_tokenizer()
    common = {
        "output_dir": output_dir,
        "use_cpu": True,
        "report_to": "none",
        "max_steps": 2,
        "disable_tqdm": True,
        "save_strategy": "no",
        "seed": 0,
    }
    sft = DiscreteDiffusionSFTTrainer(
        SEDDModel.from_pretrained(model_path),
        DiscreteDiffusionSFTConfig(per_device_train_batch_size=4, block_size=32, learning_rate=1e-2, **common),
        generate_latex_corpus(64),
        tokenizer,
    )
    sft.train()
    after_sft = flatten(sft.accelerator.unwrap_model(sft.model))

    seen = []

    def letter_a_frequency(prompts, completions, **kwargs):
        seen.extend(prompts)
        return [c.count("a") / max(len(c), 1) for c in completions]

    ppo_args = DiscreteDiffusionPPOConfig(
        per_device_train_batch_size=8,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=8,
        sampling_steps=4,
        num_sigma_samples=2,
        learning_rate=1e-2,
        **common,
    )
    prompts = Dataset.from_dict({"prompt": ["x=", "y=", "z=", "w=", "a=", "b=", "c=", "d="]})
    ppo = DiscreteDiffusionPPOTrainer(model_path, letter_a_frequency, ppo_args, prompts, tokenizer)
    ppo.train()
    state = PartialState()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump(
            {"world_size": state.num_processes, "sft": after_sft, "ppo": flatten(ppo.policy), "prompts": seen}, f
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
