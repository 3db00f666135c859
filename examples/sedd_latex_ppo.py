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

from trl import TrlParser

from trl_ext import (
    DiscreteDiffusionPPOConfig,
    DiscreteDiffusionPPOTrainer,
    DiscreteDiffusionSFTConfig,
    DiscreteDiffusionSFTTrainer,
    SEDDModel,
)
from trl_ext.data import generate_latex_corpus, load_s1k_latex
from trl_ext.rewards import LaTeXReward


@dataclass
class SEDDScriptArguments:
    model: str = field(default="sedd_small", metadata={"help": "SEDD checkpoint: hub key, Hub id or local path."})
    tokenizer: str = field(default="gpt2", metadata={"help": "Tokenizer: hub key, Hub id or local path."})
    dataset: str = field(default="simplescaling/s1K-1.1", metadata={"help": "S1K-1.1 (Hub id or local copy)."})
    sft_steps: int = field(default=1000, metadata={"help": "Score-entropy SFT steps before PPO (0: none)."})
    sft_learning_rate: float = field(default=3e-5, metadata={"help": "SFT learning rate."})
    tiny: bool = field(default=False, metadata={"help": "Offline tiny run on CPU (about a minute)."})


def main(script_args: SEDDScriptArguments, training_args: DiscreteDiffusionPPOConfig) -> None:
    from transformers import AutoTokenizer

    from trl_ext.hub import resolve_pretrained

    if script_args.tiny:
        from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd

        tokenizer = build_tiny_tokenizer()
        model = SEDDModel.from_pretrained(
            save_tiny_sedd(os.path.join(training_args.output_dir, "tiny-sedd"), tokens=len(tokenizer), hidden_size=64)
        )
        dataset = generate_latex_corpus(512)
    else:
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(script_args.tokenizer).path)
        model = SEDDModel.from_pretrained(script_args.model)
        dataset = load_s1k_latex(script_args.dataset)

    if script_args.sft_steps:
        sft_args = DiscreteDiffusionSFTConfig(
            output_dir=os.path.join(training_args.output_dir, "sft"), max_steps=script_args.sft_steps,
            learning_rate=script_args.sft_learning_rate, block_size=training_args.generation_length,
            per_device_train_batch_size=training_args.per_device_train_batch_size, use_cpu=training_args.use_cpu,
            bf16=training_args.bf16, report_to=training_args.report_to, save_strategy="no", disable_tqdm=training_args.disable_tqdm,
            seed=training_args.seed,
        )  # fmt: skip
        sft = DiscreteDiffusionSFTTrainer(model, sft_args, dataset, tokenizer)
        losses = [h["loss"] for h in sft.train()]
        print(f"SFT loss per token: {losses[0]:.3f} -> {losses[-1]:.3f}")
        model = sft.accelerator.unwrap_model(sft.model)

    reward = LaTeXReward()
    trainer = DiscreteDiffusionPPOTrainer(model, reward, training_args, dataset, tokenizer)
    history = trainer.train()
    window = max(1, len(history) // 5)
    start = sum(h["reward"] for h in history[:window]) / window
    end = sum(h["reward"] for h in history[-window:]) / window
    print(f"LaTeX reward: first {window} PPO steps {start:.3f} -> last {window} PPO steps {end:.3f}")
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    import sys

    if "--tiny" in sys.argv:  # tiny defaults first, so that the command line still overrides them
        sys.argv[1:1] = [
            "--use_cpu", "True", "--sft_steps", "150", "--sft_learning_rate", "3e-3", "--max_steps", "20",
            "--learning_rate", "3e-3", "--per_device_train_batch_size", "16", "--num_generations", "4",
            "--max_prompt_length", "8", "--generation_length", "48", "--sampling_steps", "16",
            "--num_sigma_samples", "2", "--ppo_epochs", "2", "--num_minibatches", "2", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "True", "--seed", "0",
        ]  # fmt: skip
    parser = TrlParser((SEDDScriptArguments, DiscreteDiffusionPPOConfig))
    main(*parser.parse_args_and_config())
