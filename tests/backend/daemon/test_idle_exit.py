"""`serve --idle-exit SECONDS`: the daemon stops by itself once nothing has kept it busy
for that long: no client connected (idle or not) and no job queued or running.

In process, with the fake engine and small idle times (the watcher looks every quarter
of the idle time): it stops when idle, never while a client is connected or a job runs
(a job whose client left included), a connection shorter than one look restarts the
count, and 0 means never. Then a real `serve --idle-exit 1` process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon.server import serve_until
from differential_inpaint.client import DaemonUnavailable, run_job
from tests.support.daemon import DaemonProcess, daemon_command

from .conftest import TIMEOUT, FakeEngine, InProcessDaemon, RawClient, make_submit

IDLE = 0.5  # seconds, in process


class Serving:
    """`serve_until` running the in-process daemon, as `serve` runs it."""

    def __init__(self, daemon: InProcessDaemon, started: float) -> None:
        self.daemon = daemon
        self.started = started  # before the daemon started listening
        self.stop = asyncio.Event()
        self.stopping = threading.Event()  # set when the shutdown begins
        shutdown = daemon.server.shutdown

        async def noted_shutdown() -> None:
            self.stopping.set()
            await shutdown()

        daemon.server.shutdown = noted_shutdown  # type: ignore[method-assign]
        self.future: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(
            serve_until(daemon.server, self.stop), daemon.loop
        )

    def stopped_within(self, seconds: float) -> bool:
        """Whether the shutdown began within `seconds`; then waits for it to end."""
        if not self.stopping.wait(seconds):
            return False
        self.future.result(TIMEOUT)
        return True

    def still_running_after(self, seconds: float) -> bool:
        return not self.stopping.wait(seconds)

    def end(self) -> None:
        self.daemon.loop.call_soon_threadsafe(self.stop.set)
        self.future.result(TIMEOUT)


@pytest.fixture
def serving(make_daemon: Callable[..., InProcessDaemon]) -> Any:
    running: list[Serving] = []

    def make(engine: Any, idle_exit: float = IDLE) -> Serving:
        started = time.monotonic()
        serving = Serving(make_daemon(engine, idle_exit=idle_exit), started)
        running.append(serving)
        return serving

    yield make
    for serving in running:
        if not serving.future.done():
            serving.end()


def test_an_idle_daemon_stops_by_itself_and_says_why(
    engine: FakeEngine, serving: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="differential_inpaint.daemon"):
        daemon = serving(engine)
        assert daemon.stopped_within(TIMEOUT)
    took = time.monotonic() - daemon.started
    assert IDLE <= took < IDLE + 5, took
    messages = [r.getMessage() for r in caplog.records]
    assert any("stops by itself after 0.5 s" in m for m in messages), messages
    assert any("idle for 0.5 s" in m and "--idle-exit" in m for m in messages), messages
    assert any(m.startswith("stopped in") for m in messages), messages
    # The same clean shutdown as SIGTERM: the port no longer answers.
    with pytest.raises(OSError):
        RawClient(daemon.daemon.url, open_timeout=2)


def test_a_connected_client_keeps_it_busy_or_not(engine: FakeEngine, serving: Any) -> None:
    daemon = serving(engine)
    with RawClient(daemon.daemon.url) as client:
        assert daemon.still_running_after(IDLE * 4)  # an idle client, its handshake done
        assert isinstance(client.run(make_submit("one")), p.Result)
        assert daemon.still_running_after(IDLE * 4)
        client.send(p.GetStatus())
        assert isinstance(client.until_type(p.Status), p.Status)  # it still answers
        left = time.monotonic()
    assert daemon.stopped_within(TIMEOUT)
    assert time.monotonic() - left >= IDLE  # counted from when the client left, never early


def test_a_connection_before_its_hello_counts(engine: FakeEngine, serving: Any) -> None:
    daemon = serving(engine)
    with RawClient(daemon.daemon.url, hello=None):
        assert daemon.still_running_after(IDLE * 4)
    assert daemon.stopped_within(TIMEOUT)


def test_a_running_job_keeps_it_after_its_client_left(engine: FakeEngine, serving: Any) -> None:
    """A job that does not see its cancel at once (a model load, say) runs on after its
    client disconnected: the daemon waits for it."""
    release = threading.Event()
    inpaint = engine.inpaint_batch

    def deaf_until_released(*args: Any, **kwargs: Any) -> Any:
        engine.running.set()
        release.wait(TIMEOUT)
        return inpaint(*args, **kwargs)

    engine.inpaint_batch = deaf_until_released  # type: ignore[method-assign]
    daemon = serving(engine)
    with RawClient(daemon.daemon.url) as client:
        client.send(make_submit("held"))
        client.until_type(p.Accepted)
        assert engine.running.wait(TIMEOUT)
    assert daemon.still_running_after(IDLE * 4)
    jobs = daemon.daemon.server.jobs
    assert jobs is not None and jobs.running  # only the job keeps it
    release.set()
    assert daemon.stopped_within(TIMEOUT)
    assert engine.calls and engine.calls[0].cancelled_at == 1  # the disconnect cancelled it


def test_connections_shorter_than_a_look_restart_the_count(engine: FakeEngine, serving: Any) -> None:
    daemon = serving(engine, idle_exit=1.0)  # looks every 0.25 s
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        RawClient(daemon.daemon.url, hello=None).close()  # milliseconds each
        assert daemon.still_running_after(0.4)
    assert daemon.stopped_within(TIMEOUT)


def test_zero_means_never(engine: FakeEngine, serving: Any) -> None:
    daemon = serving(engine, idle_exit=0)
    assert daemon.still_running_after(1.5)
    assert not daemon.daemon.server.idle.is_set()
    daemon.end()


# --- a real `serve --idle-exit 1` ---------------------------------------------------------------


@pytest.mark.slow
def test_serve_with_idle_exit_stops_when_idle_and_only_then() -> None:
    """One daemon left alone and one with a client, side by side (both start at once)."""
    alone = DaemonProcess(daemon_command("--idle-exit", "1"))
    used = DaemonProcess(daemon_command("--idle-exit", "1"))
    try:
        # The client connects first: the daemon counts from when it listens.
        url = used.wait_listening(120)
        with RawClient(url) as client:
            alone.wait_listening(120)
            assert alone.process.wait(30) == 0, alone.output  # idle: stops within seconds

            assert used.process.poll() is None, used.output  # connected meanwhile
            time.sleep(2)
            assert used.process.poll() is None, used.output  # connected and idle, for 2 s more
            began = time.monotonic()
            result = client.run(make_submit("job", 64, 64, steps=2), 180)  # loads the model: seconds
            assert isinstance(result, p.Result), result
            assert time.monotonic() - began > 1
            assert used.process.poll() is None, used.output  # a job ran, longer than the idle time
            left = time.monotonic()
        assert used.process.wait(30) == 0, used.output  # its client left: it stops
        assert time.monotonic() - left >= 0.9
    finally:
        alone.stop()
        used.stop()
    for daemon in (alone, used):
        assert "idle for 1 s (no client connected, no job queued or running): stopping" in daemon.output
        assert "stopped in" in daemon.output and "Traceback" not in daemon.output
    assert "job job" in used.output and "done in" in used.output
    with pytest.raises(DaemonUnavailable):
        run_job(make_submit("late"), server=url, timeout=10)
