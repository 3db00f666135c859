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
r"""A LaTeX formula reward with separately weighted and logged components.

For a completion c (the math-mode delimiters `$`, `$$`, `\(`, `\[` are stripped first):

    R(c) = w_valid·V + w_balance·B·M + w_content·C + w_length·L·M − w_stuffing·K − w_empty·E + w_explore·X
           + w_correct·A

- V, validity ∈ [0, 1]: c parses with pylatexenc without error (non-tolerant parsing), contains math, and the
  fraction of its macros outside a whitelist of known math macros is subtracted (pylatexenc alone accepts `\foo`);
- B, balance ∈ {0, 1}: `{}`, `[]`, `()`, `\left…\right` and `\begin{x}…\end{x}` are balanced and properly nested;
- C, content ∈ [0, 1]: distinct mathematical constructs used (fractions, roots, big operators, sub/superscripts,
  relations, operators, Greek letters, environments, digits), divided by `content_saturation`;
- L, length ∈ [0, 1]: 1 inside [min_length, max_length] characters, decaying linearly to 0 outside;
- M ∈ {0, 1}: whether c contains any mathematical construct (balance and length earn nothing for plain prose);
- K, keyword stuffing ∈ [0, 1]: fraction of words that are bare math keywords written as prose (`frac`, `sqrt`, ...);
- E, empty ∈ {0, 1}: nothing is left after stripping delimiters and whitespace (e.g. 25 × `$$`);
- X, exploration ∈ [0, 1]: 1 − the highest character-trigram Jaccard similarity to the last `history_size`
  completions seen, so repeating one formula stops paying;
- A, correctness ∈ {0, 1} (optional, w_correct = 0 by default): the completion's answer (`\boxed{}` first, else its
  LaTeX) equals the reference solution of the `solution` column by math-verify's symbolic check (`pip install
  trl_ext[math]`). A reference that math-verify cannot parse gives no correctness term for that sample (logged as
  NaN), never a silent 0.

The seed's reward gave +1.00 to a valid formula, to keyword-stuffed prose, to 25 × `$$` and to broken LaTeX alike;
with the default weights this one ranks a valid, rich formula > a trivially short one > broken LaTeX > prose >
keyword stuffing > 25 × `$$` (tested).
"""

import importlib.util
import math
import re
import threading
from collections import deque

from pylatexenc.latexwalker import LatexWalker, LatexWalkerError, get_default_latex_context_db

from .utils import completion_texts


KNOWN_MACROS = frozenset(
    """frac dfrac tfrac sqrt sum prod int iint oint lim sup inf max min log ln exp sin cos tan cot sec csc arcsin
    arccos arctan sinh cosh tanh det dim ker deg gcd binom cdot times div pm mp leq geq neq approx equiv sim simeq
    cong propto le ge ne lt gt infty partial nabla forall exists in notin subset subseteq supset supseteq cup cap
    setminus emptyset mathbb mathrm mathbf mathcal mathit text left right big Big bigg Bigg quad qquad ldots cdots
    vdots ddots dots to rightarrow leftarrow Rightarrow Leftarrow leftrightarrow iff implies mapsto alpha beta gamma
    delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi varpi rho sigma tau upsilon phi
    varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega hat bar tilde vec dot ddot
    overline underline overbrace underbrace begin end operatorname boxed mid parallel perp angle circ prime
    langle rangle lfloor rfloor lceil rceil vert Vert neg land lor oplus otimes bmod pmod""".split()
)
MATH_KEYWORDS = frozenset(
    "frac sqrt sum int integral prod lim limit derivative integer alpha beta gamma theta pi sigma infty".split()
)
_CONSTRUCTS = {
    "fraction": r"\\[dt]?frac|\\binom",
    "root": r"\\sqrt",
    "big_operator": r"\\(?:sum|prod|int|iint|oint|lim|max|min|sup|inf)\b",
    "superscript": r"\^",
    "subscript": r"_",
    "relation": r"=|<|>|\\(?:leq|geq|neq|approx|equiv|le|ge|ne|sim|in|subset|to|rightarrow)\b",
    "operator": r"[+\-*/]|\\(?:cdot|times|div|pm)\b",
    "greek": r"\\(?:alpha|beta|gamma|delta|epsilon|theta|lambda|mu|pi|sigma|phi|omega|Gamma|Delta|Sigma|Omega)\b",
    "environment": r"\\begin\{",
    "function": r"\\(?:log|ln|exp|sin|cos|tan)\b",
    "digit": r"\d",
}
_DELIMITERS = re.compile(r"^\s*(\$\$|\$|\\\[|\\\()|(\$\$|\$|\\\]|\\\))\s*$")
_PAIRS = {"}": "{", "]": "[", ")": "("}


