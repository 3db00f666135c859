"""Two PPOTrainer steps under `accelerate launch` with two CPU processes (reward model + a rule-based reward, adaptive
KL; TRL's default layout, one micro-batch per update, so the first update backpropagates through the rollout's DDP
forward); each rank writes its weights, the prompts it scored per step, the KL coefficient and the logged metrics to
`output_dir/rank<i>.json`."""

import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trl_ext import PPOConfig, PPOTrainer


def flatten(model) -> list[float]:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).double().tolist()


def main(policy_path: str, reward_path: str, output_dir: str) -> None:
    seen = []

    def letter_a_frequency(prompts, completions, **kwargs):
        seen.append(list(prompts))
        return [c.count("a") / max(len(c), 1) for c in completions]

    args = PPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        max_steps=2,
        per_device_train_batch_size=4,
        num_mini_batches=1,
        num_ppo_epochs=2,
        response_length=6,
        learning_rate=1e-2,
        kl_controller="adaptive",
        kl_target=0.01,
        kl_horizon=10,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    initial = flatten(policy)
    trainer = PPOTrainer(
        args,
        AutoTokenizer.from_pretrained(policy_path),
        policy,
        None,
        [AutoModelForSequenceClassification.from_pretrained(reward_path), letter_a_frequency],
        Dataset.from_dict({"prompt": [f"Q{i}:" for i in range(32)]}),
    )
    trainer.train()
    saved = os.path.join(output_dir, "saved")
    trainer.save_model(saved)
    state = PartialState()
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump(
            {
                "world_size": state.num_processes,
                "initial_policy": initial,
                "policy": flatten(trainer.policy),
                "value": flatten(trainer.value_model),
                "prompts": seen,
                "kl_coef": trainer.kl_controller.coef,
                "metrics": trainer.state.log_history,
                "saved": saved,
            },
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
