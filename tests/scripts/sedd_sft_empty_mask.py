"""SEDD SFT on one 8-token block per process and step, under `accelerate launch` with two CPU processes: at a small
sampled t a block masks nothing, so some steps have an empty loss on one rank only. Each rank writes its own loss per
step and its final weights to `output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset

from trl_ext import DiscreteDiffusionSFTConfig, DiscreteDiffusionSFTTrainer
from trl_ext.testing import build_tiny_tokenizer


def main(model_path: str, output_dir: str) -> None:
    args = DiscreteDiffusionSFTConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        block_size=8,
        per_device_train_batch_size=1,
        max_steps=12,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    dataset = Dataset.from_dict({"text": ["x^2 + y = 1 and more text here"] * 40})
    trainer = DiscreteDiffusionSFTTrainer(model_path, args, dataset, build_tiny_tokenizer())
    losses = []
    training_step = trainer.training_step

    def recorded_step() -> dict[str, float]:
        logs = training_step()
        losses.append(logs["loss"])  # this process's loss, before the loop averages it over the processes
        return logs

    trainer.training_step = recorded_step
    trainer.train()
    weights = torch.cat([p.detach().flatten() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()])
    state = PartialState()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"world_size": state.num_processes, "losses": losses, "weights": weights.double().tolist()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
