"""One job queue for every client, one job at a time on each worker, off the event loop.

The queue lives on the asyncio loop; each worker runs one job at a time. The daemon
with one device has one worker, a thread of its own process (`ThreadWorker`), so the
loop keeps answering pings, new connections, cancels and status queries while a job
samples. That thread talks back only through `loop.call_soon_threadsafe`, handing over
messages already encoded (the fragments of one websocket message; a 64 MiB result's
pixels are sliced, not copied, see `protocol.encode_parts`). With several devices, or
a Ray cluster, the workers run elsewhere (workers.py, cluster.py) and the same
messages come back from there; the next job goes to an idle worker, one that holds its
model if any (a model load costs seconds to a minute).

A job's owner is the connection that submitted it (`server.Session`): results,
progress and previews go to it alone. Cancel of a queued job is immediate; of
the running job it sets a flag the engine polls between sampling steps and stages.
A failed or cancelled job's last word goes out first; only then does the worker
free what the job held, before it takes the next job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import itertools
import logging
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from ...protocol import (
    Accepted,
    Cancelled,
    Error,
    ErrorCode,
    JobParams,
    Preview,
    Progress,
    Result,
    Stage,
    StrengthMap,
    StrengthMapRequest,
    Submit,
    WorkerInfo,
    encode_parts,
    fragments,
)
from ..engine import errors as engine_errors
from . import pixels

log = logging.getLogger("differential_inpaint.daemon")

QUEUED, RUNNING, DONE = "queued", "running", "done"
# How long a failed or cancelled job's answer may take to reach its client before the
# worker frees the job's memory anyway (a client that does not read waits for nobody).
ANSWER_FIRST_TIMEOUT = 0.5
SHUTDOWN_TEXT = (
    "The daemon was stopped while this job {when}; nothing was changed. Start the daemon again and resubmit."
)
LOST_TEXT = (
    "The worker running this job was lost (its process or machine stopped) {when}; nothing was "
    "changed. The daemon goes on with its other workers: resubmit"
)
NO_WORKER_TEXT = (
    "No worker is left to run this job: every worker's process or machine stopped. The daemon "
    "keeps serving and takes jobs again as soon as a worker is back: resubmit in a minute"
)


# One message, encoded: the fragments of one websocket message. Pixel payloads are
# views of the message's own bytes (protocol.encode_parts), never copied to encode.
Frames = list[bytes | memoryview]


def wire_frames(message: Any) -> Frames:
    return fragments(encode_parts(message))


class JobOwner(Protocol):
    """What the queue needs from a connection (see `server.Session`). Loop thread only,
    except `preview_busy`, which the worker reads as a hint."""

    name: str

    def send_frames(self, frames: Frames) -> None: ...

    def offer_preview(self, job: Job, frames: Frames) -> None: ...

    def preview_busy(self) -> bool: ...

    def forget(self, job: Job) -> None: ...

    async def flush(self, timeout: float) -> None: ...


_serials = itertools.count(1)


@dataclass(eq=False)
class Job:
    job_id: str  # the client's id, unique per connection only
    owner: JobOwner
    submit: Submit
    model: str  # a name from the daemon's catalog, never a client-given path
    serial: int = field(default_factory=lambda: next(_serials))  # daemon-wide, for logs
    state: str = QUEUED
    position: int = -1  # last queue position announced to the client
    cancel_event: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False  # cancelled because the daemon shuts down
    outcome: str = ""  # once DONE: "done", "cancelled" or "failed" (see Outcome)
    queued_at: float = field(default_factory=time.monotonic)
    attempts: int = 0  # workers it was handed to (a lost worker's job runs once more)
    worker: Worker | None = field(default=None, repr=False)  # the one running it

    @property
    def params(self) -> JobParams:
        return self.submit.params

    def describe(self) -> str:
        image = self.submit.image
        return f"job {self.job_id} ({self.owner.name}): {image.width}x{image.height} region"


class Refused(Exception):
    """A job the queue does not take; the text is for its client, with this code."""

    code = ErrorCode.QUEUE_FULL


class QueueFull(Refused):
    pass


class ShuttingDown(Refused):
    """A job refused because the daemon is stopping."""

    code = ErrorCode.SHUTTING_DOWN


class NoWorker(Refused):
    """A job refused because every worker was lost (and none has come back yet)."""

    code = ErrorCode.JOB_FAILED


class WorkerLost(Exception):
    """The worker's process, actor or machine is gone, with the job it was running."""


