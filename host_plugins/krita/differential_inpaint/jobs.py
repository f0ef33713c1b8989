"""Running a job off Krita's GUI thread.

The network part (`client.flow.follow`) always runs in a worker thread.
`JobThread` is what the dialog uses: it reports through callbacks that the
caller marshals to the GUI thread (ui.py wraps them in Qt signals).
`run_blocking` is what `inpaint_layer` uses: it waits for the worker while
letting Krita repaint, so even a Scripter call never freezes the window.

A failure is handed over without its traceback or the exceptions chained to it:
their frames hold the job, and through it Krita's document and node, in a
reference cycle with the error; Krita would tear those down after its own
objects at exit and crash (seen after a cancel in Krita 5.2.9).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import protocol as p
from .client import InpaintError, Settings, as_inpaint_error, flow

CLIENT_NAME = "krita-differential-inpaint"


class JobThread(threading.Thread):
    """One job in a worker thread. Exactly one of `on_done(results)` and
    `on_error(InpaintError)` is called, from the worker thread; `on_result` before it
    for each result as it arrives (a cancelled job of several: `JobCancelled.kept`)."""

    def __init__(
        self,
        job: flow.PreparedJob,
        settings: Settings,
        *,
        timeout: float | None = None,
        on_done: Callable[[list[p.Result]], None],
        on_error: Callable[[InpaintError], None],
        on_result: Callable[[p.Result], None] | None = None,
        on_progress: Callable[[p.Progress], None] | None = None,
        on_preview: Callable[[p.Preview], None] | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        """`on_status`: lines about a daemon being started for this job (see `flow.follow`)."""
        super().__init__(name=f"differential-inpaint-{job.submit.job_id[:8]}", daemon=True)
        self.job: flow.PreparedJob | None = job
        self.settings = settings
        self.timeout = timeout
        self.cancel_event = threading.Event()
        self._on_done = on_done
        self._on_error = on_error
        self._on_result = on_result
        self._on_progress = on_progress
        self._on_preview = on_preview
        self._on_status = on_status

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:
        on_done, on_error, job = self._on_done, self._on_error, self.job
        assert job is not None, "a JobThread runs once"
        try:
            results = flow.follow(
                job,
                self.settings,
                client=CLIENT_NAME,
                on_progress=self._on_progress,
                on_preview=self._on_preview,
                on_result=self._on_result,
                on_status=self._on_status,
                cancel=self.cancel_event,
                timeout=self.timeout,
            )
        except BaseException as exc:  # the worker must always report back
            on_error(detached(as_inpaint_error(exc)))
        else:
            on_done(results)
        finally:
            # The callbacks lead back to their owner (a JobController, which holds this
            # thread): drop them, so that no cycle keeps the job's document alive.
            self._on_done = self._on_error = _ignore
            self._on_result = self._on_progress = self._on_preview = self._on_status = None


def _ignore(_value: object) -> None:
    pass


def detached(error: InpaintError) -> InpaintError:
    """The error without its traceback and the exceptions it was raised from or during
    (a `JobCancelled` raised while handling the connection's own one, say): their
    tracebacks' frames hold the job and so Krita's document."""
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error


def _default_pump() -> Callable[[], None]:
    try:
        from .qt import pump_events
    except ImportError:  # no Qt (the core's own tests): just wait
        return lambda: None
    return pump_events


def run_blocking(
    job: flow.PreparedJob,
    settings: Settings,
    *,
    timeout: float | None = None,
    pump: Callable[[], None] | None = None,
) -> list[p.Result]:
    """Run the job in a worker thread and wait for it, pumping Qt events meanwhile; its
    results. A job of several cancelled part-way raises `JobCancelled` holding those done."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def finish(key: str, value: object) -> None:
        box[key] = value
        done.set()

    worker = JobThread(
        job,
        settings,
        timeout=timeout,
        on_done=lambda results: finish("results", results),
        on_error=lambda error: finish("error", error),
    )
    pump = pump or _default_pump()
    worker.start()
    try:
        while not done.wait(0.02):
            pump()
    except BaseException:
        worker.cancel()  # e.g. KeyboardInterrupt in a console: do not leave the job running
        raise
    results, error = box.pop("results", None), box.pop("error", None)
    if error is not None:
        try:
            raise error
        finally:
            error = None  # this frame must not hold the error its own traceback holds
    return list(results or [])
