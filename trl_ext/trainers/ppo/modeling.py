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
"""The models of token-level PPO: the value model (a `*ForSequenceClassification` model read at every token), the
module that holds policy and value model, so that one prepared module, one optimizer and one backward train both, and
the reward models."""

import copy

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.modeling_utils import remove_tied_weights_from_state_dict

from ...rewards.reward_model import SequenceClassificationReward


def value_head(model: PreTrainedModel) -> nn.Module:
    """The scalar head of a `*ForSequenceClassification` model (`score`, as Llama / Qwen / GPT-NeoX / GPT-2 name it)."""
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise ValueError(
            f"A value model must be a `*ForSequenceClassification` model with a one-output `score` head; "
            f"{type(model).__name__} has none."
        )
    return head


def load_value_model(path: str, **kwargs) -> PreTrainedModel:
    """`AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`; a head the checkpoint lacks (a causal
    LM's directory) starts at zero, so that the first values are 0."""
    model, info = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, output_loading_info=True, **kwargs
    )
    if any(key.startswith("score.") for key in info["missing_keys"]):
        nn.init.zeros_(value_head(model).weight)
    return model


def value_model_from(model: PreTrainedModel) -> PreTrainedModel:
    """A value model whose backbone copies `model`'s: a copy of a `*ForSequenceClassification` model (its trained head
    kept, e.g. the reward model), or, from a causal LM, the sequence-classification class of its architecture with the
    LM's backbone weights and a zero head."""
    if getattr(model, "score", None) is not None:
        value = copy.deepcopy(model)
        value_head(value)
        return value
    config = copy.deepcopy(model.config)
    config.num_labels, config.architectures = 1, None
    value = AutoModelForSequenceClassification.from_config(config).to(model.dtype)
    value.base_model.load_state_dict(model.base_model.state_dict())
    nn.init.zeros_(value_head(value).weight)
    value.name_or_path = model.name_or_path
    return value.to(next(model.parameters()).device)


def build_value_model(value_model, policy: PreTrainedModel, reward_funcs: list, init: str) -> PreTrainedModel:
    """The value model of `PPOTrainer`: `value_model` when given (a path, a model with a `score` head, or a causal LM
    that gets a zero head), else a copy of the policy's backbone (`init="policy"`) or of the first reward model's
    (`init="reward_model"`, `PPOConfig.value_model_init`)."""
    if value_model is None:
        if init == "reward_model":
            source = next((f.model for f in reward_funcs if isinstance(f, SequenceClassificationReward)), None)
            if source is None:
                raise ValueError("value_model_init='reward_model' needs a reward model among reward_model.")
            return value_model_from(source)
        return value_model_from(policy)
    if isinstance(value_model, str):
        return load_value_model(value_model)
    return value_model_from(value_model) if getattr(value_model, "score", None) is None else value_model


def check_vocabularies(
    policy: PreTrainedModel, value_model: PreTrainedModel, reward_funcs: list, stop_token_id: int
) -> int:
    """Check that the value model and every reward model that reads the policy's ids embed all the ids the policy
    generates, and that the stop token is one of them; returns the policy's number of embeddings. Padding never
    reaches a model (`fill_padding`), so the tokenizer may have a pad token the embeddings lack (TRL's recipe); every id
    a model reads is a prompt id (checked per batch) or a generated one."""
    num_embeddings = policy.get_input_embeddings().num_embeddings
    vocab_size = policy.config.get_text_config().vocab_size
    readers = [("value_model", value_model)]
    readers += [(f.__name__, f.model) for f in reward_funcs if getattr(f, "reads_token_ids", False)]
    for name, model in readers:
        if model.get_input_embeddings().num_embeddings < vocab_size:
            raise ValueError(
                f"{name} has {model.get_input_embeddings().num_embeddings} embeddings but the policy generates ids "
                f"up to {vocab_size}: it must share the policy's vocabulary."
            )
    if stop_token_id >= num_embeddings:
        raise ValueError(f"The stop token {stop_token_id} is outside the policy's vocabulary.")
    return num_embeddings


