"""`differential-inpaint install-plugin {krita,gimp} [--dest DIR]`."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# host -> module with `install(dest: Path | None) -> Path`
HOSTS = {
    "krita": "differential_inpaint.host_plugins.install.krita",
    "gimp": "differential_inpaint.host_plugins.install.gimp",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", choices=sorted(HOSTS), help="which program to install the plugin into")
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="the host's plugin folder (default: the usual one for this user)",
    )


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(HOSTS[args.host])
    try:
        installed = module.install(args.dest)
    except (OSError, RuntimeError) as exc:
        print(f"error: could not install the {args.host} plugin: {exc}", file=sys.stderr)
        return 1
    print(f"Installed the {args.host} plugin in {installed}")
    hint = getattr(module, "ENABLE_HINT", None)
    if hint:
        print(hint)
    return 0
