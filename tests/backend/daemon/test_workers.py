"""Several workers behind one queue, in-process with scripted engines (fast): the next job
goes to an idle worker, one that holds its model if any; a worker lost with its job runs
that job once more elsewhere, then fails it clearly; with no worker left the waiting jobs
fail and the daemon goes on answering; a worker that comes back takes jobs again.

The same with real worker processes and a Ray cluster: test_workers_real.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon import cli
from differential_inpaint.backend.daemon.jobs import (
    LOST_TEXT,
    NO_WORKER_TEXT,
    Job,
    JobRunner,
    Outcome,
    ThreadWorker,
    WorkerLost,
)
from differential_inpaint.backend.daemon.server import ServerConfig
from differential_inpaint.backend.daemon.workers import JobSpec, WorkerHost, WorkerSupervisor

from .conftest import TIMEOUT, FakeEngine, InProcessDaemon, RawClient, make_submit

SD15, SDXL = "builtin:tiny-sd15", "test:sdxl"


class MortalWorker(ThreadWorker):
    """A thread worker that, once `doomed`, dies with the next job it runs, mid-job: its
    engine stops at the first sampling step, as if its process were killed there, and
    nothing more of it reaches anyone."""

    def __init__(self, runner: JobRunner, name: str) -> None:
        super().__init__(runner, name)
        self.doomed = False
        self.zombie: asyncio.Future[Outcome] | None = None

    async def run(self, job: Job) -> Outcome:
        if not self.doomed:
            return await super().run(job)
        engine: FakeEngine = self.runner.engine
        engine.hold = threading.Event()  # released at teardown only
        self.zombie = asyncio.ensure_future(super().run(job))
        while not engine.running.is_set():
            await asyncio.sleep(0.01)
        raise WorkerLost("killed by the test")


class Pool:
    """Two workers (more with `add`), each with its own fake engine, under a supervisor
    that starts a lost one again after `restart_delay`."""

    def __init__(self, count: int = 2, restart_delay: float = 3600.0) -> None:
        self.count = count
        self.engines: list[FakeEngine] = []
        self.workers: list[MortalWorker] = []
        self.supervisor = WorkerSupervisor(
            self._start, self._slots, check_every=0.05, restart_delay=restart_delay
        )

    async def _start(self, slot: int) -> MortalWorker:
        engine = FakeEngine()
        runner = JobRunner(engine, asyncio.get_running_loop().call_soon_threadsafe, preview_interval=0.0)
        worker = MortalWorker(runner, f"w{len(self.workers) + 1}")
        self.engines.append(engine)
        self.workers.append(worker)
        return worker

    async def _slots(self) -> int:
        return self.count


@pytest.fixture
def pool_daemon() -> Iterator[Callable[..., tuple[InProcessDaemon, Pool]]]:
    """Factory: pool_daemon(**Pool options) -> a running daemon over a Pool of workers."""
    started: list[tuple[InProcessDaemon, Pool]] = []

    def make(**pool_options: Any) -> tuple[InProcessDaemon, Pool]:
        pool = Pool(**pool_options)
        config = ServerConfig(host="127.0.0.1", port=0, preview_interval=0.0, shutdown_grace=5.0)
        daemon = InProcessDaemon(FakeEngine(), config, supervisor=pool.supervisor)
        started.append((daemon, pool))
        return daemon, pool

    yield make
    for daemon, pool in started:
        for engine in pool.engines:
            if engine.hold is not None:
                engine.hold.set()
        daemon.stop()


def status(client: RawClient) -> p.Status:
    client.send(p.GetStatus())
    return client.until_type(p.Status)


def finals(client: RawClient, job_ids: list[str]) -> dict[str, Any]:
    """Each job's last word, whatever order they come in."""
    got: dict[str, Any] = {}
    while len(got) < len(job_ids):
        message = client.until(
            lambda m: (
                isinstance(m, (p.Result, p.Error, p.Cancelled)) and getattr(m, "job_id", None) in job_ids
            )
        )
        assert message.job_id not in got, f"two last words for {message.job_id}"
        got[message.job_id] = message
    return got


def _is_last_word(message: Any) -> bool:
    return isinstance(message, (p.Error, p.Cancelled)) or (isinstance(message, p.Result) and message.is_last)


