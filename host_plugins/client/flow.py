"""The host-neutral steps of one job, written once for both plugins.

    prepare(host, settings)   read the layer and the selection, plan the region,
                              check sizes, build the `submit`        (host's thread)
    follow(job, settings)     run it on the daemon: progress, previews, cancel
                                                                     (any thread)
    finish(job, result)       check the result, insert it as a new layer (host's thread)

A host adapter (Krita's, GIMP's) implements `HostDocument`: reading pixels and
the selection, inserting a layer. Everything else, including every message a
painter reads, lives here. Every failure is an `InpaintError`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import protocol as p
from .connection import run_job
from .errors import InpaintError, JobCancelled
from .settings import Settings

NO_SELECTION_HINT = "(or select nothing to repaint the whole layer)"


class HostDocument(Protocol):
    """One layer of one open image, as a host adapter sees it.

    Rectangles are in the host's own coordinates for that layer (Krita: the
    document's; GIMP: the drawable's); `origin` moves them into the document's,
    where the wire's x and y are.
    """

    host_name: str  # "Krita", "GIMP": for messages
    pixel_format: p.PixelFormat  # the layer's native bytes
    color: p.ColorEncoding
    shows_previews: bool  # whether the host can show previews while a job runs

    def canvas(self) -> p.Rect:
        """Where pixels can be read."""
        ...

    def selection(self) -> p.Rect | None:
        """The selection's bounds; None when nothing is selected."""
        ...

    def layer_extent(self) -> p.Rect:
        """What changes when nothing is selected."""
        ...

    def origin(self) -> tuple[int, int]: ...

    def read_selection(self, region: p.Rect) -> bytes:
        """The selection over `region`, one byte a pixel (called only with a selection)."""
        ...

    def read_pixels(self, region: p.Rect) -> bytes:
        """The layer's pixels over `region` in `pixel_format`."""
        ...

    def is_open(self) -> bool:
        """Whether the image is still open (a job may outlive it)."""
        ...

    def insert_layer(self, name: str, result: p.Result) -> Any:
        """Add `result` as a new layer above the job's layer, as one undo step."""
        ...

    def insert_group(self, name: str, layers: list[tuple[str, p.Result]]) -> Any:
        """Add a layer group above the job's layer holding `layers`, top to bottom in
        the order given, only the first visible, as one undo step."""
        ...


@dataclass
class PreparedJob:
    """Everything read for one job, and where its result goes."""

    host: HostDocument
    region: p.Rect  # in the host's coordinates
    submit: p.Submit = field(repr=False)
    layer_name: str  # what result layers are named after (see result_name)
    whole_layer: bool  # nothing was selected


ProgressCallback = Callable[[p.Progress], None]
PreviewCallback = Callable[[p.Preview], None]
ResultCallback = Callable[[p.Result], None]


def new_job_id() -> str:
    return uuid.uuid4().hex


def layer_name(prompt: str, limit: int = 60) -> str:
    """What result layers are named after: the prompt on one line, shortened."""
    name = " ".join(prompt.split())
    if len(name) > limit:
        name = name[: limit - 1].rstrip() + "\u2026"
    return name or "Differential Inpaint"


def result_name(base: str, result: p.Result, fan: bool) -> str:
    """One result's layer: "prompt · seed", or "prompt · strength" in a fan, so that a
    layer says how to make it again."""
    return f"{base} \u00b7 {percent(result.strength)}" if fan else f"{base} \u00b7 {result.seed}"


def group_name(base: str, params: p.JobParams) -> str:
    """The group holding a job's results."""
    if params.fan:
        return f"{base} \u00b7 strength fan"
    return f"{base} \u00b7 {params.count} variations"


def percent(fraction: float) -> str:
    return f"{round(fraction * 100, 1):g}%"


# --- prepare -----------------------------------------------------------------------


def plan_region(host: HostDocument, padding: int) -> tuple[p.Rect, p.Rect, bool]:
    """(region to send, area to change, whether there is a selection)."""
    canvas = host.canvas()
    selection = host.selection()
    if selection is None:
        # No selection: the whole layer, at the chosen strength.
        target = host.layer_extent().intersect(canvas)
        target = canvas if target.is_empty else target
        return p.context_region(target, canvas, padding=0), target, False
    target = selection.intersect(canvas)
    if target.is_empty:
        raise InpaintError(
            f"The selection does not touch the layer. Select an area on the layer {NO_SELECTION_HINT} "
            "and try again.",
            "empty_selection",
        )
    return p.context_region(target, canvas, padding=padding), target, True


