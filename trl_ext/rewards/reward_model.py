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
"""[`SequenceClassificationReward`]: a `*ForSequenceClassification` reward model (one label) as a TRL-convention
reward function, with its own tokenizer."""

import os

import torch


def is_conversational_prompt(prompt) -> bool:
    """Whether a prompt is a list of `{"role": ..., "content": ...}` messages."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) and "role" in prompt[0]


class SequenceClassificationReward:
    """Score `prompt + completion` with a reward model, formatted as `trl.RewardTrainer` formats its training pairs.

    Text prompts: the text `prompt + completion`, with the reward tokenizer's EOS appended when missing (as
    RewardTrainer appends it to `chosen` / `rejected`). Conversational prompts: the reward tokenizer's chat template
    over the prompt's messages and `{"role": "assistant", "content": completion}`. The texts are re-tokenised with
    the reward model's own tokenizer, so policy and reward model may use different vocabularies.

    Args:
        model (`PreTrainedModel`):
            A `*ForSequenceClassification` model with `num_labels == 1`.
        processing_class (tokenizer):
            The reward model's tokenizer (it needs a pad token).
        batch_size (`int`, *optional*, defaults to `64`):
            Rows per forward.
    """

    def __init__(self, model, processing_class, batch_size: int = 64):
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise ValueError(
                f"The reward model {type(model).__name__} has num_labels={num_labels}; a reward model has one label "
                "(load it with `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`)."
            )
        if processing_class.pad_token_id is None:
            raise ValueError("The reward model's tokenizer needs a pad token.")
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = processing_class.pad_token_id
        self.model, self.processing_class, self.batch_size = model, processing_class, batch_size
        self.__name__ = os.path.basename(os.path.normpath(model.name_or_path or "")) or "reward_model"

    def texts(self, prompts: list, completions: list) -> list[str]:
        """The texts the reward model scores."""
        tokenizer, texts = self.processing_class, []
        for prompt, completion in zip(prompts, completions, strict=True):
            if isinstance(completion, list):  # conversational completion: [{"role": "assistant", "content": ...}]
                completion = completion[-1]["content"]
            if is_conversational_prompt(prompt):
                messages = [*prompt, {"role": "assistant", "content": completion}]
                texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
            else:
                text = prompt + completion
                eos = tokenizer.eos_token
                texts.append(text if eos is None or text.endswith(eos) else text + eos)
        return texts

    @torch.no_grad()
    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        device = next(self.model.parameters()).device
        texts, scores = self.texts(prompts, completions), []
        for start in range(0, len(texts), self.batch_size):
            batch = self.processing_class(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            ).to(device)
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores
