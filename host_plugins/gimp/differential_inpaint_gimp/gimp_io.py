"""GIMP's side of a job: a `HostDocument` over one drawable of one open image.

Everything goes through Gegl buffers in memory (no temporary image files), in
the Babl format matching the image's precision, so 16-bit and float images
keep their depth. Rectangles are in drawable coordinates; the selection and
the maps (a channel, a layer mask, another layer) live in image coordinates or
at their own offsets, shifted by the drawable's — they meet here only.
Everything host-neutral (the region, the checks, the messages) is in the
shared `client.flow`.
"""

from __future__ import annotations

from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

from .client.errors import InpaintError  # noqa: E402
from .client.flow import progress_text  # noqa: E402
from .formats import depth_for_precision, gray_map_format  # noqa: E402
from .protocol import ColorEncoding, Image, Mask, Progress, Rect, Result  # noqa: E402

MASK_FORMAT = "Y u8"  # the selection as 8-bit gray: 0 keep, 255 change fully
SOURCE_PARASITE = "differential-inpaint-source"  # on result layers: the source layer's tattoo


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
        return offsets(self.drawable)

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

    # --- maps: a channel, a layer mask or a layer in place of the selection ---

    def find_layer(self, name: str) -> Gimp.Drawable:
        """The first layer (groups searched, top to bottom), layer mask or channel of the
        image called `name` (GIMP's maps are drawables: names come from Context's layer:NAME)."""
        for item in drawables_of(self.image):
            if item.get_name() == name:
                return item
        raise InpaintError(
            f"There is no layer, layer mask or channel called '{name}' in this image. Check the "
            "name after layer: in Context (or rename the layer to match) and try again.",
            "missing_layer",
        )

    def map_bounds(self, source: Gimp.Drawable) -> Rect:
        # Reference layers come here too; the plug-in checked them first, under their own name.
        check_drawable(self.image, source, "map")
        return self._placed(source, Rect(0, 0, source.get_width(), source.get_height()))

    def read_map(self, source: Gimp.Drawable, region: Rect) -> Mask:
        """A channel or layer mask as the gray the painter sees (`gray_map_format`; 16-bit
        above 8-bit precision); a layer's own pixels in the image's precision (the daemon
        takes luminance times alpha). 0 outside `source`."""
        check_drawable(self.image, source, "map")
        if isinstance(source, Gimp.Channel):  # channels, layer masks (and the selection)
            babl, wire = gray_map_format(self.depth)
            return Mask(region.width, region.height, self._read(source, region, babl), wire)
        data = self._read(source, region, self.depth.babl)
        return Mask(region.width, region.height, data, self.depth.wire, self.color)

    def read_layer(self, source: Gimp.Drawable, region: Rect) -> Image:
        """`source`'s pixels over `region` in the image's precision (a group: what it shows;
        a channel or mask: its gray as seen, opaque), transparent outside it: a control or
        reference image."""
        check_drawable(self.image, source, "control or reference layer")
        data = self._read(source, region, self.depth.babl)
        return Image(region.width, region.height, self.depth.wire, data, self.color)

    def _read(self, source: Gimp.Drawable, region: Rect, babl: str) -> bytes:
        """`source` over `region` (the job drawable's coordinates), placed by image
        coordinates; the abyss (transparent, 0) where it has no pixels."""
        dx, dy = self.origin()
        sx, sy = offsets(source)
        # The drawable's coordinates -> the image's -> `source`'s.
        rect = Gegl.Rectangle.new(region.x + dx - sx, region.y + dy - sy, region.width, region.height)
        return bytes(source.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE))

    def _placed(self, source: Gimp.Drawable, rect: Rect) -> Rect:
        """`rect` in `source`'s coordinates -> the job drawable's (by image coordinates)."""
        sx, sy = offsets(source)
        dx, dy = self.origin()
        return Rect(rect.x + sx - dx, rect.y + sy - dy, rect.width, rect.height)

    def is_open(self) -> bool:
        # GIMP stays usable while the job runs: the image may have been closed meanwhile.
        return bool(self.image.is_valid())

    def insert_layer(self, name: str, result: Result) -> Gimp.Layer:
        """A new layer just above the drawable at image position (x, y), as one undo step.
        Its format is the drawable's (flow.check_result made sure); the pixels' alpha is used
        as-is (the daemon's composite mask). If the drawable
        was deleted while the job ran, the layer goes on top of the image."""
        return self._insert(lambda parent, position: self._add_result(name, result, parent, position))

    def insert_group(self, name: str, layers: list[tuple[str, Result]]) -> Gimp.GroupLayer:
        """A layer group just above the drawable holding one layer per result, top to bottom
        in the order given, only the first visible (the rest are there to compare), as one
        undo step."""

        def add(parent: Gimp.Layer | None, position: int) -> Gimp.GroupLayer:
            group = Gimp.GroupLayer.new(self.image, name)
            self.image.insert_layer(group, parent, position)
            self._mark(group)
            for index, (layer_name, result) in enumerate(layers):
                layer = self._add_result(layer_name, result, group, index)
                layer.set_visible(index == 0)
            return group

        return self._insert(add)

    def _insert(self, add: Callable[[Gimp.Layer | None, int], Gimp.Layer]) -> Gimp.Layer:
        """Run `add(parent, position)` where a new item goes just above the drawable, inside
        one undo group; a failure removes what was added, so no half-written layer stays."""
        image, above = self.image, self.drawable
        if above.is_valid():
            # Same parent and position as `above`: inserting there pushes it one down.
            parent, position = above.get_parent(), image.get_item_position(above)
        else:
            parent, position = None, 0

        def siblings() -> list[Gimp.Item]:
            return list(parent.get_children() if parent is not None else image.get_layers())

        image.undo_group_start()
        try:
            before = {item.get_id() for item in siblings()}
            try:
                added = add(parent, position)
            except BaseException:
                for item in siblings():
                    if item.get_id() not in before:
                        image.remove_layer(item)
                raise
        finally:
            image.undo_group_end()
        if above.is_valid():
            # The painting stays selected, so Repeat (Ctrl+F) and Re-Show work on it, not on a result.
            image.set_selected_layers([above])
        Gimp.displays_flush()
        return added

    def _add_result(self, name: str, result: Result, parent: Gimp.Layer | None, position: int) -> Gimp.Layer:
        pixels = result.image
        width, height = pixels.width, pixels.height
        layer = Gimp.Layer.new(
            self.image, name, width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
        )
        self.image.insert_layer(layer, parent, position)
        self._mark(layer)
        layer.set_offsets(result.x, result.y)
        buffer = layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, width, height), self.depth.babl, pixels.data)
        buffer.flush()
        layer.update(0, 0, width, height)
        return layer

    def _mark(self, layer: Gimp.Layer) -> None:
        """Name the source layer on a result (a parasite, saved in XCF files), so a run
        started on the result works on the painting it came from (`source_of`)."""
        if self.drawable.is_valid():
            tattoo = str(self.drawable.get_tattoo()).encode()
            layer.attach_parasite(Gimp.Parasite.new(SOURCE_PARASITE, Gimp.PARASITE_PERSISTENT, tattoo))


