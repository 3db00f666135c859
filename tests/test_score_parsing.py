"""parse_score: a table of real-looking judge answers (expected values written by hand) and property-based fuzzing."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_ext.rewards import parse_score


# (answer, expected score on 0-10 or None), each expectation written by reading the answer as a human would.
JUDGE_ANSWERS = [
    ("Score: 8.5", 8.5),
    ("8.5/10", 8.5),
    ("Rating: 8.5", 8.5),
    ("8.5", 8.5),
    ("7", 7.0),
    ("**8**.", 8.0),
    ("**Score:** 7", 7.0),
    ("Score: **6**", 6.0),
    ("Final Score: 9/10", 9.0),
    ("I would give this edit a score of 7 out of 10.", 7.0),
    ("Overall: 85/100", 8.5),
    ("Score: 4/5", 8.0),
    ('{"score": 6, "reason": "the shadow direction is wrong"}', 6.0),
    ('Reasoning: the lamp is lit but casts no shadow.\n```json\n{"reasoning": "no shadow", "score": 3}\n```', 3.0),
    ('{"result": {"score": 9}}', 9.0),
    ("{'score': 5}", 5.0),
    ("<Score>4</Score>", 4.0),
    ("评分：8", 8.0),
    ("得分: 6.5", 6.5),
    ("Score: 10", 10.0),
    ("Score: 0", 0.0),
    ("The edit is poor. 3/10", 3.0),
    ("<think>Maybe Score: 2? No, the snow is right.</think>Score: 9", 9.0),
    ("The image has 2 cats and 3 dogs; Score: 6", 6.0),
    ("The score is 7.", 7.0),
    ("Scores: 5", 5.0),
    ("Score: 8/10. The edit follows the instruction: 8/10", 8.0),
    # must NOT produce a number
    ("I cannot tell from this image.", None),
    ("There are 2 cats in the picture.", None),
    ("The edit changed 3 objects and kept 5.", None),
    ("Score: 12", None),
    ("Score: -1", None),
    ("11/10", None),
    ('{"score": "high"}', None),
    ('{"score": 15}', None),
    ('{"score": true}', None),
    ("Score: 3. On reflection, Score: 7.", None),
    ("Score: 7-8", None),
    ("Score: 7 to 8", None),
    ("Lighting: 8/10, physics: 4/10", None),
    ("About 2/3 of the image is sky.", None),
    ("Rating: N/A", None),
    ("", None),
    ("   ", None),
    (None, None),
    ("<think>Score: 8</think>I am not sure.", None),
    ("7 8", None),
]


@pytest.mark.parametrize("answer, expected", JUDGE_ANSWERS)
def test_real_looking_judge_answers(answer, expected):
    assert parse_score(answer) == expected


def test_other_scales():
    assert parse_score("Score: 4", low=1, high=5) == 4.0
    assert parse_score("4/5", low=1, high=5) == 4.0
    assert parse_score("Score: 0", low=1, high=5) is None
    assert parse_score("Score: 7/10", low=1, high=5) is None  # a 0-10 fraction cannot be put on a 1-5 scale
    assert parse_score("Score: 85/100", low=0, high=100) == 85.0


# ---- fuzzing ----------------------------------------------------------------------------------------------------

# Prose without score keywords and without fractions: digits may appear, but never alone.
PROSE_WORDS = ["the", "edit", "cat", "sky", "2", "3.5", "looks", "very", "red", "lamp", "shadow", "17", "is", ",", "."]
prose = st.lists(st.sampled_from(PROSE_WORDS), min_size=0, max_size=12).map(" ".join)
wordy_prose = (
    st.lists(st.sampled_from(PROSE_WORDS), min_size=2, max_size=12)
    .filter(lambda words: any(w.isalpha() for w in words))
    .map(" ".join)
)
scores = st.integers(min_value=0, max_value=100).map(lambda tenths: tenths / 10)
out_of_range = st.one_of(st.integers(11, 1000).map(float), st.integers(1, 90).map(lambda t: -t / 10))
FORMATS = ["Score: {}", "score: {}/10", "Rating = {}", "**Final score:** {}", "{} out of 10", "评分：{}", "{}/10"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.integers(0, 5), st.integers(6, 100))
def test_never_raises_and_stays_in_range(text, low, high):
    value = parse_score(text, low=low, high=high)
    assert value is None or (isinstance(value, float) and low <= value <= high)


@settings(max_examples=200, deadline=None)
@given(prose, st.sampled_from(FORMATS), scores, prose)
def test_a_stated_score_inside_prose_is_found(before, fmt, score, after):
    text = f"{before}. {fmt.format(f'{score:g}')}. {after}"
    assert parse_score(text) == score


@settings(max_examples=200, deadline=None)
@given(prose, scores, prose)
def test_json_answer(before, score, after):
    text = f"{before} {json.dumps({'reasoning': after, 'score': score})}"
    assert parse_score(text) == score


@settings(max_examples=200, deadline=None)
@given(wordy_prose)
def test_no_bare_digit_from_prose(text):
    assert parse_score(text) is None


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FORMATS), st.sampled_from(FORMATS), scores, scores, prose)
def test_two_different_scores_conflict(fmt_a, fmt_b, a, b, middle):
    text = f"{fmt_a.format(f'{a:g}')}. {middle}. {fmt_b.format(f'{b:g}')}"
    assert parse_score(text) == (a if a == b else None)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FORMATS), out_of_range, prose)
def test_out_of_range_is_none(fmt, value, after):
    assert parse_score(f"{fmt.format(f'{value:g}')} {after}") is None


@settings(max_examples=100, deadline=None)
@given(scores)
def test_reply_that_is_only_a_number(score):
    assert parse_score(f"  {score:g}\n") == score