@dataclass
class Outcome:
    """What the worker hands back: the message for the client, and the log line."""

    message: Frames | None
    kind: str  # "done", "cancelled", "failed"


class WorkerThread:
    """A single daemon thread running submitted calls in order.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a
    model stuck in a long load would keep a stopped daemon alive.
    """

    def __init__(self, name: str = "inpaint-worker") -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, future))
        return future

    def _loop(self) -> None:
        while True:
            fn, future = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)
            except BaseException as exc:  # SystemExit from a library: a failed job, not a stopped loop
                future.set_exception(RuntimeError(f"the engine raised {type(exc).__name__}"))


# The wire code for each kind of engine failure; a subclass not listed takes its nearest
# listed base class's code (see `error_code`).
ENGINE_ERROR_CODES: dict[type[engine_errors.EngineError], ErrorCode] = {
    engine_errors.OutOfMemory: ErrorCode.OUT_OF_MEMORY,
    engine_errors.UnknownModel: ErrorCode.UNKNOWN_MODEL,
    engine_errors.UnknownScheduler: ErrorCode.UNKNOWN_SCHEDULER,
    engine_errors.InvalidRequest: ErrorCode.INVALID_FIELD,
    engine_errors.EngineError: ErrorCode.JOB_FAILED,
}


def error_code(exc: engine_errors.EngineError) -> ErrorCode:
    """The wire code for an engine error, by its type."""
    return next(ENGINE_ERROR_CODES[kind] for kind in type(exc).__mro__ if kind in ENGINE_ERROR_CODES)


# Paths in engine messages are for the daemon's log, not for the wire.
_PATH = re.compile(r"""(?:(?<=[\s'"(=])|^)(?:[A-Za-z]:[\\/]|/|~/)[^\s'"),]+""")


def public_text(text: str, limit: int = 2000) -> str:
    """An engine message made fit for the wire: no paths, bounded, and without a final period,
    like every daemon message (clients append their own advice after it)."""
    text = _PATH.sub("<path>", text).strip()
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text[:-1] if text.endswith(".") and not text.endswith("...") else text


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, engine_errors.OutOfMemory)):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    # MPS and older CUDA builds raise a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(engine: Any) -> None:
    """Give back what a failed or cancelled job held, so the next job starts clean: the
    engine's own `free_memory` where it has one, else gc and the devices' caches."""
    engine_free_memory = getattr(engine, "free_memory", None)
    if callable(engine_free_memory):
        engine_free_memory()
        return
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    with contextlib.suppress(Exception):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        if torch.backends.mps.is_available():
            torch.mps.empty_cache()


