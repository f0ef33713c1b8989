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
from collections.abc import Callable, Sequence
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

    def find_layer(self, name: str) -> Any:
        """The layer, mask or channel of the image called `name`, as `read_map` takes it;
        an InpaintError ("missing_layer") when there is none."""
        ...

    def map_bounds(self, source: Any) -> p.Rect:
        """Where `source` (from `find_layer`, or the host's own object) has pixels."""
        ...

    def read_layer(self, source: Any, region: p.Rect) -> p.Image:
        """`source`'s pixels over `region` as an image in its own format (a group: what it
        shows), placed by image coordinates, transparent where it has none: a control or
        reference image."""
        ...

    def read_map(self, source: Any, region: p.Rect) -> p.Mask:
        """`source` over `region` as a map, placed by image coordinates: gray8 or gray16 for
        masks, channels and selections; a layer's own pixels (any `PixelFormat`, whose
        luminance times alpha is the map) otherwise; 0 where it has no pixels."""
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
    submit: p.Submit = field(repr=False)  # a StrengthMapRequest when only the map is asked for
    layer_name: str  # what result layers are named after (see result_name)
    whole_layer: bool  # nothing bounds the area to change: the whole layer


@dataclass(frozen=True)
class ControlInput:
    """A layer whose pixels over the job's region steer it (ControlNet), and how."""

    layer: Any  # a host object or a name for `HostDocument.find_layer`
    params: p.ControlParams = field(default_factory=p.ControlParams)


@dataclass(frozen=True)
class ReferenceInput:
    """A layer whose whole picture is a reference image (IP-Adapter), and its weight."""

    layer: Any
    params: p.ReferenceParams = field(default_factory=p.ReferenceParams)


@dataclass(frozen=True)
class Maps:
    """The layers a job reads besides its own, each a host object (a node, a drawable) or
    a name for `HostDocument.find_layer`. mask, blend, context: None takes the settings'
    choice (`mask_layer`, `blend_layer`, `context`), and where those are empty the
    selection and the alpha made from it. controls, references: conditioning images.

    context: "auto", "image", "mask", "X,Y,W,H" or an (x, y, w, h) tuple in image pixels,
    "layer:NAME", or a host object whose bounds are the context.
    """

    mask: Any = None
    blend: Any = None
    context: Any = None
    controls: tuple[ControlInput, ...] = ()
    references: tuple[ReferenceInput, ...] = ()


ProgressCallback = Callable[[p.Progress], None]
PreviewCallback = Callable[[p.Preview], None]
Answer = p.Result | p.StrengthMap  # what a job gives: results, or a strength map's map
ResultCallback = Callable[[Answer], None]


def new_job_id() -> str:
    return uuid.uuid4().hex


def layer_name(prompt: str, limit: int = 60) -> str:
    """What result layers are named after: the prompt on one line, shortened."""
    name = " ".join(prompt.split())
    if len(name) > limit:
        name = name[: limit - 1].rstrip() + "\u2026"
    return name or "Differential Inpaint"


MAP_LAYER_NAME = "Strength map"


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


# --- the text encoders and VAE a model kept alone may take --------------------------

ROLE_LABELS = {"clip_l": "CLIP-L", "clip_g": "CLIP-G", "t5": "T5-XXL", "vae": "VAE"}
PART_PARAMS = {"text_encoders": p.TEXT_ENCODER_ROLES, "vae": ("vae",)}  # setting -> its roles


def part_choices(
    model: p.ModelInfo | None, text_encoders: Sequence[p.PartInfo], vaes: Sequence[p.PartInfo]
) -> dict[str, tuple[str, ...]]:
    """role -> the names a painter may choose among for `model`'s text encoders and VAE,
    only where the choice is theirs: a FLUX.1 / SD3 transformer kept alone (its `lacks`),
    each role it lacks or for which the daemon lists several fitting files. Empty: a host
    offers no choice (the model holds its parts, or the daemon's match serves)."""
    if model is None or not model.lacks:
        return {}
    fitting: dict[str, list[str]] = {}
    for part in [*text_encoders, *vaes]:
        if part.fits(model.family):
            fitting.setdefault(part.role, []).append(part.name)
    return {role: tuple(names) for role, names in fitting.items() if role in model.lacks or len(names) > 1}


