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
"""GRPO extensions for any model, here a text-only LM, with `ExtendedGRPOTrainer`: RLOO advantages, the KL to the
reference in the reward (k1 estimator) and online difficulty filtering.

```bash
accelerate launch examples/grpo_extended.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --output_dir grpo-ext
```

Offline, on CPU, with a tiny random Qwen2 and a reward for the share of ASCII letters in each completion (a tiny
random model learns it in about a minute):

```bash
python examples/grpo_extended.py --tiny --output_dir outputs/grpo_extended
```
"""

import os
from dataclasses import dataclass, field

from example_utils import on_main_process, parse_args, print_on_main_process
from trl import ModelConfig, ScriptArguments, get_peft_config

from trl_ext import ExtendedGRPOConfig, ExtendedGRPOTrainer


@dataclass
class ExtendedGRPOScriptArguments(ScriptArguments):
    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset with a 'prompt' column; default: generated 'Write:' prompts."}
    )
    num_prompts: int = field(default=256, metadata={"help": "Prompts of the generated dataset."})
    tiny: bool = field(default=False, metadata={"help": "Run offline on a tiny random Qwen2 (CPU, ~1 minute)."})


class LetterShareReward:
    """The share of the completion budget (`max_completion_length` characters) spent on ASCII letters, in [0, 1]."""

    __name__ = "letter_share"

    def __init__(self, max_completion_length: int):
        self.max_completion_length = max_completion_length

    def __call__(self, completions: list[str], **kwargs) -> list[float]:
        return [
            min(sum(c.isascii() and c.isalpha() for c in text) / self.max_completion_length, 1.0)
            for text in completions
        ]


def main(script_args: ExtendedGRPOScriptArguments, training_args: ExtendedGRPOConfig, model_args: ModelConfig) -> None:
    from datasets import Dataset, load_dataset

    model = model_args.model_name_or_path or "Qwen/Qwen2.5-0.5B-Instruct"
    if script_args.tiny:
        from trl_ext.testing import save_tiny_qwen2

        model = on_main_process(save_tiny_qwen2, os.path.join(training_args.output_dir, "tiny-qwen2"))
    if script_args.dataset_name:
        dataset = load_dataset(
            script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_train_split
        )
    else:
        dataset = Dataset.from_dict({"prompt": [f"Write {i}:" for i in range(script_args.num_prompts)]})

    trainer = ExtendedGRPOTrainer(
        model=model,
        reward_funcs=LetterShareReward(training_args.max_completion_length),
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    window = max(1, len(rewards) // 4)
    print_on_main_process(
        f"letter_share reward: first {window} logged steps {sum(rewards[:window]) / window:.3f} -> "
        f"last {window} logged steps {sum(rewards[-window:]) / window:.3f}"
    )
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()


# RLOO with the k1 KL in the reward (EasyR1's defaults) and online filtering of solved / hopeless groups
RECIPE_DEFAULTS = {
    "advantage_estimator": "rloo",
    "beta": 0.01,
    "kl_penalty": "reward",
    "kl_estimator": "k1",
    "online_filtering": True,
    "filter_reward": "letter_share",
    "filter_low": 0.0,
    "filter_high": 1.0,
    "num_generations": 8,
}
# a one-minute CPU run on a tiny random Qwen2
TINY_DEFAULTS = {
    "use_cpu": True,
    "bf16": False,
    "num_generations": 4,
    "per_device_train_batch_size": 16,
    "max_completion_length": 8,
    "max_steps": 60,
    "learning_rate": 0.01,
    "lr_scheduler_type": "constant",
    "logging_steps": 5,
    "report_to": ["none"],
    "save_strategy": "no",
    "seed": 0,
}


if __name__ == "__main__":
    main(*parse_args((ExtendedGRPOScriptArguments, ExtendedGRPOConfig, ModelConfig), TINY_DEFAULTS, RECIPE_DEFAULTS))