class JobRunner:
    """Runs one job on the engine in the worker thread and encodes its outcome."""

    def __init__(
        self,
        engine: Any,
        post: Callable[..., Any],
        *,
        preview_interval: float = 0.5,
    ) -> None:
        self.engine = engine
        # How the worker hands a call to the job's owner: the loop's call_soon_threadsafe in
        # the daemon, a direct call in a worker process (see workers.WorkerHost).
        self.post = post
        self.preview_interval = preview_interval
        self.loaded_model: str | None = None
        self.offload: tuple[str, str] = ("", "")  # the loaded model's offload mode and why

    def _note_loaded(self, model: str | None) -> None:
        """Remember the model the engine holds now, and how its weights are placed (an engine
        that does not say, a stand-in, leaves the offload unsaid)."""
        self.loaded_model = model
        choices = getattr(self.engine, "loaded_offload", None)
        choice = choices().get(model) if choices is not None and model is not None else None
        self.offload = (choice.mode, choice.reason) if choice is not None else ("", "")

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            self.post(fn, *args)

    def _send_progress(self, job: Job, stage: str, step: int, steps: int) -> None:
        if stage in Stage.ALL:  # the wire knows only these stages
            message = Progress(job.job_id, stage, max(0, int(step)), max(0, int(steps)))
            self._post(job.owner.send_frames, wire_frames(message))

    def execute(self, job: Job) -> Outcome:
        """Worker thread. Never raises: every failure becomes this job's `error` (or
        `cancelled`); the queue frees what a failed job held once its client has that."""
        if isinstance(job.submit, StrengthMapRequest):
            return self.execute_strength_map(job)
        start = time.monotonic()
        waited = start - job.queued_at
        params = job.params
        log.info(
            "%s, model %s, %d steps, started after %.1f s in the queue",
            job.describe(),
            job.model,
            params.steps,
            waited,
        )
        sampling: list[tuple[float, int]] = []  # (time, step) of the first and latest steps
        last_preview = [start]  # the first preview comes one interval into the job

        def on_progress(stage: str, step: int, steps: int) -> None:
            if stage == Stage.SAMPLING:
                now = time.monotonic()
                if len(sampling) < 2:
                    sampling.append((now, step))
                else:
                    sampling[1] = (now, step)
            self._send_progress(job, stage, step, steps)

        def on_preview(index: int, step: int, make_preview: Callable[[], Any]) -> None:
            if not params.preview or job.cancel_event.is_set():
                return
            now = time.monotonic()
            if now - last_preview[0] < self.preview_interval:
                return
            if job.owner.preview_busy():
                return  # the client has not taken the last one yet: skip the work
            last_preview[0] = now
            try:
                image = pixels.encode_preview(make_preview())
            except Exception:
                log.debug("%s: preview failed", job.describe(), exc_info=True)
                return
            data = wire_frames(Preview(job.job_id, max(0, int(step)), image, index))
            self._post(job.owner.offer_preview, job, data)

        def to_wire(result: Any) -> Result:
            wire = pixels.encode_result(result.image, job.submit.image, result.mask, params.output_format)
            timings = {k: float(v) for k, v in dict(result.timings).items()}
            timings["queued"] = waited  # in the daemon's queue, before the engine
            timings["daemon"] = time.monotonic() - start  # engine + pixel conversion
            return Result(
                job.job_id,
                wire,
                job.submit.x,
                job.submit.y,
                int(result.seed),
                job.model,
                timings,
                index=int(result.index),
                total=params.results,
                strength=float(result.strength),
            )

        def on_result(result: Any) -> None:
            # Every result but the last goes out as soon as it is done; the last is the
            # job's last word, sent by the queue (see Outcome).
            if result.index < params.results - 1:
                self._post(send_while_running, job, wire_frames(to_wire(result)))

        try:
            if job.cancel_event.is_set():
                raise engine_errors.JobCancelled("cancelled before it started")
            image = pixels.decode_image(job.submit.image)
            mask = pixels.decode_mask(job.submit.mask)
            results = self.engine.inpaint_batch(
                image,
                mask,
                params,
                **pixels.decode_maps(job.submit),
                # Only with references: a job without them runs on any engine (stand-ins too).
                **({"references": pixels.decode_references(job.submit)} if job.submit.ip_adapters else {}),
                # Only with controls: a job without them runs on any engine (scripted stand-ins too).
                **({"controls": pixels.decode_controls(job.submit)} if job.submit.controls else {}),
                model=job.model,
                on_progress=on_progress,
                on_preview=on_preview,
                on_result=on_result,
                should_cancel=job.cancel_event.is_set,
            )
            del image
            self._note_loaded(job.model)
            if job.cancel_event.is_set():
                raise engine_errors.JobCancelled("cancelled at the last step")
            message = to_wire(results[-1])
            data = wire_frames(message)
        except Exception as exc:
            return self._failure(job, exc, time.monotonic() - start)
        seconds = time.monotonic() - start
        seeds = ", ".join(str(r.seed) for r in results)
        log.info(
            "%s: done in %.1f s (%s), %s %s",
            job.describe(),
            seconds,
            _per_step(sampling, message.timings, params.steps),
            "seed" if len(results) == 1 else f"{len(results)} results, seeds",
            seeds,
        )
        return Outcome(data, "done")

    def execute_strength_map(self, job: Job) -> Outcome:
        """Worker thread, for a `strength_map` request: the effective map, answered with `map`.
        Never raises, as `execute`."""
        start = time.monotonic()
        waited = start - job.queued_at
        log.info("%s: strength map, started after %.1f s in the queue", job.describe(), waited)
        try:
            if job.cancel_event.is_set():
                raise engine_errors.JobCancelled("cancelled before it started")
            selection = job.submit.selection  # a blend map changes no strength: left undecoded
            strength = self.engine.strength_map(
                pixels.decode_image(job.submit.image),
                pixels.decode_mask(job.submit.mask),
                job.params,
                selection=None if selection is None else pixels.decode_mask(selection),
                on_progress=partial(self._send_progress, job),
                should_cancel=job.cancel_event.is_set,
            )
            if job.cancel_event.is_set():
                raise engine_errors.JobCancelled("cancelled at the last step")
            image = pixels.encode_strength_map(strength, job.submit.image, job.params.output_format)
            seconds = time.monotonic() - start
            timings = {"map": seconds, "queued": waited, "daemon": seconds}
            data = wire_frames(StrengthMap(job.job_id, image, job.submit.x, job.submit.y, timings))
        except Exception as exc:
            return self._failure(job, exc, time.monotonic() - start)
        log.info("%s: strength map done in %.1f s", job.describe(), time.monotonic() - start)
        return Outcome(data, "done")

    def _failure(self, job: Job, exc: Exception, seconds: float) -> Outcome:
        """The error (or `cancelled`) for a job that did not finish; logs why."""
        if isinstance(exc, engine_errors.JobCancelled) or (
            job.cancel_event.is_set() and not is_out_of_memory(exc)
        ):
            if job.stopping:
                log.info("%s: stopped with the daemon after %.1f s", job.describe(), seconds)
                text = SHUTDOWN_TEXT.format(when="was running")
                return Outcome(wire_frames(Error(ErrorCode.SHUTTING_DOWN, text, job.job_id)), "failed")
            log.info("%s: cancelled after %.1f s", job.describe(), seconds)
            return Outcome(wire_frames(Cancelled(job.job_id)), "cancelled")
        if isinstance(exc, engine_errors.EngineError):
            code, text = error_code(exc), public_text(str(exc))
            if code is ErrorCode.JOB_FAILED:
                log.error("%s: failed after %.1f s: %s", job.describe(), seconds, exc)
            else:
                log.warning("%s: %s after %.1f s: %s", job.describe(), code.value, seconds, exc)
        elif is_out_of_memory(exc):
            code, text = (
                ErrorCode.OUT_OF_MEMORY,
                (
                    f"The {getattr(self.engine, 'device', None) or 'device'} ran out of memory for "
                    f"this {job.submit.image.width}x{job.submit.image.height} job"
                ),
            )
            log.warning("%s: out of memory after %.1f s (%s)", job.describe(), seconds, exc)
        else:
            code = ErrorCode.JOB_FAILED
            text = (
                f"The job failed inside the daemon ({type(exc).__name__}); the daemon's log "
                "has the details. Other jobs are not affected."
            )
            log.error("%s: failed after %.1f s", job.describe(), seconds, exc_info=exc)
        return Outcome(wire_frames(Error(code, text or code.value, job.job_id)), "failed")


