"""The command line's LoRA and IP-Adapter options: `run --lora NAME[:WEIGHT]` and
`run --ip-adapter FILE[:WEIGHT]` (both repeatable), `--ip-adapter-model`, and `--lora-dir` and
`--ip-adapter-dir` (on `run`, `serve` and `models`).

A NAME may hold colons (``builtin:tiny-lora-sd15``) and a FILE too (``C:\\...``): the weight is
the part after the last colon when that part is a number, else there is none (1 for a LoRA, the
spec's default for a reference).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...protocol import REFERENCE_PARAMS, Lora
from ...protocol.spec import split_weight

LORA_FORM = "NAME[:WEIGHT]"
REFERENCE_FORM = "FILE[:WEIGHT]"
REFERENCE_WEIGHT = next(q for q in REFERENCE_PARAMS if q.name == "weight")
DEFAULT_REFERENCE_WEIGHT = REFERENCE_WEIGHT.default


@dataclass(frozen=True)
class ReferenceOption:
    """One `--ip-adapter` as typed: the reference image's file and its weight."""

    file: Path
    weight: float


def parse_lora(text: str) -> Lora:
    """argparse's type for --lora; the weight's bounds are the spec's (checked with the job)."""
    lora = Lora.parse(text)
    if not lora.name:
        raise argparse.ArgumentTypeError(f"'{text}': give a LoRA's name, as {LORA_FORM}")
    return lora


def parse_reference(text: str) -> ReferenceOption:
    """argparse's type for --ip-adapter."""
    file, weight = split_weight(text)
    if not file:
        raise argparse.ArgumentTypeError(f"'{text}': give a reference image, as {REFERENCE_FORM}")
    bounds = REFERENCE_WEIGHT.bounds()
    if weight is not None and not bounds[0] <= weight <= bounds[1]:
        allowed = REFERENCE_WEIGHT.describe_range()
        raise argparse.ArgumentTypeError(f"'{text}': a reference's weight is {allowed}")
    return ReferenceOption(Path(file).expanduser(), DEFAULT_REFERENCE_WEIGHT if weight is None else weight)


parse_lora.__name__ = "lora"  # argparse names the type in its errors
parse_reference.__name__ = "ip-adapter"


def add_addon_dir_arguments(parser: argparse.ArgumentParser) -> None:
    """--lora-dir and --ip-adapter-dir (run, serve, models)."""
    parser.add_argument(
        "--lora-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also search this folder for LoRAs (repeatable), before ComfyUI's models/loras and "
        "Automatic1111's models/Lora",
    )
    parser.add_argument(
        "--ip-adapter-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also search this folder for IP-Adapters and their CLIP vision image encoders "
        "(repeatable), before ComfyUI's models/ipadapter and models/clip_vision",
    )


def add_addon_arguments(parser: argparse.ArgumentParser) -> None:
    """run's --lora, --ip-adapter and --ip-adapter-model, and the folders."""
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        type=parse_lora,
        metavar=LORA_FORM,
        help="a LoRA and its weight, -2 to 2 (default 1), e.g. watercolor:0.8 (repeatable); a name "
        "from `differential-inpaint models`, builtin:tiny-lora-sd15, or a .safetensors path",
    )
    parser.add_argument(
        "--ip-adapter",
        action="append",
        default=[],
        type=parse_reference,
        metavar=REFERENCE_FORM,
        help="a reference image that steers the result (IP-Adapter, SD1.5 and SDXL), with its weight, "
        f"0 to 2 (default {DEFAULT_REFERENCE_WEIGHT:g}), e.g. style.png:0.8 (repeatable)",
    )
    parser.add_argument(
        "--ip-adapter-model",
        default=None,
        metavar="SPEC",
        help="the IP-Adapter the references use (default: the first found that fits the model's "
        "family); a name from `differential-inpaint models`, builtin:tiny-ip-adapter-sd15, or a path",
    )
    add_addon_dir_arguments(parser)


def reference_images(
    options: Sequence[ReferenceOption], model: str | None, read: Callable[[Path], Any]
) -> list[Any]:
    """The references of `--ip-adapter` as the engine takes them (ip_adapter.ReferenceImage);
    `read(path)` gives a file's float32 RGBA pixels (its errors pass through)."""
    from .ip_adapter import ReferenceImage

    return [ReferenceImage(read(option.file), option.weight, model) for option in options]
