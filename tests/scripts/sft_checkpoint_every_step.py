"""SEDD SFT that checkpoints every step (`save_total_limit=2`) and resumes from the latest complete checkpoint if
there is one. Writes `started` once training is about to begin and the final weights to `weights.pt`."""

import os
import sys

import torch

from trl_ext import DiscreteDiffusionSFTConfig, DiscreteDiffusionSFTTrainer, SEDDModel
from trl_ext.data import generate_latex_corpus
from trl_ext.testing import build_tiny_tokenizer


def main(model_path: str, output_dir: str, max_steps: str) -> None:
    args = DiscreteDiffusionSFTConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        block_size=32,
        learning_rate=1e-2,
        max_steps=int(max_steps),
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        logging_steps=1,
        seed=0,
    )
    trainer = DiscreteDiffusionSFTTrainer(
        SEDDModel.from_pretrained(model_path), args, generate_latex_corpus(64), build_tiny_tokenizer()
    )
    resume = (
        any(name.startswith("checkpoint-") for name in os.listdir(output_dir)) if os.path.isdir(output_dir) else False
    )
    open(os.path.join(os.path.dirname(output_dir), "started"), "w").close()
    trainer.train(resume_from_checkpoint=resume or None)
    torch.save(
        [p.detach() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()],
        os.path.join(output_dir, "weights.pt"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
