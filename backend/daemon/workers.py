"""Workers outside the daemon's process: one per device of this machine, or cluster actors.

The queue (jobs.py) hands a job to a `Worker`; the ones here run it elsewhere. The far
side is a `WorkerHost`: an engine and a `JobRunner`, as in the daemon itself, whose
messages for the client (progress, previews, results, the last word) come back as a
stream of events: ("send", bytes), ("preview", bytes), then ("outcome", bytes or None,
kind, loaded model, (its offload mode, why)). The daemon forwards them to the job's connection; a cancel goes
the other way. A `ProcessWorker` carries them over a pipe to a child process of this
machine (one per `--device`: processes, not threads, because the engine's Python side
holds the GIL for much of a small job, see benchmarks/bench_workers.py); a Ray actor
(cluster.py) carries them as a streaming generator.

A worker that dies takes its job with it: `RemoteWorker.run` raises WorkerLost, and the
queue runs the job once more on another worker. The `WorkerSupervisor` starts the
workers, and starts again the ones lost (or joins new ones, on a cluster that grows).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from ...protocol import Submit, fragments
from .jobs import (
    RUNNING,
    Frames,
    Job,
    JobQueue,
    JobRunner,
    Outcome,
    Worker,
    WorkerLost,
    WorkerThread,
    free_memory,
    send_while_running,
)

log = logging.getLogger("differential_inpaint.daemon")

Event = tuple[Any, ...]
START_TIMEOUT = 600.0  # seconds for a worker to load its engine (a cold import of torch on a slow disk)
RESTART_DELAY = 5.0  # seconds before a lost worker is started again (a crash loop costs little)
CHECK_EVERY = 5.0  # seconds between the supervisor's looks (missing workers, idle ones alive)


class WorkerStartError(Exception):
    """No worker could start; the text says why (for the start-up error line)."""


@dataclass(frozen=True)
class JobSpec:
    """What a worker elsewhere needs of a job (picklable: it crosses a pipe or Ray)."""

    serial: int
    job_id: str
    owner: str  # the client's name, for the worker's log lines
    submit: Submit
    model: str
    waited: float  # seconds in the daemon's queue so far

    @classmethod
    def of(cls, job: Job) -> JobSpec:
        waited = time.monotonic() - job.queued_at
        return cls(job.serial, job.job_id, job.owner.name, job.submit, job.model, waited)


def _join(frames: Frames | None) -> bytes | None:
    """One message's bytes: views cannot be pickled, and one copy off the daemon is cheap."""
    return None if frames is None else b"".join(frames)


class _EventSink:
    """The job's owner on the worker's side: its messages become events of the job's stream."""

    def __init__(self, name: str, events: queue.SimpleQueue[Event]) -> None:
        self.name = name
        self.events = events

    def send_frames(self, frames: Frames) -> None:
        self.events.put(("send", _join(frames)))

    def offer_preview(self, job: Job, frames: Frames) -> None:
        self.events.put(("preview", _join(frames)))

    def preview_busy(self) -> bool:
        return False  # the daemon's own slot drops what its client cannot take

    def forget(self, job: Job) -> None:
        pass

    async def flush(self, timeout: float) -> None:
        pass


