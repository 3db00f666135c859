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
"""Reward functions in TRL's convention: `reward(prompts, completions, **columns) -> list[float | None]`."""

from typing import TYPE_CHECKING

from ..import_utils import lazy_getattr


_import_structure = {
    "clip_score": ["CLIPScoreReward"],
    "flow_rtpo": ["FlowRTPOReward", "VLMContinuation", "cvar_reward"],
    "latex": ["LaTeXReward"],
    "reward_model": ["SequenceClassificationReward"],
    "score_parsing": ["parse_score"],
    "similarity": ["SemanticSimilarityReward"],
    "toxicity": ["DETOXIFY_HEADS", "ToxicityReward"],
    "vlm_judge": [
        "JUDGE_PROMPTS",
        "JudgeOutput",
        "JudgeRequest",
        "JudgeResult",
        "LocalVLMJudge",
        "OpenAICompatibleJudge",
        "VLMJudgeReward",
    ],
}

if TYPE_CHECKING:
    from .clip_score import CLIPScoreReward
    from .flow_rtpo import FlowRTPOReward, VLMContinuation, cvar_reward
    from .latex import LaTeXReward
    from .reward_model import SequenceClassificationReward
    from .score_parsing import parse_score
    from .similarity import SemanticSimilarityReward
    from .toxicity import DETOXIFY_HEADS, ToxicityReward
    from .vlm_judge import (
        JUDGE_PROMPTS,
        JudgeOutput,
        JudgeRequest,
        JudgeResult,
        LocalVLMJudge,
        OpenAICompatibleJudge,
        VLMJudgeReward,
    )
else:
    __getattr__, __all__ = lazy_getattr(__name__, _import_structure)
