"""The queue and the worker: order, isolation between clients, cancel, disconnect, failures,
previews. Against the real server with the scripted FakeEngine, so timing is controlled
by events (`engine.hold`) rather than sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import weakref
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon import jobs as jobs_module
from differential_inpaint.backend.daemon import server as server_module
from differential_inpaint.backend.daemon.server import Session
from differential_inpaint.backend.engine.errors import (
    EngineError,
    InvalidRequest,
    OutOfMemory,
    UnknownModel,
    UnknownScheduler,
)
from differential_inpaint.client import InpaintError, JobCancelled, run_job

from .conftest import TIMEOUT, FakeEngine, RawClient, assert_good_job, make_submit


def _pixels(result: p.Result) -> np.ndarray:
    return np.frombuffer(result.image.data, np.uint8).reshape(result.image.height, result.image.width, 4)


def test_a_full_job_reports_every_stage_and_returns_the_region(daemon: Any) -> None:
    submit = make_submit("full", 40, 30, seed=3, steps=4)
    with RawClient(daemon.url) as client:
        result = client.run(submit)
        assert isinstance(result, p.Result)
        kinds = [type(m).__name__ for m in client.seen[1:]]
        assert kinds[0] == "Accepted" and kinds[-1] == "Result"
        stages = [m.stage for m in client.seen if isinstance(m, p.Progress)]
        assert stages == ["queued", "loading", "encoding"] + ["sampling"] * 4 + ["decoding"]
        steps = [
            (m.step, m.steps) for m in client.seen if isinstance(m, p.Progress) and m.stage == "sampling"
        ]
        assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (result.x, result.y) == (10, 20)  # the offset comes back untouched
    assert result.model == "builtin:tiny-sd15" and result.seed == 42
    assert {"queued", "daemon", "sampling"} <= set(result.timings)
    original = np.frombuffer(submit.image.data, np.uint8).reshape(30, 40, 4)
    mask = np.frombuffer(submit.mask.data, np.uint8).reshape(30, 40)
    out = _pixels(result)
    keep = mask == 0
    assert np.array_equal(out[keep, :3], original[keep, :3]) and (out[keep, 3] == 0).all()
    assert np.array_equal(out[~keep, :3], 255 - original[~keep, :3]) and (out[~keep, 3] == 255).all()


def test_output_format_and_seed_are_honoured(daemon: Any, engine: FakeEngine) -> None:
    base = make_submit("fmt", 16, 16, seed=1)
    submit = p.Submit(
        base.job_id,
        base.image,
        base.mask,
        p.JobParams(steps=2, seed=1234, output_format=p.PixelFormat.RGBAF32),
    )
    result = run_job(submit, server=daemon.url, timeout=TIMEOUT)
    assert result.image.format is p.PixelFormat.RGBAF32 and result.seed == 1234
    assert len(result.image.data) == 16 * 16 * 16
    assert engine.calls[-1].params.seed == 1234


def test_two_clients_at_once_each_get_only_their_own_results(daemon: Any, engine: FakeEngine) -> None:
    engine.hold = threading.Event()  # both jobs queue up before either runs
    with RawClient(daemon.url) as alice, RawClient(daemon.url) as bob:
        alice_job = make_submit("job-1", 24, 24, seed=1)  # the same id on both connections
        bob_job = make_submit("job-1", 24, 24, seed=2)
        alice.send(alice_job)
        assert alice.until_type(p.Accepted).position == 0
        engine.running.wait(TIMEOUT)
        bob.send(bob_job)
        assert bob.until_type(p.Accepted).position == 0  # next to run once alice's job is done
        engine.hold.set()
        results = {"alice": alice.final("job-1"), "bob": bob.final("job-1")}
        # A status round trip on each connection: anything misrouted was sent before it.
        alice.ws.send(p.encode(p.GetStatus()))
        bob.ws.send(p.encode(p.GetStatus()))
        alice.until_type(p.Status)
        bob.until_type(p.Status)
    for name, submit in (("alice", alice_job), ("bob", bob_job)):
        original = np.frombuffer(submit.image.data, np.uint8).reshape(24, 24, 4)
        out = _pixels(results[name])
        assert np.array_equal(out[0, 0, :3], original[0, 0, :3]), name  # its own pixels
    # Each connection saw exactly one accepted and one result: nothing of the other's.
    for client in (alice, bob):
        assert sum(isinstance(m, p.Accepted) for m in client.seen) == 1
        assert sum(isinstance(m, p.Result) for m in client.seen) == 1
        assert sum(isinstance(m, p.Progress) and m.stage == "decoding" for m in client.seen) == 1


def test_two_plugin_clients_in_threads(daemon: Any) -> None:
    outcomes: dict[int, Any] = {}

    def work(n: int) -> None:
        outcomes[n] = run_job(make_submit("same-id", 20, 20, seed=n), server=daemon.url, timeout=TIMEOUT)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for n in range(3):
        original = np.frombuffer(make_submit("same-id", 20, 20, seed=n).image.data, np.uint8).reshape(
            20, 20, 4
        )
        assert np.array_equal(_pixels(outcomes[n])[0, 0, :3], original[0, 0, :3])


def test_queue_positions_are_announced_and_status_answers_while_a_job_runs(
    daemon: Any, engine: FakeEngine
) -> None:
    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("q0"))
        assert client.until_type(p.Accepted, "q0").position == 0
        engine.running.wait(TIMEOUT)  # q0 runs; q1 and q2 wait behind it
        client.send(make_submit("q1"))
        client.send(make_submit("q2"))
        assert [client.until_type(p.Accepted, f"q{n}").position for n in (1, 2)] == [0, 1]
        started = time.monotonic()
        client.send(p.GetStatus())
        status = client.until_type(p.Status)
        assert time.monotonic() - started < 2.0  # the loop answers while the engine is busy
        assert status.running and status.queued == 2
        engine.hold.set()
        for n in range(3):
            assert isinstance(client.final(f"q{n}"), p.Result)
        positions = [m.position for m in client.seen if isinstance(m, p.Progress) and m.job_id == "q2"]
        assert positions[:2] == [1, 0]  # moved up when q1 started


def test_cancel_while_queued_is_immediate(daemon: Any, engine: FakeEngine) -> None:
    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("running"))
        client.send(make_submit("waiting"))
        client.send(make_submit("last"))
        client.until_type(p.Accepted, "last")
        engine.running.wait(TIMEOUT)
        client.send(p.Cancel("waiting"))
        # Answered while the engine is still held on the first job: nothing waited for it.
        assert isinstance(client.final("waiting"), p.Cancelled)
        moved = client.until(lambda m: isinstance(m, p.Progress) and m.job_id == "last")
        assert moved.stage == "queued" and moved.position == 0
        engine.hold.set()
        assert isinstance(client.final("running"), p.Result)
        assert isinstance(client.final("last"), p.Result)
        assert len(engine.calls) == 2  # the cancelled job never reached the engine
        client.send(p.Cancel("waiting"))  # gone now
        assert client.until_type(p.Error, "waiting").code is p.ErrorCode.UNKNOWN_JOB


def test_a_strength_map_request_queues_answers_map_and_cancels_like_a_job(
    daemon: Any, engine: FakeEngine
) -> None:
    def request(job_id: str) -> p.StrengthMapRequest:
        submit = make_submit(job_id, strength=0.5, output_format=p.PixelFormat.RGBAF32)
        return p.StrengthMapRequest(
            **{f: getattr(submit, f) for f in ("job_id", "image", "mask", "params", "x", "y")}
        )

    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("running"))
        client.send(request("map"))
        client.send(request("dropped"))
        client.until_type(p.Accepted, "dropped")
        engine.running.wait(TIMEOUT)
        client.send(p.Cancel("dropped"))
        assert isinstance(client.final("dropped"), p.Cancelled)
        engine.hold.set()
        assert isinstance(client.final("running"), p.Result)
        answer = client.final("map")
        assert isinstance(answer, p.StrengthMap) and (answer.x, answer.y) == (10, 20)
        assert answer.image.format is p.PixelFormat.RGBAF32 and {"map", "queued", "daemon"} <= set(
            answer.timings
        )
        gray = np.frombuffer(answer.image.data, "<f4").reshape(24, 32, 4)
        assert gray[12, 16, 0] == 0.5 and gray[0, 0, 0] == 0.0 and (gray[..., 3] == 1.0).all()
        engine.hold = threading.Event()
        client.send(request("held"))
        engine.running.clear()
        engine.running.wait(TIMEOUT)
        client.send(p.Cancel("held"))
        assert isinstance(client.final("held"), p.Cancelled)
        assert engine.calls[-1].cancelled_at == 0
        engine.hold = None
        assert isinstance(client.run(make_submit("next")), p.Result)


def test_cancel_while_running_takes_effect_within_one_step(daemon: Any, engine: FakeEngine) -> None:
    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("long", steps=50))
        engine.running.wait(TIMEOUT)
        client.send(p.Cancel("long"))
        assert isinstance(client.final("long"), p.Cancelled)
        assert engine.calls[0].cancelled_at == 1  # seen at the step where it was sent
        sampling = [m for m in client.seen if isinstance(m, p.Progress) and m.stage == "sampling"]
        assert sampling == []  # the held step never completed
        engine.hold = None
        assert isinstance(client.run(make_submit("next")), p.Result)


def test_a_cancelled_job_is_answered_before_its_memory_is_freed_and_freed_before_the_next_job(
    daemon: Any, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Freeing (a full garbage collection) holds the GIL for tenths of a second: done
    # before the answer, it held the answer back with it.
    answered = threading.Event()
    freed: list[tuple[bool, int]] = []  # (the client had its answer, jobs the engine saw)

    def free_memory(_engine: Any) -> None:
        freed.append((answered.wait(5.0), len(engine.calls)))

    monkeypatch.setattr(jobs_module, "free_memory", free_memory)
    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("long", steps=50))
        engine.running.wait(TIMEOUT)
        client.send(p.Cancel("long"))
        assert isinstance(client.final("long"), p.Cancelled)
        answered.set()
        client.send(p.GetStatus())
        assert not client.until_type(p.Status).running
        engine.hold.set()
        assert isinstance(client.run(make_submit("next")), p.Result)
    assert freed == [(True, 1)]


def test_queued_pixels_are_bounded_across_clients(engine: FakeEngine, make_daemon: Any) -> None:
    one_job = 64 * 48 * (4 + 1)  # rgba8 + mask
    daemon = make_daemon(engine, max_queued_bytes=2 * one_job)
    engine.hold = threading.Event()
    with RawClient(daemon.url) as first, RawClient(daemon.url) as second:
        first.send(make_submit("run", 64, 48))
        first.until_type(p.Accepted, "run")
        engine.running.wait(TIMEOUT)  # the running job is not in the queue
        first.send(make_submit("q1", 64, 48))
        first.until_type(p.Accepted, "q1")
        second.send(make_submit("q2", 64, 48))
        second.until_type(p.Accepted, "q2")
        second.send(make_submit("q3", 64, 48))
        error = second.until_type(p.Error, "q3")
        assert error.code is p.ErrorCode.QUEUE_FULL and "MiB of pixels" in error.message
        engine.hold.set()
        assert isinstance(first.final("q1"), p.Result) and isinstance(second.final("q2"), p.Result)


def test_reference_images_count_against_the_queued_pixels(engine: FakeEngine, make_daemon: Any) -> None:
    one_job = 64 * 48 * (4 + 1)  # rgba8 + mask
    daemon = make_daemon(engine, max_queued_bytes=2 * one_job)
    engine.hold = threading.Event()
    reference = p.Reference(p.Image(64, 48, p.PixelFormat.RGBA8, bytes(64 * 48 * 4)))
    with RawClient(daemon.url) as client:
        client.send(make_submit("run", 64, 48))
        client.until_type(p.Accepted, "run")
        engine.running.wait(TIMEOUT)
        client.send(make_submit("q1", 64, 48))
        client.until_type(p.Accepted, "q1")
        client.send(dataclasses.replace(make_submit("q2", 64, 48), ip_adapters=(reference,)))
        assert client.until_type(p.Error, "q2").code is p.ErrorCode.QUEUE_FULL  # alone, it fits
        engine.hold.set()
        assert isinstance(client.final("q1"), p.Result)


@pytest.mark.parametrize("ending", ["result", "error"])
def test_a_cancel_that_crosses_the_jobs_last_word_gets_no_reply(
    daemon: Any, engine: FakeEngine, ending: str
) -> None:
    if ending == "error":
        engine.fail_with = UnknownModel("gone")
    with RawClient(daemon.url) as client:
        last = client.run(make_submit("done-already"))
        assert isinstance(last, p.Result if ending == "result" else p.Error)
        client.send(p.Cancel("done-already"))  # sent before the client saw the last word
        client.send(p.GetStatus())
        # The job had one last word; the late cancel adds no error naming the job.
        assert isinstance(client.recv(), p.Status)
        client.send(p.Cancel("never-submitted"))
        assert client.until_type(p.Error, "never-submitted").code is p.ErrorCode.UNKNOWN_JOB


def test_a_submit_while_the_daemon_stops_is_told_so(daemon: Any) -> None:
    with RawClient(daemon.url) as client:
        daemon.call(daemon.server.jobs.shutdown(1.0))  # the queue stops before the connections
        client.send(make_submit("too-late"))
        error = client.final("too-late")
        assert isinstance(error, p.Error) and error.code is p.ErrorCode.SHUTTING_DOWN
        assert "shutting down" in error.message


def test_plugin_client_cancel(daemon: Any, engine: FakeEngine) -> None:
    engine.hold = threading.Event()
    cancel = threading.Event()
    threading.Thread(target=lambda: (engine.running.wait(TIMEOUT), cancel.set()), daemon=True).start()
    with pytest.raises(JobCancelled):
        run_job(make_submit("plugin"), server=daemon.url, cancel=cancel, timeout=TIMEOUT)


def test_disconnect_mid_job_cancels_it_then_a_good_job_runs(daemon: Any, engine: FakeEngine) -> None:
    engine.hold = threading.Event()
    client = RawClient(daemon.url)
    client.send(make_submit("abandoned", steps=50))
    client.send(make_submit("abandoned-queued"))
    client.until_type(p.Accepted, "abandoned-queued")
    engine.running.wait(TIMEOUT)
    client.close()
    assert engine.calls[0].finished.wait(TIMEOUT)
    assert engine.calls[0].cancelled_at == 1
    engine.hold = None
    assert_good_job(daemon.url)
    assert len(engine.calls) == 2  # the queued job of the gone client never ran


def test_queue_full(engine: FakeEngine, make_daemon: Any) -> None:
    daemon = make_daemon(engine, limits=p.Limits(max_queued_jobs=2))
    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("a"))
        client.until_type(p.Accepted, "a")
        engine.running.wait(TIMEOUT)
        client.send(make_submit("b"))
        client.send(make_submit("c"))
        client.send(make_submit("d"))
        error = client.until_type(p.Error, "d")
        assert error.code is p.ErrorCode.QUEUE_FULL and "2 jobs" in error.message
        engine.hold.set()
        for job in "abc":
            assert isinstance(client.final(job), p.Result)


@pytest.mark.parametrize(
    ("exception", "code", "text"),
    [
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            p.ErrorCode.OUT_OF_MEMORY,
            "memory",
        ),
        (OutOfMemory("the GPU ran out of memory"), p.ErrorCode.OUT_OF_MEMORY, "memory"),
        (MemoryError(), p.ErrorCode.OUT_OF_MEMORY, "memory"),
        (
            UnknownScheduler("Unknown scheduler 'x'. Choose one of: euler."),
            p.ErrorCode.UNKNOWN_SCHEDULER,
            "scheduler",
        ),
        (InvalidRequest("Strength must be in (0, 1]"), p.ErrorCode.INVALID_FIELD, "Strength"),
        # The code follows the exception's type, not its words.
        (
            InvalidRequest("params: field 'scheduler' must not be empty"),
            p.ErrorCode.INVALID_FIELD,
            "scheduler",
        ),
        (UnknownModel("no such model"), p.ErrorCode.UNKNOWN_MODEL, "no such model"),
        (EngineError("the model's weights are damaged"), p.ErrorCode.JOB_FAILED, "damaged"),
        (
            RuntimeError("failed to open /home/painter/secret/model.safetensors"),
            p.ErrorCode.JOB_FAILED,
            "RuntimeError",
        ),
    ],
    ids=[
        "cuda-oom",
        "engine-oom",
        "host-oom",
        "scheduler",
        "invalid",
        "invalid-scheduler-field",
        "model",
        "engine-error",
        "crash",
    ],
)
def test_an_exception_in_a_job_fails_that_job_only(
    daemon: Any,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    exception: BaseException,
    code: p.ErrorCode,
    text: str,
) -> None:
    freed = threading.Event()
    calls_when_freed: list[int] = []
    real_free = jobs_module.free_memory

    def free_memory(engine_: Any) -> None:
        real_free(engine_)
        calls_when_freed.append(len(engine.calls))
        freed.set()

    monkeypatch.setattr(jobs_module, "free_memory", free_memory)
    engine.fail_with = exception
    with RawClient(daemon.url) as client:
        error = client.run(make_submit("doomed"))
        assert isinstance(error, p.Error) and error.code is code and error.job_id == "doomed"
        assert text in error.message
        assert "/home/painter" not in error.message  # no paths on the wire
        assert freed.wait(TIMEOUT)  # what the job held was given back, after the answer
        assert isinstance(client.run(make_submit("fine")), p.Result)  # same connection goes on
        assert calls_when_freed == [1]  # ...before the next job reached the engine
    assert_good_job(daemon.url)


class _Activations:
    """Stands in for the tensors a sampling step holds when the device runs out of memory."""


class _EngineFailingWithTensorsInItsFrame(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[weakref.ref] = []

    def inpaint_batch(self, *args: Any, **kwargs: Any) -> Any:
        activations = _Activations()  # a local of the failing frame, as in a real OOM
        self.held.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")


def test_a_failed_jobs_memory_is_unreferenced_before_it_is_freed(
    make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Freeing inside the `except` block would free nothing: the exception's traceback
    # keeps the engine's frames, and the tensors in them, alive until the block ends.
    engine = _EngineFailingWithTensorsInItsFrame()
    daemon = make_daemon(engine)
    seen_alive: list[bool] = []
    freed = threading.Event()

    def free_memory(_engine: Any) -> None:
        seen_alive.append(engine.held[-1]() is not None)
        freed.set()

    monkeypatch.setattr(jobs_module, "free_memory", free_memory)
    # Log records that a test harness keeps would hold the exception too; the daemon's
    # own log handler keeps none.
    monkeypatch.setattr(logging.getLogger("differential_inpaint.daemon"), "disabled", True)
    with RawClient(daemon.url) as client:
        error = client.run(make_submit("oom"))
        assert isinstance(error, p.Error) and error.code is p.ErrorCode.OUT_OF_MEMORY
    assert freed.wait(TIMEOUT)  # after the answer
    assert seen_alive == [False]


def test_oom_through_the_plugin_client_explains_what_to_do(daemon: Any, engine: FakeEngine) -> None:
    engine.fail_with = torch.cuda.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(InpaintError) as failed:
        run_job(make_submit("big"), server=daemon.url, timeout=TIMEOUT)
    assert failed.value.code == "out_of_memory" and "smaller selection" in failed.value.message
    assert isinstance(run_job(make_submit("small"), server=daemon.url, timeout=TIMEOUT), p.Result)


def test_previews_are_throttled_small_and_never_after_the_result(
    engine: FakeEngine, make_daemon: Any
) -> None:
    engine.step_seconds = 0.02
    interval = 0.15
    daemon = make_daemon(engine, preview_interval=interval)
    with RawClient(daemon.url) as client:
        started = time.monotonic()
        assert isinstance(client.run(make_submit("pv", steps=40)), p.Result)
        elapsed = time.monotonic() - started
        previews = [m for m in client.seen if isinstance(m, p.Preview)]
    made = engine.calls[0].preview_times
    assert 1 <= len(made) <= elapsed / interval + 1
    gaps = np.diff(made)
    assert (gaps >= interval * 0.99).all(), gaps  # never two within the interval
    assert 1 <= len(previews) <= len(made)
    for preview in previews:
        assert max(preview.image.width, preview.image.height) <= 256
        assert preview.image.format is p.PixelFormat.RGBA8
    last = max(i for i, m in enumerate(client.seen) if isinstance(m, p.Preview))
    assert last < next(i for i, m in enumerate(client.seen) if isinstance(m, p.Result))
    steps = [m.step for m in previews]
    assert steps == sorted(steps) and steps[0] > 1  # the first waits one interval too


def test_no_previews_when_the_client_asks_for_none(daemon: Any, engine: FakeEngine) -> None:
    with RawClient(daemon.url) as client:
        client.run(make_submit("quiet", steps=5, preview=False))
        assert not any(isinstance(m, p.Preview) for m in client.seen)
    assert engine.calls[0].preview_times == []  # not even computed


# --- the outbox, without a network -------------------------------------------------------


class _SlowSocket:
    """Stands in for a connection whose client reads slowly: each send waits for a go."""

    remote_address = ("127.0.0.1", 1)

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.go = asyncio.Event()
        self.sending = asyncio.Event()

    async def send(self, data: Any) -> None:
        self.sending.set()
        await self.go.wait()
        self.go.clear()
        self.sent.append(data if isinstance(data, bytes) else b"".join(bytes(c) for c in data))


def test_previews_for_a_slow_client_are_dropped_latest_wins() -> None:
    async def scenario() -> None:
        ws = _SlowSocket()
        session = Session(ws, 1)  # type: ignore[arg-type]
        sender = asyncio.create_task(session.run_sender())
        job = jobs_module.Job("j", session, make_submit("j"), "m", state=jobs_module.RUNNING)
        session.send_frames([b"progress-1"])
        await ws.sending.wait()  # the sender is stuck on the slow client
        assert not session.preview_busy()
        for n in range(5):
            session.offer_preview(job, [f"preview-{n}".encode()])
            assert session.preview_busy()  # the worker would skip making another
        session.send_frames([b"progress-2"])
        for _ in range(3):
            ws.go.set()
            await asyncio.sleep(0.01)
        await session.flush(1.0)
        assert ws.sent == [b"progress-1", b"progress-2", b"preview-4"]  # in order, one fresh preview
        assert not session.preview_busy()
        # A preview is never sent after its job's last word.
        session.offer_preview(job, [b"stale"])
        job.state = jobs_module.DONE
        session.forget(job)
        session.send_frames([b"result"])
        ws.go.set()
        await session.flush(1.0)
        assert ws.sent[-1] == b"result" and b"stale" not in ws.sent
        sender.cancel()

    asyncio.run(scenario())


def test_a_client_that_does_not_read_its_replies_is_not_read_from_either(
    daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests answered into a backlog nobody drains would grow the daemon's memory
    # without bound; past the limit the daemon reads no more requests from that client.
    monkeypatch.setattr(server_module, "BACKLOG_LIMIT", 8)
    release = threading.Event()  # until set, the client's socket "is full": nothing is sent
    dispatched: list[str] = []
    original_sender, original_dispatch = Session.run_sender, server_module.DaemonServer._dispatch

    async def stuck_sender(self: Session) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)
        await original_sender(self)

    async def counting_dispatch(self: Any, session: Session, data: Any) -> None:
        dispatched.append("message")
        await original_dispatch(self, session, data)

    monkeypatch.setattr(Session, "run_sender", stuck_sender)
    monkeypatch.setattr(server_module.DaemonServer, "_dispatch", counting_dispatch)
    with RawClient(daemon.url, hello=None) as client:
        try:
            client.send(p.Hello(client="flood"))
            for _ in range(40):
                client.send(p.GetStatus())
            deadline = time.monotonic() + TIMEOUT
            while len(dispatched) < 7 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # time enough to read more, were it not held back
            assert len(dispatched) == 7  # the welcome + 7 replies fill the backlog of 8
        finally:
            release.set()
        assert isinstance(client.recv(), p.Welcome)
        replies = [client.recv() for _ in range(40)]  # then every request is answered
        assert all(isinstance(reply, p.Status) for reply in replies)


def test_a_failure_while_sending_closes_the_connection_instead_of_going_silent() -> None:
    class BrokenSocket:
        remote_address = ("127.0.0.1", 1)
        closed_with: tuple[int, str] | None = None

        async def send(self, data: Any) -> None:
            raise TypeError("a bug in the sending path")

        async def close(self, code: int, reason: str) -> None:
            self.closed_with = (code, reason)

    async def scenario() -> None:
        ws = BrokenSocket()
        session = Session(ws, 1)  # type: ignore[arg-type]
        sender = asyncio.create_task(session.run_sender())
        session.send(p.Status(queued=0, running=False))
        await asyncio.wait_for(sender, 5)
        assert ws.closed_with == (1011, "internal error")  # the client learns at once
        assert session.closed

    asyncio.run(scenario())


def test_large_messages_are_sent_as_fragments() -> None:
    assert jobs_module.wire_frames(p.Accepted("j", 0)) == [p.encode(p.Accepted("j", 0))]
    size = 1152  # 1152x1152 RGBA8: 5 MiB + 64 KiB of pixels
    image = p.Image(size, size, p.PixelFormat.RGBA8, bytes(size * size * 4))
    result = p.Result("j", image, 0, 0, seed=1)
    frames = jobs_module.wire_frames(result)
    assert all(len(x) <= 2 * 1024 * 1024 for x in frames) and len(frames) == 4
    assert b"".join(bytes(x) for x in frames) == p.encode(result)
    # The pixels are sliced out of the result's own bytes, never copied to encode it.
    assert sum(1 for x in frames if isinstance(x, memoryview) and x.obj is image.data) >= 2


def test_shutdown_tells_running_and_queued_jobs_and_closes_connections(
    engine: FakeEngine, make_daemon: Any
) -> None:
    from websockets.exceptions import ConnectionClosed

    daemon = make_daemon(engine)
    engine.hold = threading.Event()
    with RawClient(daemon.url) as running, RawClient(daemon.url) as waiting:
        running.send(make_submit("r", steps=50))
        engine.running.wait(TIMEOUT)
        waiting.send(make_submit("w"))
        waiting.until_type(p.Accepted, "w")
        daemon.call(daemon.server.shutdown())
        for client, job_id, when in ((running, "r", "was running"), (waiting, "w", "was waiting")):
            error = client.final(job_id)
            assert isinstance(error, p.Error) and error.code is p.ErrorCode.SHUTTING_DOWN
            assert when in error.message and "nothing was changed" in error.message
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert engine.calls[0].cancelled_at == 1 and len(engine.calls) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cannot read model '/home/me/models/x.safetensors': denied.", "Cannot read model '<path>': denied"),
        ("failed at C:\\Users\\me\\x.ckpt now", "failed at <path> now"),
        ("Strength must be in (0, 1], got 2.", "Strength must be in (0, 1], got 2"),
        ("wait...", "wait..."),
        ("x" * 3000, "x" * 1997 + "..."),
    ],
)
def test_engine_messages_lose_paths_before_the_wire(text: str, expected: str) -> None:
    assert jobs_module.public_text(text) == expected


def test_the_worker_turns_a_system_exit_into_a_failure_and_goes_on() -> None:
    """A library calling sys.exit() inside a job must fail that job, never stop the daemon's loop."""
    from differential_inpaint.backend.daemon.jobs import WorkerThread

    worker = WorkerThread("test-worker")

    def leave() -> None:
        raise SystemExit(3)

    failed = worker.submit(leave)
    with pytest.raises(RuntimeError, match="SystemExit"):
        failed.result(timeout=5)
    assert worker.submit(lambda: 42).result(timeout=5) == 42


