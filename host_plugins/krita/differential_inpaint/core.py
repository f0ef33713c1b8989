"""The plugin's core: plain functions over Krita objects, no widgets, no Qt.

    read the layer and the selection -> plan the region -> build the `submit`
    -> (the job runs elsewhere) -> check the `result` -> insert it as a new layer

The dialog, the docker and `inpaint_layer` all go through these functions.
They only touch Krita on the thread that calls them, which must be Krita's GUI
thread; the network part runs in a worker thread (see jobs.py).

Krita facts this relies on (checked in Krita 5.1.5): `Node.pixelData(x, y, w, h)`
takes document coordinates whatever the layer's offset, and gives B,G,R,A for
integer depths and R,G,B,A for float depths, straight alpha; reading outside
the layer gives transparent black. `Selection.pixelData` is one byte a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import protocol as p
from .client import InpaintError, layer_name, new_job_id

# Krita depth -> the wire format of its native bytes (so nothing is swizzled here).
PIXEL_FORMATS: dict[str, p.PixelFormat] = {
    "U8": p.PixelFormat.BGRA8,
    "U16": p.PixelFormat.BGRA16,
    "F16": p.PixelFormat.RGBAF16,
    "F32": p.PixelFormat.RGBAF32,
}
_MAX_SEED = 2**63 - 1


class KritaInpaintError(InpaintError):
    """Something about the document stops the job before anything is sent."""


@dataclass(frozen=True)
class InpaintSettings:
    """What the painter chooses; the dialog, the docker and `inpaint_layer` fill it."""

    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int = 20
    guidance: float = 7.0
    seed: int | None = None  # None: the daemon draws one
    model: str | None = None  # None: the daemon's default
    grow: float = 0.0
    feather: float = 0.0
    padding: int = p.DEFAULT_PADDING  # px of context around the selection
    server: str = ""  # "" = the client's default address
    token: str = ""  # the daemon's token; needed only when it asks for one (off loopback)

    def check(self) -> None:
        """Refuse values the daemon would refuse, with a sentence a painter can act on."""
        problems = []
        if not (0.0 < self.strength <= 1.0) or math.isnan(self.strength):
            problems.append("strength must be above 0 and at most 1")
        if not 1 <= self.steps <= p.DEFAULT_LIMITS.max_steps:
            problems.append(f"steps must be between 1 and {p.DEFAULT_LIMITS.max_steps}")
        if not 0.0 <= self.guidance <= 100.0:
            problems.append("guidance must be between 0 and 100")
        if self.seed is not None and not 0 <= self.seed <= _MAX_SEED:
            problems.append(f"the seed must be between 0 and {_MAX_SEED}")
        for name in ("grow", "feather"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1024.0:
                problems.append(f"{name} must be between 0 and 1024 pixels")
        if self.padding < 0:
            problems.append("the context padding cannot be negative")
        if len(self.prompt) > p.DEFAULT_LIMITS.max_prompt_chars:
            problems.append(f"the prompt is longer than {p.DEFAULT_LIMITS.max_prompt_chars} characters")
        if problems:
            raise KritaInpaintError("Cannot start: " + "; ".join(problems) + ".", "invalid_settings")

    def job_params(self, output_format: p.PixelFormat) -> p.JobParams:
        return p.JobParams(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            strength=self.strength,
            steps=self.steps,
            guidance=self.guidance,
            seed=self.seed,
            model=self.model or None,
            grow=self.grow,
            feather=self.feather,
            output_format=output_format,  # keep the layer's precision
        )


@dataclass(frozen=True)
class LayerFormat:
    depth: str  # Krita's name: U8, U16, F16, F32
    pixel_format: p.PixelFormat
    color: p.ColorEncoding
    profile: str


@dataclass
class PreparedJob:
    """Everything read from Krita for one job, and where its result goes."""

    document: Any
    node: Any
    region: p.Rect
    layer_format: LayerFormat
    layer_name: str
    submit: p.Submit = field(repr=False)
    has_selection: bool = False


# --- reading ------------------------------------------------------------------


def layer_format(document: Any, node: Any) -> LayerFormat:
    """The wire format of the layer's bytes, or a clear refusal."""
    model, depth, profile = node.colorModel(), node.colorDepth(), node.colorProfile()
    if model != "RGBA":
        raise KritaInpaintError(
            f"The layer '{node.name()}' uses the {model} colour model; Differential Inpaint works on "
            "RGB/Alpha layers. Convert the image with Image > Convert Image Color Space... to "
            "RGB/Alpha and try again.",
            "unsupported_color_model",
        )
    if depth not in PIXEL_FORMATS:
        raise KritaInpaintError(
            f"The layer '{node.name()}' has the colour depth {depth}; Differential Inpaint works on "
            "8-bit and 16-bit integer and 16-bit and 32-bit float layers.",
            "unsupported_color_depth",
        )
    doc_space = (document.colorModel(), document.colorDepth(), document.colorProfile())
    if doc_space != (model, depth, profile):
        # The new layer is created in the image's colour space, so it must match the layer's bytes.
        raise KritaInpaintError(
            f"The layer '{node.name()}' ({model} {depth}, {profile}) is not in the image's colour space "
            f"({doc_space[0]} {doc_space[1]}, {doc_space[2]}). Convert the layer with "
            "Layer > Convert > Convert Layer Color Space... and try again.",
            "unsupported_color_space",
        )
    return LayerFormat(depth, PIXEL_FORMATS[depth], color_encoding(profile), profile)


