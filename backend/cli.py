"""The `differential-inpaint` command: one entry point, one module per subcommand.

Each subcommand module provides `add_arguments(parser)` and `run(args) -> int`
and keeps heavy imports (torch, diffusers) inside `run`, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "differential_inpaint.backend.daemon.cli",
        "start the local daemon the plugins talk to",
    ),
    "run": (
        "differential_inpaint.backend.engine.cli_run",
        "inpaint one image offline, without the daemon",
    ),
    "models": (
        "differential_inpaint.backend.engine.cli_models",
        "list the models found on this machine",
    ),
    "install-plugin": (
        "differential_inpaint.host_plugins.install.cli_install",
        "install the Krita or GIMP plugin for this user",
    ),
    "package-plugin": (
        "differential_inpaint.host_plugins.install.cli_package",
        "build a plugin zip for Krita's 'Import Python Plugin from File'",
    ),
    "service": (
        "differential_inpaint.backend.service",
        "run the daemon as a user service (systemd, launchd, Windows Startup folder)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="differential-inpaint",
        description="Differential Diffusion inpainting: every mask pixel sets its own strength.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
