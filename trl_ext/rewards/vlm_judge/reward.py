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
"""[`VLMJudgeReward`]: a judge backend ([`LocalVLMJudge`], [`OpenAICompatibleJudge`]) as a reward in TRL's convention."""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from transformers.utils import logging

from ..score_parsing import out_of_range_reason, parse_score
from ..utils import completion_texts, to_pil_images
from .backend import AnswerJudge, DigitJudge, JudgeRequest, JudgeResult
from .local import LocalVLMJudge
from .templates import fill_template, resolve_prompt_template, template_for, template_name


logger = logging.get_logger(__name__)

ScoringMode = Literal["expected", "generate"]
JudgeStatus = Literal["ok", "parse_failure", "low_digit_mass", "error"]


@dataclass
class JudgeOutput:
    """What the judge said about one request.

    `score` is `None` unless `status == "ok"`; `text` is the raw answer (generate mode, and expected mode with a judge
    that writes its answer, [`OpenAICompatibleJudge`]), `digit_mass` the judge's total probability on the valid
    digits (expected mode; `None` when the judge gave no probabilities, e.g. a failed request) and `error` why an
    unscored sample has no score (a failed request, an answer without a usable score) when it is known.
    """

    score: float | None
    status: JudgeStatus
    text: str | None = None
    digit_mass: float | None = None
    error: str | None = None


