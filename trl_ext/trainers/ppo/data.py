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
"""The prompts and responses of a token-level PPO rollout: the prompt dataset's check and tokenisation, prompt
encoding, left padding, the cut after the stop token, the scoring of the completions and the [`Rollout`] itself."""

from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import GenerationConfig

from ...rewards.reward_model import is_conversational_prompt


PROMPT_IDS = "prompt_ids"
"""The column [`tokenize_prompts`] adds: the token ids of a `prompt` column's rows (not passed to reward functions)."""


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


def tokenize_prompts(tokenizer, dataset: Dataset, num_proc: int | None = None) -> Dataset:
    """`dataset` with a [`PROMPT_IDS`] column: each `prompt` (text, or messages through the chat template with the
    generation prompt) tokenised without special tokens, over `num_proc` processes (`PPOConfig.dataset_num_proc`, as
    TRL's PPO script tokenised its dataset). A dataset of TRL's pre-tokenised `input_ids` is returned as it is."""
    if "prompt" not in dataset.column_names:
        return dataset
    if PROMPT_IDS in dataset.column_names:
        raise ValueError(f"The dataset has a '{PROMPT_IDS}' column, the name of the prompts' token ids: rename it.")

    def tokenize(row: dict) -> dict:
        prompt = row["prompt"]
        if is_conversational_prompt(prompt):
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return {PROMPT_IDS: tokenizer(prompt, add_special_tokens=False)["input_ids"]}

    return dataset.map(tokenize, num_proc=num_proc, desc="Tokenizing prompts")


def encode_prompts(tokenizer, examples: Dataset, num_embeddings: int) -> tuple[list, list[list[int]]]:
    """The prompts of rows of a [`tokenize_prompts`] dataset in their dataset form (text or messages; decoded from
    `input_ids`) and their token ids, each below the policy's `num_embeddings`."""
    if "prompt" in examples.column_names:
        prompts, ids = examples["prompt"], [list(row) for row in examples[PROMPT_IDS]]
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


def sampling_config(response_length: int, temperature: float, stop_token_id: int) -> GenerationConfig:
    """The rollout's generation: pure sampling at `temperature` (no top-k / top-p / min-p / typical / repetition
    filter, as TRL's PPOTrainer) of up to `response_length` tokens, stopping at `stop_token_id`."""
    return GenerationConfig(
        max_new_tokens=response_length,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        min_p=None,
        typical_p=1.0,
        repetition_penalty=1.0,
        eos_token_id=stop_token_id,
        pad_token_id=stop_token_id,  # fills finished rows and is fed back: a token the policy embeds
        bos_token_id=None,
    )


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
    columns = {k: examples[k] for k in examples.column_names if k not in ("prompt", "completion", PROMPT_IDS)}
    rewards_per_func, scores, unscored = scorer(
        prompts,
        completions=completions,
        completion_ids=completion_ids,
        prompt_completion_ids=sequences,
        prompt_completion_mask=attention_mask,
        **columns,
    )
    return texts, rewards_per_func, scores, unscored


@dataclass
class Rollout:
    r"""
    One rollout batch of token-level PPO on this process (B prompts, prompt length P, response length L), as
    `PPOTrainer._rollout` builds it and the updates read it.

    Parameters:
        prompts (`list`): The B prompts in their dataset form (text or conversational messages).
        completions (`list[str]`): The decoded responses, special tokens skipped.
        sequences (`torch.Tensor`): (B, P + L) prompt + response ids, padding filled with an id every model embeds.
        attention_mask (`torch.Tensor`): (B, P + L) 1 on prompt and response tokens, 0 on padding.
        position_ids (`torch.Tensor`): (B, P + L) positions counted over the attended tokens.
        responses (`torch.Tensor`): (B, L) the response part of `sequences`.
        mask (`torch.Tensor`): (B, L) bool, the response tokens up to and including the stop token.
        weights (`torch.Tensor`): (B, L) float, `mask` without the rows of unscored samples: the tokens of the losses.
        logps (`torch.Tensor`): (B, L) log π of the response tokens under the rollout's policy (logits / T).
        ref_logps (`torch.Tensor`): (B, L) log π_ref of the response tokens (logits / T).
        values (`torch.Tensor`): (B, L) the value model's V_t at the rollout.
        scores (`torch.Tensor`): (B,) the weighted score, `missing_eos_penalty` subtracted; NaN when unscored.
        token_rewards (`torch.Tensor`): (B, L) r_t = −β·KL_t plus the score on the last response token.
        advantages (`torch.Tensor`): (B, L) GAE advantages, whitened over the scored tokens.
        returns (`torch.Tensor`): (B, L) GAE returns, the value model's targets.
        unscored (`torch.Tensor`): (B,) bool, samples no reward scored (they stay out of every loss).
        logs (`dict[str, float]`): The rollout's metrics (TRL's `objective/*`, `val/*`, the rewards').
        forward (`tuple[torch.Tensor, torch.Tensor]`, *optional*): The rollout's policy-and-value forward (logits,
            values) with its graph, when it is also the first update's (`PPOTrainer._rollout_forward_trains`); taken
            once with [`take_forward`].
    """

    prompts: list
    completions: list[str]
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor
    logps: torch.Tensor
    ref_logps: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    token_rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    unscored: torch.Tensor
    logs: dict[str, float]
    forward: tuple[torch.Tensor, torch.Tensor] | None = None

    def take_forward(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rollout's forward with its graph, once (then `None`, so that the graph is freed after its backward)."""
        forward, self.forward = self.forward, None
        return forward
