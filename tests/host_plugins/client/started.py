"""Finding and ending the daemons that tests started through the launcher.

A daemon the launcher starts is detached (its own session), so nothing ends it
with the test: every test that may start one ends it in teardown, by the pid
the launcher wrote (`daemon-PORT.json` in the runtime folder), after checking
that the pid still runs exactly the recorded command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(a) for a in raw.split(b"\0")[:-1]]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def processes_running(command: Sequence[str]) -> list[int]:
    """Pids of live processes whose argv is exactly `command`."""
    wanted = list(command)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and cmdline(int(entry.name)) == wanted and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def end(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL; reaps it if it is this process's child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def started(runtime_dirs: Iterable[Path]) -> list[tuple[int, list[str]]]:
    """(pid, command) of each daemon the launcher recorded in these runtime folders."""
    found = []
    for folder in runtime_dirs:
        for path in sorted(Path(folder).glob("daemon-*.json")):
            try:
                info = json.loads(path.read_text())
                found.append((int(info["pid"]), [str(a) for a in info["command"]]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


def end_started(runtime_dirs: Iterable[Path], commands: Iterable[Sequence[str]] = ()) -> list[int]:
    """End every daemon recorded in `runtime_dirs` that still runs its command, and every
    live process running exactly one of `commands`; returns the pids ended."""
    pids = {pid for pid, command in started(runtime_dirs) if cmdline(pid) == command and alive(pid)}
    for command in commands:
        pids.update(processes_running(command))
    for pid in sorted(pids):
        end(pid)
    return sorted(pids)