def test_status_lists_every_worker(pool_daemon: Any) -> None:
    daemon, _ = pool_daemon()
    with RawClient(daemon.url) as client:
        now = status(client)
        assert [w.name for w in now.workers] == ["w1", "w2"] or [w.name for w in now.workers] == ["w2", "w1"]
        assert all(not w.busy and w.model is None and w.jobs == 0 for w in now.workers)
        assert client.welcome is not None and client.welcome.device.startswith("2 workers")


def test_jobs_run_side_by_side_on_idle_workers(pool_daemon: Any) -> None:
    daemon, pool = pool_daemon()
    for engine in pool.engines:
        engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("a"))
        client.send(make_submit("b"))
        for engine in pool.engines:  # both sampling at once
            assert engine.running.wait(TIMEOUT)
        assert status(client).running and all(w.busy for w in status(client).workers)
        for engine in pool.engines:
            engine.hold.set()  # type: ignore[union-attr]
        assert all(isinstance(m, p.Result) for m in finals(client, ["a", "b"]).values())


def test_a_job_goes_to_the_worker_that_holds_its_model(pool_daemon: Any) -> None:
    daemon, pool = pool_daemon()
    with RawClient(daemon.url) as client:
        # One at a time, so that both workers are idle at every choice.
        for index, model in enumerate([SD15, SDXL, SD15, SD15, SDXL, SD15, SDXL]):
            result = client.run(make_submit(f"j{index}", model=model))
            assert isinstance(result, p.Result), result
        by_engine = [[call.model for call in engine.calls] for engine in pool.engines]
        assert sorted(by_engine) == [[SD15] * 4, [SDXL] * 3]  # each model loaded once, on one worker
        held = {w.model: w.jobs for w in status(client).workers}
        assert held == {SD15: 4, SDXL: 3}


def test_a_lost_workers_job_runs_again_on_another_and_arrives_once(pool_daemon: Any) -> None:
    daemon, pool = pool_daemon()
    first, second = pool.workers
    first.doomed = True  # the first job goes to the first worker (both idle, none used yet)
    with RawClient(daemon.url) as client:
        client.send(make_submit("job", steps=4))
        result = client.final("job")
        assert isinstance(result, p.Result), result
        assert [w.name for w in status(client).workers] == [second.name]
        # Exactly one last word: nothing more for the job after it.
        client.send(p.GetStatus())
        client.until_type(p.Status)
        assert [type(m).__name__ for m in client.seen if getattr(m, "job_id", None) == "job"].count(
            "Result"
        ) == 1
        assert len(pool.engines[1].calls) == 1


def test_a_job_whose_worker_is_lost_twice_fails_clearly(pool_daemon: Any) -> None:
    daemon, pool = pool_daemon(count=3)
    for worker in pool.workers:
        worker.doomed = True
    with RawClient(daemon.url) as client:
        error = client.run(make_submit("job"))
        assert isinstance(error, p.Error) and error.code is p.ErrorCode.JOB_FAILED, error
        assert error.message == LOST_TEXT.format(when="twice")
        assert "worker running this job was lost" in error.message
        assert len(status(client).workers) == 1  # the third goes on
        assert isinstance(client.run(make_submit("next")), p.Error)  # it too was doomed


def test_with_every_worker_lost_waiting_jobs_fail_and_the_daemon_answers(pool_daemon: Any) -> None:
    daemon, pool = pool_daemon()
    for worker in pool.workers:
        worker.doomed = True
    with RawClient(daemon.url) as client:
        for job_id in ("a", "b", "c", "d"):
            client.send(make_submit(job_id))
        answers = finals(client, ["a", "b", "c", "d"])
        assert all(isinstance(m, p.Error) and m.code is p.ErrorCode.JOB_FAILED for m in answers.values())
        texts = sorted(m.message for m in answers.values())
        assert LOST_TEXT.format(when="and no other worker is left") in texts
        assert NO_WORKER_TEXT in texts
        now = status(client)
        assert now.workers == [] and now.queued == 0 and not now.running
        refused = client.run(make_submit("later"))
        assert isinstance(refused, p.Error) and refused.message == NO_WORKER_TEXT


