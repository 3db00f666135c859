"""Two DiffusionLMGRPOTrainer steps on a tiny diffusion LM (masked, or DiffusionGemma) under `accelerate launch` with
two CPU processes; each rank writes its initial and final weights and the prompts it drew to `output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset

from trl_ext import DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer


def flatten(model) -> list[float]:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).double().tolist()


def main(model_path: str, output_dir: str, estimator: str) -> None:
    seen = []

    def lowercase_share(prompts, completions, **kwargs):  # varies within a group for random models of both families
        seen.extend(prompts)
        return [sum(ch.islower() for ch in c) / max(len(c), 1) for c in completions]

    args = DiffusionLMGRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        max_steps=2,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
        per_device_train_batch_size=8,
        num_generations=4,
        max_prompt_length=4,
        max_completion_length=8,
        sampling_steps=4,
        block_length=4,
        estimator=estimator,
        learning_rate=1e-2,
        beta=0.1,
    )
    prompts = Dataset.from_dict({"prompt": ["x =", "y =", "z =", "w =", "a =", "b =", "c =", "d ="]})
    trainer = DiffusionLMGRPOTrainer(model_path, lowercase_share, args, prompts)
    initial = flatten(trainer.policy)
    trainer.train()
    state = PartialState()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump(
            {"world_size": state.num_processes, "initial": initial, "final": flatten(trainer.policy), "prompts": seen},
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[3], sys.argv[2])
