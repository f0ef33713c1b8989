"""`differential-inpaint package-plugin krita --out FILE.zip`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", choices=["krita"], help="the host whose plugin zip to build")
    parser.add_argument("--out", type=Path, required=True, help="the zip file to write")


def run(args: argparse.Namespace) -> int:
    from .krita import package

    try:
        written = package(args.out)
    except (OSError, RuntimeError) as exc:
        print(f"error: could not build the plugin zip: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {written}; in Krita use Tools > Scripts > Import Python Plugin from File")
    return 0
