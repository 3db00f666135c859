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
"""Strict parsing of a judge's free-text answer into a score: [`parse_score`].

Public benchmarks turn an unparseable judge answer into a default (5.0, 0, the midpoint, a random number) or take any
stray digit from the prose. [`parse_score`] returns `None` instead, so the caller can mask and count the sample.
"""

import json
import math
import re


__all__ = ["SCORE_PREFIX_NOISE", "out_of_range_reason", "parse_score"]

SCORE_PREFIX_NOISE = " \t\r\n*"  # white space and Markdown emphasis between "Score:" and the number

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
# "Score: 7-8" is a range, not a score.
_RANGE_AFTER = r"(?!\s*(?:-|–|~|to)\s*\d)"
_KEYWORD = r"(?:(?<![A-Za-z])(?:(?:final\s+|overall\s+)?(?:score|rating)s?|overall)(?![A-Za-z])|评分|得分|分数)"
_SEPARATOR = r"[\"']?\s*\**\s*(?:[:：=]|\bis\b)\s*\**\s*"
_DENOMINATOR = rf"(?:\s*(?:/|\bout\s+of\b)\s*(?P<den>{_NUMBER}))?"
_ANCHORED = re.compile(rf"{_KEYWORD}{_SEPARATOR}(?P<num>{_NUMBER})(?![\d])(?:{_DENOMINATOR}){_RANGE_AFTER}", re.I)
_TAG = re.compile(rf"<score>\s*(?P<num>{_NUMBER})\s*</score>", re.I)
_FRACTION = re.compile(
    rf"(?<![\w.])(?P<num>{_NUMBER})\s*(?:/|\bout\s+of\b)\s*(?P<den>{_NUMBER})(?![\w]|\.\d|\s*/)", re.I
)
_ONLY_NUMBER = re.compile(rf"^\W*?(?P<num>{_NUMBER})\W*$")
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_JSON_SCORE_KEYS = ("score", "final_score", "overall_score", "rating")


def _in_range(value: float, low: float, high: float) -> bool:
    return math.isfinite(value) and low <= value <= high


def _rescale(num: float, den: float | None, low: float, high: float, allow_other_scales: bool) -> float | None:
    """`num / den` on the [low, high] scale: a denominator equal to `high` keeps `num`; another one (5, 100, ...) is
    accepted only when `allow_other_scales` (an explicit score keyword) and the scale starts at 0."""
    if den is None or den == high:
        return num
    if not allow_other_scales or low != 0 or den <= 0 or not 0 <= num <= den:
        return math.nan  # a fraction that cannot be a score on this scale: invalid, not ignored
    return num / den * high


def _json_objects(text: str) -> list[dict]:
    """Every `{...}` substring that `json.loads` to a dict, in order of appearance (nested ones included)."""
    objects, starts = [], [i for i, char in enumerate(text) if char == "{"]
    decoder = json.JSONDecoder()
    for start in starts:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            objects.append((start, value))
    return [value for _, value in objects]


def _json_score(text: str) -> tuple[bool, float | None]:
    """(found, value) from the last JSON object with a score key; a non-numeric value gives (True, None)."""
    for value in reversed(_json_objects(text)):
        for key in _JSON_SCORE_KEYS:
            if key in value:
                score = value[key]
                if isinstance(score, bool):
                    return True, None
                if isinstance(score, (int, float)):
                    return True, float(score)
                if isinstance(score, str) and re.fullmatch(rf"\s*{_NUMBER}\s*", score):
                    return True, float(score)
                return True, None
    return False, None


def parse_score(text: str | None, low: float = 0, high: float = 10) -> float | None:
    r"""
    The score a judge gave in `text`, or `None` when the answer holds no unambiguous score in `[low, high]`.

    Rules, strict first (a `<think>...</think>` block is dropped before any of them):

    1. The last JSON object with a `score` (or `final_score`, `overall_score`, `rating`) key decides: its value must
       be a number (or a numeric string) in range, else `None`.
    2. Anchored scores: `Score: 8.5`, `**Final score:** 7/10`, `Rating = 9`, `score is 6`, `评分：8`, `<score>4</score>`;
       then fractions `N/high` and `N out of high`. A keyword followed by `N/5` or `N/100` is rescaled (when `low` is
       0: 85/100 → 8.5); a bare fraction must have `high` as its denominator. All such scores in the text must agree:
       two different values (`Score: 3 ... Score: 7`) give `None`, and so does any one of them out of range.
    3. A reply that is only a number (`"7"`, `"**8.5**."`).

    Never a bare digit taken from prose ("There are 2 cats"), never a default: anything else is `None`. A range
    ("Score: 7-8") is ambiguous and gives `None`.

    Parameters:
        text (`str` or `None`):
            The judge's answer.
        low (`float`, *optional*, defaults to `0`):
            Lowest valid score.
        high (`float`, *optional*, defaults to `10`):
            Highest valid score (also the denominator expected in `N/high`).

    Returns:
        `float` or `None`: the score, or `None` when it cannot be parsed.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = _THINK.sub(" ", text)
    if "</think>" in text.lower():  # an unclosed (truncated-start) reasoning block: keep what follows it
        text = text[text.lower().rindex("</think>") + len("</think>") :]

    found, score = _json_score(text)
    if found:
        return score if score is not None and _in_range(score, low, high) else None

    values: list[float] = []
    spans: list[tuple[int, int]] = []
    for pattern, keyword in ((_ANCHORED, True), (_TAG, True), (_FRACTION, False)):
        for match in pattern.finditer(text):
            if any(start <= match.start("num") < end for start, end in spans):
                continue  # the number of "Score: 8/10" is counted once
            den = match.groupdict().get("den")
            value = _rescale(float(match["num"]), float(den) if den is not None else None, low, high, keyword)
            if not keyword and (float(den) != high or float(match["num"]) > float(den)):
                continue  # "2/3 of the image", "on 2024/10": not a score at all
            values.append(value)
            spans.append((match.start("num"), match.end()))
    if values:
        if not all(_in_range(value, low, high) for value in values):
            return None
        if max(values) - min(values) > 1e-9:
            return None
        return values[-1]

    match = _ONLY_NUMBER.match(text.strip())
    if match:
        value = float(match["num"])
        return value if _in_range(value, low, high) else None
    return None


def out_of_range_reason(text: str, low: float, high: float, score_prefix: str = "Score: ") -> str | None:
    """Why `text` is unscored when the number it wrote right after its first `score_prefix` followed by a number
    (white space, `*` and case ignored, as the HTTP judge reads its logprobs) is outside `low..high`
    (`"**Score:** 11"`), else `None`."""
    target = re.escape(score_prefix.strip(SCORE_PREFIX_NOISE))
    match = re.search(rf"{target}[{re.escape(SCORE_PREFIX_NOISE)}]*([-+]?\d+(?:\.\d+)?)", text, re.IGNORECASE)
    if match is None or low <= float(match.group(1)) <= high:
        return None
    return f"the score {match.group(1)} after {score_prefix.strip()!r} in the answer is out of range {low:g}..{high:g}"
