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
"""[`RLHFPipeline`]: supervised fine-tuning -> reward model -> PPO, each stage resumable and skipped once done."""

import json
import logging as std_logging
import math
import os

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

from ..rewards.reward_model import SequenceClassificationReward, is_conversational_prompt
from ..trainers.loop import last_complete_checkpoint
from .config import RLHFConfig
from .data import bleu, load_stage_data, rouge


logger = logging.get_logger(__name__)

DONE_MARKER = "stage_complete.json"
STAGES = ("sft", "reward_model", "ppo")


class RLHFPipeline:
    """SFT (`trl.SFTTrainer`) -> reward model (`trl.RewardTrainer`, Bradley-Terry) -> PPO ([`PPOTrainer`]).

    Every stage writes `save_dir/<stage>/checkpoint-N` every `save_interval` steps and its result to
    `save_dir/<stage>/final/` (`save_pretrained` format) with a `stage_complete.json` marker written last: a stage
    with the marker is skipped on rerun, one without resumes from its last complete checkpoint. The reward model
    starts from the SFT weights (a new one-label head), the PPO policy and its value model from the SFT weights, and
    PPO scores with the trained reward model.

    Args:
        config ([`RLHFConfig`] or `dict` or `str`): The configuration, a dict of its fields, or a JSON / YAML path.
    """

    def __init__(self, config: RLHFConfig | dict | str):
        if isinstance(config, dict):
            config = RLHFConfig.from_dict(config)
        elif isinstance(config, (str, os.PathLike)):
            config = RLHFConfig.from_file(config)
        self.config = config
        self.state = PartialState()  # under `accelerate launch` every process runs the stages; one writes the files
        self.logs_dir = os.path.join(config.save_dir, "logs")
        os.makedirs(self.logs_dir, exist_ok=True)
        if self.state.is_main_process:
            with open(os.path.join(self.logs_dir, "config.json"), "w") as f:
                json.dump(config.to_dict(), f, indent=2)
        self._attach_log_file()
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available.")
        self.use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        self.bf16 = not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    def _attach_log_file(self) -> None:
        path = os.path.abspath(os.path.join(self.logs_dir, "pipeline.log"))
        level = getattr(std_logging, self.config.log_level.upper())
        logging.set_verbosity(level)
        for name in ("trl_ext", "transformers", "trl"):
            log = std_logging.getLogger(name)
            log.setLevel(level)
            if not any(getattr(h, "baseFilename", None) == path for h in log.handlers):
                handler = std_logging.FileHandler(path)
                handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                log.addHandler(handler)

    # Paths and stage state

    def stage_dir(self, stage: str) -> str:
        return os.path.join(self.config.save_dir, stage)

    def final_dir(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), "final")

    def is_done(self, stage: str) -> bool:
        """Whether `stage` finished (its `final/` holds the marker written after the model)."""
        return os.path.isfile(os.path.join(self.final_dir(stage), DONE_MARKER))

    def _mark_done(self, stage: str, metrics: dict) -> None:
        self.state.wait_for_everyone()  # every process saved its part of the model
        if self.state.is_main_process:
            with open(os.path.join(self.final_dir(stage), DONE_MARKER), "w") as f:
                json.dump({"stage": stage, **metrics}, f, indent=2)
        self.state.wait_for_everyone()

    def _resume_checkpoint(self, stage: str) -> str | None:
        checkpoint = last_complete_checkpoint(self.stage_dir(stage))
        if checkpoint:
            logger.info(f"{stage}: resuming from {checkpoint}")
        return checkpoint

    def _tokenizer(self, path: str | None = None):
        tokenizer = AutoTokenizer.from_pretrained(path or self.config.tokenizer_path or self.config.model_name)
        if tokenizer.pad_token is None:
            raise ValueError(
                "The tokenizer has no pad token; PPO and reward models need one distinct from EOS (add it and resize "
                "the embeddings before the pipeline)."
            )
        return tokenizer

    def _common_args(self, stage: str) -> dict:
        c = self.config
        return {
            "output_dir": self.stage_dir(stage),
            "save_strategy": "steps",
            "save_steps": c.save_interval,
            "report_to": "none",
            "use_cpu": self.use_cpu,
            "bf16": self.bf16,
            "seed": c.seed,
            "log_level": c.log_level,
        }

    @property
    def policy_source(self) -> str:
        """The SFT model when SFT ran, else `model_name`."""
        return self.final_dir("sft") if self.is_done("sft") else self.config.model_name

    # Stages

    def run(self) -> dict:
        """Run the three stages (skipping finished ones) and return their final directories."""
        outputs = {}
        if self.config.sft_data_path:
            outputs["sft"] = self.run_sft()
        elif not self.is_done("sft"):
            logger.info("sft: no sft_data_path, skipped (the next stages start from model_name)")
        outputs["reward_model"] = self.run_reward_training()
        outputs["ppo"] = self.run_ppo_training()
        return outputs

    def _done_already(self, stage: str) -> bool:
        if self.is_done(stage):
            logger.info(f"{stage}: done already ({self.final_dir(stage)}), skipped")
        return self.is_done(stage)

    def _train(self, stage: str, trainer, tokenizer=None):
        """Train (resuming from the stage's last checkpoint) and save the model, and the tokenizer if given, to
        `final/`."""
        result = trainer.train(resume_from_checkpoint=self._resume_checkpoint(stage))
        trainer.save_model(self.final_dir(stage))
        if tokenizer is not None and self.state.is_main_process:
            tokenizer.save_pretrained(self.final_dir(stage))
        return result

    def run_sft(self) -> str:
        """Supervised fine-tuning of `model_name` on `sft_data_path` with `trl.SFTTrainer`."""
        from trl import SFTConfig, SFTTrainer

        c, stage = self.config, "sft"
        if self._done_already(stage):
            return self.final_dir(stage)
        if not c.sft_data_path:
            raise ValueError("run_sft needs sft_data_path.")
        dataset = load_stage_data(c.sft_data_path, "sft")
        args = SFTConfig(
            **self._common_args(stage),
            num_train_epochs=c.sft_epochs,
            per_device_train_batch_size=c.sft_batch_size,
            learning_rate=c.sft_lr,
            max_length=c.max_length,
            gradient_checkpointing=False,
            **c.sft_args,
        )
        tokenizer = self._tokenizer()
        model = AutoModelForCausalLM.from_pretrained(c.model_name)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        result = self._train(stage, trainer, tokenizer)
        self._mark_done(stage, {"train_loss": result.training_loss, "steps": result.global_step})
        return self.final_dir(stage)

    def run_reward_training(self) -> str:
        """A one-label reward model from the SFT weights (or `model_name`) on `reward_data_path` with
        `trl.RewardTrainer` (Bradley-Terry; `margin` column and `center_rewards_coefficient` as RewardTrainer has
        them); with `freeze_reward_backbone` only the head trains."""
        from trl import RewardConfig, RewardTrainer

        c, stage = self.config, "reward_model"
        if self._done_already(stage):
            return self.final_dir(stage)
        if not c.reward_data_path:
            raise ValueError("The reward stage needs reward_data_path.")
        dataset = load_stage_data(c.reward_data_path, "reward")
        source = self.policy_source
        tokenizer = self._tokenizer(source if source != c.model_name else None)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        if c.freeze_reward_backbone:
            for name, param in model.named_parameters():
                param.requires_grad = name.startswith("score.")
        args = RewardConfig(
            **self._common_args(stage),
            num_train_epochs=c.reward_epochs,
            per_device_train_batch_size=c.reward_batch_size,
            learning_rate=c.reward_lr,
            max_length=c.max_length,
            gradient_checkpointing=False,
            **c.reward_args,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        result = self._train(stage, trainer, tokenizer)
        self._mark_done(stage, {"train_loss": result.training_loss, "steps": result.global_step})
        return self.final_dir(stage)

    def run_ppo_training(self) -> str:
        """PPO of the SFT model against the trained reward model on `ppo_data_path`; the value model starts from the
        SFT weights."""
        from ..trainers.ppo.config import PPOConfig
        from ..trainers.ppo.trainer import PPOTrainer

        c, stage = self.config, "ppo"
        if self._done_already(stage):
            return self.final_dir(stage)
        if not c.ppo_data_path:
            raise ValueError("The PPO stage needs ppo_data_path.")
        if not self.is_done("reward_model"):
            raise ValueError("The PPO stage needs a trained reward model: run run_reward_training first.")
        dataset = load_stage_data(c.ppo_data_path, "ppo")
        source = self.policy_source
        tokenizer = self._tokenizer(source if source != c.model_name else None)
        args = PPOConfig(
            **{
                **self._common_args(stage),
                "max_steps": c.ppo_iterations,
                "per_device_train_batch_size": c.ppo_mini_batch_size,
                "num_mini_batches": c.ppo_batch_size // c.ppo_mini_batch_size,
                "num_ppo_epochs": c.ppo_epochs,
                "learning_rate": c.ppo_lr_policy,
                "value_learning_rate": c.ppo_lr_value,
                "logging_steps": 1,
                **c.ppo_args,
            }
        )
        reward_model = AutoModelForSequenceClassification.from_pretrained(self.final_dir("reward_model"))
        trainer = PPOTrainer(
            args,
            tokenizer,
            AutoModelForCausalLM.from_pretrained(source),
            None,
            reward_model,
            dataset,
            reward_processing_class=AutoTokenizer.from_pretrained(self.final_dir("reward_model")),
        )
        result = self._train(stage, trainer)
        scores = [e["objective/scores"] for e in trainer.state.log_history if "objective/scores" in e]
        self._mark_done(
            stage,
            {
                "steps": result.global_step,
                "first_score": scores[0] if scores else None,
                "last_score": scores[-1] if scores else None,
            },
        )
        return self.final_dir(stage)

    # Evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Offline evaluation of the finished stages, written to `logs/eval.json`: perplexity of the SFT and PPO
        models on `eval_sft_data_path` (completion tokens), reward-model accuracy on `eval_reward_data_path`, the
        reward-model score of greedy completions of `eval_ppo_data_path` before (SFT) and after PPO, and BLEU /
        ROUGE of those completions against the prompts' `reference` when given."""
        c, results = self.config, {}
        device = torch.device("cpu" if self.use_cpu else "cuda")
        models = {"sft": self.policy_source}
        if self.is_done("ppo"):
            models["ppo"] = self.final_dir("ppo")
        if c.eval_sft_data_path:
            rows = load_stage_data(c.eval_sft_data_path, "sft")
            for name, path in models.items():
                results[f"{name}/perplexity"] = self._perplexity(path, rows, device)
        if self.is_done("reward_model"):
            reward = SequenceClassificationReward(
                AutoModelForSequenceClassification.from_pretrained(self.final_dir("reward_model")).to(device).eval(),
                AutoTokenizer.from_pretrained(self.final_dir("reward_model")),
            )
            if c.eval_reward_data_path:
                pairs = load_stage_data(c.eval_reward_data_path, "reward")
                prompts = pairs["prompt"] if "prompt" in pairs.column_names else [""] * len(pairs)
                chosen, rejected = reward(prompts, pairs["chosen"]), reward(prompts, pairs["rejected"])
                results["reward_model/accuracy"] = sum(a > b for a, b in zip(chosen, rejected)) / len(chosen)
                results["reward_model/margin"] = sum(a - b for a, b in zip(chosen, rejected)) / len(chosen)
            if c.eval_ppo_data_path:
                prompts = load_stage_data(c.eval_ppo_data_path, "ppo")
                references = prompts["reference"] if "reference" in prompts.column_names else None
                for name, path in models.items():
                    completions = self._greedy_completions(path, prompts["prompt"], device)
                    scores = reward(prompts["prompt"], completions)
                    results[f"{name}/reward_score"] = sum(scores) / len(scores)
                    if references is not None:
                        results[f"{name}/bleu"] = bleu(completions, references)
                        results.update({f"{name}/{k}": v for k, v in rouge(completions, references).items()})
        if self.state.is_main_process:
            with open(os.path.join(self.logs_dir, "eval.json"), "w") as f:
                json.dump(results, f, indent=2)
        logger.info(f"evaluation: {json.dumps(results)}")
        return results

    def _load_policy(self, path: str, device):
        return AutoModelForCausalLM.from_pretrained(path).to(device).eval(), self._tokenizer(
            path if path != self.config.model_name else None
        )

    def _perplexity(self, path: str, rows, device) -> float:
        """exp of the mean negative log-likelihood of the completion tokens (the last assistant message, or
        `completion`) given their prompt."""
        model, tokenizer = self._load_policy(path, device)
        total, count = 0.0, 0
        for row in rows:
            if row.get("messages"):
                messages = row["messages"]
                prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
                full = tokenizer.apply_chat_template(messages, tokenize=False)
            elif is_conversational_prompt(row["prompt"]):
                prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
                full = tokenizer.apply_chat_template([*row["prompt"], *row["completion"]], tokenize=False)
            else:
                prompt, full = row["prompt"], row["prompt"] + row["completion"]
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
            ids = ids[:, : self.config.max_length]
            start = max(1, min(len(prompt_ids), ids.size(1) - 1))  # the first completion token
            logits = model(input_ids=ids).logits[0, start - 1 : -1].float()  # position j - 1 predicts token j
            total += torch.nn.functional.cross_entropy(logits, ids[0, start:], reduction="sum").item()
            count += ids.size(1) - start
        return math.exp(total / max(count, 1))

    def _greedy_completions(self, path: str, prompts: list, device) -> list[str]:
        model, tokenizer = self._load_policy(path, device)
        length = self.config.ppo_args.get("response_length", 53)
        completions = []
        for prompt in prompts:
            text = (
                tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                if is_conversational_prompt(prompt)
                else prompt
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=length,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            completions.append(tokenizer.decode(out[0, ids.size(1) :], skip_special_tokens=True))
        return completions
