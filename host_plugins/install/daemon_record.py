"""The command that starts this installation's daemon, as the plugins and the service run it.

`install-plugin --serve-args "..."` records it in the installed plugin as
`client/daemon.json` (read by `client/launcher.py`, which starts the daemon when a
run finds none); `differential-inpaint service install` writes it into a user
service. It is this venv's Python running `differential_inpaint.backend.cli serve`
with the given options, checked here with the daemon's own argument parser (which
imports no torch), so a typo fails at install time rather than at the first run.

    {
      "command": ["/…/.venv/bin/python", "-m", "differential_inpaint.backend.cli", "serve", …],
      "server": "ws://127.0.0.1:7865",   the plugin's default address: follows --port
      "serve_args": […],                 the options as given (paths made absolute)
      "idle_exit": 1800,                 seconds (--idle-exit, 1800 unless given), or null: never
      "start_timeout": 120,
      "installed_by": "differential-inpaint 0.1.0"
    }
"""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from differential_inpaint.client.launcher import RECORD_NAME, START_TIMEOUT

SERVE_MODULE = "differential_inpaint.backend.cli"
DEFAULT_PORT = 7865
DEFAULT_IDLE_EXIT = 1800.0  # 30 min without a client or a job: the daemon frees the GPU
IDLE_OPTION = "--idle-exit"
PATH_OPTIONS = ("--model-dir", "--token-file")  # always paths: made absolute
MAYBE_PATH_OPTIONS = ("--model",)  # a path when one exists by that name


class ServeArgsError(ValueError):
    """The options for `serve` are wrong; the message says which and why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ServeArgsError(message)


def serve_parser() -> argparse.ArgumentParser:
    """The daemon's own `serve` options (backend/daemon/cli.py), without -h."""
    from differential_inpaint.backend.daemon import cli

    parser = _Parser(prog="differential-inpaint serve", add_help=False)
    cli.add_arguments(parser)
    return parser


def split_args(text: str | Sequence[str] | None) -> list[str]:
    """Options as a list: a string is split like a shell would (quotes keep spaces)."""
    if text is None:
        return []
    if not isinstance(text, str):
        return [str(a) for a in text]
    if sys.platform == "win32":  # backslashes are path separators there, not escapes
        return [a[1:-1] if len(a) > 1 and a[0] == a[-1] == '"' else a for a in shlex.split(text, posix=False)]
    return shlex.split(text)


def _absolute(value: str, always: bool) -> str:
    path = Path(value).expanduser()
    if always or path.exists():
        return str(path.resolve())
    return value


def absolute_paths(args: list[str]) -> list[str]:
    """The options with their paths made absolute: the daemon starts in the home folder,
    not where install-plugin ran."""
    out: list[str] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            out.append(_absolute(arg, pending in PATH_OPTIONS))
            pending = None
            continue
        name, eq, value = arg.partition("=")
        if name in PATH_OPTIONS + MAYBE_PATH_OPTIONS:
            if eq:
                out.append(f"{name}={_absolute(value, name in PATH_OPTIONS)}")
            else:
                out.append(arg)
                pending = name
            continue
        out.append(arg)
    return out


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StartCommand:
    argv: list[str]
    serve_args: list[str]
    host: str
    port: int
    idle_exit: float | None  # in argv as --idle-exit; None: not given (the daemon has no such option)

    @property
    def server(self) -> str:
        """Where a plugin on this machine reaches this daemon."""
        host = self.host.strip("[]")
        if host in ("::1",):
            return f"ws://[::1]:{self.port}"
        if _is_loopback(host) and host != "localhost":
            return f"ws://{host}:{self.port}"
        return f"ws://127.0.0.1:{self.port}"

    def record(self) -> dict[str, Any]:
        try:
            version = importlib.metadata.version("differential-inpaint")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return {
            "command": self.argv,
            "server": self.server,
            "serve_args": self.serve_args,
            "idle_exit": self.idle_exit,
            "start_timeout": START_TIMEOUT,
            "installed_by": f"differential-inpaint {version}",
        }


def start_command(
    serve_args: str | Sequence[str] | None = None,
    *,
    idle_exit: float | None = DEFAULT_IDLE_EXIT,
    python: str | None = None,
    allow_remote: bool = False,
) -> StartCommand:
    """This installation's `serve` with `serve_args`, checked. `idle_exit` (seconds; None or
    0: never) is added as --idle-exit when the daemon has that option and the args do not
    set it. Raises ServeArgsError."""
    args = absolute_paths(split_args(serve_args))
    if any(a in ("-h", "--help") for a in args):
        raise ServeArgsError("--help is not an option to record; see `differential-inpaint serve --help`")
    parser = serve_parser()
    options = parser.parse_args(args)
    port = int(options.port)
    if port == 0:
        raise ServeArgsError(
            "--port 0 picks a different port at every start, so the plugin could not find the "
            f"daemon; give a fixed port (the default is {DEFAULT_PORT})"
        )
    if not 0 < port < 65536:
        raise ServeArgsError(f"--port must be 1-65535, not {port}")
    if not allow_remote and not _is_loopback(options.host):
        raise ServeArgsError(
            f"--host {options.host} would let other machines reach the daemon the plugin starts; "
            "the plugin starts a daemon for this machine only. Run a shared daemon yourself "
            "(`differential-inpaint serve --host ...`) or as a service (`differential-inpaint "
            "service install --serve-args ...`)"
        )
    recorded_idle: float | None = None
    default_idle: list[str] = []  # in the command, not in serve_args (the options as given)
    if any(a == IDLE_OPTION or a.startswith(IDLE_OPTION + "=") for a in args):
        recorded_idle = float(getattr(options, "idle_exit", 0) or 0) or None
    elif idle_exit:
        default_idle = [IDLE_OPTION, f"{idle_exit:g}"]
        recorded_idle = float(idle_exit)
    interpreter = python or sys.executable
    if not interpreter:
        raise ServeArgsError("cannot tell which Python runs this installation (sys.executable is empty)")
    argv = [interpreter, "-m", SERVE_MODULE, "serve", *args, *default_idle]
    return StartCommand(argv, args, str(options.host), port, recorded_idle)


def write_record(client_dir: Path, command: StartCommand) -> Path:
    """Write `daemon.json` into an installed plugin's client/ folder."""
    path = Path(client_dir) / RECORD_NAME
    path.write_text(json.dumps(command.record(), indent=1) + "\n", encoding="utf-8")
    return path


def check_record(client_dir: Path) -> list[str]:
    """Problems with a written record, as sentences (none when there is no record)."""
    path = Path(client_dir) / RECORD_NAME
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        command = data["command"]
        server = data["server"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{path} is not a start record ({exc})"]
    if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
        return [f"{path}: 'command' must be a non-empty list of strings"]
    if not (isinstance(server, str) and server.startswith("ws://")):
        return [f"{path}: 'server' must be a ws:// address"]
    return []
