"""Plain functions over GIMP objects: read the drawable and the selection, insert the result.

Everything goes through Gegl buffers in memory (no temporary image files), in
the Babl format matching the image's precision, so 16-bit and float images
keep their depth. Selection coordinates are image coordinates; drawable
coordinates are shifted by the drawable's offsets — the two meet here only.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

from .core import Depth, depth_for_precision  # noqa: E402
from .protocol import Rect  # noqa: E402

MASK_FORMAT = "Y u8"  # the selection as 8-bit gray: 0 keep, 255 change fully


def image_depth(image: Gimp.Image) -> Depth:
    return depth_for_precision(image.get_precision().value_nick.replace("-", "_"))


def drawable_offset(drawable: Gimp.Drawable) -> tuple[int, int]:
    # GIMP 3's python bindings return (ok, x, y) for get_offsets.
    values = drawable.get_offsets()
    return int(values[-2]), int(values[-1])


def drawable_size(drawable: Gimp.Drawable) -> tuple[int, int]:
    return drawable.get_width(), drawable.get_height()


def selection_in_drawable(image: Gimp.Image, drawable: Gimp.Drawable) -> Rect | None:
    """The selection's bounding box in drawable coordinates; None when nothing is selected."""
    if Gimp.Selection.is_empty(image):
        return None
    _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not non_empty:
        return None
    dx, dy = drawable_offset(drawable)
    return Rect.from_edges(x1 - dx, y1 - dy, x2 - dx, y2 - dy)


def read_pixels(drawable: Gimp.Drawable, region: Rect, babl: str) -> bytes:
    """`region` (drawable coordinates) of the drawable, straight alpha, row-major."""
    buffer = drawable.get_buffer()
    rect = Gegl.Rectangle.new(region.x, region.y, region.width, region.height)
    return bytes(buffer.get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE))


def read_mask(image: Gimp.Image, drawable: Gimp.Drawable, region: Rect, selected: bool) -> bytes:
    """The selection over `region` (drawable coordinates) as 8-bit gray.

    Without a selection everything changes (all 255). Parts of the region
    outside the image get 0 from the abyss: the selection cannot reach there.
    """
    if not selected:
        return b"\xff" * (region.width * region.height)
    dx, dy = drawable_offset(drawable)
    buffer = image.get_selection().get_buffer()
    rect = Gegl.Rectangle.new(region.x + dx, region.y + dy, region.width, region.height)
    return bytes(buffer.get(rect, 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE))


def insert_layer(
    image: Gimp.Image,
    above: Gimp.Layer,
    name: str,
    x: int,
    y: int,
    width: int,
    height: int,
    babl: str,
    pixels: bytes,
) -> Gimp.Layer:
    """A new layer just above `above` at image position (x, y) holding `pixels`,
    as one undo step. The pixels' alpha is used as-is (the daemon's composite mask).
    If `above` was deleted while the job ran, the layer goes on top of the image."""
    layer = Gimp.Layer.new(
        image, name, width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
    )
    if above.is_valid():
        # Same parent and position as `above`: inserting there pushes it one down.
        parent, position = above.get_parent(), image.get_item_position(above)
    else:
        parent, position = None, 0
    image.undo_group_start()
    try:
        image.insert_layer(layer, parent, position)
        try:
            layer.set_offsets(x, y)
            buffer = layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, width, height), babl, pixels)
            buffer.flush()
            layer.update(0, 0, width, height)
        except BaseException:
            image.remove_layer(layer)  # failure means no layer, not a half-written one
            raise
    finally:
        image.undo_group_end()
    return layer
