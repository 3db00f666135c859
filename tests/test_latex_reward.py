import math

import pytest

from trl_ext.rewards import LaTeXReward
from trl_ext.rewards.latex import is_balanced, parses, strip_math_delimiters


RICH = [
    r"$\frac{a^2+b^2}{\sqrt{c}} = \sum_{i=1}^{n} x_i$",
    r"\[ \int_0^1 x^2 \, dx = \frac{1}{3} \]",
    r"$\lim_{n \to \infty} \left(1 + \frac{1}{n}\right)^n = e$",
]
SHORT = ["$x=1$", "$a+b$", "$2^3$"]
BROKEN = [r"$\frac{a}{b + \left( c$", r"$\sum_{i=1^n x_i$", r"$\begin{pmatrix} 1 & 2 \end{bmatrix} + x^2$"]
PROSE = ["The answer is the sum of the two numbers", "We compute the integral and simplify the result"]
STUFFING = ["print an integer sum frac sqrt", "frac sqrt integral limit sum alpha"]
DOLLARS = ["$$" * 25]


def test_ranks_rich_over_short_over_broken_over_prose_over_stuffing_over_empty():
    reward = LaTeXReward(weights={"explore": 0.0})
    groups = [RICH, SHORT, BROKEN, PROSE, STUFFING, DOLLARS]
    scores = [reward(None, group) for group in groups]
    for better, worse in zip(scores, scores[1:]):
        assert min(better) > max(worse), (better, worse)


def test_components_on_hand_written_formulas():
    reward = LaTeXReward()
    assert parses(r"\frac{1}{2}") and not parses(r"\frac{1}{2")
    assert is_balanced(r"\left( \begin{matrix} a \end{matrix} \right)")
    assert not is_balanced(r"\left( x")  # pylatexenc alone accepts a missing \right
    assert not is_balanced(r"\begin{matrix} a \end{pmatrix}") and not is_balanced("(]")
    unknown = reward.components(r"$\foo{x} + \bar{y} = 2$")
    assert unknown["valid"] == pytest.approx(0.5)  # one of two macros unknown
    assert reward.components(r"$\left( x + y = 2$")["balance"] == 0.0
    assert strip_math_delimiters(r"\[ x^2 \]") == "x^2" and strip_math_delimiters("$$$$") == ""


def test_weights_formula_and_logged_components():
    reward = LaTeXReward(weights={"explore": 0.0, "content": 2.0})
    value = reward(None, [RICH[0]])[0]
    c = reward.last_components
    expected = (
        c["valid"][0] + c["balance"][0] + 2 * c["content"][0] + c["length"][0] - c["stuffing"][0] - 2 * c["empty"][0]
    )
    assert value == pytest.approx(expected) and set(c) == set(LaTeXReward.DEFAULT_WEIGHTS)
    with pytest.raises(ValueError, match="Unknown LaTeX reward components"):
        LaTeXReward(weights={"validity": 1.0})


def test_exploration_bonus_decays_for_repeated_completions():
    reward = LaTeXReward()
    first = reward(None, [RICH[0]])[0]
    again = reward(None, [RICH[0]])[0]
    assert reward.last_components["explore"] == [0.0] and first - again == pytest.approx(0.25)
    assert reward(None, [RICH[1]])[0] > again


def test_correctness_component_checks_the_answer_with_math_verify():
    reward = LaTeXReward(weights={"correct": 2.0})
    completions = [r"$\frac{1}{2}$", r"so the answer is \boxed{\frac{2}{4}}", r"$\frac{1}{3}$", r"$x^2$"]
    solutions = [r"$\frac{1}{2}$", r"$0.5$", r"$\frac{1}{2}$", "no reference answer"]
    values = reward(None, completions, solution=solutions)
    assert reward.last_components["correct"][:3] == [1.0, 1.0, 0.0]
    assert math.isnan(reward.last_components["correct"][3])  # unparseable reference: no term, not a silent 0
    without = LaTeXReward()(None, completions)  # same batch, same exploration history
    expected = [w + 2.0 * a for w, a in zip(without, [1.0, 1.0, 0.0, 0.0])]
    assert values == pytest.approx(expected)
    assert LaTeXReward().weights["correct"] == 0.0  # optional: off by default, no solution column needed
    with pytest.raises(ValueError, match="'solution' dataset column"):
        reward(None, completions)