def send_while_running(job: Job, frames: Frames) -> None:
    """Loop thread: one of a job's results, unless the job has had its last word meanwhile."""
    if job.state == RUNNING:
        job.owner.send_frames(frames)


def _per_step(sampling: list[tuple[float, int]], timings: dict[str, float], steps: int) -> str:
    if len(sampling) == 2 and sampling[1][1] > sampling[0][1]:
        (t0, s0), (t1, s1) = sampling
        return f"{(t1 - t0) / (s1 - s0):.3f} s/step"
    sample = timings.get("sample") or timings.get("sampling")
    if sample and steps:
        return f"{sample / steps:.3f} s/step"
    return "s/step unknown"


def _payload_bytes(job: Job) -> int:
    """A waiting job's pixels: its region once per result it makes (a batch of 4 counts
    four times), its maps, and its control and reference images."""
    submit = job.submit
    maps = [m for m in (submit.mask, submit.selection, submit.blend_mask) if m is not None]
    images = [c.image for c in (*getattr(submit, "controls", ()), *getattr(submit, "ip_adapters", ()))]
    extra = sum(len(m.data) for m in maps) + sum(len(image.data) for image in images)
    return len(submit.image.data) * job.params.results + extra


class Worker:
    """One engine the queue hands jobs to, one job at a time: a thread of this process
    (`ThreadWorker`), a process of this machine or a Ray actor (workers.py, cluster.py).

    Loop thread only. `run` raises WorkerLost when the worker dies with the job.
    """

    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.device = device
        self.loaded_model: str | None = None
        self.offload: tuple[str, str] = ("", "")  # its model's offload mode and why (JobRunner)
        self.job: Job | None = None  # the job it runs (or frees memory after); None: idle
        self.jobs_done = 0
        self.last_used = 0.0
        # Set by the queue: how a worker found dead while idle says so (see `JobQueue.remove_worker`).
        self.on_lost: Callable[[Worker, str], None] | None = None

    async def run(self, job: Job) -> Outcome:
        raise NotImplementedError

    def cancel(self, job: Job) -> None:
        """The job's cancel_event is set already; a worker elsewhere passes the cancel on."""

    async def settle(self, job: Job) -> None:
        """After a failed or cancelled job: free what it held before the next job."""

    async def check(self) -> None:
        """Raise WorkerLost if an idle worker has died (for workers that cannot tell by themselves)."""

    async def close(self) -> None:
        """Stop the worker (its process or actor), at shutdown."""

    def info(self) -> WorkerInfo:
        busy = self.job is not None and self.job.state == RUNNING
        mode, reason = self.offload
        return WorkerInfo(self.name, self.device, self.loaded_model, busy, self.jobs_done, mode, reason)


