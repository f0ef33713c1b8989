"""What the GIMP plug-in decides without touching GIMP: pure functions, host-testable.

Pixel formats, which region to send, the job request, progress text and the
new layer's name. The GIMP side (`gimp_io`) only moves bytes in and out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import (
    DEFAULT_LIMITS,
    ColorEncoding,
    Image,
    JobParams,
    Mask,
    PixelFormat,
    Progress,
    Rect,
    Stage,
    Submit,
    context_region,
)

JOB_TIMEOUT = 30 * 60.0  # seconds; a stuck daemon must not hang GIMP forever


@dataclass(frozen=True)
class Depth:
    """How one image precision travels: the Babl format GIMP reads and writes
    (R'G'B' = sRGB-encoded, the encoding the models see) and its wire format."""

    babl: str
    wire: PixelFormat


DEPTHS = {
    "u8": Depth("R'G'B'A u8", PixelFormat.RGBA8),
    "u16": Depth("R'G'B'A u16", PixelFormat.RGBA16),
    "half": Depth("R'G'B'A half", PixelFormat.RGBAF16),
    "float": Depth("R'G'B'A float", PixelFormat.RGBAF32),
}
# Wire formats the plug-in can write back (GIMP has no BGRA Babl formats).
BABL_FOR_WIRE = {depth.wire: depth.babl for depth in DEPTHS.values()}


def depth_for_precision(precision_name: str) -> Depth:
    """The Depth for a Gimp.Precision value's name, e.g. 'U16_NON_LINEAR'.

    32-bit integer and double images travel as 32-bit float: no wire format
    holds them and float keeps more than 16 bits of their precision.
    """
    kind = precision_name.upper().split("_", 1)[0]
    return {"U8": DEPTHS["u8"], "U16": DEPTHS["u16"], "HALF": DEPTHS["half"]}.get(kind, DEPTHS["float"])


def plan_region(selection: Rect | None, drawable_size: tuple[int, int]) -> Rect:
    """The region of the drawable to send, in drawable coordinates.

    `selection` is the selection's bounding box already moved into drawable
    coordinates (None: nothing selected, so the whole drawable changes).
    Raises ValueError when the selection misses the drawable.
    """
    canvas = Rect(0, 0, *drawable_size)
    if selection is None:
        region = canvas
    elif selection.intersect(canvas).is_empty:
        raise ValueError(
            "The selection does not touch the active layer. Select an area on the layer "
            "(or select nothing to repaint the whole layer) and try again."
        )
    else:
        # The context rule both plugins share (protocol.region's defaults).
        region = context_region(selection, canvas)
    check_size(region, whole_layer=selection is None)
    return region


def check_size(region: Rect, *, whole_layer: bool) -> None:
    """Refuse a region the daemon would refuse before reading it: reading a huge
    layer costs GIMP seconds and gigabytes, only for the daemon to say no."""
    limits = DEFAULT_LIMITS
    if limits.fits(region.width, region.height):
        return
    what = "The whole layer" if whole_layer else "The area around the selection"
    raise ValueError(
        f"{what} is {region.width}x{region.height} pixels; the daemon works on at most "
        f"{limits.max_pixels:,} pixels ({limits.max_side} on a side). Select a smaller area "
        "and try again."
    )


@dataclass(frozen=True)
class Settings:
    """The procedure's arguments, as the plug-in's config holds them."""

    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int = 20
    guidance: float = 7.0
    seed: int = -1  # -1: the daemon draws one
    model: str = ""  # "": the daemon's default
    grow: float = 0.0
    feather: float = 0.0
    server_url: str = ""
    token: str = ""  # the daemon's token; needed only when it asks for one (off loopback)

    def params(self, output_format: PixelFormat) -> JobParams:
        return JobParams(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            strength=self.strength,
            steps=self.steps,
            guidance=self.guidance,
            seed=None if self.seed < 0 else self.seed,
            model=self.model.strip() or None,
            grow=self.grow,
            feather=self.feather,
            output_format=output_format,
            preview=False,  # GIMP has nowhere to show a preview while a filter runs
        )


def build_submit(
    job_id: str,
    settings: Settings,
    depth: Depth,
    region: Rect,
    pixels: bytes,
    mask: bytes,
    offset: tuple[int, int],
) -> Submit:
    """The job for `region` (drawable coordinates); `offset` is the drawable's
    offset in the image, so x/y travel (and come back) in image coordinates."""
    return Submit(
        job_id=job_id,
        image=Image(region.width, region.height, depth.wire, pixels, ColorEncoding.SRGB),
        mask=Mask(region.width, region.height, mask),
        params=settings.params(depth.wire),
        x=region.x + offset[0],
        y=region.y + offset[1],
    )


def check_result(result_image: Image, x: int, y: int, submit: Submit) -> str:
    """The Babl format to write the result with; ValueError if it does not fit the request."""
    if (result_image.width, result_image.height, x, y) != (
        submit.image.width,
        submit.image.height,
        submit.x,
        submit.y,
    ):
        raise ValueError(
            f"The daemon returned a {result_image.width}x{result_image.height} image at "
            f"({x}, {y}) for a {submit.image.width}x{submit.image.height} region at "
            f"({submit.x}, {submit.y}); nothing was changed. Update the daemon and the plug-in "
            "to the same release."
        )
    babl = BABL_FOR_WIRE.get(PixelFormat(result_image.format))
    if babl is None:
        raise ValueError(
            f"The daemon returned pixels as {PixelFormat(result_image.format).value}, which GIMP "
            "cannot take; nothing was changed. Update the daemon and the plug-in to the same release."
        )
    return babl


_STAGE_TEXT = {
    Stage.QUEUED: "waiting for the daemon",
    Stage.LOADING: "loading the model",
    Stage.ENCODING: "encoding",
    Stage.SAMPLING: "sampling",
    Stage.DECODING: "decoding",
}


def progress_report(progress: Progress) -> tuple[str, float | None]:
    """Status-bar text and bar fraction for a progress message (None: just pulse)."""
    text = _STAGE_TEXT.get(progress.stage, progress.stage)
    if progress.stage == Stage.QUEUED and progress.position:
        text = f"waiting for the daemon ({progress.position} jobs ahead)"
    if progress.steps:
        text = f"{text}: step {progress.step} of {progress.steps}"
    fraction = None
    if progress.stage == Stage.SAMPLING and progress.steps:
        fraction = min(1.0, progress.step / progress.steps)
    elif progress.stage == Stage.DECODING:
        fraction = 1.0
    return f"Differential Inpaint: {text}", fraction