def color_encoding(profile: str) -> p.ColorEncoding:
    """Linear-light profiles (Krita's default float one is sRGB-elle-V2-g10) are sent as
    such; the daemon converts, since the models see sRGB."""
    name = profile.lower()
    if "g10" in name or "linear" in name:
        return p.ColorEncoding.LINEAR
    return p.ColorEncoding.SRGB


def canvas_rect(document: Any) -> p.Rect:
    return p.Rect(0, 0, document.width(), document.height())


def _qrect(rect: Any) -> p.Rect:
    return p.Rect(rect.x(), rect.y(), rect.width(), rect.height())


def layer_extent(node: Any, canvas: p.Rect) -> p.Rect:
    """The layer's painted area on the canvas (its bounds already include a move
    off the origin); the whole canvas for an empty layer."""
    extent = _qrect(node.bounds()).intersect(canvas)
    return canvas if extent.is_empty else extent


def selection_bounds(selection: Any) -> p.Rect:
    return p.Rect(selection.x(), selection.y(), selection.width(), selection.height())


def _is_mask(node: Any) -> bool:
    return str(node.type()).endswith("mask")


def read_pixels(node: Any, region: p.Rect, fmt: LayerFormat) -> bytes:
    """Only the region's bytes, in Krita's native order; a group gives what it shows."""
    if node.type() == "paintlayer":
        data = node.pixelData(region.x, region.y, region.width, region.height)
    else:  # groups, vector, file, clone and fill layers: their rendered pixels
        data = node.projectionPixelData(region.x, region.y, region.width, region.height)
    data = bytes(data)
    expected = region.area * fmt.pixel_format.bytes_per_pixel
    if len(data) != expected:
        raise KritaInpaintError(
            f"Krita gave {len(data)} bytes for the {region.width}x{region.height} region of "
            f"'{node.name()}' instead of {expected}; this layer type cannot be read. Pick a paint "
            "layer or a group.",
            "unreadable_layer",
        )
    return data


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


def plan_region(document: Any, node: Any, padding: int) -> tuple[p.Rect, p.Rect, Any]:
    """(region to send, area to change, live selection or None)."""
    canvas = canvas_rect(document)
    selection = document.selection()
    if selection is not None and selection.width() > 0 and selection.height() > 0:
        target = selection_bounds(selection).intersect(canvas)
        if target.is_empty:
            raise KritaInpaintError(
                "The selection lies outside the canvas. Select an area of the image and try again.",
                "empty_selection",
            )
        return p.context_region(target, canvas, padding=padding), target, selection
    # No selection: the whole layer, at the chosen strength.
    target = layer_extent(node, canvas)
    return p.context_region(target, canvas, padding=0), target, None


def check_size(region: p.Rect, has_selection: bool) -> None:
    """Refuse a region the daemon would refuse before reading it: reading a huge layer
    costs Krita's GUI thread seconds and gigabytes, only for the daemon to say no."""
    limits = p.DEFAULT_LIMITS
    if limits.fits(region.width, region.height):
        return
    what = "The area around the selection" if has_selection else "With no selection, the whole layer"
    raise KritaInpaintError(
        f"{what} is {region.width}x{region.height} pixels; the daemon works on at most "
        f"{limits.max_pixels:,} pixels ({limits.max_side} on a side). Select a smaller area "
        "(or lower the context padding) and try again.",
        p.ErrorCode.TOO_LARGE.value,
    )