def test_lost_workers_are_started_again_and_take_jobs(pool_daemon: Any) -> None:
    daemon, pool = pool_daemon(restart_delay=0.1)
    for worker in pool.workers:
        worker.doomed = True
    with RawClient(daemon.url) as client:
        client.send(make_submit("a"))
        client.send(make_submit("b"))
        finals(client, ["a", "b"])
        for _ in range(400):
            if len(status(client).workers) == 2:
                break
            time.sleep(0.05)
        assert sorted(w.name for w in status(client).workers) == ["w3", "w4"]
        assert isinstance(client.run(make_submit("again")), p.Result)


# --- the command line ------------------------------------------------------------------------


def _serve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    code = cli.run(parser.parse_args(["--port", "0", *argv]))
    return code, capsys.readouterr().out


def test_ray_without_ray_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as when it is not installed
    code, out = _serve(capsys, "--ray", "auto")
    assert code == 2
    assert "pip install 'differential-inpaint[cluster]'" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--ray", "auto", "--device", "cuda:1"), "leave out --device"),
        (
            (
                "--workers",
                "2",
            ),
            "--workers is for --ray",
        ),
    ],
)
def test_options_that_do_not_go_together(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], words: str
) -> None:
    code, out = _serve(capsys, *argv)
    assert code == 2 and words in out


@pytest.mark.slow
def test_a_device_that_cannot_start_stops_start_up_with_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _serve(capsys, "--model", "builtin:tiny-sd15", "--device", "cpu", "--device", "cuda:99")
    assert code == 2
    assert "error: worker cuda:99 could not start" in out, out


# --- the far side of a worker (a process's or a Ray actor's), without the process ---------------


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> tuple[WorkerHost, FakeEngine]:
    from differential_inpaint.backend import engine as engine_package

    fake = FakeEngine()
    fake.dtype = "torch.float32"  # type: ignore[attr-defined]
    monkeypatch.setattr(engine_package, "Engine", lambda **options: fake, raising=False)
    return WorkerHost({"device": "cpu"}, preview_interval=0.0), fake


def _decoded(data: bytes) -> Any:
    return p.decode(data, p.DEFAULT_LIMITS, p.SERVER_MESSAGES)


def _spec(serial: int, job_id: str = "job") -> JobSpec:
    return JobSpec(serial, job_id, "client #1", make_submit(job_id), SD15, 0.0)


def test_a_worker_host_streams_the_jobs_messages_then_its_outcome(
    host: tuple[WorkerHost, FakeEngine],
) -> None:
    worker_host, _ = host
    events = list(worker_host.run(_spec(1)))
    assert [kind for kind, *_ in events].count("outcome") == 1 and events[-1][0] == "outcome"
    _, message, kind, loaded, offload = events[-1]
    assert kind == "done" and loaded == SD15 and isinstance(_decoded(message), p.Result)
    assert offload == ("", "")  # the stand-in engine does not say how it places its weights
    messages = [_decoded(data) for kind, data, *_ in events[:-1]]
    assert any(isinstance(m, p.Progress) and m.stage == p.Stage.SAMPLING for m in messages)
    assert any(isinstance(m, p.Preview) for m in messages)
    assert worker_host.device == "cpu (float32)"


def test_a_worker_host_out_of_memory_fails_that_job_only(host: tuple[WorkerHost, FakeEngine]) -> None:
    worker_host, fake = host
    fake.fail_with = MemoryError()
    _, message, kind, *_ = list(worker_host.run(_spec(1)))[-1]
    assert kind == "failed" and _decoded(message).code is p.ErrorCode.OUT_OF_MEMORY
    _, message, kind, *_ = list(worker_host.run(_spec(2, "next")))[-1]
    assert kind == "done" and isinstance(_decoded(message), p.Result)


def test_a_cancel_that_reaches_the_host_before_its_job_still_cancels_it(
    host: tuple[WorkerHost, FakeEngine],
) -> None:
    worker_host, fake = host
    worker_host.cancel(7, stopping=False)  # a Ray actor takes its calls in any order
    _, message, kind, *_ = list(worker_host.run(_spec(7)))[-1]
    assert kind == "cancelled" and isinstance(_decoded(message), p.Cancelled)
    assert not fake.calls  # never started