def offered_parts(choices: dict[str, tuple[str, ...]], setting: str) -> str:
    """What a host shows beside `setting` ("text_encoders" or "vae") as its choices,
    "CLIP-L: clip_l.safetensors; T5-XXL: t5xxl_fp16.safetensors, t5xxl_fp8.safetensors";
    "" when it offers none (the host then hides the setting)."""
    return "; ".join(
        f"{ROLE_LABELS[role]}: {', '.join(choices[role])}" for role in PART_PARAMS[setting] if role in choices
    )


# --- prepare -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """The maps of one job, resolved to host objects."""

    mask: Any  # None: the selection (or the whole layer)
    blend: Any
    limited: bool  # the selection limits a layer map


def _resolve(host: HostDocument, source: Any) -> Any:
    if isinstance(source, str):
        return host.find_layer(source) if source else None
    return source


def _sources(host: HostDocument, settings: Settings, maps: Maps) -> _Sources:
    return _Sources(
        _resolve(host, maps.mask if maps.mask is not None else settings.host.mask_layer),
        _resolve(host, maps.blend if maps.blend is not None else settings.host.blend_layer),
        settings.host.limit_to_selection,
    )


def _bounded(params: p.JobParams) -> bool:
    """Whether a map is 0 wherever its layer has no pixels: not when inverted or replaced
    by the depth estimate."""
    return not params.invert_mask and params.depth == p.Depth.NONE


def plan_region(host: HostDocument, settings: Settings, maps: Maps = Maps()) -> tuple[p.Rect, p.Rect, bool]:
    """(region to send, area to change, whether the area is bounded by a selection or a map
    rather than the whole layer), in the host's coordinates."""
    return _plan(host, settings, _sources(host, settings, maps), maps.context)


def _plan(
    host: HostDocument, settings: Settings, sources: _Sources, context: Any
) -> tuple[p.Rect, p.Rect, bool]:
    canvas = host.canvas()
    selection = host.selection()
    target: p.Rect | None = None
    if selection is not None and (sources.mask is None or sources.limited):
        target = selection.intersect(canvas)
        if target.is_empty:
            raise InpaintError(
                f"The selection does not touch the layer. Select an area on the layer {NO_SELECTION_HINT} "
                "and try again.",
                "empty_selection",
            )
    if sources.mask is not None and _bounded(settings.job):
        painted = host.map_bounds(sources.mask).intersect(canvas)
        target = painted if target is None else target.intersect(painted)
        if target.is_empty:
            raise InpaintError(
                "The map layer has nothing where it could change the layer"
                + (" inside the selection" if selection is not None and sources.limited else "")
                + ". Paint on the map layer (white changes, black keeps), or pick another one.",
                "empty_selection",
            )
    bounded = target is not None
    if target is None:
        # Nothing bounds it: the whole layer, at the chosen strength.
        target = host.layer_extent().intersect(canvas)
        target = canvas if target.is_empty else target
    region = context_rect(host, context if context is not None else settings.host.context, target, canvas)
    if region is None:
        padding = settings.host.padding if bounded else 0
        region = p.context_region(target, canvas, padding=padding)
    return region, target, bounded


