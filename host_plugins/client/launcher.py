"""Starting the local daemon on demand, and its state for the hosts' Start/Stop buttons.

`differential-inpaint install-plugin` writes `daemon.json` beside this module:
the command that starts this installation's daemon (its venv's Python running
`serve` with the options given to `--serve-args`) and the address that daemon
listens on, which becomes the plugin's default address (`connection.DEFAULT_SERVER`).

When a run finds no daemon at a local address that matches the record,
`flow.follow` calls `start_on_demand`: the daemon is started detached from the
host (its own session, no inherited handles), its output going to
`<cache>/differential-inpaint/daemon-PORT.log`; its lines are passed to
`on_status` while it starts; once it answers the handshake the job runs.
A lock file `daemon-PORT.lock` in the user's runtime folder ($XDG_RUNTIME_DIR,
else the cache folder) is held while starting, so two hosts (or two threads)
starting at once start one daemon; `daemon-PORT.json` beside it names the
process the plugin started (for `stop` and for "starting"). A daemon on
another machine is never started or stopped: the plugin only connects.

For the hosts' UIs:

    state(server)             -> DaemonState(state, model, device); state is NOT_RUNNING,
                                 STARTING or READY (blocking up to ~2 s: call off the GUI thread)
    start(server, on_status)  -> DaemonState (READY); blocking up to the start time limit
    stop(server)              -> True if a daemon this plugin started was stopped
    can_start(server)         -> whether Start can work for this address (no I/O)
    status_line(server, st)   -> one sentence describing `st` for a label

Standard library only (plus the client's connection): runs in Krita's and
GIMP's Pythons, 3.10 and later, on Linux, macOS and Windows.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

# `connection` imports this module for DEFAULT_SERVER; this import of the partly
# initialised module is safe because its names are used only inside functions.
from . import connection
from .errors import DaemonUnavailable, InpaintError, JobCancelled

RECORD_NAME = "daemon.json"
RECORD_FILE = Path(__file__).with_name(RECORD_NAME)
START_TIMEOUT = 120.0  # seconds until the daemon must listen, unless the record says otherwise
STOP_TIMEOUT = 20.0
PROBE_TIMEOUT = 5.0
LISTENING = "Differential Inpaint daemon listening on ws://"  # what `serve` prints (daemon/cli.py)
HEADER = "# differential-inpaint plugin:"  # our own lines in the log, never quoted back

NOT_RUNNING = "not running"
STARTING = "starting"
READY = "ready"

StatusCallback = Callable[[str], None]

_POLL = 0.1
_QUOTED_LINES = 12
# Process objects of daemons this process started: polled so they never linger as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


class DaemonState(NamedTuple):
    state: str  # NOT_RUNNING, STARTING or READY
    model: str  # the daemon's default model ("" when unknown)
    device: str  # e.g. "cuda:0", "mps", "cpu" ("" when unknown)


@dataclass(frozen=True)
class StartRecord:
    """What install-plugin recorded: how to start this installation's daemon."""

    command: list[str]
    server: str  # ws://127.0.0.1:PORT
    port: int
    start_timeout: float = START_TIMEOUT
    idle_exit: float | None = None  # seconds; None: the daemon never stops by itself
    path: Path | None = None  # the file it was read from

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> StartRecord:
        command, server = data["command"], data["server"]
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise ValueError("'command' must be a non-empty list of strings")
        # Not connection.normalize_server: this runs while `connection` is being imported.
        if not (isinstance(server, str) and server.startswith("ws://")):
            raise ValueError("'server' must be a ws:// address")
        server = server.rstrip("/")
        idle = data.get("idle_exit")
        return cls(
            list(command),
            server,
            port_of(server),
            float(data.get("start_timeout") or START_TIMEOUT),
            None if idle is None else float(idle),
            path,
        )


def read_record(path: Path | None = None) -> StartRecord | None:
    """The recorded start command; None when there is none. A damaged record is an
    InpaintError that says to reinstall."""
    path = RECORD_FILE if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InpaintError(f"Cannot read {path} ({exc}). {_REINSTALL}", "no_start_command") from None
    try:
        return StartRecord.from_json(json.loads(text), path)
    except (ValueError, KeyError, TypeError) as exc:
        raise InpaintError(f"{path} is damaged ({exc}). {_REINSTALL}", "no_start_command") from None


def recorded_server(path: Path | None = None) -> str | None:
    """The address of the recorded daemon, for the plugin's default; never raises."""
    try:
        record = read_record(path)
    except Exception:  # the plugin must load whatever the file holds
        return None
    return None if record is None else record.server


