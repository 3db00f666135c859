import pytest

from trl_ext.rewards import LaTeXReward
from trl_ext.rewards.latex import is_balanced, parses, strip_math_delimiters


RICH = [r"$\frac{a^2+b^2}{\sqrt{c}} = \sum_{i=1}^{n} x_i$", r"\[ \int_0^1 x^2 \, dx = \frac{1}{3} \]",
        r"$\lim_{n \to \infty} \left(1 + \frac{1}{n}\right)^n = e$"]  # fmt: skip
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
    expected = c["valid"][0] + c["balance"][0] + 2 * c["content"][0] + c["length"][0] - c["stuffing"][0] - 2 * c["empty"][0]
    assert value == pytest.approx(expected) and set(c) == set(LaTeXReward.DEFAULT_WEIGHTS)
    with pytest.raises(ValueError, match="Unknown LaTeX reward components"):
        LaTeXReward(weights={"validity": 1.0})


def test_exploration_bonus_decays_for_repeated_completions():
    reward = LaTeXReward()
    first = reward(None, [RICH[0]])[0]
    again = reward(None, [RICH[0]])[0]
    assert reward.last_components["explore"] == [0.0] and first - again == pytest.approx(0.25)
    assert reward(None, [RICH[1]])[0] > again
