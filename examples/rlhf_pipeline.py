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
"""SFT -> reward model -> PPO with `RLHFPipeline`, configured by one JSON / YAML file (any `RLHFConfig` field; the
command line overrides it).

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/rlhf_pipeline.py --config pipeline.json
```

with, for example, `pipeline.json`:

```json
{"model_name": "Qwen/Qwen2.5-0.5B-Instruct", "sft_data_path": "sft.jsonl", "reward_data_path": "pairs.jsonl",
 "ppo_data_path": "prompts.jsonl", "save_dir": "rlhf-qwen", "ppo_args": {"response_length": 64}}
```

Offline on CPU with a tiny random Qwen2 and the bundled toy data (all three stages and the evaluation):

```bash
python examples/rlhf_pipeline.py --tiny --output_dir outputs/rlhf_pipeline
```

A rerun skips the finished stages while their settings and data are unchanged; after a change it stops and names the
differing keys, and `--overwrite_stages` retrains the changed stage and every stage after it. `--max_steps N` caps
each stage at N steps (SFT and reward-model optimizer steps, PPO rollout batches) for a quick trial.
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

from example_utils import on_main_process, parse_args, print_on_main_process

from trl_ext import RLHFConfig, RLHFPipeline
from trl_ext.pipelines.data import bundled_rlhf_data


# a CPU run of about 15 s on the tiny model; a --config file and the command line override these
TINY_DEFAULTS = {
    "model_name": "tiny",
    "device": "cpu",
    "sft_epochs": 20,
    "sft_batch_size": 4,
    "sft_lr": 3e-3,
    "reward_epochs": 5,
    "reward_batch_size": 4,
    "reward_lr": 3e-3,
    "ppo_max_steps": 40,
    "ppo_batch_size": 8,
    "ppo_mini_batch_size": 4,
    "ppo_num_ppo_epochs": 2,
    "ppo_lr_policy": 3e-3,
    "ppo_lr_value": 1e-2,
    "max_length": 128,
    "save_interval": 20,
    "ppo_args": {"response_length": 12, "temperature": 1.0, "disable_tqdm": True},
    "sft_args": {"disable_tqdm": True},
    "reward_args": {"disable_tqdm": True},
    **bundled_rlhf_data(),
}


@dataclass
class PipelineScriptArguments:
    tiny: bool = field(default=False, metadata={"help": "Offline tiny run on CPU: tiny random Qwen2, toy data."})
    output_dir: str | None = field(default=None, metadata={"help": "Overrides save_dir."})
    evaluate: bool = field(default=True, metadata={"help": "Run RLHFPipeline.evaluate() after the stages."})
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Steps of every stage: max_steps of the SFT and reward-model trainers (added to sft_args and "
            "reward_args) and ppo_max_steps (PPO rollout batches)."
        },
    )


def main(script_args: PipelineScriptArguments, config: RLHFConfig) -> None:
    if script_args.output_dir:
        config = dataclasses.replace(config, save_dir=script_args.output_dir)
    if script_args.max_steps is not None:
        config = dataclasses.replace(
            config,
            sft_args={**config.sft_args, "max_steps": script_args.max_steps},
            reward_args={**config.reward_args, "max_steps": script_args.max_steps},
            ppo_max_steps=script_args.max_steps,
        )
    if script_args.tiny and config.model_name == "tiny":
        import torch

        from trl_ext.testing import save_tiny_qwen2

        torch.set_num_threads(1)  # tiny models: one thread is fastest, and 10x faster than two on a busy machine

        path = os.path.join(config.save_dir, "tiny-qwen2")
        config.model_name = on_main_process(save_tiny_qwen2, path, hidden_size=32, intermediate_size=64)
    pipeline = RLHFPipeline(config)
    outputs = pipeline.run()
    results = pipeline.evaluate() if script_args.evaluate else None
    with open(os.path.join(outputs["ppo"], "stage_complete.json")) as f:
        scores = json.load(f)["scores"]  # the reward model's mean score of each PPO rollout batch
    window = max(1, len(scores) // 4)
    start, end = sum(scores[:window]) / window, sum(scores[-window:]) / window
    summary = [
        f"stages done: {outputs}",
        f"PPO reward-model score: first {window} rollout batches {start:.3f} -> last {window} {end:.3f}",
    ]
    if results is not None:
        summary.append(f"evaluation ({os.path.join(config.save_dir, 'logs', 'eval.json')}): {results}")
    print_on_main_process(*summary)


if __name__ == "__main__":
    main(*parse_args((PipelineScriptArguments, RLHFConfig), TINY_DEFAULTS))