def context_rect(host: HostDocument, context: Any, target: p.Rect, canvas: p.Rect) -> p.Rect | None:
    """The region `context` names, in the host's coordinates; None for "auto"."""
    rect: p.Rect | None = None
    if isinstance(context, str):
        word = context.strip().lower()
        if word == "auto":
            return None
        if word == "image":
            return canvas
        if word == "mask":
            return p.context_region(target, canvas, padding=0, min_size=0)
        if context.strip().startswith("layer:"):
            rect = host.map_bounds(host.find_layer(context.strip()[len("layer:") :]))
        else:
            rect = _document_rect(host, context)
    elif isinstance(context, (tuple, list)):
        rect = _document_rect(host, ",".join(str(v) for v in context))
    else:
        rect = host.map_bounds(context)
    rect = rect.intersect(canvas)
    if rect.is_empty:
        raise InpaintError(
            "The context area lies outside the image; choose auto, image, mask or a rectangle inside it.",
            "invalid_settings",
        )
    if rect.intersect(target).is_empty:
        raise InpaintError(
            "The context area does not include any of the area to change, so nothing could change; "
            "choose a context that covers the selection or the map.",
            "invalid_settings",
        )
    return rect


def _document_rect(host: HostDocument, text: str) -> p.Rect:
    """ "X,Y,W,H" in image pixels -> the host's coordinates."""
    try:
        x, y, width, height = (int(part) for part in text.split(","))
    except ValueError:
        raise InpaintError(
            f"Context '{text}' is not one of auto, image, mask, X,Y,W,H (four whole numbers) or layer:NAME.",
            "invalid_settings",
        ) from None
    if width <= 0 or height <= 0:
        raise InpaintError(
            f"Context '{text}' has no area; width and height must be above 0.", "invalid_settings"
        )
    dx, dy = host.origin()
    return p.Rect(x - dx, y - dy, width, height)


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


def prepare(
    host: HostDocument,
    settings: Settings,
    job_id: str | None = None,
    *,
    maps: Maps = Maps(),
    request: type[p.Submit] = p.Submit,
) -> PreparedJob:
    """Read what the job needs from the host and build its `submit` (or, with `request`
    StrengthMapRequest, the request for its strength map only)."""
    settings.check()
    sources = _sources(host, settings, maps)
    region, target, bounded = _plan(host, settings, sources, maps.context)
    selected = host.selection() is not None
    check_size(region, whole_layer=not bounded)
    selection = None
    if sources.mask is None:
        data = host.read_selection(region) if selected else full_mask(region, target)
        _check_read(host, "selection", data, region.area, region)
        if settings.job.depth == p.Depth.NONE and not data.strip(b"\x00"):
            raise InpaintError(
                f"Nothing is selected where the selection meets the layer. Select the area to change "
                f"(soft or feathered selections change partly) {NO_SELECTION_HINT} and try again.",
                "empty_selection",
            )
        mask = p.Mask(region.width, region.height, data)
    else:
        mask = _read_map(host, sources.mask, region, "map layer")
        if selected and sources.limited:
            data = host.read_selection(region)
            _check_read(host, "selection", data, region.area, region)
            selection = p.Mask(region.width, region.height, data)
    blend = None if sources.blend is None else _read_map(host, sources.blend, region, "blend layer")
    # A strength map needs no conditioning: its images would travel for nothing.
    needs_conditioning = not issubclass(request, p.StrengthMapRequest)
    controls, references = _read_conditioning(host, maps, region) if needs_conditioning else ((), ())
    pixels = host.read_pixels(region)
    _check_read(host, "pixels", pixels, region.area * host.pixel_format.bytes_per_pixel, region)
    dx, dy = host.origin()
    params = settings.job.replace(output_format=host.pixel_format, preview=host.shows_previews)
    submit = request(
        job_id=job_id or new_job_id(),
        image=p.Image(region.width, region.height, host.pixel_format, pixels, host.color),
        mask=mask,
        params=params,
        x=region.x + dx,
        y=region.y + dy,
        selection=selection,
        blend_mask=blend,
        controls=controls,
        ip_adapters=references,
    )
    return PreparedJob(host, region, submit, layer_name(settings.job.prompt), whole_layer=not bounded)