def resolve_node(document: Any, node: Any | None) -> Any:
    if document is None:
        raise KritaInpaintError("Open an image first.", "no_document")
    if node is None:
        node = document.activeNode()
    if node is None:
        raise KritaInpaintError("Select the layer to inpaint in the Layers docker.", "no_layer")
    if _is_mask(node):
        raise KritaInpaintError(
            f"'{node.name()}' is a mask; select the layer to inpaint in the Layers docker.", "no_layer"
        )
    return node


def prepare_job(
    document: Any, node: Any | None, settings: InpaintSettings, job_id: str | None = None
) -> PreparedJob:
    """Read what the job needs from Krita (GUI thread) and build its `submit`."""
    settings.check()
    node = resolve_node(document, node)
    fmt = layer_format(document, node)
    region, target, selection = plan_region(document, node, settings.padding)
    check_size(region, selection is not None)
    if selection is not None:
        mask = bytes(selection.pixelData(region.x, region.y, region.width, region.height))
        if len(mask) != region.area:
            raise KritaInpaintError(
                f"Krita gave {len(mask)} selection bytes for a region of {region.area} pixels; "
                "nothing was sent. Select the area again and retry; please report this if it persists.",
                "unreadable_selection",
            )
    else:
        mask = full_mask(region, target)
    if not mask.strip(b"\x00"):
        raise KritaInpaintError(
            "The selection is empty here: nothing is selected. Select the area to change "
            "(soft or feathered selections change partly) and try again.",
            "empty_selection",
        )
    pixels = read_pixels(node, region, fmt)
    submit = p.Submit(
        job_id=job_id or new_job_id(),
        image=p.Image(region.width, region.height, fmt.pixel_format, pixels, fmt.color),
        mask=p.Mask(region.width, region.height, mask),
        params=settings.job_params(fmt.pixel_format),
        x=region.x,
        y=region.y,
    )
    return PreparedJob(
        document=document,
        node=node,
        region=region,
        layer_format=fmt,
        layer_name=layer_name(settings.prompt),
        submit=submit,
        has_selection=selection is not None,
    )


# --- writing ------------------------------------------------------------------


def check_result(job: PreparedJob, result: p.Result) -> None:
    """The result must fit exactly where the job came from."""
    image, region = result.image, job.region
    problems = []
    if (result.x, result.y) != (region.x, region.y):
        problems.append(f"it is placed at {result.x},{result.y} instead of {region.x},{region.y}")
    if (image.width, image.height) != (region.width, region.height):
        problems.append(f"it is {image.width}x{image.height} instead of {region.width}x{region.height}")
    if image.format is not job.layer_format.pixel_format:
        problems.append(f"it is {image.format.value} instead of {job.layer_format.pixel_format.value}")
    if len(image.data) != image.expected_bytes:
        problems.append("its byte count does not match its size")
    if problems:
        raise InpaintError(
            "The daemon's result does not fit the layer (" + "; ".join(problems) + "); nothing was "
            "changed. Update the daemon and the plugin to the same release.",
            "protocol",
        )


def _still_open(document: Any) -> bool:
    try:
        from krita import Krita
    except ImportError:  # pragma: no cover - only without Krita
        return True
    try:
        return any(doc == document for doc in Krita.instance().documents())
    except Exception:  # a stand-in or shutting-down Krita: do not block the insert on this check
        return True


def insert_result(job: PreparedJob, result: p.Result) -> Any:
    """Add the result as a new paint layer above the job's layer, as one undo step.

    The result's alpha already is the composite mask (0 where the mask was 0),
    so it goes in as it is; the original layer is never written to.
    """
    check_result(job, result)
    document = job.document
    if not _still_open(document):
        raise InpaintError("The image was closed while the job ran; nothing was inserted.", "document_closed")
    image = result.image
    layer = document.createNode(job.layer_name, "paintlayer")
    if layer is None:
        raise InpaintError(
            "Krita could not create a new paint layer; nothing was changed. Try again, or save "
            "the image and restart Krita.",
            "insert_failed",
        )
    # Pixels first: setPixelData on a layer that is not in the image yet is not an
    # undo step of its own, so adding the finished layer is the one and only step.
    layer.setPixelData(image.data, result.x, result.y, image.width, image.height)
    parent = job.node.parentNode()
    if parent is None:  # the layer was removed meanwhile: put the result on top
        parent, above = document.rootNode(), None
    else:
        above = job.node
    if not parent.addChildNode(layer, above):
        raise InpaintError(
            "Krita refused to add the new layer; nothing was changed. Try again, or save the "
            "image and restart Krita.",
            "insert_failed",
        )
    return layer
