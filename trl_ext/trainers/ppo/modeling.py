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
