"""Two Flow-GRPO steps of the tiny image editor (`QwenImageEditPipeline`) on the bundled edit records under
`accelerate launch` with two CPU processes; each rank writes its LoRA weights and the record ids it edited to
`output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.evaluation.image_edit import edit_records_dataset, load_edit_items


def main(model_path: str, output_dir: str) -> None:
    args = FlowGRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=2,
        num_generations=2,
        num_inference_steps=2,
        resolution=32,
        max_sequence_length=32,
        condition_area=64 * 64,
        lora_r=4,
        lora_alpha=8,
        learning_rate=0.1,
        max_steps=2,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    seen = []

    def brightness(prompts, images, id, **kwargs):
        seen.extend(id)
        return images.mean(dim=(1, 2, 3)).tolist()

    trainer = FlowGRPOTrainer(model_path, brightness, args, edit_records_dataset(load_edit_items("tiny")))
    trainer.train()
    state = PartialState()
    lora = torch.cat([p.detach().flatten() for p in trainer.trainable_params]).double().tolist()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"world_size": state.num_processes, "ids": seen, "lora": lora}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