# --- jobs of several results -------------------------------------------------------


def test_each_result_of_a_batch_goes_out_when_done_with_its_index_seed_and_strength(daemon: Any) -> None:
    with RawClient(daemon.url) as client:
        last = client.run(make_submit("batch", count=3, steps=2))  # the fake engine's seed: 42
        results = [m for m in client.seen if isinstance(m, p.Result)]
        previews = {m.index for m in client.seen if isinstance(m, p.Preview)}
        # The results come between the steps, not all at the end.
        kinds = [type(m).__name__ for m in client.seen if not isinstance(m, p.Preview)]
    assert last is results[-1] and last.is_last
    assert [(r.index, r.total, r.seed, r.strength) for r in results] == [
        (k, 3, 42 + k, 1.0) for k in range(3)
    ]
    first_result = kinds.index("Result")
    assert "Progress" in kinds[first_result:], "the first result went out before the job ended"
    assert previews <= {0, 1, 2}
    with RawClient(daemon.url) as client:
        fan = client.run(make_submit("fan", fan=[0.25, 0.75], steps=2))
        results = [m for m in client.seen if isinstance(m, p.Result)]
    assert [(r.index, r.total, r.seed, r.strength) for r in results] == [(0, 2, 42, 0.25), (1, 2, 42, 0.75)]
    assert fan.is_last


