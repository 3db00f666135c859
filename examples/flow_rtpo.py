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
"""Flow-GRPO on Stable Diffusion 3.5 with `FlowRTPOTrainer` (LoRA), with a brightness reward.

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/flow_rtpo.py \\
    --model sd3 --output_dir flow-grpo-sd3.5m --bf16 True --max_steps 200
```

`--model` is a key of `trl_ext.hub.ModelSources` (or a Hub id / path); add `--use_local True --local_base_path
/data/models` to load from local copies. Offline on CPU with a tiny random SD3 pipeline (sample images of the
trained LoRA land in `<output_dir>/samples`):

```bash
python examples/flow_rtpo.py --tiny --output_dir outputs/flow_rtpo
```
"""

import os
from dataclasses import dataclass, field

from trl import TrlParser

from trl_ext import FlowRTPOConfig, FlowRTPOTrainer
from trl_ext.hub import ModelSources, resolve_pretrained


@dataclass
class FlowScriptArguments:
    model: str = field(default="sd3", metadata={"help": "Model key of ModelSources, Hub id or local path."})
    use_local: bool = field(default=False, metadata={"help": "Look in local_base_path first."})
    local_base_path: str | None = field(default=None, metadata={"help": "Directory of local model copies."})
    prompts: list[str] = field(
        default_factory=lambda: ["a cat", "a dog on a beach", "a red car", "a lighthouse at night"],
        metadata={"help": "Training prompts."},
    )
    tiny: bool = field(default=False, metadata={"help": "Run offline on a tiny random SD3 pipeline (CPU, seconds)."})


def brightness(prompts, images, **kwargs) -> list[float]:
    """Mean pixel value of each image, in [0, 1]."""
    return images.mean(dim=(1, 2, 3)).tolist()


def save_images(images, directory: str, step: int) -> None:
    """Write a batch of (B, 3, H, W) images in [0, 1] as PNG files."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    for i, image in enumerate(images):
        array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
        Image.fromarray(array).save(os.path.join(directory, f"step{step:05d}_{i}.png"))


def main(script_args: FlowScriptArguments, training_args: FlowRTPOConfig) -> None:
    if script_args.tiny:
        from trl_ext.testing import save_tiny_sd3

        model_path = save_tiny_sd3(os.path.join(training_args.output_dir, "tiny-sd3"))
    else:
        sources = ModelSources(use_local=script_args.use_local, local_base_path=script_args.local_base_path)
        model_path = resolve_pretrained(script_args.model, sources).path
    trainer = FlowRTPOTrainer(model_path, brightness, training_args, script_args.prompts)
    history = trainer.train()
    window = max(1, len(history) // 10)
    start = sum(h["reward"] for h in history[:window]) / window
    end = sum(h["reward"] for h in history[-window:]) / window
    print(f"brightness reward: first {window} steps {start:.4f} -> last {window} steps {end:.4f}")
    from trl_ext.models.flow_sde import sample_trajectories

    samples = sample_trajectories(trainer.pipeline, script_args.prompts, trainer.sampling, transformer=trainer.transformer)
    save_images(samples.images, os.path.join(training_args.output_dir, "samples"), trainer.global_step)
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    import sys

    if "--tiny" in sys.argv:  # tiny defaults first, so that the command line still overrides them
        sys.argv[1:1] = [
            "--use_cpu", "True", "--resolution", "32", "--num_inference_steps", "4", "--max_sequence_length", "32",
            "--per_device_train_batch_size", "8", "--num_generations", "4", "--num_minibatches", "2",
            "--lora_rank", "4", "--lora_alpha", "8", "--learning_rate", "0.1", "--clip_range", "0.2", "--beta", "0.0",
            "--max_steps", "100", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "True",
        ]  # fmt: skip
    parser = TrlParser((FlowScriptArguments, FlowRTPOConfig))
    main(*parser.parse_args_and_config())