def _read_conditioning(
    host: HostDocument, maps: Maps, region: p.Rect
) -> tuple[tuple[p.Control, ...], tuple[p.Reference, ...]]:
    """The control images (the job's region of each control layer) and the reference
    images (each reference layer whole), refused before sending when they cannot travel."""
    limits = p.DEFAULT_LIMITS
    for what, given, most in (
        ("control layers", maps.controls, limits.max_controls),
        ("reference layers", maps.references, limits.max_ip_adapters),
    ):
        if len(given) > most:
            raise InpaintError(f"A job takes at most {most} {what}, not {len(given)}.", "invalid_settings")
    controls = []
    for control in maps.controls:
        image = host.read_layer(_resolve(host, control.layer), region)
        _check_image(host, image, region, "control layer")
        controls.append(p.Control(image, control.params))
    references = []
    for reference in maps.references:
        layer = _resolve(host, reference.layer)
        bounds = host.map_bounds(layer).intersect(host.canvas())
        if bounds.is_empty or not limits.fits(bounds.width, bounds.height):
            raise InpaintError(
                f"A reference layer must have pixels inside the image and at most {limits.max_pixels:,} "
                f"of them; this one covers {bounds.width}x{bounds.height}. Pick or crop another layer.",
                "invalid_settings",
            )
        image = host.read_layer(layer, bounds)
        _check_image(host, image, bounds, "reference layer")
        references.append(p.Reference(image, reference.params))
    return tuple(controls), tuple(references)


def _check_image(host: HostDocument, image: p.Image, region: p.Rect, what: str) -> None:
    fits = (image.width, image.height) == (region.width, region.height)
    if not fits or len(image.data) != image.expected_bytes:
        raise InpaintError(
            f"{host.host_name} gave a {image.width}x{image.height} {what} of {len(image.data)} bytes for "
            f"the {region.width}x{region.height} area; nothing was sent. Pick another layer; please "
            "report this if it persists.",
            "unreadable_layer",
        )


def _read_map(host: HostDocument, source: Any, region: p.Rect, what: str) -> p.Mask:
    mask = host.read_map(source, region)
    if (mask.width, mask.height) != (region.width, region.height) or len(mask.data) != mask.expected_bytes:
        raise InpaintError(
            f"{host.host_name} gave a {mask.width}x{mask.height} {what} of {len(mask.data)} bytes for "
            f"the {region.width}x{region.height} region; nothing was sent. Pick another layer as the "
            "map; please report this if it persists.",
            "unreadable_layer",
        )
    return mask


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
) -> list[Answer]:
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
    results: list[Answer] = []

    def received(result: Answer) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    def submit() -> list[Answer]:
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


def finish(job: PreparedJob, results: list[Any]) -> Any:
    """Insert the results above the job's layer, one undo step: one result as a layer
    named `prompt · seed`, several as a group of them (the first visible); a strength map
    as the layer "Strength map". The new layer or group."""
    for result in results:
        check_result(job, result)
    if not job.host.is_open():
        raise InpaintError("The image was closed while the job ran; nothing was inserted.", "document_closed")
    if isinstance(job.submit, p.StrengthMapRequest):
        return job.host.insert_layer(MAP_LAYER_NAME, results[-1])
    params = job.submit.params
    named = [(result_name(job.layer_name, r, bool(params.fan)), r) for r in results]
    if len(named) == 1 and params.results == 1:
        return job.host.insert_layer(*named[0])
    return job.host.insert_group(group_name(job.layer_name, params), named)


def run(
    host: HostDocument,
    settings: Settings,
    *,
    client: str,
    maps: Maps = Maps(),
    request: type[p.Submit] = p.Submit,
    **follow_options: Any,
) -> Any:
    """prepare, follow and finish in one blocking call (GIMP's plug-in process). A batch
    cancelled part-way inserts what was done, then raises its `JobCancelled`."""
    job = prepare(host, settings, maps=maps, request=request)
    try:
        results = follow(job, settings, client=client, **follow_options)
    except JobCancelled as exc:
        if exc.kept:
            finish(job, exc.kept)
        raise
    return finish(job, results)