def strip_math_delimiters(text: str) -> str:
    """Remove math-mode delimiters around (and empty `$$` pairs inside) a completion."""
    text = text.strip()
    previous = None
    while previous != text:
        previous, text = text, _DELIMITERS.sub("", text).strip()
    return text.replace("$$", "").replace("$", "").strip()


def _macro_names(formula: str) -> list[str]:
    return re.findall(r"\\([A-Za-z]+)", formula)


def parses(formula: str) -> bool:
    """Whether pylatexenc parses `formula` in math mode without error (non-tolerant)."""
    walker = LatexWalker(formula, latex_context=get_default_latex_context_db(), tolerant_parsing=False)
    try:
        nodes, _, _ = walker.get_latex_nodes(parsing_state=walker.make_parsing_state(in_math_mode=True))
    except LatexWalkerError:
        return False
    return nodes is not None


def is_balanced(formula: str) -> bool:
    """Braces, brackets, parentheses, `\\left…\\right` and `\\begin{x}…\\end{x}` are balanced and nested."""
    stack: list[str] = []
    # \left and \right swallow the delimiter that follows them (\left( ... \right.), which is not a bracket of its own
    pattern = r"\\begin\{(\w+\*?)\}|\\end\{(\w+\*?)\}|\\(?:left|right)\s*(?:\\[A-Za-z]+|\\.|.)|\\[{}]|[{}\[\]()]"
    for match in re.finditer(pattern, formula):
        token = match.group(0)
        if token.startswith("\\begin"):
            stack.append("env:" + match.group(1))
        elif token.startswith("\\end"):
            if not stack or stack.pop() != "env:" + match.group(2):
                return False
        elif token.startswith("\\left"):
            stack.append("left")
        elif token.startswith("\\right"):
            if not stack or stack.pop() != "left":
                return False
        elif token in ("{", "[", "("):
            stack.append(token)
        elif token in _PAIRS:
            if not stack or stack.pop() != _PAIRS[token]:
                return False
    return not stack


