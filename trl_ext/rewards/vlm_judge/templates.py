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
"""The judge's prompt templates: the built-in ones ([`JUDGE_PROMPTS`]), which one a sample gets ([`template_name`],
[`template_for`]), reading one by name or file ([`resolve_prompt_template`]) and filling its fields
([`fill_template`])."""

import os
import re


_ANSWER_FORMAT = (
    "Answer on the first line exactly as `Score: N`, where N is an integer from {low} to {high}, then give a short "
    "justification."
)
_EDIT_INTRO = (
    "You are a strict judge of image edits. The editing instruction was:\n{instruction}\n{reference_block}"
    "{images_block}\n"
)
JUDGE_PROMPTS: dict[str, str] = {
    "generic": _EDIT_INTRO
    + "Rate how well the edited image carries out the instruction while keeping everything else "
    "unchanged and looking natural. " + _ANSWER_FORMAT,
    "physics": _EDIT_INTRO + "Judge the physical plausibility of the result: lighting, shadows, reflections, "
    "materials and physical laws must be consistent with the edit. " + _ANSWER_FORMAT,
    "environment": _EDIT_INTRO + "Judge the environmental change: season, weather, time of day, lighting and "
    "atmosphere must change coherently across the whole scene. " + _ANSWER_FORMAT,
    "social": _EDIT_INTRO + "Judge whether the result is culturally and socially appropriate and plausible for the "
    "situation the instruction describes. " + _ANSWER_FORMAT,
    "causal": _EDIT_INTRO + "Judge the cause-and-effect logic: the image must show the consequence the instruction "
    "implies, not only the literal change. " + _ANSWER_FORMAT,
    "referential": _EDIT_INTRO + "Judge whether exactly the object the instruction refers to was edited, and nothing "
    "else. " + _ANSWER_FORMAT,
    "answer": "Question:\n{instruction}\n{images_block}\nAnswer to judge:\n{response}\n{reference_block}\nRate the "
    "correctness and quality of the answer. " + _ANSWER_FORMAT,
}
_FIELD = re.compile(r"\{(instruction|reference_block|images_block|response|low|high)\}")


def resolve_prompt_template(name_or_path: str, templates: dict[str, str] | None = None) -> str:
    """A prompt template by name (`templates` first, then [`JUDGE_PROMPTS`]), or the text of a template file.

    Templates are plain text with the fields `{instruction}`, `{response}`, `{reference_block}`, `{images_block}`,
    `{low}` and `{high}`; every other brace is kept as it is (JSON examples in a template are safe).
    """
    templates = {**JUDGE_PROMPTS, **(templates or {})}
    if name_or_path in templates:
        value = templates[name_or_path]
        return _read_template_file(value) if _looks_like_file(value) else value
    if _looks_like_file(name_or_path):
        return _read_template_file(name_or_path)
    raise ValueError(f"Unknown judge prompt template {name_or_path!r}: not one of {sorted(templates)} nor a file.")


def _looks_like_file(value: str) -> bool:
    return "\n" not in value and len(value) < 4096 and os.path.isfile(value)


def _read_template_file(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def fill_template(template: str, **values: str) -> str:
    """Replace the known `{field}`s of `template` with `values` (missing ones become empty)."""
    return _FIELD.sub(lambda m: str(values.get(m.group(1), "")), template)


def template_name(
    category: str | None,
    prompt_template: str | None = None,
    templates: dict[str, str] | None = None,
    text_answer: bool = False,
) -> str:
    """The name (or file) of the template a sample of `category` is judged with: `prompt_template` when set, else
    `"answer"` for a text answer, the category's own template (in `templates` or [`JUDGE_PROMPTS`]), or `"generic"` for
    a category without one."""
    if prompt_template is not None:
        return prompt_template
    if text_answer:
        return "answer"
    return category if category in {**JUDGE_PROMPTS, **(templates or {})} else "generic"


def template_for(
    category: str | None,
    prompt_template: str | None = None,
    templates: dict[str, str] | None = None,
    text_answer: bool = False,
) -> str:
    """The text of the template a sample of `category` is judged with (see [`template_name`])."""
    return resolve_prompt_template(template_name(category, prompt_template, templates, text_answer), templates)
