"""Set-up the example scripts share: argument parsing with `--tiny` defaults, building files and printing on one
process."""

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from trl import TrlParser


T = TypeVar("T")


def parse_args(
    dataclass_types: tuple, tiny_defaults: dict[str, Any], recipe_defaults: dict[str, Any] | None = None
) -> tuple:
    """Parse the command line with `TrlParser` (`--config` YAML included). `recipe_defaults` (a method's published
    settings), then with `--tiny` `tiny_defaults`, replace the dataclasses' defaults; a `--config` file and the command
    line still override them, in that order."""
    parser = TrlParser(dataclass_types)
    add_config_help(parser)
    parser.set_defaults_with_config(**(recipe_defaults or {}))
    if "--tiny" in sys.argv[1:]:
        parser.set_defaults_with_config(**tiny_defaults)
    return parser.parse_args_and_config()


def add_config_help(parser: TrlParser) -> None:
    """List `--config` in `--help`. TrlParser reads the flag itself before parsing (so it is never parsed here), but
    does not declare it."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML file of argument values; the command line overrides them (a top-level `env` mapping sets "
        "environment variables).",
    )


def print_on_main_process(*lines: str) -> None:
    """Print a run's summary once, however many processes `accelerate launch` started."""
    if PartialState().is_main_process:
        print(*lines, sep="\n")


def on_main_process(build: Callable[..., T], *args, **kwargs) -> T:
    """Run `build` (e.g. writing tiny models to disk) on the main process only; every process gets its result once
    the files exist (no two processes write the same directory)."""
    state = PartialState()
    result = [build(*args, **kwargs) if state.is_main_process else None]
    state.wait_for_everyone()
    if state.num_processes > 1:
        broadcast_object_list(result)
    return result[0]