class LaTeXReward:
    """Reward for LaTeX math completions (formula and weights in the module docstring).

    Args:
        weights (`dict[str, float]`, *optional*): Overrides of the component weights `valid`, `balance`, `content`,
            `length`, `stuffing`, `empty`, `explore` (defaults 1, 1, 1, 1, 1, 2, 0.25).
        min_length, max_length (`int`): The length window in characters (default 16–400).
        content_saturation (`int`): Distinct constructs for full content credit (default 4).
        history_size (`int`): Recent completions remembered for the exploration bonus (default 256).
        solution_column (`str`): Dataset column with the reference solutions, read when the `correct` weight is
            non-zero (S1K-1.1: `solution`).

    After each call, `last_components` maps each component name to its per-completion values, for logging.
    """

    __name__ = "latex_reward"
    DEFAULT_WEIGHTS = {
        "valid": 1.0,
        "balance": 1.0,
        "content": 1.0,
        "length": 1.0,
        "stuffing": 1.0,
        "empty": 2.0,
        "explore": 0.25,
        "correct": 0.0,
    }

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        min_length: int = 16,
        max_length: int = 400,
        content_saturation: int = 4,
        history_size: int = 256,
        solution_column: str = "solution",
    ):
        unknown = set(weights or {}) - set(self.DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(
                f"Unknown LaTeX reward components {sorted(unknown)}; known: {sorted(self.DEFAULT_WEIGHTS)}."
            )
        if not 0 < min_length <= max_length:
            raise ValueError(f"Need 0 < min_length <= max_length, got {min_length} and {max_length}.")
        self.weights = {**self.DEFAULT_WEIGHTS, **(weights or {})}
        self.min_length, self.max_length = min_length, max_length
        self.content_saturation = content_saturation
        self.history: deque[set[str]] = deque(maxlen=history_size)
        self.solution_column = solution_column
        if self.weights["correct"] and importlib.util.find_spec("math_verify") is None:
            raise ImportError("The 'correct' component needs math-verify: pip install 'trl_ext[math]'.")
        self.last_components: dict[str, list[float]] = {}

    def components(self, completion: str) -> dict[str, float]:
        """Every component of one completion, before weighting; does not update the exploration history."""
        formula = strip_math_delimiters(completion)
        constructs = {name for name, pattern in _CONSTRUCTS.items() if re.search(pattern, formula)}
        has_math = float(bool(constructs))
        macros = _macro_names(formula)
        unknown_fraction = sum(m not in KNOWN_MACROS for m in macros) / len(macros) if macros else 0.0
        words = re.findall(r"(?<!\\)\b[A-Za-z]{2,}\b", formula)
        length = len(formula)
        if length < self.min_length:
            length_score = length / self.min_length
        elif length > self.max_length:
            length_score = max(0.0, 1 - (length - self.max_length) / self.max_length)
        else:
            length_score = 1.0
        return {
            "valid": has_math * float(parses(formula)) * (1 - unknown_fraction),
            "balance": has_math * float(is_balanced(formula)),
            "content": min(1.0, len(constructs) / self.content_saturation),
            "length": has_math * length_score,
            "stuffing": sum(w.lower() in MATH_KEYWORDS for w in words) / len(words) if words else 0.0,
            "empty": float(not formula),
        }

    def state_dict(self) -> dict[str, list[list[str]]]:
        """The exploration history (what a trainer checkpoints, so that a resumed run scores as an uninterrupted one)."""
        return {"history": [sorted(grams) for grams in self.history]}

    def load_state_dict(self, state: dict[str, list[list[str]]]) -> None:
        self.history.clear()
        self.history.extend(set(grams) for grams in state["history"])

    def _exploration(self, completion: str) -> tuple[float, set[str]]:
        grams = {completion[i : i + 3] for i in range(max(1, len(completion) - 2))}
        similarity = max((len(grams & seen) / len(grams | seen) for seen in self.history), default=0.0)
        return 1.0 - similarity, grams

    def __call__(self, prompts: list | None = None, completions: list | None = None, **kwargs) -> list[float]:
        texts = completion_texts(completions)
        correct = [None] * len(texts)
        if self.weights["correct"]:
            if kwargs.get(self.solution_column) is None:
                raise ValueError(
                    f"LaTeXReward's 'correct' component needs the reference solutions in the {self.solution_column!r} "
                    "dataset column."
                )
            correct = [
                answer_is_correct(text, solution)
                for text, solution in zip(texts, kwargs[self.solution_column], strict=True)
            ]
        rewards, columns = [], {name: [] for name in self.weights}
        sign = {"stuffing": -1.0, "empty": -1.0}
        for text, is_correct in zip(texts, correct):
            values = self.components(text)
            values["explore"], grams = self._exploration(text)
            self.history.append(grams)
            values["correct"] = float("nan") if is_correct is None else float(is_correct)
            rewards.append(
                sum(
                    sign.get(name, 1.0) * self.weights[name] * value
                    for name, value in values.items()
                    if not math.isnan(value)
                )
            )
            for name, value in values.items():
                columns[name].append(value)
        self.last_components = columns
        return rewards


def answer_is_correct(completion: str, solution: str) -> bool | None:
    """Whether the completion's answer (`\\boxed{}` first, else its LaTeX) equals `solution` by math-verify's symbolic
    check; `None` when math-verify cannot parse the reference."""
    from math_verify import LatexExtractionConfig, parse, verify

    # math-verify's timeouts use signal.alarm, which works only in the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(solution, parsing_timeout=timeout)
    if not gold:
        return None
    config = LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=True)
    answer = parse(completion, extraction_config=[config], parsing_timeout=timeout)
    return bool(answer) and verify(gold, answer, timeout_seconds=timeout)
