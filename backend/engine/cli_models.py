"""`differential-inpaint models`: the models found on this machine (depth models too) and where
it looked."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cli_addons import add_addon_dir_arguments
from .cli_control import add_controlnet_dir_argument
from .cli_run import add_model_part_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", action="append", default=[], type=Path, help="also search this folder (repeatable)"
    )
    add_controlnet_dir_argument(parser)
    add_addon_dir_arguments(parser)
    add_model_part_arguments(parser)  # listed first among the text encoders and VAEs
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .cli_run import quiet_libraries
    from .job import Engine

    quiet_libraries()

    engine = Engine(
        device="cpu",
        model_dirs=args.model_dir,
        controlnet_dirs=args.controlnet_dir,
        lora_dirs=args.lora_dir,
        ip_adapter_dirs=args.ip_adapter_dir,
        text_encoders=args.text_encoder,
        vae=args.vae,
    )
    models = engine.list_models()
    folders = engine.search_folders()
    depth_models = engine.depth_models.list_models()
    addons = {"loras": engine.loras.finder, "ip_adapters": engine.ip_adapters.finder}
    addons["image_encoders"] = engine.ip_adapters.encoders
    found = {kind: finder.find() for kind, finder in addons.items()}
    controlnets = engine.list_controlnets()
    parts = engine.list_parts()
    if args.json:
        payload = {
            "models": [
                {"name": m.name, "family": m.family, "source": m.source, "lacks": list(m.lacks)}
                for m in models
            ],
            "depth_models": [{"name": m.name, "source": m.source} for m in depth_models],
            **{
                kind: [{"name": a.name, "family": a.family, "source": a.source} for a in listed]
                for kind, listed in found.items()
            },
            "searched_addons": {
                kind: [
                    {"path": str(f.path), "kind": f.source, "exists": f.path.is_dir()}
                    for f in finder.search_folders()
                ]
                for kind, finder in addons.items()
            },
            "controlnets": [
                {"name": c.name, "family": c.family, "source": c.source, "union": c.union}
                for c in controlnets
            ],
            **{
                kind: [{"name": p.name, "role": p.role, "families": list(p.families)} for p in listed]
                for kind, listed in (
                    ("text_encoders", [p for p in parts if not p.is_vae]),
                    ("vaes", [p for p in parts if p.is_vae]),
                )
            },
            "searched": [{"path": str(f.path), "kind": f.source, "exists": f.path.is_dir()} for f in folders],
        }
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    width = max((len(m.name) for m in models), default=4)
    print(f"{'NAME':<{width}}  {'FAMILY':<12}  SOURCE")
    for m in models:
        lacks = f"  (lacks {', '.join(m.lacks)}: see below)" if m.lacks else ""
        print(f"{m.name:<{width}}  {m.family:<12}  {m.source}{lacks}")
    if all(m.source == "builtin" for m in models):
        print("\nNo checkpoint found: only the built-in tiny test models (random weights) are available.")
    # Depth models (for --depth near|far) are searched in these folders and their installations'
    # depth folders (depth.py); the first found is the default.
    print("\nDepth models:")
    for depth in depth_models:
        print(f"  {depth.name}  [{depth.source}]")
    # ControlNets (for --control) are searched in --controlnet-dir folders and the installations'
    # ControlNet folders (controlnet.py); `Searched` lists the checkpoint folders.
    print("\nControlNets:")
    for c in controlnets:
        union = ", union" if c.union else ""
        print(f"  {c.name}  [{c.family}{union}] [{c.source}]")
    # LoRAs (--lora) and IP-Adapters (--ip-adapter) with the family each fits, and the image
    # encoders IP-Adapters take (by the width of their output: PROJECTION:HIDDEN); each kind is
    # searched in its own folders (addons.py), listed under `Searched`.
    for kind, title in (
        ("loras", "LoRAs"),
        ("ip_adapters", "IP-Adapters"),
        ("image_encoders", "Image encoders"),
    ):
        print(f"\n{title}:")
        for a in found[kind]:
            print(f"  {a.name}  [{a.family}] [{a.source}]")
    # The text encoders and VAEs of FLUX.1 / SD3 single files (--text-encoder, --vae; a job's
    # `text_encoders` and `vae`): in the transformers' part folders and ComfyUI's (parts.py).
    print("\nText encoders and VAEs (FLUX.1 / SD3 single files):")
    for part in parts:
        print(f"  {part.name}  [{part.role}] [{', '.join(part.families)}]")
    print("\nSearched:")
    for f in folders:
        state = "" if f.path.is_dir() else "  (missing)"
        print(f"  {f.path}  [{f.source}]{state}")
    for kind, finder in addons.items():
        for f in finder.search_folders():
            state = "" if f.path.is_dir() else "  (missing)"
            print(f"  {f.path}  [{f.source}, {kind.replace('_', ' ')}]{state}")
    return 0