_REINSTALL = (
    'Install the plugin again with `differential-inpaint install-plugin` (add --serve-args "..." '
    "for the daemon's options), or start the daemon yourself with `differential-inpaint serve`."
)


# --- addresses ------------------------------------------------------------------------


def _split(server: str) -> tuple[str, int]:
    parts = urlsplit(server)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "wss" else 80
    return (parts.hostname or ""), (port if port is not None else default)


def port_of(server: str) -> int:
    return _split(server)[1]


def is_local(server: str | None) -> bool:
    """Whether the address is this machine's loopback (the only kind ever started)."""
    server = connection.normalize_server(server)
    if urlsplit(server).scheme != "ws":
        return False
    name = _split(server)[0].strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    if name == "::1":
        return True
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(x.isdigit() and int(x) < 256 for x in parts)


def can_start(server: str | None = None, record: StartRecord | None = None) -> bool:
    """Whether this plugin can start a daemon for `server`: it is local, and install-plugin
    recorded a start command for its port. No I/O besides reading the record."""
    server = connection.normalize_server(server)
    if not is_local(server):
        return False
    try:
        record = record or read_record()
    except InpaintError:
        return False
    return record is not None and record.port == port_of(server)


# --- folders ----------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where the daemon's logs go: the user's cache folder."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "differential-inpaint"


