"""GIMP's side of a job: a `HostDocument` over one drawable of one open image.

Everything goes through Gegl buffers in memory (no temporary image files), in
the Babl format matching the image's precision, so 16-bit and float images
keep their depth. Rectangles are in drawable coordinates; the selection lives
in image coordinates, shifted by the drawable's offsets — the two meet here
only. Everything host-neutral (the region, the checks, the messages) is in
the shared `client.flow`.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

from .client.flow import progress_text  # noqa: E402
from .formats import depth_for_precision  # noqa: E402
from .protocol import ColorEncoding, Progress, Rect, Result  # noqa: E402

MASK_FORMAT = "Y u8"  # the selection as 8-bit gray: 0 keep, 255 change fully


class GimpDocument:
    """`client.flow.HostDocument` for one layer of an image."""

    host_name = "GIMP"
    color = ColorEncoding.SRGB  # the R'G'B' Babl formats are sRGB-encoded whatever the image's
    shows_previews = False  # a filter's progress bar has nowhere to show one

    def __init__(self, image: Gimp.Image, drawable: Gimp.Layer) -> None:
        self.image = image
        self.drawable = drawable
        self.depth = depth_for_precision(image.get_precision().value_nick.replace("-", "_"))
        self.pixel_format = self.depth.wire

    def origin(self) -> tuple[int, int]:
        # GIMP 3's python bindings return (ok, x, y) for get_offsets.
        values = self.drawable.get_offsets()
        return int(values[-2]), int(values[-1])

    def canvas(self) -> Rect:
        return Rect(0, 0, self.drawable.get_width(), self.drawable.get_height())

    def layer_extent(self) -> Rect:
        return self.canvas()

    def selection(self) -> Rect | None:
        if Gimp.Selection.is_empty(self.image):
            return None
        _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(self.image)
        if not non_empty:
            return None
        dx, dy = self.origin()
        return Rect.from_edges(x1 - dx, y1 - dy, x2 - dx, y2 - dy)

    def read_selection(self, region: Rect) -> bytes:
        """Parts of the region outside the image get 0 from the abyss: the selection cannot reach there."""
        dx, dy = self.origin()
        buffer = self.image.get_selection().get_buffer()
        rect = Gegl.Rectangle.new(region.x + dx, region.y + dy, region.width, region.height)
        return bytes(buffer.get(rect, 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE))

    def read_pixels(self, region: Rect) -> bytes:
        buffer = self.drawable.get_buffer()
        rect = Gegl.Rectangle.new(region.x, region.y, region.width, region.height)
        return bytes(buffer.get(rect, 1.0, self.depth.babl, Gegl.AbyssPolicy.NONE))

    def is_open(self) -> bool:
        # GIMP stays usable while the job runs: the image may have been closed meanwhile.
        return bool(self.image.is_valid())

    def insert_layer(self, name: str, result: Result) -> Gimp.Layer:
        """A new layer just above the drawable at image position (x, y), as one undo step.
        Its format is the drawable's (flow.check_result made sure); the pixels' alpha is used
        as-is (the daemon's composite mask). If the drawable
        was deleted while the job ran, the layer goes on top of the image."""
        image, pixels = self.image, result.image
        width, height = pixels.width, pixels.height
        layer = Gimp.Layer.new(
            image, name, width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
        )
        above = self.drawable
        if above.is_valid():
            # Same parent and position as `above`: inserting there pushes it one down.
            parent, position = above.get_parent(), image.get_item_position(above)
        else:
            parent, position = None, 0
        image.undo_group_start()
        try:
            image.insert_layer(layer, parent, position)
            try:
                layer.set_offsets(result.x, result.y)
                buffer = layer.get_buffer()
                buffer.set(Gegl.Rectangle.new(0, 0, width, height), self.depth.babl, pixels.data)
                buffer.flush()
                layer.update(0, 0, width, height)
            except BaseException:
                image.remove_layer(layer)  # failure means no layer, not a half-written one
                raise
        finally:
            image.undo_group_end()
        if above.is_valid():
            # The painting stays selected, so Repeat (Ctrl+F) and Re-Show work on it, not on a result.
            image.set_selected_layers([above])
        Gimp.displays_flush()
        return layer


def show_status(line: str) -> None:
    """A line from a daemon being started for this run, in GIMP's progress bar."""
    Gimp.progress_set_text(f"Differential Inpaint: {line}")
    Gimp.progress_pulse()


def show_progress(progress: Progress) -> None:
    """A job's progress in GIMP's progress bar."""
    text, fraction = progress_text(progress)
    Gimp.progress_set_text(f"Differential Inpaint: {text}")
    if fraction is None:
        Gimp.progress_pulse()
    else:
        Gimp.progress_update(fraction)
