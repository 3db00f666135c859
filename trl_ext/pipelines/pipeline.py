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
"""[`RLHFPipeline`]: supervised fine-tuning -> reward model -> PPO, validated before the first stage, each stage
resumable, and skipped once done only while the settings and inputs that produced it are unchanged."""

import hashlib
import json
import logging as std_logging
import math
import os
import shutil

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

from ..rewards.reward_model import SequenceClassificationReward, is_conversational_prompt
from ..trainers.checkpointing import last_complete_checkpoint
from .config import ALIASES, RLHFConfig
from .data import bleu, load_stage_data, rouge


logger = logging.get_logger(__name__)

DONE_MARKER = "stage_complete.json"
SETTINGS_FILE = "stage_settings.json"
STAGES = ("sft", "reward_model", "ppo")
# the RLHFConfig fields that change what a stage produces (with its data file's content and the earlier stages'
# fingerprints); device, save_dir, log_level, overwrite_stages and the eval_* files do not
STAGE_FIELDS = {
    "sft": ("model_name", "tokenizer_path", "sft_data_path", "sft_epochs", "sft_batch_size", "sft_lr", "max_length"),
    "reward_model": (
        "model_name",
        "tokenizer_path",
        "reward_data_path",
        "reward_epochs",
        "reward_batch_size",
        "reward_lr",
        "freeze_reward_backbone",
        "max_length",
    ),
    "ppo": (
        "model_name",
        "tokenizer_path",
        "ppo_data_path",
        "ppo_max_steps",
        "ppo_batch_size",
        "ppo_mini_batch_size",
        "ppo_num_ppo_epochs",
        "ppo_lr_policy",
        "ppo_lr_value",
    ),
}
STAGE_DATA = {"sft": "sft_data_path", "reward_model": "reward_data_path", "ppo": "ppo_data_path"}
STAGE_ARGS = {"sft": "sft_args", "reward_model": "reward_args", "ppo": "ppo_args"}
DATA_KINDS = {
    "sft_data_path": "sft",
    "reward_data_path": "reward",
    "ppo_data_path": "ppo",
    "eval_sft_data_path": "sft",
    "eval_reward_data_path": "reward",
    "eval_ppo_data_path": "ppo",
}


class StageMismatchError(RuntimeError):
    """A stage in `save_dir` was produced by settings or inputs that differ from the configuration's."""


