"""Train a tiny model with `TPRLGRPOTrainer`, TPRL options on, for two steps; each rank writes its weights and rows.

Run by tests/test_accelerate_configs.py as
`accelerate launch --config_file accelerate_configs/cpu_2proc.yaml tests/scripts/grpo_two_steps.py <model> <mode> <out>`.

With a tiny Qwen2.5-VL (`trl_ext.testing.save_tiny_qwen_vl`) every TPRL feature that gathers across processes is on:
perception and entropy filtering, trajectory shaping and online filtering, with the KL either in the reward with the
adaptive controller (mode `rollout_kl`: the token weights are computed at rollout time) or in TRL's loss with a fixed β
(mode `loss_shaping`: on-policy, the token weights come from TRL's loss forward). With a text-only model, the options
that need no image: entropy filtering, RLOO, the KL options, online filtering.
"""

import json
import os
import sys

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoConfig

from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
from trl_ext.trainers.tprl.trainer import PERTURBED_LOGPS_KEY


ROWS_SEEN: list[list[int]] = []  # the dataset rows each reward call scored on this rank, one list per rollout


def length_reward(completions, row, **kwargs):
    ROWS_SEEN.append(list(row))
    return [float(len(str(completion))) for completion in completions]


def half_solved(completions, row, **kwargs):
    """Rows 0-3 are "solved" (their groups are dropped by online filtering); the others alternate 0 / 1."""
    return [1.0 if r < 4 else float(i % 2) for i, r in enumerate(row)]


def main(model_path: str, mode: str, output_dir: str) -> None:
    is_vlm = hasattr(AutoConfig.from_pretrained(model_path), "vision_config")
    common = dict(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=2,
        learning_rate=0.05,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        seed=0,
        logging_steps=1,
        beta=0.05,
        kl_target=0.01,
        kl_horizon=100,
        online_filtering=True,
        filter_reward="half_solved",
        enable_entropy_filtering=True,
        top_p_entropy_tokens=0.5,
    )
    processing_class = None
    if is_vlm:
        from trl_ext.data import colour_question_dataset
        from trl_ext.testing import load_qwen_vl_processor, vision_special_token_ids

        processing_class = load_qwen_vl_processor(model_path)
        dataset = colour_question_dataset(16)
        options = dict(
            enable_perception_filtering=True,
            top_p_perception_tokens=0.5,
            enable_trajectory_reweighting=True,
            generation_kwargs={"suppress_tokens": vision_special_token_ids(processing_class.tokenizer)},
        )
    else:
        dataset = Dataset.from_dict({"prompt": ["a", "bb", "ccc", "dddd", "e", "ff", "ggg", "hhhh"] * 2})
        options = dict(advantage_estimator="rloo")
    dataset = dataset.add_column("row", list(range(len(dataset))))
    if mode == "rollout_kl":
        options.update(kl_penalty="reward", kl_estimator="k2", kl_controller="adaptive")
    args = TPRLGRPOConfig(**common, **options)
    trainer = TPRLGRPOTrainer(
        model=model_path,
        reward_funcs=[length_reward, half_solved],
        args=args,
        train_dataset=dataset,
        processing_class=processing_class,
    )
    shaped_in_loss = []  # per loss call: did the batch carry the perturbed log-probs for shaping in the loss?
    compute_loss = trainer._compute_loss

    def recording_loss(model, inputs):
        shaped_in_loss.append(PERTURBED_LOGPS_KEY in inputs)
        return compute_loss(model, inputs)

    trainer._compute_loss = recording_loss
    initial = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).double()
    trainer.train()
    state = PartialState()
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).double()
    logged = [h for h in trainer.state.log_history if "grpo/kl_coef" in h]
    with open(os.path.join(output_dir, f"rank{state.process_index}.json"), "w") as f:
        json.dump(
            {
                "world_size": state.num_processes,
                "weights": weights.tolist(),
                "changed": float((weights - initial).abs().max()),
                "rows": ROWS_SEEN,
                "kl_coef": [h["grpo/kl_coef"] for h in logged],
                "shaped_in_loss": shaped_in_loss,
                "tprl_metrics": sorted(
                    {k for h in trainer.state.log_history for k in h if k.startswith(("tprl/", "grpo/"))}
                ),
            },
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