def check_size(region: p.Rect, whole_layer: bool, limits: p.Limits = p.DEFAULT_LIMITS) -> None:
    """Refuse a region the daemon would refuse before reading it: reading a huge layer
    costs the host seconds and gigabytes, only for the daemon to say no."""
    if limits.fits(region.width, region.height):
        return
    what = "With nothing selected, the whole layer" if whole_layer else "The area around the selection"
    raise InpaintError(
        f"{what} is {region.width}x{region.height} pixels; the daemon works on at most "
        f"{limits.max_pixels:,} pixels ({limits.max_side} on a side). Select a smaller area and try again.",
        p.ErrorCode.TOO_LARGE.value,
    )


def full_mask(region: p.Rect, extent: p.Rect) -> bytes:
    """255 over `extent`, 0 elsewhere in `region`, built row-wise with bytes
    arithmetic (no per-pixel Python)."""
    inner = extent.intersect(region)
    if inner.is_empty:
        return bytes(region.area)
    left = inner.x - region.x
    row = bytes(left) + b"\xff" * inner.width + bytes(region.width - left - inner.width)
    top = inner.y - region.y
    return (
        bytes(top * region.width) + row * inner.height + bytes((region.bottom - inner.bottom) * region.width)
    )


def _check_read(host: HostDocument, what: str, data: bytes, expected: int, region: p.Rect) -> None:
    if len(data) != expected:
        raise InpaintError(
            f"{host.host_name} gave {len(data)} bytes of {what} for the {region.width}x{region.height} "
            f"region instead of {expected}; nothing was sent. Pick a paint layer, select the area again "
            "and retry; please report this if it persists.",
            "unreadable_layer",
        )


def prepare(host: HostDocument, settings: Settings, job_id: str | None = None) -> PreparedJob:
    """Read what the job needs from the host and build its `submit`."""
    settings.check()
    region, target, selected = plan_region(host, settings.host.padding)
    check_size(region, whole_layer=not selected)
    mask = host.read_selection(region) if selected else full_mask(region, target)
    _check_read(host, "selection", mask, region.area, region)
    if not mask.strip(b"\x00"):
        raise InpaintError(
            f"Nothing is selected where the selection meets the layer. Select the area to change "
            f"(soft or feathered selections change partly) {NO_SELECTION_HINT} and try again.",
            "empty_selection",
        )
    pixels = host.read_pixels(region)
    _check_read(host, "pixels", pixels, region.area * host.pixel_format.bytes_per_pixel, region)
    dx, dy = host.origin()
    params = settings.job.replace(output_format=host.pixel_format, preview=host.shows_previews)
    submit = p.Submit(
        job_id=job_id or new_job_id(),
        image=p.Image(region.width, region.height, host.pixel_format, pixels, host.color),
        mask=p.Mask(region.width, region.height, mask),
        params=params,
        x=region.x + dx,
        y=region.y + dy,
    )
    return PreparedJob(host, region, submit, layer_name(settings.job.prompt), whole_layer=not selected)


# --- follow ------------------------------------------------------------------------


