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
"""GRPO for a discrete diffusion language model with the likelihood estimator as an option: a masked diffusion LM
(LLaDA / MDLM convention), transformers' DiffusionGemma (`--family diffusion_gemma`, `--estimator trace`) or SEDD
(`--family sedd`, through `DiscreteDiffusionPPOTrainer`).

```bash
accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/diffusion_lm_grpo.py \\
    --model GSAI-ML/LLaDA-8B-Instruct --trust_remote_code True --mask_token_id 126336 --reward latex \\
    --estimator elbo --max_completion_length 256 --block_length 32 --sampling_steps 128 --output_dir llada-grpo
```

Offline on CPU, with a tiny random masked LM and a toy reward (the share of the completion's words equal to
`--target_word`; prints the reward before and after):

```bash
python examples/diffusion_lm_grpo.py --tiny --family masked --estimator mean_field --output_dir outputs/diffusion_lm
python examples/diffusion_lm_grpo.py --tiny --family diffusion_gemma --estimator trace --output_dir outputs/dgemma
python examples/diffusion_lm_grpo.py --tiny --family sedd --estimator elbo --output_dir outputs/sedd_grpo
```
"""

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal

from datasets import Dataset
from example_utils import on_main_process, parse_args, print_on_main_process

from trl_ext import DiffusionLMGRPOConfig, DiffusionLMGRPOTrainer
from trl_ext.rewards import LaTeXReward


PROMPTS = [
    "Write the quadratic formula in LaTeX:",
    "Write Euler's identity in LaTeX:",
    "Write the Gaussian integral in LaTeX:",
    "Write Bayes' rule in LaTeX:",
    "Write the Pythagorean theorem in LaTeX:",
    "Write the derivative of x squared in LaTeX:",
    "Write the sum of the first n integers in LaTeX:",
    "Write Stirling's formula in LaTeX:",
]

# a few-second CPU run on the tiny model; a --config file and the command line override these
TINY_DEFAULTS = {
    "use_cpu": True,
    "reward": "word_share",
    "max_steps": 30,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 16,
    "num_generations": 4,
    "max_prompt_length": 4,
    "max_completion_length": 8,
    "block_length": 4,
    "sampling_steps": 8,
    "num_iterations": 2,
    "num_mini_batches": 2,
    "report_to": ["none"],
    "save_strategy": "no",
    "disable_tqdm": True,
    "seed": 0,
    "logging_steps": 1,
}


@dataclass
class DiffusionLMScriptArguments:
    model: str = field(
        default="GSAI-ML/LLaDA-8B-Instruct", metadata={"help": "Masked diffusion LM: Hub id, hub key or local path."}
    )
    family: Literal["masked", "diffusion_gemma", "sedd"] = field(
        default="masked",
        metadata={
            "help": "Model family: 'masked' (LLaDA / MDLM), 'diffusion_gemma' (DiffusionGemmaForBlockDiffusion; "
            "'trace' only) or 'sedd' (a SEDD model and --tokenizer, trained by DiscreteDiffusionPPOTrainer)."
        },
    )
    tokenizer: str | None = field(default=None, metadata={"help": "'sedd': the tokenizer (GPT-2's for SEDD)."})
    reward: Literal["latex", "word_share"] = field(
        default="latex", metadata={"help": "'latex' (LaTeXReward) or 'word_share' (share of --target_word)."}
    )
    target_word: str = field(default="a", metadata={"help": "The word that 'word_share' rewards."})
    tiny: bool = field(default=False, metadata={"help": "Offline tiny run on CPU: a tiny random model of --family."})


def main(script_args: DiffusionLMScriptArguments, training_args: DiffusionLMGRPOConfig) -> None:
    model, tokenizer, family = script_args.model, script_args.tokenizer, script_args.family
    if script_args.tiny:
        from trl_ext import testing

        path = os.path.join(training_args.output_dir, f"tiny-{family}")
        if family == "sedd":
            tokenizer = testing.build_tiny_tokenizer()
            model = on_main_process(testing.save_tiny_sedd, path, tokens=len(tokenizer))
        else:
            save = (
                testing.save_tiny_diffusion_gemma
                if family == "diffusion_gemma"
                else testing.save_tiny_masked_diffusion_lm
            )
            model = on_main_process(save, path)
    target = script_args.target_word

    def word_share(prompts, completions, **kwargs):
        return [c.split().count(target) / max(len(c.split()), 1) for c in completions]

    reward = LaTeXReward() if script_args.reward == "latex" else word_share
    dataset = Dataset.from_dict({"prompt": PROMPTS})
    if family == "sedd":
        trainer = sedd_trainer(model, tokenizer, reward, training_args, dataset)
    else:
        trainer = DiffusionLMGRPOTrainer(model, reward, training_args, dataset)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    window = max(1, len(rewards) // 5)
    start, end = sum(rewards[:window]) / window, sum(rewards[-window:]) / window
    print_on_main_process(
        f"{script_args.reward} reward ({training_args.estimator}): first {window} logged steps {start:.3f} -> "
        f"last {window} {end:.3f}"
    )
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub()


def sedd_trainer(model, tokenizer, reward, training_args: DiffusionLMGRPOConfig, dataset: Dataset):
    """SEDD's entry point, `DiscreteDiffusionPPOTrainer`, on the parsed settings: every field its config shares with
    `DiffusionLMGRPOConfig`, and K draws as its `num_sigma_samples`."""
    from transformers import AutoTokenizer

    from trl_ext import DiscreteDiffusionPPOConfig, DiscreteDiffusionPPOTrainer

    if isinstance(tokenizer, str) or tokenizer is None:
        if tokenizer is None:
            raise ValueError(
                "--family sedd needs --tokenizer (SEDD checkpoints ship none; GPT-2's for the published)."
            )
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    shared = {f.name for f in dataclasses.fields(DiscreteDiffusionPPOConfig) if f.init}
    values = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(training_args) if f.name in shared}
    values.pop("lora_target_modules", None)  # the masked default (None) is no SEDD module list
    args = DiscreteDiffusionPPOConfig(**values, num_sigma_samples=training_args.num_likelihood_samples)
    return DiscreteDiffusionPPOTrainer(model, reward, args, dataset, tokenizer)


if __name__ == "__main__":
    main(*parse_args((DiffusionLMScriptArguments, DiffusionLMGRPOConfig), TINY_DEFAULTS))
