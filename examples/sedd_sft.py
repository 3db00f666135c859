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
"""Score-entropy fine-tuning (SFT) of a SEDD model on LaTeX from S1K-1.1 with `DiscreteDiffusionSFTTrainer`.

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/sedd_sft.py \\
    --model sedd_small --output_dir sedd-small-latex-sft --max_steps 2000 --block_size 1024 --bf16 True
```

Offline on CPU with a tiny random SEDD and the generated LaTeX corpus:

```bash
python examples/sedd_sft.py --tiny --output_dir outputs/sedd_sft
```
"""

import os
from dataclasses import dataclass, field

from example_utils import on_main_process, parse_args, print_on_main_process

from trl_ext import DiscreteDiffusionSFTConfig, DiscreteDiffusionSFTTrainer, SEDDModel
from trl_ext.data import generate_latex_corpus, load_s1k_latex


# a one-minute CPU run on the tiny model; a --config file and the command line override these
TINY_DEFAULTS = {
    "use_cpu": True,
    "max_steps": 150,
    "learning_rate": 3e-3,
    "block_size": 64,
    "per_device_train_batch_size": 16,
    "report_to": ["none"],
    "save_strategy": "no",
    "disable_tqdm": True,
    "seed": 0,
    "logging_steps": 10,
}


@dataclass
class SEDDScriptArguments:
    model: str = field(default="sedd_small", metadata={"help": "SEDD checkpoint: hub key, Hub id or local path."})
    tokenizer: str = field(default="gpt2", metadata={"help": "Tokenizer: hub key, Hub id or local path."})
    dataset: str = field(default="simplescaling/s1K-1.1", metadata={"help": "S1K-1.1 (Hub id or local copy)."})
    tiny: bool = field(default=False, metadata={"help": "Offline tiny run on CPU: tiny random SEDD, generated LaTeX."})


def load_sedd_setup(script_args: SEDDScriptArguments, output_dir: str):
    """The model, tokenizer and LaTeX dataset of `script_args` (with `--tiny`: a tiny random SEDD written once to
    `output_dir/tiny-sedd`, a byte-level tokenizer and the generated corpus)."""
    if script_args.tiny:
        from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd

        tokenizer = build_tiny_tokenizer()
        path = os.path.join(output_dir, "tiny-sedd")
        model = SEDDModel.from_pretrained(on_main_process(save_tiny_sedd, path, tokens=len(tokenizer), hidden_size=64))
        return model, tokenizer, generate_latex_corpus(512)
    from transformers import AutoTokenizer

    from trl_ext.hub import resolve_pretrained

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(script_args.tokenizer).path)
    return SEDDModel.from_pretrained(script_args.model), tokenizer, load_s1k_latex(script_args.dataset)


def main(script_args: SEDDScriptArguments, training_args: DiscreteDiffusionSFTConfig) -> None:
    model, tokenizer, dataset = load_sedd_setup(script_args, training_args.output_dir)
    trainer = DiscreteDiffusionSFTTrainer(model, training_args, dataset, tokenizer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print_on_main_process(f"score-entropy loss per token: {losses[0]:.3f} -> {losses[-1]:.3f}")
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub()


if __name__ == "__main__":
    main(*parse_args((SEDDScriptArguments, DiscreteDiffusionSFTConfig), TINY_DEFAULTS))