def follow(
    job: PreparedJob,
    settings: Settings,
    *,
    client: str,
    on_progress: ProgressCallback | None = None,
    on_preview: PreviewCallback | None = None,
    on_result: ResultCallback | None = None,
    on_status: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> list[p.Result]:
    """Run the job on the daemon to its end (blocking; any thread); its results in order.

    `on_result` gets each result as it arrives. A cancel after some results of a job
    of several raises `JobCancelled` with them in `kept`.

    When no daemon answers at a local address and install-plugin recorded how to start
    one there, it is started first (`launcher.start_on_demand`, up to its start time limit;
    `timeout` counts from the job's submission): `on_status` gets "Starting the daemon..."
    and the daemon's own lines meanwhile; without `on_status`, `on_progress` gets one
    `loading` progress. A daemon on another machine is never started."""
    from . import launcher
    from .errors import DaemonUnavailable

    server, token = settings.host.server, settings.host.token or None
    results: list[p.Result] = []

    def received(result: p.Result) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    def submit() -> list[p.Result]:
        cancelled = False
        try:
            run_job(
                job.submit,
                server=server,
                token=token,
                on_progress=on_progress,
                on_preview=on_preview,
                on_result=received,
                cancel=cancel,
                timeout=timeout,
                client=client,
            )
        except JobCancelled:
            cancelled = True
        if cancelled:
            # Raised outside the `except`: no chained exception whose traceback holds this
            # frame, the job and through it the host's document (Krita must not keep those).
            raise JobCancelled(results, job.submit.params.results)
        return results

    try:
        return submit()
    except DaemonUnavailable as exc:
        # A fresh error: the caught one's traceback would hold this frame, the job and
        # through it the host's document (Krita must not keep those alive).
        unavailable = DaemonUnavailable(exc.message)
    told: list[bool] = []

    def as_progress(_line: str) -> None:
        if on_progress is not None and not told:
            told.append(True)
            on_progress(p.Progress(job.submit.job_id, p.Stage.LOADING))

    launcher.start_on_demand(server, unavailable, on_status or as_progress, token=token, cancel=cancel)
    return submit()


_STAGE_TEXT = {
    p.Stage.QUEUED: "Waiting for the daemon",
    p.Stage.LOADING: "Loading the model",
    p.Stage.ENCODING: "Encoding",
    p.Stage.SAMPLING: "Sampling",
    p.Stage.DECODING: "Decoding",
}


def progress_text(progress: p.Progress, done: int = 0, total: int = 1) -> tuple[str, float | None]:
    """What a progress bar shows: a line of text and a fraction (None: just busy).
    `done` of `total`: the results of a job of several received so far."""
    text = _STAGE_TEXT.get(progress.stage, progress.stage.capitalize())
    results = f" ({done} of {total} results done)" if total > 1 else ""
    if progress.stage == p.Stage.QUEUED and progress.position:
        ahead = "1 job" if progress.position == 1 else f"{progress.position} jobs"
        text = f"{text} ({ahead} ahead)"
    if progress.stage == p.Stage.SAMPLING and progress.steps:
        text = f"{text}: step {progress.step} of {progress.steps}{results}"
        return text, min(1.0, progress.step / progress.steps)
    return text + "..." + results, 1.0 if progress.stage == p.Stage.DECODING and total == 1 else None


# --- finish ------------------------------------------------------------------------


def check_result(job: PreparedJob, result: p.Result) -> None:
    """The result must fit exactly where the job came from."""
    image, submit = result.image, job.submit
    problems = []
    if (result.x, result.y) != (submit.x, submit.y):
        problems.append(f"it is placed at {result.x},{result.y} instead of {submit.x},{submit.y}")
    if (image.width, image.height) != (submit.image.width, submit.image.height):
        problems.append(
            f"it is {image.width}x{image.height} instead of {submit.image.width}x{submit.image.height}"
        )
    if image.format is not submit.image.format:
        problems.append(f"it is {image.format.value} instead of {submit.image.format.value}")
    if len(image.data) != image.expected_bytes:
        problems.append("its byte count does not match its size")
    if problems:
        raise InpaintError(
            "The daemon's result does not fit the layer (" + "; ".join(problems) + "); nothing was "
            "changed. Update the daemon and the plugin to the same release.",
            "protocol",
        )


def finish(job: PreparedJob, results: list[p.Result]) -> Any:
    """Insert the results above the job's layer, one undo step: one result as a layer
    named `prompt · seed`, several as a group of them (the first visible). The new layer
    or group."""
    for result in results:
        check_result(job, result)
    if not job.host.is_open():
        raise InpaintError("The image was closed while the job ran; nothing was inserted.", "document_closed")
    params = job.submit.params
    named = [(result_name(job.layer_name, r, bool(params.fan)), r) for r in results]
    if len(named) == 1 and params.results == 1:
        return job.host.insert_layer(*named[0])
    return job.host.insert_group(group_name(job.layer_name, params), named)


def run(host: HostDocument, settings: Settings, *, client: str, **follow_options: Any) -> Any:
    """prepare, follow and finish in one blocking call (GIMP's plug-in process). A batch
    cancelled part-way inserts what was done, then raises its `JobCancelled`."""
    job = prepare(host, settings)
    try:
        results = follow(job, settings, client=client, **follow_options)
    except JobCancelled as exc:
        if exc.kept:
            finish(job, exc.kept)
        raise
    return finish(job, results)
