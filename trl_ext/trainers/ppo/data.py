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
"""The prompts and responses of a token-level PPO rollout: the prompt dataset's check, prompt encoding, left padding,
the cut after the stop token and the scoring of the completions."""

import torch
from datasets import Dataset

from ...rewards.reward_model import is_conversational_prompt


def check_prompt_dataset(dataset: Dataset | None, name: str) -> Dataset:
    """`dataset` if it has rows and a `prompt` column (text or conversational messages) or TRL's pre-tokenised
    `input_ids`; a clear error otherwise."""
    if dataset is None:
        raise ValueError(f"{name} is required.")
    if "prompt" not in dataset.column_names and "input_ids" not in dataset.column_names:
        raise ValueError(
            f"{name} needs a 'prompt' column (text or conversational messages) or TRL's pre-tokenised "
            f"'input_ids'; it has {dataset.column_names}."
        )
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty.")
    return dataset


def encode_prompts(tokenizer, examples: Dataset, num_embeddings: int) -> tuple[list, list[list[int]]]:
    """The prompts in their dataset form (text or messages; decoded from `input_ids`) and their token ids, each below
    the policy's `num_embeddings`."""
    if "prompt" in examples.column_names:
        prompts = examples["prompt"]
        ids = []
        for prompt in prompts:
            if is_conversational_prompt(prompt):
                text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            else:
                text = prompt
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        ids = [list(row) for row in examples["input_ids"]]
        prompts = tokenizer.batch_decode(ids, skip_special_tokens=False)
    if any(len(row) == 0 for row in ids):
        raise ValueError("A prompt encodes to 0 tokens.")
    outside = {i for row in ids for i in row if not 0 <= i < num_embeddings}
    if outside:
        raise ValueError(
            f"Prompt token ids {sorted(outside)[:5]} are outside the policy's {num_embeddings} embeddings: resize the "
            "embeddings (model.resize_token_embeddings(len(tokenizer))) or drop those tokens."
        )
    return prompts, ids


def left_pad(ids: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) token ids left-padded with `pad_token_id` and their attention mask."""
    length = max(len(row) for row in ids)
    tokens = torch.full((len(ids), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, row in enumerate(ids):
        tokens[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row) :] = 1
    return tokens, mask


def truncate_after_stop(
    responses: torch.Tensor, stop_token_id: int, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response after its first stop token: responses with `pad_token_id` after it, the mask of valid tokens
    (the stop token included) and whether the stop token was generated."""
    is_stop = responses == stop_token_id
    has_stop = is_stop.any(dim=1)
    positions = torch.arange(responses.size(1), device=responses.device)
    first_stop = torch.where(has_stop, is_stop.int().argmax(dim=1), responses.size(1) - 1)
    mask = positions[None, :] <= first_stop[:, None]
    return torch.where(mask, responses, pad_token_id), mask, has_stop


def score_completions(
    scorer,
    tokenizer,
    examples: Dataset,
    prompts: list,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score prompt + response with a [`~trl_ext.rl.scoring.RewardScorer`]: `sequences` (B, P + L) with its
    `attention_mask`, `mask` (B, L) marking the response tokens. Reward functions get the decoded completions (text, or
    an assistant message after conversational prompts), `completion_ids` and the dataset's other columns; reward models
    that share the policy's vocabulary read `prompt_completion_ids` / `prompt_completion_mask`. Returns the
    completions' texts and the scorer's rewards per function, total rewards and unscored mask."""
    responses = sequences[:, -mask.size(1) :]
    completion_ids = [row[m].tolist() for row, m in zip(responses, mask)]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    conversational = is_conversational_prompt(prompts[0])
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    columns = {k: examples[k] for k in examples.column_names if k not in ("prompt", "completion")}
    rewards_per_func, scores, unscored = scorer(
        prompts,
        completions=completions,
        completion_ids=completion_ids,
        prompt_completion_ids=sequences,
        prompt_completion_mask=attention_mask,
        **columns,
    )
    return texts, rewards_per_func, scores, unscored
