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
"""What passes between [`VLMJudgeReward`] and a judge backend: a [`JudgeRequest`] in, a [`JudgeResult`] out, and the
two backend protocols ([`AnswerJudge`] for `mode="generate"`, [`DigitJudge`] for `mode="expected"`)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class JudgeRequest:
    """One judgement: the images the judge sees (in order) and the user text."""

    text: str
    images: list = field(default_factory=list)


@dataclass
class JudgeResult:
    """What a backend returns for one [`JudgeRequest`].

    `probabilities` are the judge's probabilities of the answers 0..10 where its number starts (`"expected"` mode, not
    renormalised), `text` its raw answer when it wrote one, and `error` why the request gave no usable answer (a failed
    request, a malformed reply, an answer without a number or with one out of range); `text` is kept with an error
    when the judge did answer.
    """

    text: str | None = None
    probabilities: list[float] | None = None
    error: str | None = None

    def digit_mass(self, low: int = 0, high: int = 10) -> float | None:
        """The judge's total probability on the answers `low..high`; `None` without probabilities."""
        if self.probabilities is None:
            return None
        return float(sum(self.probabilities[low : high + 1]))


@runtime_checkable
class AnswerJudge(Protocol):
    """A judge backend that writes answers (`mode="generate"`)."""

    name: str

    def generate_answers(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """One result per request, in order: its `text`, or `text=None` and the `error` of a failed request."""
        ...


@runtime_checkable
class DigitJudge(Protocol):
    """A judge backend that gives its probabilities of the answers 0..10 (`mode="expected"`)."""

    name: str

    def score_digits(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """One result per request, in order: its 11 `probabilities`, or `probabilities=None` and the `error`."""
        ...
