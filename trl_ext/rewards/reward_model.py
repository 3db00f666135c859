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
reward function, scoring re-tokenised text or, when it shares the policy's tokenizer, the generated token ids."""

import os

import torch


def is_conversational_prompt(prompt) -> bool:
    """Whether a prompt is a list of `{"role": ..., "content": ...}` messages."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) and "role" in prompt[0]


def fill_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`input_ids` with every position outside `attention_mask` set to token 0, as TRL's PPOTrainer fed its models: a
    pad id never reaches a model, whose embeddings may lack the pad token (TRL's recipe adds `[PAD]` to the tokenizer
    without resizing them). Masked positions do not change the outputs at the others."""
    return input_ids.masked_fill(attention_mask == 0, 0)


class SequenceClassificationReward:
    """Score `prompt + completion` with a reward model.

    Text (the default): formatted as `trl.RewardTrainer` formats its training pairs and re-tokenised with the reward
    model's own tokenizer, so policy and reward model may use different vocabularies. Text prompts: the text `prompt +
    completion`, with the reward tokenizer's EOS appended when missing (as RewardTrainer appends it to `chosen` /
    `rejected`). Conversational prompts: the reward tokenizer's chat template over the prompt's messages and
    `{"role": "assistant", "content": completion}`.

    Token ids (`reads_token_ids=True`, for a reward model that shares the policy's tokenizer): the trainer's
    `prompt_completion_ids` and `prompt_completion_mask` keyword arguments, the prompt and the completion as
    generated (cut after the stop token), as TRL's PPOTrainer scored them; no decoding, no re-tokenisation.

    Either way the score is the head's output at the last attended token, and padding never reaches the model
    ([`fill_padding`]). Decoder models (a `score` head, read at every position) are read at that position; other
    classifiers (BERT-like, pooling the first token) are called as they are, on right-padded text.

    Args:
        model (`PreTrainedModel`):
            A `*ForSequenceClassification` model with `num_labels == 1`.
        processing_class (tokenizer):
            The reward model's tokenizer (it needs a pad token).
        batch_size (`int`, *optional*, defaults to `64`):
            Rows per forward.
        reads_token_ids (`bool`, *optional*, defaults to `False`):
            Score the token ids the trainer passes instead of re-tokenised text; needs a `score` head.
    """

    def __init__(self, model, processing_class, batch_size: int = 64, reads_token_ids: bool = False):
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise ValueError(
                f"The reward model {type(model).__name__} has num_labels={num_labels}; a reward model has one label "
                "(load it with `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`)."
            )
        if processing_class.pad_token_id is None:
            raise ValueError("The reward model's tokenizer needs a pad token.")
        if reads_token_ids and getattr(model, "score", None) is None:
            raise ValueError(
                f"reads_token_ids needs a decoder reward model with a `score` head; {type(model).__name__} has none."
            )
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = processing_class.pad_token_id
        self.model, self.processing_class, self.batch_size = model, processing_class, batch_size
        self.reads_token_ids = reads_token_ids
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
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) float32 scores of padded token ids (B, T) at each row's last attended token."""
        input_ids = fill_padding(input_ids, attention_mask)
        head = getattr(self.model, "score", None)
        if head is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        last = (positions * attention_mask).argmax(dim=1)
        return head(hidden[torch.arange(len(hidden), device=hidden.device), last])[:, 0].float()

    def __call__(
        self,
        prompts: list,
        completions: list,
        prompt_completion_ids: torch.Tensor | None = None,
        prompt_completion_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> list[float]:
        device = next(self.model.parameters()).device
        if self.reads_token_ids:
            if prompt_completion_ids is None or prompt_completion_mask is None:
                raise ValueError(
                    "This reward model reads token ids: call it with prompt_completion_ids and prompt_completion_mask."
                )
            batches = [
                (
                    prompt_completion_ids[start : start + self.batch_size],
                    prompt_completion_mask[start : start + self.batch_size],
                )
                for start in range(0, len(prompt_completion_ids), self.batch_size)
            ]
        else:
            texts = self.texts(prompts, completions)
            batches = []
            for start in range(0, len(texts), self.batch_size):
                batch = self.processing_class(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    padding_side="right",
                    add_special_tokens=False,
                )
                batches.append((batch["input_ids"], batch["attention_mask"]))
        scores = [self.score_ids(ids.to(device), mask.to(device)) for ids, mask in batches]
        return torch.cat(scores).tolist()
