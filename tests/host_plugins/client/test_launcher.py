"""The launcher (client/launcher.py) with real daemon processes: started on demand,
detached, logged, reused, started once by concurrent starters, failures quoted, and
never started for another machine's address.

Each test gets its own cache and runtime folders and its own ephemeral ports; every
daemon a test starts is ended in teardown (they are detached, so nothing else would).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.client import DaemonUnavailable, InpaintError, JobCancelled, flow, launcher
from differential_inpaint.host_plugins.install.daemon_record import (
    IDLE_OPTION,
    start_command,
    write_record,
)
from tests.support.daemon import running_daemon

from . import started
from .test_flow import StandInHost, chosen

pytestmark = pytest.mark.slow

TINY = "--model builtin:tiny-sd15"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Folders:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.cache = base / "cache" / "differential-inpaint"
        self.runtime = base / "run" / "differential-inpaint"
        self.commands: list[list[str]] = []

    def record(self, serve_args: str, **options: Any) -> launcher.StartRecord:
        """A start record as install-plugin writes it, in this test's folder."""
        command = start_command(serve_args, **options)
        self.commands.append(command.argv)
        folder = self.base / f"client-{len(self.commands)}"
        folder.mkdir()
        record = launcher.read_record(write_record(folder, command))
        assert record is not None
        return record

    def headers(self, port: int) -> int:
        """How many starts the log of `port` shows."""
        log = launcher.log_path(port)
        return log.read_text().count(launcher.HEADER) if log.exists() else 0


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Folders]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    # No record beside the source tree's launcher unless a test installs one.
    monkeypatch.setattr(launcher, "RECORD_FILE", tmp_path / "no-record.json")
    found = Folders(tmp_path)
    try:
        yield found
    finally:
        started.end_started([found.runtime], found.commands)


def use_record(monkeypatch: pytest.MonkeyPatch, record: launcher.StartRecord) -> None:
    assert record.path is not None
    monkeypatch.setattr(launcher, "RECORD_FILE", record.path)


