"""`differential-inpaint models`: the models found on this machine (depth models too) and where
it looked."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", action="append", default=[], type=Path, help="also search this folder (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .cli_run import quiet_libraries
    from .job import Engine

    quiet_libraries()

    engine = Engine(device="cpu", model_dirs=args.model_dir)
    models = engine.list_models()
    folders = engine.search_folders()
    depth_models = engine.depth_models.list_models()
    if args.json:
        payload = {
            "models": [{"name": m.name, "family": m.family, "source": m.source} for m in models],
            "depth_models": [{"name": m.name, "source": m.source} for m in depth_models],
            "searched": [{"path": str(f.path), "kind": f.source, "exists": f.path.is_dir()} for f in folders],
        }
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    width = max((len(m.name) for m in models), default=4)
    print(f"{'NAME':<{width}}  {'FAMILY':<12}  SOURCE")
    for m in models:
        print(f"{m.name:<{width}}  {m.family:<12}  {m.source}")
    if all(m.source == "builtin" for m in models):
        print("\nNo checkpoint found: only the built-in tiny test models (random weights) are available.")
    # Depth models (for --depth near|far) are searched in these folders and their installations'
    # depth folders (depth.py); the first found is the default.
    print("\nDepth models:")
    for m in depth_models:
        print(f"  {m.name}  [{m.source}]")
    print("\nSearched:")
    for f in folders:
        state = "" if f.path.is_dir() else "  (missing)"
        print(f"  {f.path}  [{f.source}]{state}")
    return 0