def _file_sha256(path: str) -> str | None:
    """The SHA-256 of a local file's bytes; `None` for a Hub dataset id (its name stands for it)."""
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RLHFPipeline:
    """SFT (`trl.SFTTrainer`) -> reward model (`trl.RewardTrainer`, Bradley-Terry) -> PPO ([`PPOTrainer`]).

    [`run`] first validates everything a stage will read (every data file's rows, every stage's `SFTConfig` /
    `RewardConfig` / `PPOConfig`, the tokenizer), so a mistake fails before any training. Every stage records the
    settings that produce it in `save_dir/<stage>/stage_settings.json` (its [`RLHFConfig`] fields and `*_args`, the
    SHA-256 of its data file, and the fingerprints of the stages it starts from), writes `checkpoint-N` every
    `save_interval` steps and its result to `final/` (`save_pretrained` format) with a `stage_complete.json` marker
    written last. On rerun a stage whose recorded settings equal the current ones is skipped when finished and resumed
    from its last complete checkpoint otherwise; one whose settings differ is a [`StageMismatchError`] listing the
    differing keys, or, with `overwrite_stages`, is deleted and retrained with every stage after it. `logs/config.json`
    is written once the stages agree with the configuration. The reward model starts from the SFT weights (a new
    one-label head), the PPO policy and its value model from the SFT weights, and PPO scores with the trained reward
    model.

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
        self._attach_log_file()
        self._datasets, self._hashes = {}, {}
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available.")
        self.use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        self.bf16 = not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    def _attach_log_file(self) -> None:
        """`logs/pipeline.log` gets the trl_ext, transformers and TRL logs at `info` (or the lower `log_level`); the
        console shows them at `log_level` (transformers' per-step INFO stays in the file unless asked for), and
        trl_ext's (stage skips, resumes, retraining) go to the console of the main process."""
        path = os.path.abspath(os.path.join(self.logs_dir, "pipeline.log"))
        console_level = getattr(std_logging, self.config.log_level.upper())
        file_level = min(console_level, std_logging.INFO)
        logging.set_verbosity(file_level)
        for handler in std_logging.getLogger("transformers").handlers:  # transformers' own console handler
            if not isinstance(handler, std_logging.FileHandler):
                handler.setLevel(console_level)
        for name in ("trl_ext", "transformers", "trl"):
            log = std_logging.getLogger(name)
            log.setLevel(file_level)
            if not any(getattr(h, "baseFilename", None) == path for h in log.handlers):
                handler = std_logging.FileHandler(path)
                handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                log.addHandler(handler)
        package_logger = std_logging.getLogger("trl_ext")
        if self.state.is_main_process and not any(getattr(h, "_rlhf_console", False) for h in package_logger.handlers):
            console = std_logging.StreamHandler()
            console.setLevel(console_level)
            console.setFormatter(std_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            console._rlhf_console = True
            package_logger.addHandler(console)

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
            logger.warning(f"{stage}: resuming from {checkpoint}")
        return checkpoint

    def _tokenizer(self, path: str | None = None):
        tokenizer = AutoTokenizer.from_pretrained(path or self.config.tokenizer_path or self.config.model_name)
        if tokenizer.pad_token is None:
            raise ValueError(
                "The tokenizer has no pad token; PPO and reward models need one distinct from EOS (add it and resize "
                "the embeddings before the pipeline)."
            )
        return tokenizer

    def _data(self, key: str):
        """The checked rows of the data file in the config field `key`, loaded once; errors name the field."""
        if key not in self._datasets:
            path = getattr(self.config, key)
            if not path:
                raise ValueError(f"{key} is not set.")
            try:
                self._datasets[key] = load_stage_data(path, DATA_KINDS[key])
            except ValueError as error:
                raise ValueError(f"{key}: {error}") from None
        return self._datasets[key]

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages [`run`] trains: SFT only with `sft_data_path`."""
        return STAGES if self.config.sft_data_path else STAGES[1:]

    @property
    def policy_source(self) -> str:
        """The SFT model when the config has SFT data, else `model_name`."""
        return self.final_dir("sft") if self.config.sft_data_path else self.config.model_name

    # Validation and stage settings

    def validate(self) -> None:
        """Check everything the stages will read before any of them starts: the data of every stage and of the
        evaluation (every row), the `SFTConfig` / `RewardConfig` / `PPOConfig` of every stage (built, so their own
        checks run), and the tokenizer (it needs a pad token). The config's field types are checked when it is
        built. Raises a `ValueError` naming the field, file and line."""
        c = self.config
        for key, stage in (("reward_data_path", "reward-model"), ("ppo_data_path", "PPO")):
            if not getattr(c, key):
                raise ValueError(f"{key} is required: the {stage} stage trains on it.")
        for key in DATA_KINDS:
            if getattr(c, key):
                self._data(key)
        for stage in self.stages:
            self._stage_args(stage)
        self._tokenizer()

    def stage_settings(self, stage: str) -> dict:
        """What produces `stage`: its [`RLHFConfig`] fields, `seed`, `save_interval`, its `*_args`, its data file's
        SHA-256 (a Hub dataset stands for itself by its id), and the fingerprints of the stages it starts from."""
        c = self.config
        settings = {name: getattr(c, name) for name in STAGE_FIELDS[stage]}
        settings.update(seed=c.seed, save_interval=c.save_interval)
        settings[STAGE_ARGS[stage]] = getattr(c, STAGE_ARGS[stage])
        data_key = STAGE_DATA[stage]
        path = getattr(c, data_key)
        if path and path not in self._hashes:
            self._hashes[path] = _file_sha256(path)
        settings[f"{data_key}:sha256"] = self._hashes.get(path)
        if stage != "sft":
            settings["sft:fingerprint"] = self.fingerprint("sft") if c.sft_data_path else None
        if stage == "ppo":
            settings["reward_model:fingerprint"] = self.fingerprint("reward_model")
        return json.loads(json.dumps(settings, default=str))  # as recorded: tuples become lists, enums strings

    def fingerprint(self, stage: str) -> str:
        """SHA-256 of [`stage_settings`] (which holds the earlier stages' fingerprints)."""
        return hashlib.sha256(json.dumps(self.stage_settings(stage), sort_keys=True).encode()).hexdigest()

    def stage_mismatch(self, stage: str) -> list[str] | None:
        """The keys whose recorded value differs from the current settings of `stage`; `None` when `save_dir` holds
        nothing of the stage, `[]` when it matches. Outputs without a record differ in `stage_settings.json`; a record
        with the earlier names of fields ([`~trl_ext.pipelines.config.ALIASES`]) reads as with the new ones."""
        path = os.path.join(self.stage_dir(stage), SETTINGS_FILE)
        if not os.path.isfile(path):
            has_outputs = self.is_done(stage) or last_complete_checkpoint(self.stage_dir(stage)) is not None
            return [SETTINGS_FILE] if has_outputs else None
        with open(path) as f:  # a record of an earlier release has the fields' earlier names (the aliases)
            recorded = {ALIASES.get(key, key): value for key, value in json.load(f).items()}
        current = self.stage_settings(stage)
        return sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))

    def _on_mismatch(self, stage: str, keys: list[str], invalidated: tuple[str, ...], overwrite: bool) -> None:
        """Raise a [`StageMismatchError`] for `stage`, or (with `overwrite`) delete the `invalidated` stages."""
        if not overwrite:
            raise StageMismatchError(
                f"{stage}: {self.stage_dir(stage)} was produced by other settings or inputs; they differ in {keys}. "
                f"Its outputs would be stale for {list(invalidated)}: pass overwrite_stages=True "
                "(--overwrite_stages) to retrain them, or use another save_dir."
            )
        logger.warning(f"{stage}: settings differ in {keys}; overwrite_stages: retraining {list(invalidated)}")
        self.state.wait_for_everyone()  # every process compared before one deletes
        if self.state.is_main_process:
            for name in invalidated:
                shutil.rmtree(self.stage_dir(name), ignore_errors=True)
        self.state.wait_for_everyone()

    def check_stages(self, overwrite: bool | None = None) -> None:
        """Compare every stage in `save_dir` with the current settings, in stage order. The first that differs is a
        [`StageMismatchError`] naming the keys, or with `overwrite` (default: `overwrite_stages`) is deleted with
        every stage after it."""
        overwrite = self.config.overwrite_stages if overwrite is None else overwrite
        stages = self.stages
        for i, stage in enumerate(stages):
            keys = self.stage_mismatch(stage)
            if keys:
                self._on_mismatch(stage, keys, stages[i:], overwrite)
                return

    def _start_stage(self, stage: str) -> bool:
        """Check `stage` against its recorded settings; `True` when it is finished already (skip it). Otherwise
        record its settings (a resumed stage has the same) and return `False`. A stage called on its own and found
        stale is retrained alone with `overwrite_stages`: the stages after it then differ in its fingerprint."""
        # every process compares before the main process records (a rank still finishing the previous stage read a
        # half-written stage_settings.json), and the record is replaced in one step
        self.state.wait_for_everyone()
        keys = self.stage_mismatch(stage)
        if keys:
            self._on_mismatch(stage, keys, (stage,), self.config.overwrite_stages)
        if self.is_done(stage):
            logger.warning(f"{stage}: done already with the same settings ({self.final_dir(stage)}), skipped")
            return True
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            os.makedirs(self.stage_dir(stage), exist_ok=True)
            path = os.path.join(self.stage_dir(stage), SETTINGS_FILE)
            with open(f"{path}.tmp", "w") as f:
                json.dump(self.stage_settings(stage), f, indent=2)
            os.replace(f"{path}.tmp", path)
        self.state.wait_for_everyone()
        return False

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

    def _stage_args(self, stage: str):
        """The `SFTConfig` / `RewardConfig` / `PPOConfig` of `stage`; a value its config rejects is a `ValueError`
        naming the stage."""
        from trl import RewardConfig, SFTConfig

        from ..trainers.ppo.config import PPOConfig

        c = self.config
        if stage == "ppo":
            # TRL's layout: a rollout batch of per_device_train_batch_size · gradient_accumulation_steps prompts, in
            # num_mini_batches optimizer steps; here ppo_batch_size prompts in mini-batches of ppo_mini_batch_size
            cls = PPOConfig
            values = {
                "max_steps": c.ppo_max_steps,
                "per_device_train_batch_size": c.ppo_mini_batch_size,
                "gradient_accumulation_steps": c.ppo_batch_size // c.ppo_mini_batch_size,
                "num_mini_batches": c.ppo_batch_size // c.ppo_mini_batch_size,
                "num_ppo_epochs": c.ppo_num_ppo_epochs,
                "learning_rate": c.ppo_lr_policy,
                "value_learning_rate": c.ppo_lr_value,
                "logging_steps": 1,
            }
        else:
            sft = stage == "sft"
            cls = SFTConfig if sft else RewardConfig
            values = {
                "num_train_epochs": c.sft_epochs if sft else c.reward_epochs,
                "per_device_train_batch_size": c.sft_batch_size if sft else c.reward_batch_size,
                "learning_rate": c.sft_lr if sft else c.reward_lr,
                "max_length": c.max_length,
                "gradient_checkpointing": False,
            }
        try:
            return cls(**{**self._common_args(stage), **values, **getattr(c, STAGE_ARGS[stage])})
        except (ValueError, TypeError) as error:
            raise ValueError(f"{STAGE_ARGS[stage]}: {cls.__name__} rejects the {stage} settings: {error}") from None

    # Stages

    def run(self) -> dict:
        """Validate ([`validate`]), check the stages in `save_dir` against the settings ([`check_stages`]), write
        `logs/config.json`, then run the stages (skipping finished ones) and return their final directories."""
        self.validate()
        self.check_stages()
        if self.state.is_main_process:
            with open(os.path.join(self.logs_dir, "config.json"), "w") as f:
                json.dump(self.config.to_dict(), f, indent=2)
        if not self.config.sft_data_path:
            logger.warning("sft: no sft_data_path, skipped (the next stages start from model_name)")
        runners = {"sft": self.run_sft, "reward_model": self.run_reward_training, "ppo": self.run_ppo_training}
        return {stage: runners[stage]() for stage in self.stages}

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
        from trl import SFTTrainer

        c, stage = self.config, "sft"
        if not c.sft_data_path:
            raise ValueError("run_sft needs sft_data_path.")
        if self._start_stage(stage):
            return self.final_dir(stage)
        tokenizer = self._tokenizer()
        model = AutoModelForCausalLM.from_pretrained(c.model_name)
        trainer = SFTTrainer(
            model=model,
            args=self._stage_args(stage),
            train_dataset=self._data("sft_data_path"),
            processing_class=tokenizer,
        )
        result = self._train(stage, trainer, tokenizer)
        self._mark_done(stage, {"train_loss": result.training_loss, "steps": result.global_step})
        return self.final_dir(stage)

    def run_reward_training(self) -> str:
        """A one-label reward model from the SFT weights (or `model_name`) on `reward_data_path` with
        `trl.RewardTrainer` (Bradley-Terry; `margin` column and `center_rewards_coefficient` as RewardTrainer has
        them); with `freeze_reward_backbone` only the head trains."""
        from trl import RewardTrainer

        c, stage = self.config, "reward_model"
        if not c.reward_data_path:
            raise ValueError("The reward stage needs reward_data_path.")
        if c.sft_data_path and not self.is_done("sft"):
            raise ValueError("The reward stage starts from the SFT model: run run_sft first.")
        if self._start_stage(stage):
            return self.final_dir(stage)
        source = self.policy_source
        tokenizer = self._tokenizer(source if source != c.model_name else None)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        if c.freeze_reward_backbone:
            for name, param in model.named_parameters():
                param.requires_grad = name.startswith("score.")
        trainer = RewardTrainer(
            model=model,
            args=self._stage_args(stage),
            train_dataset=self._data("reward_data_path"),
            processing_class=tokenizer,
        )
        result = self._train(stage, trainer, tokenizer)
        self._mark_done(stage, {"train_loss": result.training_loss, "steps": result.global_step})
        return self.final_dir(stage)

    def run_ppo_training(self) -> str:
        """PPO of the SFT model against the trained reward model on `ppo_data_path`; the value model starts from the
        SFT weights."""
        from ..trainers.ppo.trainer import PPOTrainer

        c, stage = self.config, "ppo"
        if not c.ppo_data_path:
            raise ValueError("The PPO stage needs ppo_data_path.")
        if not self.is_done("reward_model") or (c.sft_data_path and not self.is_done("sft")):
            raise ValueError("The PPO stage needs the SFT model and a trained reward model: run them first.")
        if self._start_stage(stage):
            return self.final_dir(stage)
        source = self.policy_source
        tokenizer = self._tokenizer(source if source != c.model_name else None)
        reward_model = AutoModelForSequenceClassification.from_pretrained(self.final_dir("reward_model"))
        trainer = PPOTrainer(
            self._stage_args(stage),
            tokenizer,
            AutoModelForCausalLM.from_pretrained(source),
            None,
            reward_model,
            self._data("ppo_data_path"),
            reward_processing_class=AutoTokenizer.from_pretrained(self.final_dir("reward_model")),
        )
        result = self._train(stage, trainer)
        scores = [e["objective/scores"] for e in trainer.state.log_history if "objective/scores" in e]
        self._mark_done(
            stage,
            {"steps": result.global_step, "scores": scores},
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
        self.check_stages(overwrite=False)  # never score models under settings that did not produce them
        device = torch.device("cpu" if self.use_cpu else "cuda")
        models = {"sft": self.policy_source}
        if self.is_done("ppo"):
            models["ppo"] = self.final_dir("ppo")
        if c.eval_sft_data_path:
            rows = self._data("eval_sft_data_path")
            for name, path in models.items():
                results[f"{name}/perplexity"] = self._perplexity(path, rows, device)
        if self.is_done("reward_model"):
            reward = SequenceClassificationReward(
                AutoModelForSequenceClassification.from_pretrained(self.final_dir("reward_model")).to(device).eval(),
                AutoTokenizer.from_pretrained(self.final_dir("reward_model")),
            )
            if c.eval_reward_data_path:
                pairs = self._data("eval_reward_data_path")
                prompts = pairs["prompt"] if "prompt" in pairs.column_names else [""] * len(pairs)
                chosen, rejected = reward(prompts, pairs["chosen"]), reward(prompts, pairs["rejected"])
                results["reward_model/accuracy"] = sum(a > b for a, b in zip(chosen, rejected)) / len(chosen)
                results["reward_model/margin"] = sum(a - b for a, b in zip(chosen, rejected)) / len(chosen)
            if c.eval_ppo_data_path:
                prompts = self._data("eval_ppo_data_path")
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
