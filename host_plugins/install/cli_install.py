"""`differential-inpaint install-plugin {krita,gimp} [--dest DIR] [--serve-args "..."]`.

Besides copying the plugin, it records in the plugin how to start this
installation's daemon (daemon_record.py): a run that finds no daemon at the
recorded local address starts it (client/launcher.py). `--no-start` records nothing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .daemon_record import DEFAULT_IDLE_EXIT, IDLE_OPTION, ServeArgsError, start_command

# host -> module with `install(dest: Path | None, *, daemon: StartCommand | None) -> Path`
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
    parser.add_argument(
        "--serve-args",
        default="",
        metavar='"OPTIONS"',
        help="options for the daemon the plugin starts when a run finds none, in one quoted "
        'argument, e.g. "--model-dir ~/ComfyUI/models/checkpoints --port 7866" (a single option: '
        '--serve-args="--option"; see `differential-inpaint serve --help`); the plugin\'s default '
        "address follows --port",
    )
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=DEFAULT_IDLE_EXIT,
        metavar="SECONDS",
        help=f"a daemon the plugin started stops after this long without clients or jobs, freeing "
        f"the GPU (default {DEFAULT_IDLE_EXIT:g}; 0 = never); recorded as the daemon's {IDLE_OPTION} "
        "unless --serve-args gives it",
    )
    parser.add_argument(
        "--no-start",
        action="store_true",
        help="record no start command: the plugin only connects (you run the daemon yourself or "
        "as a service)",
    )


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(HOSTS[args.host])
    daemon = None
    if not args.no_start:
        try:
            daemon = start_command(args.serve_args, idle_exit=args.idle_exit or None)
        except ServeArgsError as exc:
            print(f"error: --serve-args: {exc}", file=sys.stderr)
            return 2
    try:
        installed = module.install(args.dest, daemon=daemon)
    except (OSError, RuntimeError) as exc:
        print(f"error: could not install the {args.host} plugin: {exc}", file=sys.stderr)
        return 1
    print(f"Installed the {args.host} plugin in {installed}")
    if daemon is not None:
        from differential_inpaint.client.launcher import join_command, log_path

        print(
            f"When a run finds no daemon at {daemon.server} (the plugin's default address), the "
            f"plugin starts it:\n    {join_command(daemon.argv)}\n  its log: {log_path(daemon.port)}"
        )
    else:
        print("The plugin only connects to a running daemon (--no-start).")
    hint = getattr(module, "ENABLE_HINT", None)
    if hint:
        print(hint)
    return 0