def _call_now(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


class WorkerHost:
    """The far side of a worker: an engine of its own, running one job at a time.

    `run` is a generator of the job's events, safe to call from any thread; `cancel` may
    come from another thread meanwhile (or even before `run` starts: a Ray actor takes its
    calls in any order).
    """

    def __init__(
        self,
        engine_options: dict[str, Any],
        models: tuple[str, ...] = (),
        preview_interval: float = 0.5,
        torch_threads: int | None = None,
    ) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        from ..engine import Engine

        self.engine = Engine(**engine_options)
        for spec in models:  # models named by path are known by name from then on
            self.engine.resolve_model(spec)
        self.device = describe_device(self.engine)
        self.runner = JobRunner(self.engine, _call_now, preview_interval=preview_interval)
        self._thread = WorkerThread("inpaint-engine")
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._cancelled: dict[int, bool] = {}  # cancels that came before their job (serial: stopping)

    def run(self, spec: JobSpec) -> Iterator[Event]:
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        job = Job(spec.job_id, _EventSink(spec.owner, events), spec.submit, spec.model, serial=spec.serial)
        job.queued_at -= spec.waited
        job.state = RUNNING
        with self._lock:
            self._jobs[spec.serial] = job
            if spec.serial in self._cancelled:
                job.stopping = self._cancelled.pop(spec.serial)
                job.cancel_event.set()
        done = ("done",)
        future = self._thread.submit(partial(self.runner.execute, job))
        future.add_done_callback(lambda _: events.put(done))  # after every event the job posted
        try:
            while (event := events.get()) is not done:
                yield event
            outcome: Outcome = future.result()
            runner = self.runner
            yield ("outcome", _join(outcome.message), outcome.kind, runner.loaded_model, runner.offload)
        finally:
            with self._lock:
                self._jobs.pop(spec.serial, None)
                # Any cancel still kept is for a job that ended: the daemon gives this host
                # its next job only once this stream has ended.
                self._cancelled.clear()
        if outcome.kind != "done":
            free_memory(self.engine)  # its client has the answer: now free what the job held

    def cancel(self, serial: int, stopping: bool = False) -> None:
        with self._lock:
            job = self._jobs.get(serial)
            if job is None:
                self._cancelled[serial] = stopping
                return
        job.stopping = stopping
        job.cancel_event.set()


def describe_device(engine: Any) -> str:
    return f"{engine.device} ({str(engine.dtype).removeprefix('torch.')})"


class RemoteWorker(Worker):
    """A worker whose engine runs elsewhere; subclasses say how its events travel."""

    def __init__(self, name: str, device: str) -> None:
        super().__init__(name, device)
        self._rest: AsyncIterator[Event] | None = None  # the stream after the outcome

    def _events(self, spec: JobSpec) -> AsyncIterator[Event]:
        """The job's events; raises WorkerLost when the worker dies."""
        raise NotImplementedError

    async def run(self, job: Job) -> Outcome:
        stream = self._events(JobSpec.of(job))
        async for event in stream:
            kind = event[0]
            if kind == "send":
                send_while_running(job, _frames(event[1]))
            elif kind == "preview":
                job.owner.offer_preview(job, _frames(event[1]))
            elif kind == "outcome":
                _, message, outcome_kind, self.loaded_model, self.offload = event
                self._rest = stream
                if outcome_kind == "done":
                    await self.settle(job)  # only the stream's end is left: take it now
                return Outcome(None if message is None else _frames(message), outcome_kind)
        raise WorkerLost("its stream of events ended without the job's outcome")

    async def settle(self, job: Job) -> None:
        """Wait for the worker to free the failed job's memory (it ends the stream then)."""
        rest, self._rest = self._rest, None
        if rest is not None:
            async for _ in rest:
                pass


def _frames(data: bytes) -> Frames:
    return fragments([data])


# --- a device of this machine, in a child process ---------------------------------------


def _host_main(conn: Any, host_options: dict[str, Any]) -> None:
    """A worker process: its engine, then the daemon's commands until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    name = multiprocessing.current_process().name
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [{name}] %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        host = WorkerHost(**host_options)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", host.device))
    lock = threading.Lock()

    def send(message: Event) -> None:
        with lock:
            conn.send(message)

    def run(spec: JobSpec) -> None:
        for event in host.run(spec):
            send(event)
        send(("end",))

    while True:
        try:
            command, *args = conn.recv()
        except (EOFError, OSError):  # the daemon is gone
            return
        if command == "run":
            threading.Thread(target=run, args=args, name="inpaint-job", daemon=True).start()
        elif command == "cancel":
            host.cancel(*args)


class ProcessWorker(RemoteWorker):
    """One device of this machine, its engine in a child process of the daemon."""

    def __init__(self, name: str, device: str, process: Any, conn: Any) -> None:
        super().__init__(name, device)
        self._process = process
        self._conn = conn
        self._inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._alive = True
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name=f"{name}-reader", daemon=True).start()

    @classmethod
    async def start(cls, name: str, host_options: dict[str, Any], timeout: float = START_TIMEOUT) -> Worker:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        conn, child = context.Pipe()
        process = context.Process(target=_host_main, args=(child, host_options), name=name, daemon=True)
        process.start()
        child.close()
        try:
            if not await asyncio.to_thread(conn.poll, timeout):
                raise WorkerStartError(f"worker {name} did not start within {timeout:g} s")
            status, detail = conn.recv()
        except (EOFError, OSError):
            status, detail = "failed", f"its process exited (status {process.exitcode})"
        except BaseException:
            process.kill()
            raise
        if status != "ready":
            process.join(5)
            raise WorkerStartError(f"worker {name} could not start: {detail}")
        log.info("worker %s: process %d on %s", name, process.pid, detail)
        return cls(name, detail, process, conn)

    def _read(self) -> None:
        """Reader thread: the child's events to the loop, then its death."""
        while True:
            try:
                event = self._conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._loop.call_soon_threadsafe(self._inbox.put_nowait, event)
            except RuntimeError:  # the loop is closed: the daemon has stopped
                return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon has stopped
            self._loop.call_soon_threadsafe(self._died)

    def _died(self) -> None:
        if not self._alive:
            return
        self._alive = False
        self._process.join(1)
        reason = f"its process exited (status {self._process.exitcode})"
        self._inbox.put_nowait(("lost", reason))
        if self.job is None and self.on_lost is not None:
            self.on_lost(self, reason)  # idle: nobody reads the inbox

    async def _events(self, spec: JobSpec) -> AsyncIterator[Event]:
        if not self._alive:
            raise WorkerLost("its process had exited")
        self._conn.send(("run", spec))
        while True:
            event = await self._inbox.get()
            if event[0] == "lost":
                raise WorkerLost(event[1])
            if event[0] == "end":
                return
            yield event

    def cancel(self, job: Job) -> None:
        if self._alive:
            with contextlib.suppress(OSError):
                self._conn.send(("cancel", job.serial, job.stopping))

    async def close(self) -> None:
        self._alive = False
        with contextlib.suppress(OSError):
            self._conn.close()  # the child sees the pipe close and exits
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.kill()


def local_host_options(
    device: str, engine_options: dict[str, Any], devices: list[str], **options: Any
) -> dict[str, Any]:
    """A local worker's WorkerHost arguments. Workers on the CPU share its cores: each gets
    its share as torch threads (unless OMP_NUM_THREADS says otherwise)."""
    threads = None
    cpu_workers = sum(1 for d in devices if d == "cpu")
    if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // cpu_workers)
    return {"engine_options": {**engine_options, "device": device}, "torch_threads": threads, **options}


# --- keeping them running ---------------------------------------------------------------


class WorkerSupervisor:
    """Keeps one worker in each slot: starts them, starts a lost one again after
    RESTART_DELAY, and fills new slots (a cluster that gained GPUs) as they appear.

    start: makes the worker of a slot (index), ready to take jobs.
    slots: how many workers there should be now (asked every CHECK_EVERY seconds).
    wait_for: how many must be ready before the daemon listens (None: all of the first slots).
    """

    def __init__(
        self,
        start: Callable[[int], Awaitable[Worker]],
        slots: Callable[[], Awaitable[int]],
        *,
        wait_for: int | None = None,
        check_every: float = CHECK_EVERY,
        restart_delay: float = RESTART_DELAY,
    ) -> None:
        self._start = start
        self._slots = slots
        self.wait_for = wait_for
        self.check_every = check_every
        self.restart_delay = restart_delay
        self._live: dict[int, Worker] = {}
        self._slot_of: dict[Worker, int] = {}
        self._starting: dict[int, asyncio.Task[None]] = {}
        self._not_before = 0.0  # no worker starts before then (after a loss or a failed start)
        self._queue: JobQueue | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, jobs: JobQueue) -> None:
        """Start the workers; return once `wait_for` of them are ready (WorkerStartError if
        that cannot be), the others joining the queue whenever they are."""
        self._queue = jobs
        jobs.on_lost = self._lost
        count = await self._slots()
        tasks = [self._begin(slot) for slot in range(count)]
        wanted = min(count, self.wait_for or count)
        errors: list[str] = []
        pending = set(tasks)
        while len(self._live) < wanted and pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            errors += [str(task.exception()) for task in done if task.exception() is not None]
            if errors and self.wait_for is None:
                break  # every worker was asked for: one that cannot start is a start-up error
        if len(self._live) < wanted:
            await self.close()
            await asyncio.gather(*(worker.close() for worker in self._live.values()))
            raise WorkerStartError("; ".join(errors) or f"no worker started ({count} asked for)")
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="worker-supervisor")

    def _begin(self, slot: int) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._start_slot(slot), name=f"start-worker-{slot}")
        self._starting[slot] = task
        return task

    async def _start_slot(self, slot: int) -> None:
        try:
            worker = await self._start(slot)
        except BaseException:
            self._not_before = time.monotonic() + self.restart_delay
            raise
        finally:
            self._starting.pop(slot, None)
        if self._closed or self._queue is None:
            await worker.close()
            return
        self._slot_of[worker] = slot
        self._live[slot] = worker
        self._queue.add_worker(worker)

    def _lost(self, worker: Worker) -> None:
        slot = self._slot_of.pop(worker, None)
        if slot is not None and self._live.get(slot) is worker:
            del self._live[slot]
            self._not_before = time.monotonic() + self.restart_delay

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.check_every)
            try:
                count = await self._slots()
            except Exception as exc:  # the cluster did not answer: try again next time
                log.warning("cannot count the workers wanted: %s", exc)
                continue
            # By number, not by slot: on a cluster, a worker waits (pending) for a free GPU.
            missing = count - len(self._live) - len(self._starting)
            if missing > 0 and time.monotonic() >= self._not_before:
                free = (
                    slot
                    for slot in itertools.count()
                    if slot not in self._live and slot not in self._starting
                )
                for slot in itertools.islice(free, missing):
                    log.info("starting a worker (%d wanted, %d ready)", count, len(self._live))
                    self._begin(slot).add_done_callback(_log_start_failure)
            for worker in list(self._live.values()):
                if worker.job is None:
                    try:
                        await worker.check()
                    except WorkerLost as exc:
                        if self._queue is not None:
                            self._queue.remove_worker(worker, str(exc))

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._starting.values()):
            task.cancel()


def _log_start_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s; trying again in %g s", task.exception(), RESTART_DELAY)
