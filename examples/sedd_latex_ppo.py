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
"""LaTeX generation with a SEDD discrete diffusion LM: score-entropy SFT, then PPO with `LaTeXReward`.

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/sedd_latex_ppo.py \\
    --model sedd_small --output_dir sedd-latex-ppo --sft_steps 2000 --max_steps 500 --bf16 True
```

`--model` and `--tokenizer` are `trl_ext.hub` keys (`sedd_small`, `sedd_medium`, `gpt2`), Hub ids or local paths.
Offline on CPU, with a tiny random SEDD, a byte-level tokenizer and the generated LaTeX corpus (prints the LaTeX
reward before and after PPO):

```bash
python examples/sedd_latex_ppo.py --tiny --output_dir outputs/sedd
```
"""

import os
from dataclasses import dataclass, field

from example_utils import parse_args, print_on_main_process
from sedd_sft import SEDDScriptArguments, load_sedd_setup

from trl_ext import (
    DiscreteDiffusionPPOConfig,
    DiscreteDiffusionPPOTrainer,
    DiscreteDiffusionSFTConfig,
    DiscreteDiffusionSFTTrainer,
)
from trl_ext.rewards import LaTeXReward


# a one-minute CPU run on the tiny model; a --config file and the command line override these
TINY_DEFAULTS = {
    "use_cpu": True,
    "sft_steps": 150,
    "sft_learning_rate": 3e-3,
    "max_steps": 20,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 16,
    "num_generations": 4,
    "max_prompt_length": 8,
    "max_completion_length": 48,
    "sampling_steps": 16,
    "num_sigma_samples": 2,
    "num_iterations": 2,
    "num_mini_batches": 2,
    "report_to": ["none"],
    "save_strategy": "no",
    "disable_tqdm": True,
    "seed": 0,
    "logging_steps": 1,
}


@dataclass
class LaTeXPPOScriptArguments(SEDDScriptArguments):
    sft_steps: int = field(default=1000, metadata={"help": "Score-entropy SFT steps before PPO (0: none)."})
    sft_learning_rate: float = field(default=3e-5, metadata={"help": "SFT learning rate."})


def main(script_args: LaTeXPPOScriptArguments, training_args: DiscreteDiffusionPPOConfig) -> None:
    model, tokenizer, dataset = load_sedd_setup(script_args, training_args.output_dir)
    if script_args.sft_steps:
        sft_args = DiscreteDiffusionSFTConfig(
            output_dir=os.path.join(training_args.output_dir, "sft"),
            max_steps=script_args.sft_steps,
            learning_rate=script_args.sft_learning_rate,
            block_size=training_args.max_completion_length,
            per_device_train_batch_size=training_args.per_device_train_batch_size,
            use_cpu=training_args.use_cpu,
            bf16=training_args.bf16,
            report_to=training_args.report_to,
            save_strategy="no",
            disable_tqdm=training_args.disable_tqdm,
            seed=training_args.seed,
            logging_steps=training_args.logging_steps,
        )
        sft = DiscreteDiffusionSFTTrainer(model, sft_args, dataset, tokenizer)
        sft.train()
        losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
        print_on_main_process(f"SFT loss per token: {losses[0]:.3f} -> {losses[-1]:.3f}")
        model = sft.accelerator.unwrap_model(sft.model)

    trainer = DiscreteDiffusionPPOTrainer(model, LaTeXReward(), training_args, dataset, tokenizer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    window = max(1, len(rewards) // 5)
    start, end = sum(rewards[:window]) / window, sum(rewards[-window:]) / window
    print_on_main_process(f"LaTeX reward: first {window} logged PPO steps {start:.3f} -> last {window} {end:.3f}")
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    main(*parse_args((LaTeXPPOScriptArguments, DiscreteDiffusionPPOConfig), TINY_DEFAULTS))
