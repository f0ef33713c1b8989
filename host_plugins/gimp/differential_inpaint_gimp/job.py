"""One filter run: read → submit through the shared client → insert. Blocking;
GIMP runs each plug-in call in the plug-in's own process, so its UI stays live."""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp  # noqa: E402

from . import core, gimp_io  # noqa: E402
from .client import InpaintError, layer_name, new_job_id, run_job  # noqa: E402
from .protocol import Progress  # noqa: E402

CLIENT_NAME = "differential-inpaint-gimp"


class JobFailed(Exception):
    """A failure with a message for the painter; the image was not changed."""


def _show_progress(progress: Progress) -> None:
    text, fraction = core.progress_report(progress)
    Gimp.progress_set_text(text)
    if fraction is None:
        Gimp.progress_pulse()
    else:
        Gimp.progress_update(fraction)


def inpaint(image: Gimp.Image, drawable: Gimp.Layer, settings: core.Settings) -> Gimp.Layer:
    """Run one job on the drawable and return the new layer; JobFailed otherwise."""
    depth = gimp_io.image_depth(image)
    selection = gimp_io.selection_in_drawable(image, drawable)
    try:
        region = core.plan_region(selection, gimp_io.drawable_size(drawable))
    except ValueError as exc:
        raise JobFailed(str(exc)) from None
    mask = gimp_io.read_mask(image, drawable, region, selected=selection is not None)
    if not mask.strip(b"\x00"):
        raise JobFailed(
            "The selection is empty where it meets the active layer. Select part of the layer "
            "(or select nothing to repaint the whole layer) and try again."
        )
    pixels = gimp_io.read_pixels(drawable, region, depth.babl)
    submit = core.build_submit(
        new_job_id(), settings, depth, region, pixels, mask, gimp_io.drawable_offset(drawable)
    )
    del pixels, mask  # the submit holds the only copy we need

    Gimp.progress_init(f"Differential Inpaint: connecting to {settings.server_url}")
    try:
        result = run_job(
            submit,
            server=settings.server_url,
            token=settings.token or None,
            on_progress=_show_progress,
            timeout=core.JOB_TIMEOUT,
            client=CLIENT_NAME,
        )
    except InpaintError as exc:
        raise JobFailed(exc.message) from None
    finally:
        Gimp.progress_end()
    try:
        babl = core.check_result(result.image, result.x, result.y, submit)
    except ValueError as exc:
        raise JobFailed(str(exc)) from None
    # GIMP stays usable while the job runs: the image may have been closed meanwhile.
    if not image.is_valid():
        raise JobFailed("The image was closed while the job ran; nothing was inserted.")
    layer = gimp_io.insert_layer(
        image,
        drawable,
        layer_name(settings.prompt),
        result.x,
        result.y,
        result.image.width,
        result.image.height,
        babl,
        result.image.data,
    )
    Gimp.displays_flush()
    return layer
