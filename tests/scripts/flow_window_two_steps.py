"""Three Flow-GRPO steps with an SDE window under `accelerate launch` with two CPU processes; each rank writes the
windows it drew, its prompts and its trainable weights to `output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.testing import TINY_SD3_MAX_SEQUENCE_LENGTH


def main(model_path: str, output_dir: str) -> None:
    args = FlowGRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        num_generations=2,
        num_inference_steps=4,
        sde_window_size=1,
        sde_window_range=[0, 3],
        resolution=32,
        max_sequence_length=TINY_SD3_MAX_SEQUENCE_LENGTH,
        lora_r=4,
        lora_alpha=8,
        learning_rate=0.1,
        epsilon=0.2,
        beta=0.0,
        max_steps=3,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    windows, seen = [], []

    class Recording(FlowGRPOTrainer):
        def sde_window(self):
            window = super().sde_window()
            windows.append(list(window))
            return window

    def brightness(prompts, images, **kwargs):
        seen.extend(prompts)
        return images.mean(dim=(1, 2, 3)).tolist()

    prompts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "hhhhhhhh"]
    trainer = Recording(model_path, brightness, args, prompts)
    trainer.train()
    state = PartialState()
    lora = torch.cat([p.detach().flatten() for p in trainer.trainable_params]).double().tolist()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"world_size": state.num_processes, "windows": windows, "prompts": seen, "lora": lora}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
