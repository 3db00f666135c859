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
"""Image-edit benchmark items: the seed's JSON schema, JSONL, or a `datasets` dataset with a field mapping.

The seed's records hold `subset` (物理 / 环境 / 社会 / 因果 / 指代), `edit_instruction(_en)`,
`original_description(_en)`, `src_img_b64`, `rationale_short(_en)` (the expected outcome), `difficulty`, `seed`,
`original_image_path`, `tags`. A record with a missing field, an image that does not decode or a category without an
ASCII slug raises [`EditDataError`] naming its index, and a file that is empty, not JSON or holds no records raises it
naming the file: nothing is skipped silently.
"""

import base64
import binascii
import io
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from PIL import Image, UnidentifiedImageError

from ...data.records import JSONLineError, read_json, read_jsonl, records_of


CATEGORY_SLUGS = {
    "物理": "physics",
    "环境": "environment",
    "社会": "social",
    "因果": "causal",
    "指代": "referential",
}
TINY_DATASET = "image_edit_tiny.json"

# field of EditItem -> record keys tried in order (English first)
DEFAULT_FIELDS = {
    "category": ["subset", "category"],
    "instruction": ["edit_instruction_en", "edit_instruction", "instruction", "prompt"],
    "image": ["src_img_b64", "image", "source_image", "original_image_path"],
    "reference": ["rationale_short_en", "rationale_short", "reference"],
    "description": ["original_description_en", "original_description"],
    "difficulty": ["difficulty"],
    "seed": ["seed"],
    "id": ["id", "original_image_path"],
}
_REQUIRED = ("category", "instruction", "image")


class EditDataError(ValueError):
    """A benchmark record is malformed; the message names its index."""


@dataclass
class EditItem:
    """One benchmark item: a source image, an instruction, its category slug and the expected outcome."""

    id: str
    index: int
    category: str
    instruction: str
    image: Image.Image
    reference: str | None = None
    description: str | None = None
    difficulty: str | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def category_slug(name: str) -> str:
    """ASCII slug of a category: the seed's Chinese subset names map to physics/environment/social/causal/referential;
    other names are lower-cased with non-alphanumerics replaced by `_`."""
    name = str(name).strip()
    if name in CATEGORY_SLUGS:
        return CATEGORY_SLUGS[name]
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise ValueError(
            f"category {name!r} has no ASCII slug: add it to CATEGORY_SLUGS (known: {sorted(CATEGORY_SLUGS)})."
        )
    return slug


def _decode_image(value: Any, base_dir: str | None) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes"):  # datasets' Image feature, undecoded
        return Image.open(io.BytesIO(value["bytes"]))
    if not isinstance(value, str) or not value:
        raise ValueError(f"no image data ({type(value).__name__})")
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    path = value if os.path.isabs(value) or base_dir is None else os.path.join(base_dir, value)
    if len(value) < 1024 and os.path.isfile(path):
        return Image.open(path)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"neither base64 image data nor an existing file ({error})") from None
    return Image.open(io.BytesIO(data))


def _first(record: dict, keys: list[str]):
    for key in keys:
        if key in record and record[key] not in (None, ""):
            return key, record[key]
    return None, None


