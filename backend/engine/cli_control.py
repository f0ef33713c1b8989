"""The command line's ControlNet options: `run --control KIND:FILE[:MODEL[:STRENGTH[:START:END]]]`
(repeatable), `--preprocess`, and `--controlnet-dir` (on `run`, `serve` and `models`).

MODEL may itself hold colons (``builtin:tiny-controlnet-sd15``) and FILE may too (``C:\\...``):
the numbers are read from the end, and FILE is the longest leading part that names a file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ...protocol import ControlParams, ProtocolError

CONTROL_FORM = "KIND:FILE[:MODEL[:STRENGTH[:START:END]]]"


@dataclass(frozen=True)
class ControlOption:
    """One `--control` as typed: the file of its image and its parameters (checked by the spec)."""

    file: Path
    params: ControlParams


def add_controlnet_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controlnet-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also search this folder for ControlNets (repeatable), before ComfyUI's models/controlnet "
        "and Automatic1111's models/ControlNet",
    )


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control",
        action="append",
        default=[],
        type=parse_control,
        metavar=CONTROL_FORM,
        help="steer with a ControlNet (repeatable): KIND canny, depth, lineart, scribble, pose, tile, "
        "inpaint, ...; FILE the control image (the image's size); MODEL a ControlNet from "
        "`differential-inpaint models` or a file or folder (default: the first found for the kind and "
        "the model's family); STRENGTH 0-2 (default 1); START:END the fraction of the steps it acts "
        "in (default 0:1)",
    )
    parser.add_argument(
        "--preprocess",
        action="store_true",
        help="the --control images of kind canny or depth are photos: make their edges or depth first",
    )
    add_controlnet_dir_argument(parser)


def parse_control(text: str) -> ControlOption:
    """`--control`'s value; argparse.ArgumentTypeError in words when it is not of the form."""
    kind, colon, rest = text.partition(":")
    if not colon or not kind.strip() or not rest:
        raise argparse.ArgumentTypeError(f"'{text}' is not {CONTROL_FORM} (canny:edges.png)")
    parts = rest.split(":")
    numbers: list[float] = []
    while parts and len(numbers) < 3 and _is_number(parts[-1]) and len(parts) > 1:
        numbers.insert(0, float(parts.pop()))
    if len(numbers) == 2:  # STRENGTH:START without END, or START:END without STRENGTH
        raise argparse.ArgumentTypeError(f"'{text}': give STRENGTH alone or STRENGTH:START:END")
    cut = next((n for n in range(len(parts), 0, -1) if Path(":".join(parts[:n])).expanduser().is_file()), 0)
    if cut == 0:
        raise argparse.ArgumentTypeError(f"'{text}': no control image file '{parts[0]}'")
    model = ":".join(parts[cut:]) or None
    strength, start, end = (numbers + [0.0, 1.0]) if len(numbers) == 1 else (numbers or [1.0, 0.0, 1.0])
    params = ControlParams(kind=kind.strip(), model=model, strength=strength, start=start, end=end)
    try:
        params = ControlParams.from_wire(params.to_wire(), "--control")
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(f"'{text}': {exc.message}") from None
    return ControlOption(Path(":".join(parts[:cut])).expanduser(), params)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