def test_a_cancel_mid_batch_delivers_the_finished_results_then_cancelled(
    daemon: Any, engine: FakeEngine
) -> None:
    engine.step_seconds = 0.05
    with RawClient(daemon.url) as client:
        client.send(make_submit("batch", count=4, steps=3))
        client.until(lambda m: isinstance(m, p.Result) and m.index == 0)
        client.send(p.Cancel("batch"))
        last = client.final("batch")
        results = [m for m in client.seen if isinstance(m, p.Result)]
    assert isinstance(last, p.Cancelled)
    assert 1 <= len(results) < 4 and not any(r.is_last for r in results)
    assert [r.index for r in results] == list(range(len(results)))
    assert_good_job(daemon.url)


def test_the_client_keeps_the_results_of_a_cancelled_batch(daemon: Any, engine: FakeEngine) -> None:
    engine.step_seconds = 0.05
    cancel = threading.Event()
    kept: list[p.Result] = []

    def on_result(result: p.Result) -> None:
        kept.append(result)
        cancel.set()

    with pytest.raises(JobCancelled):
        run_job(make_submit("batch", count=4, steps=3), server=daemon.url, cancel=cancel, on_result=on_result)
    assert kept and kept[0].index == 0


def test_a_batch_counts_its_results_against_the_queued_pixels(engine: FakeEngine, make_daemon: Any) -> None:
    one_job = 64 * 48 * (4 + 1)  # rgba8 + mask
    daemon = make_daemon(engine, max_queued_bytes=3 * one_job)
    engine.hold = threading.Event()
    with RawClient(daemon.url) as client:
        client.send(make_submit("run", 64, 48))
        client.until_type(p.Accepted, "run")
        engine.running.wait(TIMEOUT)
        client.send(make_submit("two", 64, 48))
        client.until_type(p.Accepted, "two")
        client.send(make_submit("batch", 64, 48, count=4))  # four regions' worth
        error = client.until_type(p.Error, "batch")
        assert error.code is p.ErrorCode.QUEUE_FULL
        client.send(make_submit("one", 64, 48))
        client.until_type(p.Accepted, "one")
        engine.hold.set()
        assert isinstance(client.final("one"), p.Result)