def items_from_records(
    records, field_mapping: dict[str, str | list[str]] | None = None, base_dir: str | None = None
) -> list[EditItem]:
    """Turn records (dicts) into [`EditItem`]s.

    Parameters:
        records (iterable of `dict`):
            The seed's records, JSONL rows or `datasets` rows.
        field_mapping (`dict`, *optional*):
            `EditItem` field -> record key (or keys, tried in order), overriding [`DEFAULT_FIELDS`], e.g.
            `{"instruction": "edit_instruction", "image": "input_image"}` for the Chinese instructions.
        base_dir (`str`, *optional*):
            Directory that relative image paths are read from.
    """
    fields = {name: list(keys) for name, keys in DEFAULT_FIELDS.items()}
    for name, keys in (field_mapping or {}).items():
        if name not in fields:
            raise ValueError(f"Unknown item field {name!r} in field_mapping; fields: {sorted(fields)}.")
        fields[name] = [keys] if isinstance(keys, str) else list(keys)
    items, seen = [], {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise EditDataError(f"Record {index}: expected an object, got {type(record).__name__}.")
        values = {}
        for name, keys in fields.items():
            key, value = _first(record, keys)
            if value is None and name in _REQUIRED:
                raise EditDataError(f"Record {index}: missing field {name!r} (looked for {keys}).")
            values[name] = value
        try:
            image = _decode_image(values["image"], base_dir)
            image.load()
        except (ValueError, OSError, UnidentifiedImageError) as error:
            raise EditDataError(f"Record {index}: the image does not decode: {error}") from None
        try:
            category = category_slug(values["category"])
        except ValueError as error:
            raise EditDataError(f"Record {index}: {error}") from None
        raw_id = values["id"]
        item_id = (
            os.path.splitext(os.path.basename(str(raw_id)))[0] if raw_id is not None else f"{index:05d}_{category}"
        )
        for name, slug in CATEGORY_SLUGS.items():  # 00000_物理_medium -> 00000_physics_medium
            item_id = item_id.replace(name, slug)
        item_id = re.sub(r"[^\w.-]+", "_", item_id.encode("ascii", "ignore").decode() or f"{index:05d}")
        item_id = re.sub(r"_+", "_", item_id).strip("_") or f"{index:05d}"
        if item_id in seen:
            raise EditDataError(f"Record {index}: id {item_id!r} is already used by record {seen[item_id]}.")
        seen[item_id] = index
        seed = values["seed"]
        try:
            seed = int(seed) if seed is not None else None
        except (TypeError, ValueError):
            raise EditDataError(f"Record {index}: seed {seed!r} is not an integer.") from None
        used = {k for keys in fields.values() for k in keys}
        items.append(
            EditItem(
                id=item_id,
                index=index,
                category=category,
                instruction=str(values["instruction"]),
                image=image,
                reference=str(values["reference"]) if values["reference"] is not None else None,
                description=values["description"],
                difficulty=str(values["difficulty"]) if values["difficulty"] is not None else None,
                seed=seed,
                extra={k: v for k, v in record.items() if k not in used and isinstance(v, (str, int, float, list))},
            )
        )
    return items


def load_edit_items(
    source, field_mapping: dict[str, str | list[str]] | None = None, split: str = "train", max_items: int | None = None
) -> list[EditItem]:
    """Load benchmark items from a JSON list (the seed's format), a JSONL file, a `datasets` dataset (object, saved
    directory or Hub id) or `"tiny"` (the small bundled set in the seed's schema).

    Parameters:
        source (`str`, `os.PathLike` or `datasets.Dataset`):
            Where the records are.
        field_mapping (`dict`, *optional*):
            See [`items_from_records`].
        split (`str`, *optional*, defaults to `"train"`):
            Split of a `datasets` dataset dictionary.
        max_items (`int`, *optional*):
            Keep the first `max_items` items.

    Raises [`EditDataError`] when there is no record, naming the source.
    """
    base_dir = None
    if isinstance(source, str) and source == "tiny":
        text = resources.files("trl_ext.data").joinpath("bundled", TINY_DATASET).read_text(encoding="utf-8")
        records = json.loads(text)
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        path = os.fspath(source)
        base_dir = os.path.dirname(os.path.abspath(path))
        if path.endswith(".jsonl"):
            try:
                records = [value for _, value in read_jsonl(path)[0]]
            except JSONLineError as error:
                raise EditDataError(
                    f"Record {error.line_number - 1} (line {error.line_number}): {error.error}"
                ) from None
        else:
            try:
                records = records_of(read_json(path), any_key=True)  # a list, or {"data": [...]} style
            except json.JSONDecodeError as error:
                raise EditDataError(f"{path}: not JSON ({error}).") from None
            except ValueError as error:  # an empty file
                raise EditDataError(str(error)) from None
        if not isinstance(records, list):
            raise EditDataError(f"{path}: expected a list of records.")
    else:
        import datasets

        if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
            records = source
        elif isinstance(source, datasets.DatasetDict):
            records = source[split]
        elif os.path.isdir(os.fspath(source)):
            loaded = datasets.load_from_disk(os.fspath(source))
            records = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            records = datasets.load_dataset(os.fspath(source), split=split)
    if max_items is not None:
        records = [record for _, record in zip(range(max_items), records)]
    items = items_from_records(records, field_mapping, base_dir)
    if not items:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
        raise EditDataError(f"{name}: no records.")
    return items


def edit_records_dataset(items: list[EditItem]):
    """The training dataset of an image-editing policy (`FlowGRPOTrainer` on `QwenImageEditPipeline`) from benchmark
    items: `prompt` (the instruction), `source_image` (the image to edit, RGB), `category`, `reference` (the expected
    outcome, `""` when unknown) and `id` — the columns [`~trl_ext.rewards.vlm_judge.VLMJudgeReward`] reads."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [item.instruction for item in items],
            "source_image": [item.image.convert("RGB") for item in items],
            "category": [item.category for item in items],
            "reference": [item.reference or "" for item in items],
            "id": [item.id for item in items],
        },
        features=datasets.Features(
            {
                "prompt": datasets.Value("string"),
                "source_image": datasets.Image(),
                "category": datasets.Value("string"),
                "reference": datasets.Value("string"),
                "id": datasets.Value("string"),
            }
        ),
    )
