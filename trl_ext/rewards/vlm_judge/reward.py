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
"""

import base64
import concurrent.futures
import contextlib
import functools
import http.client
import importlib.util
import io
import json
import math
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers.utils import logging

from ..models.processors import load_vlm_processor
from .score_parsing import parse_score
from .utils import completion_texts, to_pil_images


logger = logging.get_logger(__name__)

ScoringMode = Literal["expected", "generate"]
JudgeStatus = Literal["ok", "parse_failure", "low_digit_mass", "error"]

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


@dataclass
class JudgeRequest:
    """One judgement: the images the judge sees (in order) and the user text."""

    text: str
    images: list = field(default_factory=list)


@dataclass
class JudgeOutput:
    """What the judge said about one request.

    `score` is `None` unless `status == "ok"`; `text` is the raw answer (generate mode, and expected mode with a judge
    that writes its answer, [`OpenAICompatibleJudge`]), `digit_mass` the judge's total probability on the valid
    digits (expected mode) and `error` why an unscored sample has no score (a failed request, an answer without a
    usable score) when it is known.
    """

    score: float | None
    status: JudgeStatus
    text: str | None = None
    digit_mass: float | None = None
    error: str | None = None


def _messages(request: JudgeRequest) -> list[dict]:
    content = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.text}]
    return [{"role": "user", "content": content}]


# ---- backends -----------------------------------------------------------------------------------------------------


class LocalVLMJudge:
    r"""
    A chat VLM (`AutoModelForImageTextToText`) run in this process as a judge.

    Parameters:
        model (`PreTrainedModel`):
            The judge model.
        processor (`ProcessorMixin`):
            Its processor (chat template, tokenizer, image processor); padding is set to the left.
        max_new_tokens (`int`, *optional*, defaults to `128`):
            Generation length in `"generate"` mode.
        score_prefix (`str`, *optional*, defaults to `"Score: "`):
            The answer prefilled in `"expected"` mode; each digit must be one token right after it.
        generation_kwargs (`dict`, *optional*):
            Extra arguments of `generate` (greedy by default). The vision placeholder tokens are always suppressed.
        name (`str`, *optional*):
            Judge id recorded in reports; defaults to the model's `name_or_path`.
    """

    def __init__(
        self,
        model,
        processor,
        max_new_tokens: int = 128,
        score_prefix: str = "Score: ",
        generation_kwargs: dict | None = None,
        name: str | None = None,
    ):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_new_tokens = max_new_tokens
        self.score_prefix = score_prefix
        self.generation_kwargs = dict(generation_kwargs or {})
        self.name = name or str(getattr(model, "name_or_path", "") or type(model).__name__)
        self._digit_ids: list[int] | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        sources=None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        device: str | None = None,
        processor_kwargs: dict | None = None,
        **kwargs,
    ) -> "LocalVLMJudge":
        """Load a judge through `trl_ext.hub` (a local directory, `local_base_path`, the HF cache, then the Hub).

        `dtype="auto"` is bfloat16 on a GPU that supports it, else float32. `attn_implementation="flash_attention_2"`
        falls back to SDPA, with a warning, when `flash_attn` is not installed. Other `kwargs` go to [`LocalVLMJudge`].
        """
        from transformers import AutoModelForImageTextToText

        from ..hub import resolve_device_and_dtype, resolve_pretrained

        path = resolve_pretrained(model, sources, local_path=model if os.path.isdir(model) else None).path
        device, torch_dtype = resolve_device_and_dtype(device, dtype)
        if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            logger.warning("flash_attention_2 was asked for but flash_attn is not installed: using SDPA.")
            attn_implementation = "sdpa"
        load_kwargs = {"dtype": torch_dtype}
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        judge_model = AutoModelForImageTextToText.from_pretrained(path, **load_kwargs).to(device)
        processor = load_vlm_processor(path, **(processor_kwargs or {}))
        return cls(judge_model, processor, name=kwargs.pop("name", None) or model, **kwargs)

    # inputs

    def _inputs(self, requests: Sequence[JudgeRequest], suffix: str = ""):
        texts = [
            self.processor.apply_chat_template(_messages(r), tokenize=False, add_generation_prompt=True) + suffix
            for r in requests
        ]
        images = [list(r.images) for r in requests]
        if not any(images):
            inputs = self.processor(text=texts, padding=True, return_tensors="pt")
        else:
            if not all(images):
                raise ValueError("A judge batch mixes requests with and without images; batch them separately.")
            inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        return inputs.to(self.model.device)

    def digit_token_ids(self) -> list[int]:
        """The token id of each digit 0-9 as it follows `score_prefix`; an error if a digit is not one token there."""
        if self._digit_ids is None:
            encode = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
            base = encode(self.score_prefix)
            ids = []
            for digit in range(10):
                tokens = encode(self.score_prefix + str(digit))
                if tokens[: len(base)] != base or len(tokens) != len(base) + 1:
                    raise ValueError(
                        f"The judge's tokenizer does not encode {self.score_prefix + str(digit)!r} as the prefix plus "
                        "one digit token: use mode='generate' or another `score_prefix`."
                    )
                ids.append(tokens[-1])
            if encode(self.score_prefix + "10") != base + [ids[1], ids[0]]:
                raise ValueError("The judge's tokenizer does not split '10' into '1', '0': use mode='generate'.")
            self._digit_ids = ids
        return self._digit_ids

    def digit_probabilities(self, requests: Sequence[JudgeRequest]):
        """(B, 11) probabilities of the answers 0..10 after `score_prefix` (not renormalised).

        One forward of `prompt + score_prefix + "1"` gives both the next-token distribution after the prefix (position
        -2) and the probability of "0" after "1" (position -1): P(10) = P(1)·P(0 | 1), P(1) = P(1)·(1 - P(0 | 1)).
        """
        import torch

        ids = torch.tensor(self.digit_token_ids())
        inputs = self._inputs(requests, suffix=self.score_prefix + "1")
        with torch.no_grad():
            logits = self.model(**inputs).logits[:, -2:, :].float().cpu()
        first = logits[:, 0].softmax(-1)[:, ids]  # P(d) for d = 0..9
        zero_after_one = logits[:, 1].softmax(-1)[:, ids[0]]
        ten = first[:, 1] * zero_after_one
        probabilities = torch.cat([first, ten[:, None]], dim=1)
        probabilities[:, 1] = first[:, 1] * (1 - zero_after_one)
        return probabilities

    def generate(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """Greedy (unless `generation_kwargs` say otherwise) answers of the judge, special tokens removed."""
        import torch

        inputs = self._inputs(requests)
        config = self.model.config
        suppress = [getattr(config, name, None) for name in ("image_token_id", "video_token_id", "image_token_index")]
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        kwargs.update(self.generation_kwargs)
        kwargs["suppress_tokens"] = sorted(
            {*(kwargs.get("suppress_tokens") or []), *[t for t in suppress if isinstance(t, int)]}
        )
        with torch.no_grad():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _image_data_url(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_NOT_THE_NUMBER = " \t\r\n*"  # white space and Markdown emphasis between "Score:" and the number
_ANSWER_TOKENS = frozenset(str(d) for d in range(11))


def _answer_value(token: str) -> int | None:
    """The answer 0..10 a top-logprobs token stands for up to white space (" 7" and "7" are 7), else `None`."""
    token = token.strip()
    return int(token) if token in _ANSWER_TOKENS else None


def digit_probabilities_from_logprobs(
    tokens: Sequence[str], top_logprobs: Sequence[Sequence[tuple[str, float]]], score_prefix: str = "Score: "
) -> list[float] | None:
    """The probabilities of the answers 0..10 read from a chat completion's per-token `top_logprobs`, or `None`.

    `tokens[i]` is the i-th generated token and `top_logprobs[i]` its `(token, logprob)` alternatives. The position read
    is the first token that starts the number: the text generated before it ends with `score_prefix` (white space,
    `*` and case ignored), the token itself is not only white space or `*` (after "Score:", " " then "7" is read at
    "7", " 7" at " 7"), and its alternatives hold a digit. P(d) for d = 0..9 sums the alternatives that are `d` up to
    white space (" 7" and "7"); an alternative "10" counts for 10. When the token written there is "1" and the next
    token's alternatives are known, P(10) += P(1)·P("0" | "1") and P(1) = P(1)·(1 - P("0" | "1")), as the local judge
    splits it; when another digit was written, P("0" | "1") is unknown and the "1" mass stays on 1. Digits missing from
    the top-K are 0 (a lower bound; the mass decides whether the sample is scored). `None`: no such position.
    """
    target = score_prefix.strip(_NOT_THE_NUMBER).casefold()
    text = ""
    for i, token in enumerate(tokens):
        before, text = text, text + token
        if not before.rstrip(_NOT_THE_NUMBER).casefold().endswith(target) or not token.strip(_NOT_THE_NUMBER):
            continue
        values = [(_answer_value(alternative), logprob) for alternative, logprob in top_logprobs[i]]
        if all(value is None for value, _ in values):
            continue  # no digit here (e.g. "Score:" inside a sentence): the number starts later, if at all
        probabilities = [0.0] * 11
        for value, logprob in values:
            if value is not None:
                probabilities[value] += math.exp(logprob)
        if token.strip() == "1" and i + 1 < len(tokens) and top_logprobs[i + 1]:
            zero_after_one = sum(math.exp(lp) for t, lp in top_logprobs[i + 1] if t.rstrip() == "0")
            probabilities[10] += probabilities[1] * zero_after_one
            probabilities[1] *= 1 - zero_after_one
        return probabilities
    return None


def _out_of_range(text: str, low: float, high: float, score_prefix: str = "Score: ") -> str | None:
    """Why `text` is unscored when the number it wrote right after its first `score_prefix` followed by a number
    (white space, `*` and case ignored, as in [`digit_probabilities_from_logprobs`]) is outside `low..high`
    (`"**Score:** 11"`), else `None`."""
    target = re.escape(score_prefix.strip(_NOT_THE_NUMBER))
    match = re.search(rf"{target}[{re.escape(_NOT_THE_NUMBER)}]*([-+]?\d+(?:\.\d+)?)", text, re.IGNORECASE)
    if match is None or low <= float(match.group(1)) <= high:
        return None
    return f"the score {match.group(1)} after {score_prefix.strip()!r} in the answer is out of range {low:g}..{high:g}"


def _message_text(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"] or ""


class OpenAICompatibleJudge:
    r"""
    A judge behind an OpenAI-compatible `/chat/completions` endpoint (e.g. `vllm serve Qwen/Qwen3-VL-30B-A3B-Instruct`).

    Images are sent inline as PNG data URLs. Each attempt has a deadline of `timeout` seconds from connecting to the
    answer's last byte (a server trickling its answer cannot hold it longer); connection errors, timeouts, HTTP 429 and
    5xx are retried up to `max_retries` times with exponential back-off, other HTTP errors are not, so a request takes
    at most `(max_retries + 1) * timeout` seconds plus the back-offs. A request that still fails gives `None` (the
    sample is unscored and counted as a judge error), never a score. The server is reached directly (environment proxy
    settings are not used).

    Both scoring modes: [`~OpenAICompatibleJudge.generate`] returns the answers; for `mode="expected"`,
    [`~OpenAICompatibleJudge.digit_probabilities`] asks for `logprobs` with `top_logprobs` alternatives and reads the
    digit distribution where the answer's number starts (see [`digit_probabilities_from_logprobs`]). The server must
    return logprobs (vLLM and OpenAI do; a server that does not leaves every sample unscored, with the reason in
    `last_errors`).

    Parameters:
        base_url (`str`):
            Server root including the API prefix, e.g. `"http://localhost:8000/v1"`.
        model (`str`):
            Model name the server expects.
        api_key (`str`, *optional*):
            Sent as a bearer token; defaults to the `OPENAI_API_KEY` environment variable when set.
        timeout (`float`, *optional*, defaults to `60.0`):
            Deadline in seconds of each HTTP attempt, from connecting to the answer's last byte.
        max_retries (`int`, *optional*, defaults to `3`):
            Retries after the first attempt.
        retry_backoff (`float`, *optional*, defaults to `1.0`):
            First back-off in seconds, doubled after each retry.
        max_new_tokens (`int`, *optional*, defaults to `128`):
            `max_tokens` of each request.
        temperature (`float`, *optional*, defaults to `0.0`):
            Sampling temperature.
        max_workers (`int`, *optional*, defaults to `8`):
            Requests in flight at once.
        top_logprobs (`int`, *optional*, defaults to `20`):
            Alternatives per token asked for in `"expected"` mode, 1 to 20 (OpenAI's maximum, vLLM's default
            `--max-logprobs`); digits outside the top `top_logprobs` count as probability 0.
        score_prefix (`str`, *optional*, defaults to `"Score: "`):
            What the answer writes before the number in `"expected"` mode (white space, `*` and case ignored); the
            prompt templates ask for `Score: N`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        retry_backoff: float = 1.0,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        max_workers: int = 8,
        top_logprobs: int = 20,
        score_prefix: str = "Score: ",
    ):
        if max_retries < 0 or timeout <= 0:
            raise ValueError("max_retries must be >= 0 and timeout > 0.")
        if isinstance(top_logprobs, bool) or not (isinstance(top_logprobs, int) and 1 <= top_logprobs <= 20):
            raise ValueError(f"top_logprobs must be an integer from 1 to 20, got {top_logprobs!r}.")
        if not score_prefix.strip(_NOT_THE_NUMBER):
            raise ValueError("score_prefix must contain more than white space.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_workers = max_workers
        self.top_logprobs = top_logprobs
        self.score_prefix = score_prefix
        self.last_errors: list[str | None] = []
        self.last_texts: list[str | None] = []

    def _payload(self, request: JudgeRequest, **extra) -> bytes:
        content = [{"type": "image_url", "image_url": {"url": _image_data_url(image)}} for image in request.images]
        content.append({"type": "text", "text": request.text})
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            **extra,
        }
        return json.dumps(body).encode("utf-8")

    def _post_once(self, payload: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """One POST: `(status, reason, body)`. The whole exchange (connect, send, status, headers, body) has a deadline
        of `timeout` seconds: a watchdog shuts the socket down then, however slowly the server trickles its answer,
        and the attempt raises `TimeoutError`."""
        parts = urllib.parse.urlsplit(self.url)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=self.timeout)
        expired = threading.Event()

        def abort():
            expired.set()
            if connection.sock is not None:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout, abort)
        watchdog.start()
        try:
            connection.connect()
            if expired.is_set():  # the deadline passed while connecting, before the socket could be shut down
                raise TimeoutError
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("POST", path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.read()
        except (OSError, http.client.HTTPException):
            if expired.is_set():
                raise TimeoutError(f"timed out: no complete answer within the {self.timeout:g} s deadline") from None
            raise
        finally:
            watchdog.cancel()
            connection.close()

    def _post(self, payload: bytes, read=_message_text) -> tuple[Any, str | None]:
        """`(read(answer), None)`, or `(None, reason)` once the request failed for good; `read` raising
        `KeyError`/`IndexError`/`TypeError`/`ValueError` is a malformed answer (not retried). Each attempt has a
        deadline of `timeout` seconds, so the whole request takes at most `(max_retries + 1) * timeout` seconds plus
        the back-offs."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        error = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.retry_backoff * 2 ** (attempt - 1))
            try:
                status, reason, body = self._post_once(payload, headers)
                if status != 200:
                    error = f"HTTP {status}: {reason}"
                    if status != 429 and status < 500:
                        break
                else:
                    return read(json.loads(body.decode("utf-8"))), None
            except (TimeoutError, OSError, http.client.HTTPException) as network_error:
                error = f"{type(network_error).__name__}: {network_error}"
            except (KeyError, IndexError, TypeError, ValueError) as bad_answer:
                error = f"malformed answer: {type(bad_answer).__name__}: {bad_answer}"
                break
            logger.warning(f"Judge request to {self.url} failed (attempt {attempt + 1}): {error}")
        return None, error

    def _post_all(self, requests: Sequence[JudgeRequest], read, **extra) -> list:
        """`read` of each answer, in order, `max_workers` requests at a time; `None` and the reason in `last_errors`
        where a request failed."""
        payloads = [self._payload(r, **extra) for r in requests]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(payloads)))) as pool:
            results = list(pool.map(functools.partial(self._post, read=read), payloads))
        self.last_errors = [error for _, error in results]
        return [value for value, _ in results]

    def generate(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """The answers, in order; `None` where a request failed after every retry (reason in `last_errors`)."""
        return self._post_all(requests, _message_text)

    def _read_logprobs(self, answer: dict) -> tuple[str, list[float] | None]:
        choice = answer["choices"][0]
        text = choice["message"]["content"] or ""
        content = (choice.get("logprobs") or {}).get("content")
        if not isinstance(content, list):
            raise ValueError("the answer has no logprobs.content (does the server support logprobs?)")
        tokens = [entry["token"] for entry in content]
        if not all(isinstance(token, str) for token in tokens):
            raise TypeError("a logprobs token is not a string")
        tops = [[(top["token"], float(top["logprob"])) for top in entry["top_logprobs"]] for entry in content]
        if content and not any(tops):
            raise ValueError("the answer's logprobs have no top_logprobs")
        return text, digit_probabilities_from_logprobs(tokens, tops, self.score_prefix)

    def digit_probabilities(self, requests: Sequence[JudgeRequest]):
        """(B, 11) probabilities of the answers 0..10 where each answer's number starts (not renormalised).

        A row is NaN where the request failed, the logprobs were missing or malformed, the answer never wrote a
        number after `score_prefix`, or the number it wrote is outside 0..10 (`Score: 11`, whether written as one token
        or as "1" then "1"); the reason is in `last_errors` and the answer (when there was one) in `last_texts`.
        """
        import torch

        values = self._post_all(requests, self._read_logprobs, logprobs=True, top_logprobs=self.top_logprobs)
        rows, self.last_texts = [], []
        for i, value in enumerate(values):
            text, row = value if value is not None else (None, None)
            self.last_texts.append(text)
            out_of_range = _out_of_range(text, 0, 10, self.score_prefix) if text is not None else None
            if out_of_range is not None:
                row, self.last_errors[i] = None, out_of_range
            elif row is None and text is not None:
                self.last_errors[i] = f"no number after {self.score_prefix.strip()!r} in the answer"
            rows.append(row if row is not None else [math.nan] * 11)
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 11)


# ---- the reward ---------------------------------------------------------------------------------------------------


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
        judge (`str`, `LocalVLMJudge` or `OpenAICompatibleJudge`):
            A backend, or a model for [`LocalVLMJudge.from_pretrained`] (a `trl_ext.hub` key, Hub id or directory).
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
        if mode == "expected":
            if not hasattr(judge, "digit_probabilities"):
                raise ValueError(f"mode='expected' needs the judge's probabilities: {type(judge).__name__} has none.")
            if not (0 <= low < high <= 10 and int(low) == low and int(high) == high):
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
        return str(getattr(self.judge, "name", type(self.judge).__name__))

    def template_name(self, category: str | None, text_answer: bool = False) -> str:
        """The name (or file) of the template used for a sample of `category`: `prompt_template` when set, else
        `"answer"` for a text answer, the category's own template, or `"generic"` for a category without one."""
        if self.prompt_template is not None:
            return self.prompt_template
        if text_answer:
            return "answer"
        return category if category in {**JUDGE_PROMPTS, **self.templates} else "generic"

    def template_for(self, category: str | None, text_answer: bool = False) -> str:
        """The template text used for a sample of `category` (see [`~VLMJudgeReward.template_name`])."""
        return resolve_prompt_template(self.template_name(category, text_answer), self.templates)

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

    def _reported(self, attribute: str, n: int) -> list:
        """The judge's per-request `attribute` of its last call (`last_errors`, `last_texts`), or `None`s."""
        reported = getattr(self.judge, attribute, None)
        return list(reported) if reported is not None and len(reported) == n else [None] * n

    def _judge_batch(self, requests: list[JudgeRequest]) -> list[JudgeOutput]:
        if self.mode == "expected":
            probabilities = self.judge.digit_probabilities(requests).tolist()
            # a judge that can fail per request (the HTTP one) says why in `last_errors`, with its answer in
            # `last_texts` when there was one (then the answer had no number: a parse failure)
            errors = self._reported("last_errors", len(probabilities))
            texts = self._reported("last_texts", len(probabilities))
            values = list(range(self.low, self.high + 1))
            outputs = []
            for row, error, text in zip(probabilities, errors, texts):
                weights = row[self.low : self.high + 1]
                mass = float(sum(weights))
                if error is not None:
                    status = "parse_failure" if text is not None else "error"
                    outputs.append(JudgeOutput(None, status, text=text, digit_mass=mass, error=error))
                elif not math.isfinite(mass) or mass <= 0 or mass < self.min_digit_mass:
                    outputs.append(JudgeOutput(None, "low_digit_mass", text=text, digit_mass=mass))
                else:
                    score = sum(v * w for v, w in zip(values, weights)) / mass
                    outputs.append(JudgeOutput(float(score), "ok", text=text, digit_mass=mass))
            return outputs
        texts = self.judge.generate(requests)
        errors = self._reported("last_errors", len(texts))
        outputs = []
        for text, error in zip(texts, errors):
            if text is None:
                outputs.append(JudgeOutput(None, "error", error=error))
                continue
            score = parse_score(text, low=self.low, high=self.high)
            if score is not None:
                outputs.append(JudgeOutput(score, "ok", text=text))
            else:
                error = _out_of_range(text, self.low, self.high) or "no unambiguous score in the answer"
                outputs.append(JudgeOutput(None, "parse_failure", text=text, error=error))
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