class ThreadWorker(Worker):
    """The engine in a thread of the daemon's own process: the one-device daemon."""

    def __init__(self, runner: JobRunner, name: str = "inpaint-worker") -> None:
        super().__init__(name, str(getattr(runner.engine, "device", "") or ""))
        self.runner = runner
        self._thread = WorkerThread(name)

    async def run(self, job: Job) -> Outcome:
        try:
            return await asyncio.wrap_future(self._thread.submit(partial(self.runner.execute, job)))
        finally:
            self.loaded_model, self.offload = self.runner.loaded_model, self.runner.offload

    async def settle(self, job: Job) -> None:
        """Free what a failed or cancelled job held, in the worker, before the next job.

        Only once its client has the answer: a full garbage collection holds the GIL for
        tenths of a second, and would hold back the answer's sending with it. By now the
        exception is gone too (its traceback kept the engine's frames, and their tensors,
        alive).
        """
        await job.owner.flush(ANSWER_FIRST_TIMEOUT)
        try:
            await asyncio.wrap_future(self._thread.submit(partial(free_memory, self.runner.engine)))
        except Exception:  # the queue goes on; the next job may run short of memory
            log.exception("%s: freeing its memory failed", job.describe())


def _pick(idle: list[Worker], model: str) -> Worker:
    """The idle worker for a job: one holding its model (a load costs seconds to a minute),
    else an empty one, else the one used least recently."""
    return min(idle, key=lambda w: (w.loaded_model != model, w.loaded_model is not None, w.last_used))


