"""Running a job off Krita's GUI thread.

The network part (the shared blocking client) always runs in a worker thread.
`JobThread` is what the dialog uses: it reports through callbacks that the
caller marshals to the GUI thread (ui.py wraps them in Qt signals).
`run_blocking` is what `inpaint_layer` uses: it waits for the worker while
letting Krita repaint, so even a Scripter call never freezes the window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import protocol as p
from .client import DEFAULT_SERVER, InpaintError, run_job

CLIENT_NAME = "krita-differential-inpaint"


def as_inpaint_error(exc: BaseException) -> InpaintError:
    """Any failure as the one error type the painter sees."""
    if isinstance(exc, InpaintError):
        return exc
    error = InpaintError(
        f"Unexpected error in the plugin: {exc.__class__.__name__}: {exc}. Nothing was changed. "
        "Please report this with the steps that led to it.",
        "plugin_bug",
    )
    error.__cause__ = exc
    return error


class JobThread(threading.Thread):
    """One job in a worker thread. Exactly one of `on_result(Result)` and
    `on_error(InpaintError)` is called, from the worker thread."""

    def __init__(
        self,
        submit: p.Submit,
        *,
        server: str = "",
        token: str | None = None,
        timeout: float | None = None,
        on_result: Callable[[p.Result], None],
        on_error: Callable[[InpaintError], None],
        on_progress: Callable[[p.Progress], None] | None = None,
        on_preview: Callable[[p.Preview], None] | None = None,
    ) -> None:
        super().__init__(name=f"differential-inpaint-{submit.job_id[:8]}", daemon=True)
        self.submit = submit
        self.server = server or DEFAULT_SERVER
        self.token = token
        self.timeout = timeout
        self.cancel_event = threading.Event()
        self._on_result = on_result
        self._on_error = on_error
        self._on_progress = on_progress
        self._on_preview = on_preview

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:
        try:
            result = run_job(
                self.submit,
                server=self.server,
                token=self.token,
                on_progress=self._on_progress,
                on_preview=self._on_preview,
                cancel=self.cancel_event,
                timeout=self.timeout,
                client=CLIENT_NAME,
            )
        except BaseException as exc:  # the worker must always report back
            self._on_error(as_inpaint_error(exc))
            return
        self._on_result(result)


def _default_pump() -> Callable[[], None]:
    try:
        from .qt import pump_events
    except ImportError:  # no Qt (the core's own tests): just wait
        return lambda: None
    return pump_events


def run_blocking(
    submit: p.Submit,
    *,
    server: str = "",
    token: str | None = None,
    timeout: float | None = None,
    pump: Callable[[], None] | None = None,
) -> p.Result:
    """Run the job in a worker thread and wait for it, pumping Qt events meanwhile."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def finish(key: str, value: object) -> None:
        box[key] = value
        done.set()

    worker = JobThread(
        submit,
        server=server,
        token=token,
        timeout=timeout,
        on_result=lambda result: finish("result", result),
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
    if "error" in box:
        raise box["error"]
    return box["result"]
