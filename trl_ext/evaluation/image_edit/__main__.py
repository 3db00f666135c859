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
"""Command line of the image-edit benchmark.

    python -m trl_ext.evaluation.image_edit --config bench.yaml [--resume] [--<field> value ...]
    python -m trl_ext.evaluation.image_edit --tiny --output_dir outputs/demo/image_edit

Every field of `ImageEditBenchmarkConfig` is a flag (`--no-<flag>` for booleans, JSON for dictionaries); a YAML
`--config` sets defaults that flags override. `--tiny` builds a tiny random Qwen-Image-Edit editor and Qwen3-VL judge
offline (under `<output_dir>/tiny_models`) and runs the bundled 10-item set in the seed's schema.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing

from .data import EditDataError
from .runner import ImageEditBenchmarkConfig, RunMismatchError, run_benchmark


def _field_type(annotation):
    """(argparse type, choices, is_bool) of a config field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return None, None, True
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(typing.get_args(annotation)), False
    if typing.get_origin(annotation) is dict or annotation is dict:
        return json.loads, None, False
    return annotation, None, False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trl_ext.evaluation.image_edit", description="Image-edit benchmark: editor x VLM judge."
    )
    parser.add_argument("--config", help="YAML file with ImageEditBenchmarkConfig fields.")
    parser.add_argument("--tiny", action="store_true", help="Offline run on tiny random models and the bundled set.")
    hints = typing.get_type_hints(ImageEditBenchmarkConfig)
    for f in dataclasses.fields(ImageEditBenchmarkConfig):
        kind, choices, is_bool = _field_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if is_bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(f"--{f.name}", type=kind, choices=choices, default=None, help=help_text)
    return parser


def _tiny_settings(output_dir: str) -> dict:
    from ...testing import save_tiny_qwen3_vl, save_tiny_qwen_image_edit

    models = os.path.join(output_dir, "tiny_models")
    editor, judge = os.path.join(models, "qwen_image_edit"), os.path.join(models, "qwen3_vl")
    if not os.path.exists(os.path.join(editor, "model_index.json")):
        save_tiny_qwen_image_edit(editor)
    if not os.path.exists(os.path.join(judge, "config.json")):
        save_tiny_qwen3_vl(judge)
    return {
        "editor": editor,
        "judge": judge,
        "num_inference_steps": 2,
        "condition_area": 32 * 32,
        "min_digit_mass": 0.0,  # a random judge puts little probability on the digits
        "judge_batch_size": 4,
        "dtype": "float32",
        "device": "cpu",
    }


def parse_config(argv: list[str] | None = None) -> ImageEditBenchmarkConfig:
    args = build_parser().parse_args(argv)
    values: dict = {}
    if args.config:
        import yaml

        with open(args.config, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        known = {f.name for f in dataclasses.fields(ImageEditBenchmarkConfig)}
        unknown = sorted(set(values) - known - {"tiny"})
        if unknown:
            raise SystemExit(f"{args.config}: unknown settings {unknown}.")
    tiny = bool(values.pop("tiny", False)) or args.tiny
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "tiny") and v is not None}
    values.update(flags)
    if tiny:
        output_dir = values.get("output_dir", ImageEditBenchmarkConfig.output_dir)
        values.update(_tiny_settings(output_dir))
        values.update({k: v for k, v in flags.items() if k not in ("editor", "judge")})
    return ImageEditBenchmarkConfig(**values)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    try:
        report = run_benchmark(config)
    except (EditDataError, RunMismatchError) as error:  # the user's data or output_dir: a message, not a traceback
        raise SystemExit(f"{type(error).__name__}: {error}") from None
    overall = report["overall"]
    print(
        json.dumps(
            {
                "output_dir": config.output_dir,
                "n": overall["micro"]["n"],
                "n_scored": overall["micro"]["n_scored"],
                "n_failed": overall["micro"]["n_failed"],
                "micro_mean": overall["micro"]["mean"],
                "macro_mean": overall["macro"]["mean"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
