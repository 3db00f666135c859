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
"""[`LocalVLMJudge`]: a chat VLM (`AutoModelForImageTextToText`) run in this process as a judge."""

import importlib.util
from collections.abc import Sequence

from transformers.utils import logging

from ...models.processors import load_vlm_processor
from .backend import JudgeRequest, JudgeResult


logger = logging.get_logger(__name__)


def _messages(request: JudgeRequest) -> list[dict]:
    content = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.text}]
    return [{"role": "user", "content": content}]


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

        from ...hub import resolve_device_and_dtype, resolve_pretrained

        path = resolve_pretrained(model, sources).path
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

    def generate(self, requests: Sequence[JudgeRequest]) -> list[str]:
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

    def score_digits(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """[`~LocalVLMJudge.digit_probabilities`] as one [`JudgeResult`] per request (a local judge has no answer text)."""
        return [JudgeResult(probabilities=row) for row in self.digit_probabilities(requests).tolist()]

    def generate_answers(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """[`~LocalVLMJudge.generate`] as one [`JudgeResult`] per request."""
        return [JudgeResult(text=text) for text in self.generate(requests)]
