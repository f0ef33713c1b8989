"""`differential-inpaint service install|remove|status [--serve-args "..."]`: the daemon as
a user service, started at login and restarted if it fails, instead of by the plugins.

    Linux    a systemd user unit, ~/.config/systemd/user/differential-inpaint.service
             (enabled and started with `systemctl --user enable --now`)
    macOS    a launchd agent, ~/Library/LaunchAgents/org.differential-inpaint.daemon.plist
             (loaded with `launchctl bootstrap gui/UID`)
    Windows  a script in the Startup folder, %APPDATA%\\Microsoft\\Windows\\Start Menu\\
             Programs\\Startup\\differential-inpaint-daemon.vbs, run hidden at logon (and now)

The service runs the same command install-plugin records for the plugins (this venv's
Python, `serve` and the given options; host_plugins/install/daemon_record.py), with its
output appended to the plugins' log, <cache>/differential-inpaint/daemon-PORT.log. Where
no user service manager runs (a container, CI), `install` writes the file, says how to
enable it, and exits 0. A plugin finding the service's daemon at its address just uses it.

Each file carries one comment line `differential-inpaint service: {"server": ..., "log": ...}`
that `status` reads back.
"""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

NAME = "differential-inpaint"
UNIT = f"{NAME}.service"
LABEL = "org.differential-inpaint.daemon"
STARTUP_SCRIPT = f"{NAME}-daemon.vbs"
MARKER = "differential-inpaint service: "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["install", "remove", "status"], help="what to do")
    parser.add_argument(
        "--serve-args",
        default="",
        metavar='"OPTIONS"',
        help='the daemon\'s options in one quoted argument, e.g. "--model-dir ~/models --port 7866" '
        '(a single option: --serve-args="--option"); see `differential-inpaint serve --help`',
    )
    parser.add_argument(
        "--no-enable",
        action="store_true",
        help="install: only write the service file and say how to enable it",
    )


# --- what each platform writes -----------------------------------------------------------------


