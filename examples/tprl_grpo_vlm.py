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
"""Token Perception RL (VPPO) for a vision-language model with `TPRLGRPOTrainer`.

Defaults follow the released VPPO recipe: perception filtering k = 0.4, trajectory shaping with beta_min = 0.9, no KL,
online filtering on accuracy in (0.01, 0.99), clipping 0.2 / 0.28, 8 generations.

```bash
accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml examples/tprl_grpo_vlm.py \\
    --model_name_or_path Qwen/Qwen2.5-VL-3B-Instruct --output_dir tprl-qwen2.5-vl-3b \\
    --use_peft --lora_target_modules q_proj v_proj
```

Offline, on CPU, with a tiny random Qwen2.5-VL and a generated "What colour is the shape?" dataset:

```bash
python examples/tprl_grpo_vlm.py --tiny --output_dir outputs/tprl
```
"""

import os
from dataclasses import dataclass, field

from example_utils import on_main_process, parse_args, print_on_main_process
from trl import ModelConfig, ScriptArguments, get_peft_config

from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
from trl_ext.data import ColourTokenReward, colour_accuracy_reward, colour_question_dataset


@dataclass
class TPRLScriptArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Dataset with 'prompt', 'image' and 'answer' columns; default: generated colours."},
    )
    num_prompts: int = field(default=512, metadata={"help": "Prompts of the generated colour dataset."})
    tiny: bool = field(default=False, metadata={"help": "Run offline on a tiny random Qwen2.5-VL (CPU, ~1 minute)."})


def main(script_args: TPRLScriptArguments, training_args: TPRLGRPOConfig, model_args: ModelConfig) -> None:
    from datasets import load_dataset

    reward_funcs = [colour_accuracy_reward]
    model = model_args.model_name_or_path or "Qwen/Qwen2.5-VL-3B-Instruct"
    if script_args.tiny:
        from trl_ext.testing import save_tiny_qwen_vl

        model = on_main_process(save_tiny_qwen_vl, os.path.join(training_args.output_dir, "tiny-qwen2.5-vl"))
        # a random model cannot spell "red"; the dense token reward teaches it to read the image in a minute
        reward_funcs = [ColourTokenReward(training_args.max_completion_length)]
    if script_args.dataset_name:
        dataset = load_dataset(
            script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_train_split
        )
    else:
        dataset = colour_question_dataset(16 if script_args.tiny else script_args.num_prompts)

    trainer = TPRLGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    window = max(1, len(rewards) // 4)
    print_on_main_process(
        f"reward: first {window} logged steps {sum(rewards[:window]) / window:.3f} -> "
        f"last {window} logged steps {sum(rewards[-window:]) / window:.3f}"
    )
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()


# the released VPPO recipe's settings; a --config file and the command line override them
RECIPE_DEFAULTS = {
    "enable_perception_filtering": True,
    "top_p_perception_tokens": 0.4,
    "enable_trajectory_reweighting": True,
    "trajectory_scaling_min": 0.9,
    "epsilon": 0.2,
    "epsilon_high": 0.28,
    "num_generations": 8,
    "beta": 0.0,
    "online_filtering": True,
    "filter_reward": "colour_accuracy_reward",
    "filter_low": 0.01,
    "filter_high": 0.99,
}
# a one-minute CPU run on a tiny random Qwen2.5-VL
TINY_DEFAULTS = {
    "use_cpu": True,
    "bf16": False,
    "online_filtering": False,
    "num_generations": 4,
    "per_device_train_batch_size": 16,
    "max_completion_length": 4,
    "max_steps": 120,
    "learning_rate": 0.005,
    "lr_scheduler_type": "constant",
    "logging_steps": 10,
    "report_to": ["none"],
    "save_strategy": "no",
    "seed": 0,
}


if __name__ == "__main__":
    main(*parse_args((TPRLScriptArguments, TPRLGRPOConfig, ModelConfig), TINY_DEFAULTS, RECIPE_DEFAULTS))