def no_spawning(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the launcher tried to start a process")

    monkeypatch.setattr(launcher, "_spawn", refuse)
    monkeypatch.setattr(launcher.subprocess, "Popen", refuse)


# --- one daemon's life ---------------------------------------------------------------------


def test_start_reuse_state_and_stop(folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    port = unused_port()
    server = f"ws://127.0.0.1:{port}"
    record = folders.record(f"{TINY} --port {port}")
    use_record(monkeypatch, record)
    monkeypatch.setenv("PYTHONPATH", "/nowhere")  # the host's Python settings stay the host's
    assert launcher.can_start(server) and launcher.can_start(f"localhost:{port}")
    assert launcher.state(server) == (launcher.NOT_RUNNING, "", "")

    lines: list[str] = []
    ready = launcher.start(server, lines.append)
    assert ready == (launcher.READY, "builtin:tiny-sd15", "cpu")
    assert lines[0] == "Starting the daemon..."
    assert any("Models offered" in line for line in lines), lines  # the daemon's own progress
    assert any(launcher.LISTENING in line for line in lines), lines

    pid = launcher.started_pid(server)
    assert pid is not None and started.cmdline(pid) == record.command
    # Detached: its own session; stdin from /dev/null, stdout and stderr into the log.
    assert os.getsid(pid) == pid != os.getsid(0)
    log = folders.cache / f"daemon-{port}.log"
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == str(log)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(v.startswith(b"PYTHONPATH=") for v in environ)
    assert launcher.LISTENING in log.read_text()
    assert (folders.runtime / f"daemon-{port}.lock").exists()

    again: list[str] = []
    assert launcher.start(server, again.append).state == launcher.READY
    assert again == [] and launcher.started_pid(server) == pid and folders.headers(port) == 1
    assert launcher.state(f"localhost:{port}") == ready
    assert "builtin:tiny-sd15 on cpu" in launcher.status_line(server, ready)

    assert launcher.stop(server) is True
    assert not started.alive(pid)
    assert launcher.state(server).state == launcher.NOT_RUNNING
    assert launcher.stop(server) is False


def test_concurrent_starts_in_threads_start_one_daemon(folders: Folders) -> None:
    port = unused_port()
    record = folders.record(f"{TINY} --port {port}")
    results: list[Any] = []
    barrier = threading.Barrier(3)

    def first_run() -> None:
        barrier.wait()
        try:
            results.append(launcher.start(f"ws://127.0.0.1:{port}", record=record))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=first_run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert [r.state for r in results] == [launcher.READY] * 3, results
    assert started.processes_running(record.command) == [launcher.started_pid(f"ws://127.0.0.1:{port}")]
    assert folders.headers(port) == 1


def test_concurrent_starts_in_two_processes_start_one_daemon(folders: Folders) -> None:
    """Two hosts' first runs at once (the lock file, not a thread lock): one daemon, which
    outlives both of the processes that asked for it."""
    port = unused_port()
    record = folders.record(f"{TINY} --port {port}")
    assert record.path is not None
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from differential_inpaint.client import launcher
        record = launcher.read_record(Path({str(record.path)!r}))
        print(launcher.start("ws://127.0.0.1:{port}", record=record).state, launcher.started_pid(
            "ws://127.0.0.1:{port}"))
        """
    )
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [starter.communicate(timeout=150)[0] for starter in starters]
    assert [starter.returncode for starter in starters] == [0, 0], outputs
    pids = started.processes_running(record.command)
    assert len(pids) == 1, (pids, outputs)
    assert all(out.split() == ["ready", str(pids[0])] for out in outputs), outputs
    assert folders.headers(port) == 1
    assert launcher.state(f"ws://127.0.0.1:{port}").state == launcher.READY  # its starters are gone


# --- failures ---------------------------------------------------------------------------------


def test_a_bad_model_is_an_error_quoting_the_daemon(folders: Folders) -> None:
    port = unused_port()
    record = folders.record(f"--model nope:missing --port {port}")
    lines: list[str] = []
    with pytest.raises(InpaintError) as raised:
        launcher.start(f"ws://127.0.0.1:{port}", lines.append, record=record)
    message = raised.value.message
    assert raised.value.code == "daemon_start_failed"
    assert "exited with status 2" in message
    assert "Unknown model 'nope:missing'" in message  # the daemon's own words
    assert str(launcher.log_path(port)) in message
    assert lines[0] == "Starting the daemon..." and any("nope:missing" in line for line in lines)
    assert started.processes_running(record.command) == []
    assert launcher.started_pid(f"ws://127.0.0.1:{port}") is None
    assert launcher.state(f"ws://127.0.0.1:{port}").state == launcher.NOT_RUNNING


def test_a_daemon_that_never_listens_is_stopped_at_the_time_limit(folders: Folders) -> None:
    port = unused_port()
    command = [sys.executable, "-c", "import time; print('loading for ever', flush=True); time.sleep(600)"]
    folders.commands.append(command)
    record = launcher.StartRecord(command, f"ws://127.0.0.1:{port}", port, start_timeout=2.0)
    started_at = time.monotonic()
    with pytest.raises(InpaintError) as raised:
        launcher.start(record.server, record=record)
    assert time.monotonic() - started_at < 15
    assert "did not listen within 2 s" in raised.value.message
    assert "loading for ever" in raised.value.message
    assert started.processes_running(command) == []


def test_a_recorded_interpreter_that_is_gone(folders: Folders, tmp_path: Path) -> None:
    port = unused_port()
    record = folders.record(f"{TINY} --port {port}", python=str(tmp_path / "deleted-venv" / "python"))
    with pytest.raises(InpaintError) as raised:
        launcher.start(record.server, record=record)
    assert "deleted-venv/python does not exist" in raised.value.message
    assert "install-plugin" in raised.value.message


def test_a_port_taken_by_another_program_is_named(folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    class NotADaemon(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"some other web server")

        def log_message(self, *_args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), NotADaemon)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        port = other.server_address[1]
        record = folders.record(f"{TINY} --port {port}")
        no_spawning(monkeypatch)
        with pytest.raises(InpaintError) as raised:
            launcher.start(f"ws://127.0.0.1:{port}", record=record)
        assert raised.value.code == "port_taken"
        assert f"Port {port} on this machine is taken by another program" in raised.value.message
        assert launcher.state(f"ws://127.0.0.1:{port}").state == launcher.NOT_RUNNING
    finally:
        other.shutdown()
        other.server_close()


def test_a_daemon_started_in_a_terminal_is_used_and_not_stopped(folders: Folders) -> None:
    with running_daemon() as daemon:
        assert launcher.state(daemon.url) == (launcher.READY, "builtin:tiny-sd15", "cpu")
        assert launcher.start(daemon.url).state == launcher.READY  # nothing to start: no record needed
        with pytest.raises(InpaintError) as raised:
            launcher.stop(daemon.url)
        assert raised.value.code == "not_started_here"
        assert daemon.process.poll() is None


def test_no_record_or_another_port_starts_nothing(folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    port, other = unused_port(), unused_port()
    server = f"ws://127.0.0.1:{other}"
    no_spawning(monkeypatch)
    with pytest.raises(InpaintError) as raised:
        launcher.start(server)
    assert raised.value.code == "no_start_command" and "install-plugin" in raised.value.message
    assert not launcher.can_start(server)
    with pytest.raises(DaemonUnavailable) as unavailable:
        launcher.start_on_demand(server, DaemonUnavailable("Nothing answers."))
    assert unavailable.value.message == "Nothing answers."

    record = folders.record(f"{TINY} --port {port}")
    use_record(monkeypatch, record)
    assert not launcher.can_start(server)
    with pytest.raises(DaemonUnavailable) as unavailable:
        launcher.start_on_demand(server, DaemonUnavailable("Nothing answers."))
    assert f"only at ws://127.0.0.1:{port}" in unavailable.value.message


# --- remote addresses -------------------------------------------------------------------------


REMOTE = ["ws://192.0.2.10:7865", "http://gpu-box.example:7865", "wss://127.0.0.1:7865", "10.0.0.5:7865"]


@pytest.mark.parametrize("server", REMOTE)
def test_another_machines_daemon_is_never_started(
    folders: Folders, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    record = folders.record(f"{TINY} --port 7865")  # a record for the same port changes nothing
    use_record(monkeypatch, record)
    no_spawning(monkeypatch)
    assert not launcher.is_local(server) and not launcher.can_start(server)
    with pytest.raises(InpaintError) as raised:
        launcher.start(server)
    assert raised.value.code == "remote_daemon" and "only connects" in raised.value.message
    with pytest.raises(DaemonUnavailable) as unavailable:
        launcher.start_on_demand(server, DaemonUnavailable("The daemon is not running."))
    assert unavailable.value.message.startswith("The daemon is not running.")
    assert "only connects" in unavailable.value.message
    with pytest.raises(InpaintError, match="another machine"):
        launcher.stop(server)


def test_a_run_against_another_machine_only_connects(
    folders: Folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_spawning(monkeypatch)

    def unreachable(*_args: object, **_kwargs: object) -> p.Result:
        raise DaemonUnavailable("The Differential Inpaint daemon is not running at ws://192.0.2.10:7865.")

    monkeypatch.setattr(flow, "run_job", unreachable)
    settings = chosen(server="ws://192.0.2.10:7865")
    job = flow.prepare(StandInHost(), settings)
    with pytest.raises(DaemonUnavailable) as raised:
        flow.follow(job, settings, client="test", on_status=lambda _line: pytest.fail("no status"))
    assert "only connects" in raised.value.message


@pytest.mark.parametrize(
    ("server", "local"),
    [
        ("", True),
        ("localhost:7865", True),
        ("127.0.0.1:9000", True),
        ("127.1.2.3:9000", True),
        ("[::1]:7865", True),
        ("http://localhost:7865/", True),
        ("ws://localhost.:7865", True),
        ("ws://127.0.0.1.example:7865", False),
        ("ws://192.168.1.20:7865", False),
        ("wss://localhost:7865", False),
        ("ws://my-pc:7865", False),
    ],
)
def test_which_addresses_are_local(server: str, local: bool) -> None:
    assert launcher.is_local(server) is local


# --- through the job flow ---------------------------------------------------------------------


def test_a_run_starts_the_daemon_then_runs_the_job(folders: Folders, monkeypatch: pytest.MonkeyPatch) -> None:
    port = unused_port()
    use_record(monkeypatch, folders.record(f"{TINY} --port {port}"))
    settings = chosen(server=f"127.0.0.1:{port}", steps=1)
    host = StandInHost(size=(64, 64))
    job = flow.prepare(host, settings)
    progress: list[p.Progress] = []
    # Without on_status, the start shows as one "loading" progress (what hosts already display).
    results = flow.follow(job, settings, client="test", on_progress=progress.append)
    flow.finish(job, results)
    assert progress[0].stage == p.Stage.LOADING and progress[0].job_id == job.submit.job_id
    assert progress[-1].stage == p.Stage.DECODING
    assert len(host.inserted) == 1 and folders.headers(port) == 1
    assert launcher.state(f"ws://127.0.0.1:{port}").state == launcher.READY


def test_a_failing_start_fails_the_run_with_the_daemons_words(
    folders: Folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = unused_port()
    use_record(monkeypatch, folders.record(f"--model nope:missing --port {port}"))
    settings = chosen(server=f"ws://127.0.0.1:{port}")
    host = StandInHost()
    job = flow.prepare(host, settings)
    lines: list[str] = []
    with pytest.raises(InpaintError) as raised:
        flow.follow(job, settings, client="test", on_status=lines.append)
    assert "Unknown model 'nope:missing'" in raised.value.message
    assert raised.value.__context__ is None  # nothing holds the job's frames
    assert lines[0] == "Starting the daemon..." and any("nope:missing" in line for line in lines)
    assert host.inserted == []


def test_a_cancelled_start_leaves_it_starting_and_the_next_run_uses_it(folders: Folders) -> None:
    port = unused_port()
    server = f"ws://127.0.0.1:{port}"
    record = folders.record(f"{TINY} --port {port}")
    cancel = threading.Event()

    def on_status(line: str) -> None:
        cancel.set()  # the painter presses Cancel as soon as it says "Starting"

    with pytest.raises(JobCancelled):
        launcher.start(server, on_status, cancel=cancel, record=record)
    pid = launcher.started_pid(server)
    assert pid is not None
    assert launcher.state(server).state in (launcher.STARTING, launcher.READY)
    lines: list[str] = []
    assert launcher.start(server, lines.append, record=record).state == launcher.READY
    assert launcher.started_pid(server) == pid and folders.headers(port) == 1
    assert "Starting the daemon..." not in lines


def test_waiting_for_another_starter(folders: Folders) -> None:
    """While someone else holds the start lock the daemon is "starting"; a start waits for
    them, within its time limit."""
    import fcntl

    port = unused_port()
    server = f"ws://127.0.0.1:{port}"
    record = folders.record(f"{TINY} --port {port}")
    folders.runtime.mkdir(parents=True, exist_ok=True)
    with open(folders.runtime / f"daemon-{port}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert launcher.state(server).state == launcher.STARTING
        lines: list[str] = []
        with pytest.raises(InpaintError, match="Another program has been starting the daemon"):
            launcher.start(server, lines.append, record=record, timeout=0.5)
        assert lines == ["Another program is starting the daemon; waiting for it..."]
    assert launcher.state(server).state == launcher.NOT_RUNNING


def test_a_started_daemon_stops_when_idle_and_a_later_run_starts_it_again(folders: Folders) -> None:
    port = unused_port()
    server = f"ws://127.0.0.1:{port}"
    record = folders.record(f"{TINY} --port {port}", idle_exit=3)
    assert record.idle_exit == 3 and IDLE_OPTION in record.command
    assert launcher.start(server, record=record).state == launcher.READY
    pid = launcher.started_pid(server)
    assert pid is not None
    deadline = time.monotonic() + 60
    while started.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not started.alive(pid), "the daemon did not stop after 3 s idle"
    assert launcher.state(server).state == launcher.NOT_RUNNING
    assert launcher.start(server, record=record).state == launcher.READY
    assert launcher.started_pid(server) not in (None, pid)


# --- the record -------------------------------------------------------------------------------


def test_a_damaged_record(tmp_path: Path) -> None:
    path = tmp_path / launcher.RECORD_NAME
    path.write_text("{not json")
    with pytest.raises(InpaintError, match="damaged"):
        launcher.read_record(path)
    assert launcher.recorded_server(path) is None
    path.write_text('{"command": [], "server": "ws://127.0.0.1:1"}')
    assert launcher.recorded_server(path) is None
    assert launcher.read_record(tmp_path / "absent.json") is None