def _prompt_text(prompt: Any) -> str:
    """The user's text of a TRL prompt: a string, or the last user message of a conversation (text parts joined)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        users = [m for m in prompt if m.get("role") == "user"] or prompt
        content = users[-1].get("content", "")
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return str(prompt)


def _as_image_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [image for image in value if image is not None]
    return [value]


class VLMJudgeReward:
    r"""
    A VLM judge as a reward in TRL's convention: `reward(prompts, completions, **columns) -> list[float | None]`.

    - As an image reward (`FlowRTPOTrainer`, which passes `images` as a (B, 3, H, W) tensor in [0, 1], or PIL
      images, and no completions): each image is judged against its prompt (the instruction).
    - As a text reward (`TPRLGRPOTrainer` / TRL trainers): each completion is judged as an answer to its prompt, with
      the sample's `image`/`images` column shown to the judge.

    Optional columns: `category` (picks the prompt template of that name when there is one), `reference` (the expected
    outcome, shown to the judge), `source_image` (shown before the judged image when `compare_with_original`).

    A sample the judge did not score is `None` (TRL masks it), counted in `parse_failures`, `low_digit_mass` or
    `judge_errors`, logged, and its raw answer kept in `last_outputs`. `last_components` holds the per-sample scores,
    digit masses and the counts of the last call.

    Parameters:
        judge (`str`, `LocalVLMJudge`, `OpenAICompatibleJudge` or another backend):
            A backend ([`DigitJudge`] for `"expected"`, [`AnswerJudge`] for `"generate"`: a `name` and
            `score_digits` / `generate_answers` returning one [`JudgeResult`] per request), or a model for
            [`LocalVLMJudge.from_pretrained`] (a `trl_ext.hub` key, Hub id or directory).
        mode (`str`, *optional*, defaults to `"expected"`):
            `"expected"` (Σ p·d over the digit tokens: prefilled "Score: " for a local judge, the `top_logprobs` of
            the answer's number for [`OpenAICompatibleJudge`]) or `"generate"` (generate, then [`parse_score`]).
        prompt_template (`str`, *optional*):
            Template name or file used for every sample; by default the sample's category template (or `"generic"`)
            for images and `"answer"` for text completions.
        templates (`dict[str, str]`, *optional*):
            Extra or replacement templates by name (text or file path).
        compare_with_original (`bool`, *optional*, defaults to `False`):
            Show the `source_image` column before the judged image.
        batch_size (`int`, *optional*, defaults to `8`):
            Requests per judge call.
        low (`int`, *optional*, defaults to `0`), high (`int`, *optional*, defaults to `10`):
            Score range; `"expected"` mode needs 0 <= low < high <= 10.
        min_digit_mass (`float`, *optional*, defaults to `0.5`):
            In `"expected"` mode, a sample whose probability on the valid digits is below this is unscored.
        scale (`float`, *optional*, defaults to `1.0`):
            The reward is `scale * score`.
        sources (`ModelSources`, *optional*), dtype, attn_implementation, device, max_new_tokens, generation_kwargs:
            Passed to [`LocalVLMJudge.from_pretrained`] when `judge` is a model name.
    """

    __name__ = "vlm_judge"

    def __init__(
        self,
        judge,
        mode: ScoringMode = "expected",
        prompt_template: str | None = None,
        templates: dict[str, str] | None = None,
        compare_with_original: bool = False,
        batch_size: int = 8,
        low: int = 0,
        high: int = 10,
        min_digit_mass: float = 0.5,
        scale: float = 1.0,
        category_column: str = "category",
        reference_column: str = "reference",
        source_image_column: str = "source_image",
        sources=None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        device: str | None = None,
        max_new_tokens: int = 128,
        generation_kwargs: dict | None = None,
    ):
        if mode not in ("expected", "generate"):
            raise ValueError(f"mode must be 'expected' or 'generate', got {mode!r}.")
        if isinstance(judge, (str, os.PathLike)):
            judge = LocalVLMJudge.from_pretrained(
                os.fspath(judge),
                sources,
                dtype=dtype,
                attn_implementation=attn_implementation,
                device=device,
                max_new_tokens=max_new_tokens,
                generation_kwargs=generation_kwargs,
            )
        if mode == "expected" and not isinstance(judge, DigitJudge):
            raise ValueError(
                f"mode='expected' needs the judge's probabilities (`score_digits`): {type(judge).__name__} has none."
            )
        if mode == "generate" and not isinstance(judge, AnswerJudge):
            raise ValueError(
                f"mode='generate' needs the judge's answers (`generate_answers`): {type(judge).__name__} has none."
            )
        if mode == "expected" and not (0 <= low < high <= 10 and int(low) == low and int(high) == high):
            raise ValueError(f"mode='expected' scores integers 0..10: got low={low}, high={high}.")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1.")
        self.judge = judge
        self.mode = mode
        self.templates = dict(templates or {})
        self.prompt_template = prompt_template
        if prompt_template is not None:
            resolve_prompt_template(prompt_template, self.templates)  # fail early on an unknown name
        self.compare_with_original = compare_with_original
        self.batch_size = batch_size
        self.low, self.high = low, high
        self.min_digit_mass = min_digit_mass
        self.scale = scale
        self.category_column = category_column
        self.reference_column = reference_column
        self.source_image_column = source_image_column
        self.parse_failures = 0
        self.low_digit_mass = 0
        self.judge_errors = 0
        self.last_outputs: list[JudgeOutput] = []
        self.last_components: dict[str, Any] = {}

    @property
    def judge_name(self) -> str:
        return str(self.judge.name)

    def template_name(self, category: str | None, text_answer: bool = False) -> str:
        """The name (or file) of the template used for a sample of `category` (see
        [`~trl_ext.rewards.vlm_judge.templates.template_name`])."""
        return template_name(category, self.prompt_template, self.templates, text_answer)

    def template_for(self, category: str | None, text_answer: bool = False) -> str:
        """The template text used for a sample of `category` (see [`~VLMJudgeReward.template_name`])."""
        return template_for(category, self.prompt_template, self.templates, text_answer)

    def build_request(
        self,
        instruction: str,
        image=None,
        category: str | None = None,
        reference: str | None = None,
        source_image=None,
        response: str | None = None,
    ) -> JudgeRequest:
        """The judge request for one sample: the judged `image` (or text `response`) for `instruction`."""
        text_answer = response is not None
        template = self.template_for(category, text_answer=text_answer)
        images = []
        if text_answer:
            images = _as_image_list(image)
            images_block = "The image is part of the question.\n" if images else ""
        elif self.compare_with_original and source_image is not None:
            images = [source_image, image]
            images_block = "The first image is the original, the second one the edited result.\n"
        else:
            images = [image]
            images_block = "The image is the edited result.\n"
        reference_block = f"Expected outcome: {reference}\n" if reference else ""
        text = fill_template(
            template,
            instruction=instruction,
            response=response or "",
            reference_block=reference_block,
            images_block=images_block,
            low=str(self.low),
            high=str(self.high),
        )
        return JudgeRequest(text=text, images=[im.convert("RGB") if hasattr(im, "convert") else im for im in images])

    def judge_requests(self, requests: Sequence[JudgeRequest], progress: bool = False) -> list[JudgeOutput]:
        """Judge `requests` in batches of `batch_size`; the counters are updated."""
        outputs: list[JudgeOutput] = []
        batches = range(0, len(requests), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="judging", unit="batch")
        for start in batches:
            outputs.extend(self._judge_batch(list(requests[start : start + self.batch_size])))
        for output in outputs:
            if output.status == "parse_failure":
                self.parse_failures += 1
            elif output.status == "low_digit_mass":
                self.low_digit_mass += 1
            elif output.status == "error":
                self.judge_errors += 1
        unscored = [o for o in outputs if o.status != "ok"]
        if unscored:
            logger.warning(
                f"{self.judge_name}: {len(unscored)}/{len(outputs)} samples unscored "
                f"({', '.join(sorted({o.status for o in unscored}))}); e.g. {str(unscored[0].text)[:120]!r}"
            )
        return outputs

    def _checked_results(self, results: list[JudgeResult], n: int, needed: str) -> list[JudgeResult]:
        """`results` of a backend asked for `n` judgements: one per request, each with its `needed` value or an
        `error`."""
        if len(results) != n or any(getattr(r, needed) is None and r.error is None for r in results):
            raise ValueError(
                f"The judge {self.judge_name} returned {len(results)} results for {n} requests, or a result with neither "
                f"`{needed}` nor `error`."
            )
        return results

    def _judge_batch(self, requests: list[JudgeRequest]) -> list[JudgeOutput]:
        if self.mode == "expected":
            results = self._checked_results(self.judge.score_digits(requests), len(requests), "probabilities")
            values = list(range(self.low, self.high + 1))
            outputs = []
            for result in results:
                mass = result.digit_mass(self.low, self.high)
                if result.error is not None:
                    # an answer without a usable number is a parse failure, no answer at all a judge error
                    status = "parse_failure" if result.text is not None else "error"
                    outputs.append(JudgeOutput(None, status, text=result.text, digit_mass=mass, error=result.error))
                elif not math.isfinite(mass) or mass <= 0 or mass < self.min_digit_mass:
                    outputs.append(JudgeOutput(None, "low_digit_mass", text=result.text, digit_mass=mass))
                else:
                    weights = result.probabilities[self.low : self.high + 1]
                    score = sum(v * w for v, w in zip(values, weights)) / mass
                    outputs.append(JudgeOutput(float(score), "ok", text=result.text, digit_mass=mass))
            return outputs
        outputs = []
        for result in self._checked_results(self.judge.generate_answers(requests), len(requests), "text"):
            if result.text is None:
                outputs.append(JudgeOutput(None, "error", error=result.error))
                continue
            score = parse_score(result.text, low=self.low, high=self.high)
            if score is not None:
                outputs.append(JudgeOutput(score, "ok", text=result.text))
            else:
                error = out_of_range_reason(result.text, self.low, self.high) or "no unambiguous score in the answer"
                outputs.append(JudgeOutput(None, "parse_failure", text=result.text, error=error))
        return outputs

    def __call__(self, prompts: list, completions: list | None = None, images=None, **kwargs) -> list[float | None]:
        n = len(prompts)
        categories = kwargs.get(self.category_column) or [None] * n
        references = kwargs.get(self.reference_column) or [None] * n
        sources = kwargs.get(self.source_image_column) or [None] * n
        if not isinstance(sources, (list, tuple)):  # a (B, 3, H, W) tensor
            sources = to_pil_images(sources)
        instructions = [_prompt_text(p) for p in prompts]
        if completions is None:  # image reward: the images are what is judged
            if images is None:
                raise ValueError("VLMJudgeReward needs `completions` (text reward) or `images` (image reward).")
            judged = to_pil_images(images)
            requests = [
                self.build_request(instructions[i], judged[i], categories[i], references[i], sources[i])
                for i in range(n)
            ]
        else:  # text reward: the completions are judged, the sample's images are context
            context = images if images is not None else kwargs.get("image")
            context = context if context is not None else [None] * n
            texts = completion_texts(completions)
            requests = [
                self.build_request(instructions[i], context[i], categories[i], references[i], response=texts[i])
                for i in range(n)
            ]
        # batches must not mix requests with and without images (the processor call differs)
        outputs: list[JudgeOutput | None] = [None] * n
        for has_images in (True, False):
            index = [i for i, r in enumerate(requests) if bool(r.images) == has_images]
            for i, output in zip(index, self.judge_requests([requests[i] for i in index])):
                outputs[i] = output
        self.last_outputs = outputs
        rewards = [None if o.score is None else self.scale * o.score for o in outputs]
        self.last_components = {
            "score": [o.score if o.score is not None else math.nan for o in outputs],
            "unscored_count": sum(o.score is None for o in outputs),
            "parse_failures": sum(o.status == "parse_failure" for o in outputs),
            "low_digit_mass": sum(o.status == "low_digit_mass" for o in outputs),
            "judge_errors": sum(o.status == "error" for o in outputs),
        }
        if self.mode == "expected":
            self.last_components["digit_mass"] = [
                o.digit_mass if o.digit_mass is not None else math.nan for o in outputs
            ]
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra("judge_text", [o.text or "" for o in outputs])
        return rewards
