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
"""[`OpenAICompatibleJudge`]: a judge behind an OpenAI-compatible chat-completions server (vLLM's `vllm serve`), with a
deadline per attempt and bounded retries, and [`digit_probabilities_from_logprobs`], which reads the digit distribution
of its answer from the `top_logprobs`."""

import base64
import concurrent.futures
import contextlib
import functools
import http.client
import io
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from transformers.utils import logging

from ..score_parsing import SCORE_PREFIX_NOISE, out_of_range_reason
from .backend import JudgeRequest, JudgeResult


logger = logging.get_logger(__name__)


def _image_data_url(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
    target = score_prefix.strip(SCORE_PREFIX_NOISE).casefold()
    text = ""
    for i, token in enumerate(tokens):
        before, text = text, text + token
        if not before.rstrip(SCORE_PREFIX_NOISE).casefold().endswith(target) or not token.strip(SCORE_PREFIX_NOISE):
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

    Both scoring modes: [`~OpenAICompatibleJudge.generate_answers`] returns the answers; for `mode="expected"`,
    [`~OpenAICompatibleJudge.score_digits`] asks for `logprobs` with `top_logprobs` alternatives and reads the
    digit distribution where the answer's number starts (see [`digit_probabilities_from_logprobs`]). The server must
    return logprobs (vLLM and OpenAI do; a server that does not leaves every sample unscored, with the reason in
    its [`JudgeResult`]).

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
        if not score_prefix.strip(SCORE_PREFIX_NOISE):
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

    def _post_all(self, requests: Sequence[JudgeRequest], read, **extra) -> list[tuple[Any, str | None]]:
        """`(read(answer), None)` or `(None, reason)` of each request, in order, `max_workers` requests at a time."""
        payloads = [self._payload(r, **extra) for r in requests]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(payloads)))) as pool:
            return list(pool.map(functools.partial(self._post, read=read), payloads))

    def generate_answers(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """The answers, in order; `text=None` and the reason in `error` where a request failed after every retry."""
        return [JudgeResult(text=text, error=error) for text, error in self._post_all(requests, _message_text)]

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

    def score_digits(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """The probabilities of the answers 0..10 where each answer's number starts (not renormalised), in order.

        A result has no `probabilities` and says why in `error` where the request failed, the logprobs were missing or
        malformed, the answer never wrote a number after `score_prefix`, or the number it wrote is outside 0..10
        (`Score: 11`, whether written as one token or as "1" then "1"); its `text` is the answer when there was one.
        """
        results = []
        posted = self._post_all(requests, self._read_logprobs, logprobs=True, top_logprobs=self.top_logprobs)
        for value, error in posted:
            if value is None:
                results.append(JudgeResult(error=error))
                continue
            text, row = value
            error = out_of_range_reason(text, 0, 10, self.score_prefix)
            if error is None and row is None:
                error = f"no number after {self.score_prefix.strip()!r} in the answer"
            results.append(JudgeResult(text=text, probabilities=row if error is None else None, error=error))
        return results