def runtime_dir() -> Path:
    """Where the start lock and the started daemon's pid live: $XDG_RUNTIME_DIR, else the cache."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and sys.platform not in ("win32", "darwin") and Path(runtime).is_dir():
        return Path(runtime) / "differential-inpaint"
    return cache_dir()


def log_path(port: int) -> Path:
    return cache_dir() / f"daemon-{port}.log"


def _state_path(port: int) -> Path:
    return runtime_dir() / f"daemon-{port}.json"


def _lock_path(port: int) -> Path:
    return runtime_dir() / f"daemon-{port}.lock"


# --- the start lock -------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError on POSIX, PermissionError on Windows
        return False
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)


def _open_lock(port: int) -> int:
    path = _lock_path(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not inherited by children (PEP 446): the daemon never holds the lock.
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _start_lock(
    port: int, say: StatusCallback, cancel: threading.Event | None, deadline: float, limit: float
) -> Iterator[None]:
    """Hold the per-user, per-port start lock, waiting for another starter if needed."""
    fd = _open_lock(port)
    try:
        told = False
        while not _try_lock(fd):
            if not told:
                say("Another program is starting the daemon; waiting for it...")
                told = True
            if cancel is not None and cancel.is_set():
                raise JobCancelled()
            if time.monotonic() > deadline:
                raise InpaintError(
                    f"Another program has been starting the daemon on port {port} for more than "
                    f"{limit:g} s (see {log_path(port)}). Try again when it has started.",
                    "daemon_start_failed",
                )
            time.sleep(_POLL)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _lock_busy(port: int) -> bool:
    """Whether someone holds the start lock right now."""
    try:
        fd = _open_lock(port)
    except OSError:
        return False
    try:
        if _try_lock(fd):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


# --- processes ------------------------------------------------------------------------


def _reap() -> None:
    with _CHILDREN_LOCK:
        for pid, child in list(_CHILDREN.items()):
            if child.poll() is not None:
                del _CHILDREN[pid]


def _pid_alive(pid: int) -> bool:
    _reap()
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return bool(ok) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # Linux: a zombie is dead for us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _runs_command(pid: int, command: list[str]) -> bool:
    """Whether process `pid` still runs `command` (not another program that got its pid)."""
    if Path("/proc/self/cmdline").exists():  # Linux
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            return argv == [os.fsencode(a) for a in command]
        except OSError:
            return False
    if sys.platform == "darwin":
        try:
            shown = subprocess.run(
                ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, timeout=5
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return True
        return "serve" in shown
    return True  # Windows: the pid file and the live process are all there is


def _read_state(port: int) -> dict[str, Any] | None:
    try:
        data = json.loads(_state_path(port).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    return data


def _write_state(port: int, data: dict[str, Any]) -> None:
    path = _state_path(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(partial, path)


def _remove_state(port: int, pid: int | None = None) -> None:
    info = _read_state(port)
    if info is not None and (pid is None or info.get("pid") == pid):
        with contextlib.suppress(OSError):
            _state_path(port).unlink()


def _started_alive(info: dict[str, Any] | None) -> bool:
    """Whether the daemon a state file names still runs."""
    if info is None:
        return False
    pid, command = info["pid"], info.get("command") or []
    return _pid_alive(pid) and _runs_command(pid, [str(a) for a in command])


def started_pid(server: str | None = None) -> int | None:
    """The pid of the daemon a plugin started for this local address, if it still runs."""
    info = _read_state(port_of(connection.normalize_server(server)))
    return int(info["pid"]) if info is not None and _started_alive(info) else None


def _daemon_env() -> dict[str, str]:
    """The host's environment without what belongs to the host's own Python (Krita's
    AppImage sets PYTHONHOME, kritarunner PYTHONPATH...), which would break the venv's."""
    env = dict(os.environ)
    for name in (
        "PYTHONHOME",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONEXECUTABLE",
        "PYTHONUSERBASE",
        "PYTHONSAFEPATH",
        "__PYVENV_LAUNCHER__",
        "VIRTUAL_ENV",
    ):
        env.pop(name, None)
    if env.get("APPIMAGE") or env.get("APPDIR"):
        env.pop("LD_LIBRARY_PATH", None)  # the AppImage's own libraries, not the venv's
    env["PYTHONUNBUFFERED"] = "1"  # its lines reach the log (and the painter) as they come
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _spawn(record: StartRecord, port: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the recorded command detached from this process, its output in the log."""
    log = log_path(port)
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        with contextlib.suppress(OSError):
            os.replace(log, log.with_name(log.name + ".1"))
    command = list(record.command)
    options: dict[str, Any] = {}
    if sys.platform == "win32":
        detached, new_group, breakaway = 0x00000008, 0x00000200, 0x01000000
        flag_sets = [detached | new_group | breakaway, detached | new_group]
    else:
        options["start_new_session"] = True  # its own session: the host's signals and exit spare it
        flag_sets = [0]
    home = Path.home()
    with open(log, "wb") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"{HEADER} started {stamp}: {join_command(command)}\n".encode())
        out.flush()
        for i, flags in enumerate(flag_sets):
            try:
                child = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(home) if home.is_dir() else None,
                    env=_daemon_env(),
                    close_fds=True,
                    creationflags=flags,
                    **options,
                )
                break
            except FileNotFoundError:
                raise InpaintError(
                    f"The daemon's start command no longer works: {command[0]} does not exist "
                    f"(recorded in {record.path or RECORD_FILE} when the plugin was installed). "
                    + _REINSTALL,
                    "daemon_start_failed",
                ) from None
            except OSError as exc:
                if i + 1 < len(flag_sets):
                    continue  # Windows: the host's job object may forbid breaking away
                raise InpaintError(
                    f"Could not start the daemon ({exc}); command: {join_command(command)}. " + _REINSTALL,
                    "daemon_start_failed",
                ) from None
    with _CHILDREN_LOCK:
        _CHILDREN[child.pid] = child
    info = {
        "pid": child.pid,
        "port": port,
        "command": command,
        "log": str(log),
        "started": time.time(),
        "idle_exit": record.idle_exit,
    }
    _write_state(port, info)
    return child, info


def join_command(command: list[str]) -> str:
    """A command as one line a shell (or cmd.exe on Windows) reads back the same."""
    if sys.platform == "win32":
        return subprocess.list2cmdline(command)
    return shlex.join(command)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM (the daemon stops cleanly), then SIGKILL after `timeout`."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)  # on Windows: TerminateProcess
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
            break
        time.sleep(_POLL)
    with _CHILDREN_LOCK:
        child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)


# --- the log ----------------------------------------------------------------------------


class _LogTail:
    """New complete lines of the daemon's log as it grows; the last few kept for messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.last: collections.deque[str] = collections.deque(maxlen=_QUOTED_LINES)

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.replace(b"\r", b"\n").split(b"\n")
        lines = []
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip()
            if line and not line.startswith(HEADER):
                lines.append(line)
                self.last.append(line)
        return lines

    def quoted(self) -> str:
        self.read()
        tail = list(self.last)
        if self.partial.strip():
            tail.append(self.partial.decode("utf-8", "replace").rstrip())
        if not tail:
            return "(it printed nothing)"
        return "\n".join("    " + line[:300] for line in tail[-_QUOTED_LINES:])


# --- probing ------------------------------------------------------------------------------


class _Probe(NamedTuple):
    kind: str  # "ready", "absent" (nothing listens) or "foreign" (something else listens)
    welcome: Any  # protocol Welcome when ready and it answered
    error: InpaintError | None


def _port_open(server: str, timeout: float = 1.0) -> bool:
    host, port = _split(server)
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def _probe(server: str, token: str | None = None, timeout: float = PROBE_TIMEOUT) -> _Probe:
    try:
        with connection.DaemonConnection(
            server, token=token, client="differential-inpaint-launcher", open_timeout=timeout
        ) as conn:
            return _Probe("ready", conn.welcome, None)
    except DaemonUnavailable as exc:
        error = DaemonUnavailable(exc.message)
    except InpaintError as exc:  # it answered as the daemon does, and refused (a token, a version)
        return _Probe("ready", None, InpaintError(exc.message, exc.code))
    return _Probe("foreign" if _port_open(server) else "absent", None, error)


def _ready_state(found: _Probe) -> DaemonState:
    welcome = found.welcome
    if welcome is None:
        return DaemonState(READY, "", "")
    return DaemonState(READY, welcome.default_model or "", welcome.device or "")


def _foreign(server: str, port: int, found: _Probe) -> InpaintError:
    detail = f" ({found.error.message})" if found.error is not None else ""
    return InpaintError(
        f"Port {port} on this machine is taken by another program, not the Differential Inpaint "
        f"daemon, so the daemon cannot start at {server}{detail}. Stop that program, or install "
        f'the plugin again with --serve-args "--port N" (a free port N) and use 127.0.0.1:N as '
        "the daemon address.",
        "port_taken",
    )


# --- the API ---------------------------------------------------------------------------------


def state(server: str | None = None, *, token: str | None = None, timeout: float = 2.0) -> DaemonState:
    """NOT_RUNNING, STARTING or READY, with the daemon's default model and device when READY.

    Blocks for up to `timeout` (a handshake): call it off the host's GUI thread."""
    server = connection.normalize_server(server)
    found = _probe(server, token, timeout)
    if found.kind == "ready":
        return _ready_state(found)
    if is_local(server):
        port = port_of(server)
        if _lock_busy(port) or _started_alive(_read_state(port)):
            return DaemonState(STARTING, "", "")
    return DaemonState(NOT_RUNNING, "", "")


def start(
    server: str | None = None,
    on_status: StatusCallback | None = None,
    *,
    token: str | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    record: StartRecord | None = None,
) -> DaemonState:
    """Make the daemon at the local address `server` run: reuse one that answers (or one
    that is starting), else start the recorded command and wait until it answers.

    `on_status` gets "Starting the daemon..." and the daemon's own lines as they come
    (from this thread). `timeout` defaults to the record's start limit (120 s). Raises
    InpaintError: a remote address, no start command for this port, a port taken by
    another program, a daemon that exits or never listens (quoting its last lines);
    JobCancelled when `cancel` is set meanwhile (a starting daemon goes on starting)."""
    server = connection.normalize_server(server)
    if not is_local(server):
        raise InpaintError(_remote_text(server), "remote_daemon")
    record = record or read_record()
    port = port_of(server)
    if record is None or record.port != port:
        found = _probe(server, token)
        if found.kind == "ready":
            return _ready_state(found)
        if found.kind == "foreign":
            raise _foreign(server, port, found)
        raise InpaintError(_no_record_text(server, record), "no_start_command")
    return _ensure(record, server, on_status, token=token, cancel=cancel, timeout=timeout)


def start_on_demand(
    server: str | None,
    unavailable: DaemonUnavailable,
    on_status: StatusCallback | None = None,
    *,
    token: str | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> DaemonState:
    """For a run that found no daemon (`unavailable`): start the recorded one when the address
    is local and matches the record; otherwise raise `unavailable`, saying why nothing was started."""
    server = connection.normalize_server(server)
    if not is_local(server):
        raise DaemonUnavailable(f"{unavailable.message} {_remote_text(server)}")
    record = read_record()
    if record is None:
        raise DaemonUnavailable(unavailable.message)
    if record.port != port_of(server):
        raise DaemonUnavailable(
            f"{unavailable.message} (This plugin starts its daemon only at {record.server}, the "
            "address recorded when it was installed; empty the daemon address to use it.)"
        )
    return _ensure(record, server, on_status, token=token, cancel=cancel, timeout=timeout)


def stop(server: str | None = None, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the daemon a plugin started at this local address; True if one was stopped,
    False if none runs. Raises InpaintError for a remote address, or for a daemon that
    was started otherwise (in a terminal, as a service), which the plugin leaves alone."""
    server = connection.normalize_server(server)
    if not is_local(server):
        raise InpaintError(
            f"The daemon at {server} runs on another machine; the plugin never starts or stops it.",
            "remote_daemon",
        )
    port = port_of(server)
    info = _read_state(port)
    if _started_alive(info):
        assert info is not None
        _terminate(info["pid"], timeout)
        _remove_state(port, info["pid"])
        return True
    _remove_state(port)
    if _probe(server, timeout=2.0).kind == "ready":
        raise InpaintError(
            f"The daemon at {server} was not started by this plugin (it runs in a terminal or as a "
            "service), so the plugin leaves it alone: stop it there (Ctrl-C in its terminal, or "
            "`differential-inpaint service remove`).",
            "not_started_here",
        )
    return False


def status_line(server: str | None, current: DaemonState, record: StartRecord | None = None) -> str:
    """One sentence for a label beside Start/Stop (no I/O besides reading the record)."""
    server = connection.normalize_server(server)
    if current.state == READY:
        what = " on ".join(x for x in (current.model, current.device) if x)
        return f"Ready at {server}" + (f": {what}." if what else ".")
    if not is_local(server):
        return f"No daemon answers at {server} (another machine: the plugin only connects)."
    port = port_of(server)
    if current.state == STARTING:
        return f"Starting (log: {log_path(port)})..."
    if can_start(server, record):
        return f"Not running; Start or a run starts it (log: {log_path(port)})."
    return f"Not running at {server}; start it with `differential-inpaint serve`."


def _remote_text(server: str) -> str:
    return (
        f"{server} is not this machine's address, so the plugin does not start a daemon there: it "
        "only connects. Start the daemon on that machine, or use 127.0.0.1 for one on this machine."
    )


def _no_record_text(server: str, record: StartRecord | None) -> str:
    if record is None:
        return (
            f"No daemon runs at {server}, and this plugin was installed without a start command. "
            + _REINSTALL
        )
    return (
        f"No daemon runs at {server}; this plugin starts its daemon only at {record.server} (the "
        "address recorded when it was installed). Use that address, or start a daemon on "
        f"port {port_of(server)} yourself with `differential-inpaint serve --port {port_of(server)}`."
    )


def _ensure(
    record: StartRecord,
    server: str,
    on_status: StatusCallback | None,
    *,
    token: str | None,
    cancel: threading.Event | None,
    timeout: float | None,
) -> DaemonState:
    say: StatusCallback = on_status or (lambda _text: None)
    port = port_of(server)
    limit = record.start_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    found = _probe(server, token)
    if found.kind == "ready":
        return _ready_state(found)
    with _start_lock(port, say, cancel, deadline, limit):
        found = _probe(server, token)  # another starter may have finished meanwhile
        if found.kind == "ready":
            return _ready_state(found)
        if found.kind == "foreign":
            raise _foreign(server, port, found)
        info = _read_state(port)
        child: subprocess.Popen[bytes] | None = None
        if _started_alive(info):
            assert info is not None
            say("The daemon is starting...")  # started earlier (a cancelled run): wait for it
        else:
            say("Starting the daemon...")
            child, info = _spawn(record, port)
        return _wait(server, token, info, child, say, cancel, deadline, limit)


def _wait(
    server: str,
    token: str | None,
    info: dict[str, Any],
    child: subprocess.Popen[bytes] | None,
    say: StatusCallback,
    cancel: threading.Event | None,
    deadline: float,
    limit: float,
) -> DaemonState:
    pid, port = info["pid"], port_of(server)
    log = Path(info.get("log") or log_path(port))
    tail = _LogTail(log)
    listening = False
    next_knock = 0.0
    while True:
        for line in tail.read():
            say(line)
            listening = listening or LISTENING in line
        now = time.monotonic()
        if listening or now >= next_knock:
            next_knock = now + 0.5
            if listening or _port_open(server, timeout=0.5):
                found = _probe(server, token)
                if found.kind == "ready":
                    return _ready_state(found)
        code = child.poll() if child is not None else None
        if code is not None or not _pid_alive(pid):
            _remove_state(port, pid)
            status = f"it exited with status {code}" if code is not None else "it exited"
            raise InpaintError(
                f"The daemon did not start ({status}). Its last lines (from {log}):\n"
                f"{tail.quoted()}\nFix its options by installing the plugin again with "
                '`differential-inpaint install-plugin ... --serve-args "..."`, or run '
                f"`{join_command([str(a) for a in info.get('command') or []])}` in a terminal to see more.",
                "daemon_start_failed",
            )
        if cancel is not None and cancel.is_set():
            raise JobCancelled()  # the daemon goes on starting; the next run uses it
        if time.monotonic() > deadline:
            _terminate(pid, 5.0)
            _remove_state(port, pid)
            raise InpaintError(
                f"The daemon did not listen within {limit:g} s, so it was stopped. Its last lines "
                f"(from {log}):\n{tail.quoted()}\nA large model on a slow disk may need longer: "
                "start it yourself once with `differential-inpaint serve`, or try again.",
                "daemon_start_failed",
            )
        time.sleep(_POLL)