def _systemd_quote(arg: str) -> str:
    """One ExecStart= word: systemd expands %specifiers and $VARIABLES, splits on spaces."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(argv: list[str], server: str, log: Path) -> str:
    exec_start = " ".join(_systemd_quote(a) for a in argv)
    marker = json.dumps({"server": server, "log": str(log)})
    return (
        f"# Written by `differential-inpaint service install`; `differential-inpaint service remove` "
        f"removes it.\n"
        f"# {MARKER}{marker}\n"
        "[Unit]\n"
        f"Description=Differential Inpaint daemon ({server})\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "WorkingDirectory=%h\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        f"StandardOutput=append:{str(log).replace('%', '%%')}\n"
        "StandardError=inherit\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(argv: list[str], server: str, log: Path) -> str:
    body = plistlib.dumps(
        {
            "Label": LABEL,
            "ProgramArguments": argv,
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},  # restarted after a crash, not after a clean stop
            "StandardOutPath": str(log),
            "StandardErrorPath": str(log),
            "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
            "WorkingDirectory": str(Path.home()),
            "ProcessType": "Interactive",  # a GPU worker for the painter, not a background task
        }
    ).decode()
    marker = json.dumps({"server": server, "log": str(log)}).replace("--", "- -")
    head, sep, rest = body.partition("\n")
    return f"{head}{sep}<!-- {MARKER}{marker} -->\n{rest}"


def _vbs_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def startup_script(argv: list[str], server: str, log: Path) -> str:
    command = subprocess.list2cmdline(argv)
    line = f'cmd /c "{command} >> "{log}" 2>&1"'  # cmd strips the outer quotes of /c "..."
    marker = json.dumps({"server": server, "log": str(log)})
    return (
        "' Written by `differential-inpaint service install`: starts the Differential Inpaint\n"
        "' daemon hidden at logon. `differential-inpaint service remove` removes it.\n"
        f"' {MARKER}{marker}\n"
        'Set shell = CreateObject("WScript.Shell")\n'
        f"shell.Run {_vbs_string(line)}, 0, False\n"
    )


# --- platforms --------------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


class Platform:
    kind = ""

    def path(self) -> Path:
        raise NotImplementedError

    def render(self, argv: list[str], server: str, log: Path) -> str:
        raise NotImplementedError

    def manager_running(self) -> bool:
        return False

    def enable(self) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def disable(self) -> None:
        pass

    def running(self) -> bool | None:
        """Whether the manager says the service runs; None when it cannot tell."""
        return None

    def how_to_enable(self) -> str:
        raise NotImplementedError


class Systemd(Platform):
    kind = "systemd user unit"

    def path(self) -> Path:
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config / "systemd" / "user" / UNIT

    def render(self, argv: list[str], server: str, log: Path) -> str:
        return systemd_unit(argv, server, log)

    def manager_running(self) -> bool:
        if shutil.which("systemctl") is None:
            return False
        return _run(["systemctl", "--user", "show-environment"], timeout=10).returncode == 0

    def enable(self) -> subprocess.CompletedProcess[str]:
        reload = _run(["systemctl", "--user", "daemon-reload"])
        if reload.returncode != 0:
            return reload
        return _run(["systemctl", "--user", "enable", "--now", UNIT])

    def disable(self) -> None:
        _run(["systemctl", "--user", "disable", "--now", UNIT])

    def running(self) -> bool | None:
        if not self.manager_running():
            return None
        return _run(["systemctl", "--user", "is-active", "--quiet", UNIT]).returncode == 0

    def how_to_enable(self) -> str:
        return (
            f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT}\n"
            "  (to run it before you log in too: loginctl enable-linger $USER)"
        )


class Launchd(Platform):
    kind = "launchd agent"

    def path(self) -> Path:
        return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    def render(self, argv: list[str], server: str, log: Path) -> str:
        return launchd_plist(argv, server, log)

    def _domain(self) -> str:
        return f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/0"

    def manager_running(self) -> bool:
        return (
            shutil.which("launchctl") is not None
            and _run(["launchctl", "print", self._domain()]).returncode == 0
        )

    def enable(self) -> subprocess.CompletedProcess[str]:
        _run(["launchctl", "bootout", f"{self._domain()}/{LABEL}"])  # an older copy, if loaded
        return _run(["launchctl", "bootstrap", self._domain(), str(self.path())])

    def disable(self) -> None:
        _run(["launchctl", "bootout", f"{self._domain()}/{LABEL}"])

    def running(self) -> bool | None:
        if not self.manager_running():
            return None
        shown = _run(["launchctl", "print", f"{self._domain()}/{LABEL}"])
        return shown.returncode == 0 and "state = running" in shown.stdout

    def how_to_enable(self) -> str:
        return f"launchctl bootstrap {self._domain()} '{self.path()}'"


class StartupFolder(Platform):
    kind = "Startup-folder script"

    def path(self) -> Path:
        appdata = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
        return appdata / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup" / STARTUP_SCRIPT

    def render(self, argv: list[str], server: str, log: Path) -> str:
        return startup_script(argv, server, log)

    def manager_running(self) -> bool:
        return sys.platform == "win32" and shutil.which("wscript") is not None

    def enable(self) -> subprocess.CompletedProcess[str]:
        # The script runs at every logon; this runs it once now.
        return _run(["wscript", str(self.path())])

    def how_to_enable(self) -> str:
        return (
            f'it runs at your next logon; to start it now: wscript "{self.path()}". (Task Scheduler '
            'works too: schtasks /Create /SC ONLOGON /TN "Differential Inpaint daemon" '
            f'/TR "wscript.exe \\"{self.path()}\\"")'
        )


def platform() -> Platform:
    if sys.platform == "win32":
        return StartupFolder()
    if sys.platform == "darwin":
        return Launchd()
    return Systemd()


# --- the commands -----------------------------------------------------------------------------


def read_marker(path: Path) -> dict[str, Any] | None:
    """The server and log a written service file names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        _, found, rest = line.partition(MARKER)
        if found:
            rest = rest.removesuffix("-->").strip()
            try:
                data = json.loads(rest.replace("- -", "--"))
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def install(serve_args: str, *, enable: bool = True, target: Platform | None = None) -> int:
    from ..client.launcher import join_command, log_path
    from ..host_plugins.install.daemon_record import ServeArgsError, start_command

    target = target or platform()
    try:
        command = start_command(serve_args, idle_exit=None, allow_remote=True)
    except ServeArgsError as exc:
        print(f"error: --serve-args: {exc}", file=sys.stderr)
        return 2
    log = log_path(command.port)
    log.parent.mkdir(parents=True, exist_ok=True)  # the service manager opens it, not the daemon
    path = target.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(target.render(command.argv, command.server, log), encoding="utf-8")
    os.replace(partial, path)
    print(f"Wrote the {target.kind} {path}")
    print(f"  it runs: {join_command(command.argv)}")
    print(f"  its log: {log}")
    if not enable:
        print(f"To enable it: {target.how_to_enable()}")
        return 0
    if not target.manager_running():
        print(
            "No user service manager runs here (a container or CI?). To enable it later: "
            + target.how_to_enable()
        )
        return 0
    done = target.enable()
    if done.returncode != 0:
        print(
            f"error: the service manager did not enable it: {(done.stderr or done.stdout).strip()}\n"
            f"To enable it by hand: {target.how_to_enable()}",
            file=sys.stderr,
        )
        return 1
    print(f"Enabled and started: the daemon answers at {command.server} (the plugins' default address).")
    return 0


def remove(*, target: Platform | None = None) -> int:
    target = target or platform()
    path = target.path()
    if not path.exists():
        print(f"No {target.kind} to remove ({path} does not exist).")
        return 0
    if target.manager_running():
        target.disable()
    path.unlink()
    if isinstance(target, Systemd) and target.manager_running():
        _run(["systemctl", "--user", "daemon-reload"])
    print(f"Removed {path}.")
    return 0


def status(*, target: Platform | None = None) -> int:
    from ..client import launcher
    from ..client.connection import DEFAULT_SERVER

    target = target or platform()
    path = target.path()
    marker = read_marker(path) if path.exists() else None
    server = str(marker["server"]) if marker and marker.get("server") else DEFAULT_SERVER
    log = Path(marker["log"]) if marker and marker.get("log") else launcher.log_path(launcher.port_of(server))
    if path.exists():
        print(f"Installed: {target.kind} {path}")
    else:
        print(f"Not installed (no {path}); install it with `differential-inpaint service install`.")
    running = target.running()
    if running is None:
        print("Service manager: none runs here, so whether the service runs is unknown.")
    else:
        print(f"Service: {'running' if running else 'not running'}")
    state = launcher.state(server)
    if state.state == launcher.READY:
        print(f"Daemon: {launcher.status_line(server, state)}")
    else:
        print(f"Daemon: {state.state} (nothing answers at {server})")
    print(f"Log: {log}{'' if log.exists() else ' (not written yet)'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "install":
        return install(args.serve_args, enable=not args.no_enable)
    if args.action == "remove":
        return remove()
    return status()
