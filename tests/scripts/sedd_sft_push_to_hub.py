"""SEDD SFT for two steps with `push_to_hub=True` (`hub_strategy="checkpoint"`, a checkpoint per step), under
`accelerate launch` with two CPU processes, then `trainer.push_to_hub()`; the Hub is `HF_ENDPOINT`. Each rank writes
the repository id it knows to `output_dir/rank<i>.json`."""

import json
import os
import sys

from accelerate import PartialState

from trl_ext import DiscreteDiffusionSFTConfig, DiscreteDiffusionSFTTrainer
from trl_ext.data import generate_latex_corpus
from trl_ext.testing import build_tiny_tokenizer


def main(model_path: str, output_dir: str) -> None:
    args = DiscreteDiffusionSFTConfig(
        output_dir=os.path.join(output_dir, "run"),
        use_cpu=True,
        report_to="none",
        block_size=32,
        per_device_train_batch_size=2,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="test-org/tiny-sedd-sft",
        hub_token="hf_test_token",
        hub_strategy="checkpoint",
        hub_always_push=True,
    )
    trainer = DiscreteDiffusionSFTTrainer(model_path, args, generate_latex_corpus(16), build_tiny_tokenizer())
    trainer.train()
    trainer.push_to_hub()
    state = PartialState()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"world_size": state.num_processes, "hub_model_id": trainer.hub_model_id}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
