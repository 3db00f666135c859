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
"""A generated visual question dataset whose answers depend on the image: "What colour is the shape?"."""

from datasets import Dataset
from PIL import Image, ImageDraw


COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 210, 30)}
QUESTION = "What colour is the shape? Answer with one word."


def colour_question_dataset(
    num_prompts: int = 16, colours: tuple[str, ...] = ("red", "blue"), image_size: int = 56
) -> Dataset:
    """Conversational prompts with an image of a coloured square on a grey background, and the colour as `answer`.

    Colours cycle through `colours`, so a model can only answer correctly by looking at the image. The columns
    (`prompt`, `image`, `answer`) are what `trl.GRPOTrainer` and [`TPRLGRPOTrainer`] expect; `answer` reaches reward
    functions as a keyword argument.
    """
    unknown = set(colours) - set(COLOURS)
    if unknown:
        raise ValueError(f"Unknown colours {sorted(unknown)}; choose from {sorted(COLOURS)}.")
    images, answers = [], []
    margin = image_size // 8
    for i in range(num_prompts):
        colour = colours[i % len(colours)]
        image = Image.new("RGB", (image_size, image_size), (128, 128, 128))
        ImageDraw.Draw(image).rectangle(
            [margin, margin, image_size - margin, image_size - margin], fill=COLOURS[colour]
        )
        images.append(image)
        answers.append(colour)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    return Dataset.from_dict({"prompt": [prompt] * num_prompts, "image": images, "answer": answers})


def colour_accuracy_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """1.0 when the completion names the right colour (case-insensitive) and no other, else 0.0."""
    rewards = []
    for completion, colour in zip(completions, answer):
        text = (completion[0]["content"] if isinstance(completion, list) else completion).lower()
        named = {name for name in COLOURS if name in text}
        rewards.append(float(named == {colour}))
    return rewards


class ColourTokenReward:
    """A dense stand-in for `colour_accuracy_reward` that a tiny random model learns in under a minute (two colours).

    The reward is the fraction of the completion budget (`max_completion_length`) spent on byte tokens (ids 0-255 of
    `trl_ext.testing.build_tiny_tokenizer`) from the answer's half of the byte vocabulary: 0-127 for "red", 128-255
    otherwise; special tokens such as EOS score nothing. A policy that ignores the image averages at most 0.5; only
    one that reads the colour reaches 1.
    """

    __name__ = "colour_token_reward"

    def __init__(self, max_completion_length: int):
        self.max_completion_length = max_completion_length

    def __call__(self, completions: list, completion_ids: list[list[int]], answer: list[str], **kwargs) -> list[float]:
        return [
            sum((token < 128) == (colour == "red") for token in ids if token < 256) / self.max_completion_length
            for ids, colour in zip(completion_ids, answer)
        ]