def reward_functions(reward_model, policy_tokenizer, reward_processing_class, batch_size: int) -> list:
    """`PPOTrainer`'s `reward_model` (one or a list of reward models, paths and callables) as reward functions of TRL's
    convention (see [`reward_function`]), reward models scoring `batch_size` rows per forward."""
    reward_models = reward_model if isinstance(reward_model, list) else [reward_model]
    if reward_model is None or not reward_models:
        raise ValueError("reward_model is required: a reward model, a reward function, or a list of them.")
    return [reward_function(r, policy_tokenizer, reward_processing_class, batch_size) for r in reward_models]


def reward_function(reward, policy_tokenizer, reward_processing_class, batch_size: int):
    """A reward model (or its path) as a [`SequenceClassificationReward`]; callables as they are. A decoder reward model
    whose tokenizer has the policy's vocabulary scores the generated ids (as TRL's PPOTrainer); any other, re-tokenised
    text with `reward_processing_class`, else its own tokenizer (a path), else the policy's."""
    if isinstance(reward, str):
        reward_tokenizer = reward_processing_class or AutoTokenizer.from_pretrained(reward)
        reward = AutoModelForSequenceClassification.from_pretrained(reward)
    elif isinstance(reward, nn.Module):
        if not hasattr(reward, "config"):
            raise TypeError(f"reward_model {type(reward).__name__} is a module without a transformers config.")
        reward_tokenizer = reward_processing_class or policy_tokenizer
    elif not callable(reward):
        raise TypeError(f"reward_model must be a model, a path or a callable, got {type(reward).__name__}.")
    else:
        return reward
    same_vocabulary = (
        reward_tokenizer is policy_tokenizer or reward_tokenizer.get_vocab() == policy_tokenizer.get_vocab()
    )
    return SequenceClassificationReward(
        reward,
        reward_tokenizer,
        batch_size,
        reads_token_ids=same_vocabulary and getattr(reward, "score", None) is not None,
    )


class PolicyAndValueModel(nn.Module):
    """Policy and value model under one module: a forward returns the policy's logits and the value of every kept
    position, so that DDP / DeepSpeed see one model and one backward trains both.

    `forward(input_ids, attention_mask, position_ids, logits_to_keep)` returns `(logits, values)` for the last
    `logits_to_keep` positions: `(B, K, V)` and `(B, K)` float32.
    """

    def __init__(self, policy: PreTrainedModel, value_model: PreTrainedModel):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        value_head(value_model)

    @property
    def critic_head(self) -> nn.Module:
        return value_head(self.value_model)

    @property
    def critic_backbone(self) -> nn.Module:
        return getattr(self.value_model, self.value_model.base_model_prefix)

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int):
        logits = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=logits_to_keep,
            use_cache=False,
        ).logits
        hidden = self.critic_backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        values = self.critic_head(hidden[:, -logits_to_keep:]).squeeze(-1)
        return logits, values.float()

    # what `trl.models.unwrap_model_for_generation` and `RLLoopTrainer._prepare` call

    @property
    def is_gradient_checkpointing(self) -> bool:
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # (transformers 5 renamed it)
            if hasattr(type(self.policy), name) or hasattr(self.policy, name):
                return bool(getattr(self.policy, name))
        return False

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        for model in (self.policy, self.value_model):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            if kwargs.get("use_reentrant", True) and hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()  # frozen embeddings (LoRA) under reentrant checkpointing

    def gradient_checkpointing_disable(self) -> None:
        for model in (self.policy, self.value_model):
            model.gradient_checkpointing_disable()


def drop_tied_weights(models: list[nn.Module], weights: list[dict], output_dir: str) -> None:
    """`accelerate.Accelerator.save_state` pre-hook: remove tied weights (an LM head tied to the input embeddings) from
    the state dicts about to be saved, as `PreTrainedModel.save_pretrained` does, so that the checkpoint holds each
    tensor once under the name transformers keeps. Without it accelerate removes them itself and warns "Removed shared
    tensor" at every checkpoint; loading (safetensors' `load_model`) re-ties them either way."""
    for model, state_dict in zip(models, weights):
        remove_tied_weights_from_state_dict(state_dict, model)


def sequence_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) of `tokens`: (B, L, V) logits predicting (B, L) tokens -> (B, L) float32."""
    from trl.trainer.utils import selective_log_softmax

    return selective_log_softmax(logits.float() / temperature, tokens)
