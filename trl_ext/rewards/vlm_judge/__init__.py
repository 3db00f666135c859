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
"""A vision-language model as a judge: [`VLMJudgeReward`], its judge backends and prompt templates.

- [`LocalVLMJudge`]: any `AutoModelForImageTextToText` chat VLM (Qwen3-VL, Qwen2.5-VL, LLaVA-NeXT) loaded through
  `trl_ext.hub`, with a torchvision-free processor ([`load_vlm_processor`]); batched (left padding).
- [`OpenAICompatibleJudge`]: a chat-completions server (vLLM's `vllm serve`, the usual way to run a 30B judge), with
  timeouts and bounded retries.

Two scoring modes. `"expected"`: the score is the expectation of the judge's probabilities over the digit tokens where
the number starts, Σ p(d)·d (for 0-10 the probability of "1" is split into "10" and "1" by the probability of "0" after
it). A local judge has its answer prefilled up to the number ("Score: "); a chat server cannot prefill, so the judge
writes "Score: N" and the distribution is read from the `top_logprobs` of the token that starts the number (digits
missing from the top-K count as 0). `"generate"`: the judge writes its answer and [`parse_score`] reads it. A sample
the judge did not score (a reply without an unambiguous score, too little probability on the digits, a server that
kept failing) is `None`, counted, and its raw text kept: never a default.

Modules: `templates` (the prompt templates, which one a sample gets, filling them), `backend` (the request and the
[`JudgeResult`] a backend returns, the backend protocols), `local` and `http` (the two backends), `reward` (the reward).
"""

from .backend import AnswerJudge, DigitJudge, JudgeRequest, JudgeResult
from .http import OpenAICompatibleJudge, digit_probabilities_from_logprobs
from .local import LocalVLMJudge
from .reward import JudgeOutput, ScoringMode, VLMJudgeReward
from .templates import JUDGE_PROMPTS, fill_template, resolve_prompt_template, template_for, template_name


__all__ = [
    "JUDGE_PROMPTS",
    "AnswerJudge",
    "DigitJudge",
    "JudgeOutput",
    "JudgeRequest",
    "JudgeResult",
    "LocalVLMJudge",
    "OpenAICompatibleJudge",
    "ScoringMode",
    "VLMJudgeReward",
    "digit_probabilities_from_logprobs",
    "fill_template",
    "resolve_prompt_template",
    "template_for",
    "template_name",
]