def check_drawable(image: Gimp.Image, source: Gimp.Drawable, what: str) -> None:
    """A drawable a job reads besides its own (a map, a control or reference layer) must
    still exist and belong to `image` (GIMP's drawable chooser offers every open image's)."""
    if not source.is_valid():
        raise InpaintError(
            f"The layer or channel picked as the {what} was deleted. Pick it again and retry.",
            "missing_layer",
        )
    owner = source.get_image()
    if owner is None or owner.get_id() != image.get_id():
        raise InpaintError(
            f"The {what} '{source.get_name()}' belongs to another image; it must be a layer, layer "
            "mask or channel of the image being painted. Pick one of this image's and try again.",
            "invalid_settings",
        )


def offsets(drawable: Gimp.Drawable) -> tuple[int, int]:
    """Where `drawable` sits in its image (a channel: 0, 0; a layer mask: its layer's place)."""
    values = drawable.get_offsets()  # GIMP 3's python bindings return (ok, x, y)
    return int(values[-2]), int(values[-1])


def drawables_of(image: Gimp.Image) -> list[Gimp.Drawable]:
    """Every layer of `image` top to bottom (a group's children after it), each followed
    by its layer mask, then the channels: the order a map is looked up by name."""
    found: list[Gimp.Drawable] = []

    def walk(layers: list[Gimp.Layer]) -> None:
        for layer in layers:
            found.append(layer)
            mask = layer.get_mask()
            if mask is not None:
                found.append(mask)
            if layer.is_group():
                walk(layer.get_children())

    walk(image.get_layers())
    return found + list(image.get_channels())


def source_of(image: Gimp.Image, layer: Gimp.Layer) -> Gimp.Layer:
    """The layer a run on `layer` works on: for a result of this plug-in (a result layer,
    its group or a layer in that group), the painting it was made from while that
    still exists; otherwise `layer` itself."""
    parasite = layer.get_parasite(SOURCE_PARASITE)
    if parasite is None:
        return layer
    try:
        tattoo = int(bytes(parasite.get_data()).decode())
    except (TypeError, ValueError, UnicodeDecodeError):
        return layer
    source = image.get_layer_by_tattoo(tattoo)
    if source is None or not source.is_valid() or source.get_id() == layer.get_id():
        return layer
    return source


def whole_layer(image: Gimp.Image) -> bool:
    """Nothing is selected: a run repaints the whole layer at the chosen strength."""
    return bool(Gimp.Selection.is_empty(image))


def action_text(image: Gimp.Image) -> str:
    """What a run does, for the dialog and the progress bar."""
    return "Repaint whole layer" if whole_layer(image) else "Inpaint selection"


class ProgressBar:
    """GIMP's progress bar for one job of `total` results, every line led by what the
    run does ("Repaint whole layer: Sampling: step 3 of 20")."""

    def __init__(self, title: str, total: int = 1) -> None:
        self.title, self.total, self.done = title, total, 0

    def status(self, line: str) -> None:
        """A line from a daemon being started for this run."""
        Gimp.progress_set_text(f"{self.title}: {line}")
        Gimp.progress_pulse()

    def progress(self, progress: Progress) -> None:
        text, fraction = progress_text(progress, self.done, self.total)
        Gimp.progress_set_text(f"{self.title}: {text}")
        if fraction is None:
            Gimp.progress_pulse()
        else:
            Gimp.progress_update(fraction)

    def result(self, _result: Result) -> None:
        self.done += 1
