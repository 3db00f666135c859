"""Train a tiny Qwen2 with `trl.GRPOTrainer` for two steps; each rank writes a fingerprint of its weights.

Run by tests/test_accelerate_configs.py as
`accelerate launch --config_file accelerate_configs/cpu_2proc.yaml tests/scripts/grpo_two_steps.py <model> <out>`.
"""

import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer


def length_reward(completions, **kwargs):
    return [float(len(completion)) for completion in completions]


def main(model_path: str, output_dir: str) -> None:
    args = GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=6,
        max_steps=2,
        learning_rate=0.05,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": ["a", "bb", "ccc", "dddd", "e", "ff", "ggg", "hhhh"]})
    trainer = GRPOTrainer(model=model_path, reward_funcs=length_reward, args=args, train_dataset=dataset)
    trainer.train()
    state = PartialState()
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).double()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"world_size": state.num_processes, "weights": weights.tolist()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