class JobQueue:
    """The daemon-wide queue (loop thread only) and the task feeding its workers.

    Jobs run first come, first served; each goes to an idle worker, one that has its model
    loaded if there is one. A worker lost with its job is dropped and the job runs once more
    on another; workers join (`add_worker`) whenever they are ready.
    """

    def __init__(
        self, workers: Sequence[Worker], max_queued: int, max_queued_bytes: int = 2 * 1024**3
    ) -> None:
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.workers: list[Worker] = []
        # Told of each lost worker (the supervisor that starts it again); None: nobody.
        self.on_lost: Callable[[Worker], None] | None = None
        self._pending: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._runs: set[asyncio.Task] = set()
        for worker in workers:
            self.add_worker(worker)

    # --- queries ---

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> list[Job]:
        return [w.job for w in self.workers if w.job is not None and w.job.state == RUNNING]

    def is_full(self) -> bool:
        return len(self._pending) >= self.max_queued

    # --- workers ---

    def add_worker(self, worker: Worker) -> None:
        worker.on_lost = self.remove_worker
        self.workers.append(worker)
        if len(self.workers) > 1 or self._task is not None:
            log.info("worker %s (%s) ready; %d in all", worker.name, worker.device, len(self.workers))
        self._wake.set()

    def remove_worker(self, worker: Worker, reason: str) -> None:
        """A worker is gone (its process, actor or machine): the others go on. With none left,
        the waiting jobs fail rather than wait for workers that may never come back."""
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        log.warning("worker %s lost (%s); %d left", worker.name, reason, len(self.workers))
        if self.on_lost is not None:
            self.on_lost(worker)
        if not self.workers:
            while self._pending:
                job = self._pending.popleft()
                log.warning("%s: failed, no worker is left", job.describe())
                self._finish(job, _failed(job, NO_WORKER_TEXT))

    # --- commands from connections ---

    def accept(self, job: Job) -> None:
        """Queue `job`, telling its client `accepted` (always first) and its position."""
        if self._closing:
            raise ShuttingDown("The daemon is shutting down and takes no new jobs; start it again and retry")
        if not self.workers:
            raise NoWorker(NO_WORKER_TEXT)
        if self.is_full():
            raise QueueFull(
                f"{len(self._pending)} jobs are already waiting, the most this daemon queues; "
                "wait for one to finish and try again."
            )
        waiting = sum(_payload_bytes(queued) for queued in self._pending)
        if self._pending and waiting + _payload_bytes(job) > self.max_queued_bytes:
            raise QueueFull(
                f"the jobs already waiting hold {waiting // 2**20} MiB of pixels, the most this daemon "
                "keeps queued; wait for one to finish or send a smaller region."
            )
        job.position = len(self._pending)
        job.owner.send_frames(wire_frames(Accepted(job.job_id, job.position)))
        job.owner.send_frames(wire_frames(Progress(job.job_id, Stage.QUEUED, position=job.position)))
        self._pending.append(job)
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """A client's cancel: immediate when queued, within one step when running."""
        if job.state == QUEUED:
            self._pending.remove(job)
            log.info("%s: cancelled while queued", job.describe())
            self._finish(job, Outcome(wire_frames(Cancelled(job.job_id)), "cancelled"))
            self._announce_positions()
        elif job.state == RUNNING:
            self._cancel_running(job)

    def drop_owner(self, owner: JobOwner, jobs: list[Job]) -> None:
        """The owner disconnected: its jobs are cancelled; nobody is left to tell."""
        for job in jobs:
            if job.state == QUEUED:
                self._pending.remove(job)
                job.state = DONE
                log.info("%s: dropped, its client disconnected", job.describe())
            elif job.state == RUNNING:
                log.info("%s: cancelling, its client disconnected", job.describe())
                self._cancel_running(job)
        self._announce_positions()

    def _cancel_running(self, job: Job) -> None:
        job.cancel_event.set()
        if job.worker is not None:
            job.worker.cancel(job)

    # --- the feeding task ---

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="job-queue")

    async def _run(self) -> None:
        while not self._closing:
            idle = [worker for worker in self.workers if worker.job is None]
            if not self._pending or not idle:
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self._pending.popleft()
            worker = _pick(idle, job.model)
            worker.job, job.worker = job, worker
            job.state = RUNNING
            job.attempts += 1
            self._announce_positions()
            run = asyncio.get_running_loop().create_task(self._execute(worker, job), name=f"job-{job.serial}")
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)

    async def _execute(self, worker: Worker, job: Job) -> None:
        """One job on one worker, its last word, and the worker's clean-up after a failure."""
        if job.attempts > 1 or len(self.workers) > 1:
            log.debug("%s: on worker %s", job.describe(), worker.name)
        try:
            outcome = await worker.run(job)
        except WorkerLost as exc:
            worker.job = None
            self.remove_worker(worker, str(exc) or "lost")
            self._run_again_or_fail(job)
            return
        except Exception as exc:  # a worker's run() catches everything; this is a daemon bug
            log.exception("%s: internal error", job.describe())
            text = f"Internal error in the daemon ({type(exc).__name__}); other jobs go on."
            outcome = Outcome(wire_frames(Error(ErrorCode.INTERNAL, text, job.job_id)), "failed")
        worker.jobs_done += 1
        worker.last_used = time.monotonic()
        self._finish(job, outcome)
        if outcome.kind != "done":
            try:
                await worker.settle(job)
            except WorkerLost as exc:
                self.remove_worker(worker, str(exc) or "lost")
        worker.job = None
        self._wake.set()

    def _run_again_or_fail(self, job: Job) -> None:
        """The job of a lost worker: once more at the head of the queue, else its last word."""
        if job.state == DONE:
            return  # answered meanwhile (its client left, or the daemon stops)
        job.worker = None
        if job.cancel_event.is_set():
            when = "was running"
            message = (
                Error(ErrorCode.SHUTTING_DOWN, SHUTDOWN_TEXT.format(when=when), job.job_id)
                if job.stopping
                else Cancelled(job.job_id)
            )
            self._finish(job, Outcome(wire_frames(message), "cancelled"))
        elif job.attempts < 2 and self.workers and not self._closing:
            log.warning("%s: its worker was lost; running it again on another", job.describe())
            job.state = QUEUED
            self._pending.appendleft(job)
            self._announce_positions()
            self._wake.set()
        else:
            when = "twice" if job.attempts >= 2 else "and no other worker is left"
            log.error("%s: failed, its worker was lost %s", job.describe(), when)
            self._finish(job, _failed(job, LOST_TEXT.format(when=when)))

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if job.state == DONE:
            return  # already answered (shutdown timeout) or its client is gone
        job.state = DONE
        job.outcome = outcome.kind
        if outcome.message is not None:
            job.owner.send_frames(outcome.message)
        job.owner.forget(job)

    def _announce_positions(self) -> None:
        for position, job in enumerate(self._pending):
            if job.position != position:
                job.position = position
                message = Progress(job.job_id, Stage.QUEUED, position=position)
                job.owner.send_frames(wire_frames(message))

    # --- shutdown ---

    async def shutdown(self, grace: float = 30.0) -> None:
        """Refuse new jobs, fail the queued ones, cancel the running ones and tell their clients."""
        self._closing = True
        self._wake.set()
        while self._pending:
            job = self._pending.popleft()
            error = Error(ErrorCode.SHUTTING_DOWN, SHUTDOWN_TEXT.format(when="was waiting"), job.job_id)
            self._finish(job, Outcome(wire_frames(error), "failed"))
        running = self.running
        for job in running:
            job.stopping = True
            self._cancel_running(job)
        tasks = {task for task in (self._task, *self._runs) if task is not None}
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
        for job in running:
            if job.state != DONE:
                # The engine did not return within the grace time (a long model load):
                # answer for it; the worker thread dies with the process.
                log.warning("%s: still running after %.0f s; stopping anyway", job.describe(), grace)
                text = SHUTDOWN_TEXT.format(when="was running")
                error = Error(ErrorCode.SHUTTING_DOWN, text, job.job_id)
                self._finish(job, Outcome(wire_frames(error), "failed"))
        await asyncio.gather(*(worker.close() for worker in self.workers), return_exceptions=True)


def _failed(job: Job, text: str) -> Outcome:
    return Outcome(wire_frames(Error(ErrorCode.JOB_FAILED, text, job.job_id)), "failed")
