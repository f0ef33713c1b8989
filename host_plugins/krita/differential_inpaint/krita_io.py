"""Krita's side of a job: a `HostDocument` over one layer of one open document.

Plain code over Krita objects, no widgets, no Qt: what is read (the layer's
native bytes, the selection) and how the result goes in (a new paint layer, one
undo step). Everything host-neutral (the region, the checks, the messages)
is in the shared `client.flow`. Touch Krita only on its GUI thread.

Krita facts this relies on (checked in Krita 5.1.5): `Node.pixelData(x, y, w, h)`
takes document coordinates whatever the layer's offset, and gives B,G,R,A for
integer depths and R,G,B,A for float depths, straight alpha; reading outside
the layer gives transparent black. `Selection.pixelData` is one byte a pixel.
A mask node's `pixelData` (transparency, selection, filter mask) is its selection,
one byte a pixel, 255 outside what was painted for a transparency mask made in the
Layers docker; a mask made by `createNode`/`createSelectionMask` and never given a
selection gives no bytes at all (5.1.5 and 5.2.9 alike). A GRAYA layer's pixels are
gray, alpha in its depth.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import protocol as p
from .client import InpaintError

# Krita depth -> the wire format of its native bytes (so nothing is swizzled here).
PIXEL_FORMATS: dict[str, p.PixelFormat] = {
    "U8": p.PixelFormat.BGRA8,
    "U16": p.PixelFormat.BGRA16,
    "F16": p.PixelFormat.RGBAF16,
    "F32": p.PixelFormat.RGBAF32,
}


@dataclass(frozen=True)
class LayerFormat:
    depth: str  # Krita's name: U8, U16, F16, F32
    pixel_format: p.PixelFormat
    color: p.ColorEncoding
    profile: str


# --- reading ------------------------------------------------------------------


def layer_format(document: Any, node: Any) -> LayerFormat:
    """The wire format of the layer's bytes, or a clear refusal."""
    model, depth, profile = node.colorModel(), node.colorDepth(), node.colorProfile()
    if model != "RGBA":
        raise InpaintError(
            f"The layer '{node.name()}' uses the {model} colour model; Differential Inpaint works on "
            "RGB/Alpha layers. Convert the image with Image > Convert Image Color Space... to "
            "RGB/Alpha and try again.",
            "unsupported_color_model",
        )
    if depth not in PIXEL_FORMATS:
        raise InpaintError(
            f"The layer '{node.name()}' has the colour depth {depth}; Differential Inpaint works on "
            "8-bit and 16-bit integer and 16-bit and 32-bit float layers.",
            "unsupported_color_depth",
        )
    doc_space = (document.colorModel(), document.colorDepth(), document.colorProfile())
    if doc_space != (model, depth, profile):
        # The new layer is created in the image's colour space, so it must match the layer's bytes.
        raise InpaintError(
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


# GRAYA depth -> (the RGBA wire format its gray is spread into, array code of one channel).
# Copying channels moves bits, whatever they mean: half floats travel as 16-bit words.
_GRAY_AS_RGBA: dict[str, tuple[p.PixelFormat, str]] = {
    "U8": (p.PixelFormat.BGRA8, "B"),
    "U16": (p.PixelFormat.BGRA16, "H"),
    "F16": (p.PixelFormat.RGBAF16, "H"),
    "F32": (p.PixelFormat.RGBAF32, "f"),
}


def _rect(rect: Any) -> p.Rect:
    return p.Rect(rect.x(), rect.y(), rect.width(), rect.height())


def _is_mask(node: Any) -> bool:
    return str(node.type()).endswith("mask")


def stack_order(node: Any) -> Iterator[Any]:
    """Every node under `node` as the Layers docker lists them: top to bottom, each
    layer followed by its masks and children (Krita's childNodes are bottom to top)."""
    for child in reversed(node.childNodes()):
        yield child
        yield from stack_order(child)


def node_list(document: Any) -> list[tuple[str, int, str]]:
    """(name, nesting depth, type) of every node in layer-stack order: what the map and
    context pickers offer."""
    listed: list[tuple[str, int, str]] = []

    def walk(node: Any, depth: int) -> None:
        for child in reversed(node.childNodes()):
            listed.append((child.name(), depth, str(child.type())))
            walk(child, depth + 1)

    if document is not None:
        walk(document.rootNode(), 0)
    return listed


def find_node(document: Any, name: str) -> Any:
    """The first node called `name` in layer-stack order, masks included; an
    InpaintError ("missing_layer") when there is none."""
    found = next((n for n in stack_order(document.rootNode()) if n.name() == name), None)
    if found is None:
        raise InpaintError(
            f"There is no layer or mask called '{name}' in this image. Pick the map in the docker's "
            "Map layer list (or rename the layer to match) and try again.",
            "missing_layer",
        )
    return found


def map_source(source: Any, region: p.Rect) -> p.Mask:
    """A node as a map over `region` (document coordinates): a mask's selection as gray8;
    a paint layer's own pixels, any other layer's projection (a group: what it shows),
    in its own depth and colour encoding (the daemon takes luminance times alpha)."""
    if _is_mask(source):
        return p.Mask(region.width, region.height, _mask_gray(source, region), p.MaskFormat.GRAY8)
    data, fmt, color = _layer_pixels(source, region, "as a map", "as the map")
    return p.Mask(region.width, region.height, data, fmt, color)


def layer_image(source: Any, region: p.Rect) -> p.Image:
    """A node's pixels over `region` as an image (a control or reference image): a layer's
    own pixels (a group: what it shows) in its own depth and colour encoding, as `map_source`
    reads them; a mask's gray as opaque gray."""
    if _is_mask(source):
        gray = _mask_gray(source, region)
        pairs = bytearray(len(gray) * 2)
        pairs[0::2], pairs[1::2] = gray, b"\xff" * len(gray)
        data, fmt, color = gray_as_rgba(bytes(pairs), "B"), p.PixelFormat.BGRA8, p.ColorEncoding.SRGB
    else:
        data, fmt, color = _layer_pixels(
            source, region, "as a control or reference image", "as the control or reference"
        )
    return p.Image(region.width, region.height, fmt, data, color)


def _mask_gray(source: Any, region: p.Rect) -> bytes:
    """A mask node's selection over `region`, one byte a pixel."""
    x, y, w, h = region.x, region.y, region.width, region.height
    data = bytes(source.pixelData(x, y, w, h))
    if len(data) != region.area:
        # A mask made by script and never painted has no paint device to read; its
        # selection (TransparencyMask/SelectionMask in 5.2) may still have pixels.
        selection = source.selection() if hasattr(source, "selection") else None
        data = b"" if selection is None else bytes(selection.pixelData(x, y, w, h))
    if len(data) != region.area:
        raise InpaintError(
            f"The mask '{source.name()}' has no pixels Krita can read. Paint on it (or pick another "
            "layer or mask) and try again.",
            "unreadable_layer",
        )
    return data


def _layer_pixels(
    source: Any, region: p.Rect, reads: str, pick: str
) -> tuple[bytes, p.PixelFormat, p.ColorEncoding]:
    """A layer's bytes over `region` in its own depth (Grayscale/Alpha spread into RGBA):
    a paint layer's own pixels, any other layer's projection. `reads`, `pick`: the use, in
    the refusal's words."""
    x, y, w, h = region.x, region.y, region.width, region.height
    if source.type() == "paintlayer":
        data = bytes(source.pixelData(x, y, w, h))
    else:  # groups, vector, file, clone and fill layers: their rendered pixels
        data = bytes(source.projectionPixelData(x, y, w, h))
    model, depth, profile = source.colorModel(), source.colorDepth(), source.colorProfile()
    if model == "RGBA" and depth in PIXEL_FORMATS:
        return data, PIXEL_FORMATS[depth], color_encoding(profile)
    if model == "GRAYA" and depth in _GRAY_AS_RGBA:
        fmt, code = _GRAY_AS_RGBA[depth]
        return gray_as_rgba(data, code), fmt, color_encoding(profile)
    raise InpaintError(
        f"The layer '{source.name()}' uses {model} {depth}; {reads} Differential Inpaint reads "
        "RGB/Alpha and Grayscale/Alpha layers and masks. Convert it with Layer > Convert > Convert "
        f"Layer Color Space... or pick another layer {pick}.",
        "unsupported_color_model",
    )


def gray_as_rgba(data: bytes, code: str) -> bytes:
    """Gray, alpha pixels as gray, gray, gray, alpha (the same for B,G,R,A and R,G,B,A), by
    slices of whole channels: no per-pixel Python."""
    channels = array(code, data)
    gray, alpha = channels[0::2], channels[1::2]
    out = array(code, bytes(len(channels) * 2 * channels.itemsize))
    for c in range(3):
        out[c::4] = gray
    out[3::4] = alpha
    return out.tobytes()


def resolve_node(document: Any, node: Any | None) -> Any:
    if document is None:
        raise InpaintError("Open an image first.", "no_document")
    if node is None:
        node = document.activeNode()
    if node is None:
        raise InpaintError("Select the layer to inpaint in the Layers docker.", "no_layer")
    if _is_mask(node):
        raise InpaintError(
            f"'{node.name()}' is a mask; select the layer to inpaint in the Layers docker.", "no_layer"
        )
    return node


class KritaDocument:
    """`client.flow.HostDocument` for one layer (default: the active one) of a document.
    Rectangles are in document coordinates."""

    host_name = "Krita"
    shows_previews = True

    def __init__(self, document: Any, node: Any | None = None) -> None:
        self.node = resolve_node(document, node)
        self.document = document
        self.format = layer_format(document, self.node)
        self.pixel_format = self.format.pixel_format
        self.color = self.format.color

    def canvas(self) -> p.Rect:
        return p.Rect(0, 0, self.document.width(), self.document.height())

    def selection(self) -> p.Rect | None:
        selection = self.document.selection()
        if selection is None or selection.width() <= 0 or selection.height() <= 0:
            return None
        return p.Rect(selection.x(), selection.y(), selection.width(), selection.height())

    def layer_extent(self) -> p.Rect:
        # The layer's bounds already include a move off the origin.
        return _rect(self.node.bounds())

    def origin(self) -> tuple[int, int]:
        return 0, 0

    def read_selection(self, region: p.Rect) -> bytes:
        selection = self.document.selection()
        return bytes(selection.pixelData(region.x, region.y, region.width, region.height))

    def read_pixels(self, region: p.Rect) -> bytes:
        """Only the region's bytes, in Krita's native order; a group gives what it shows."""
        if self.node.type() == "paintlayer":
            data = self.node.pixelData(region.x, region.y, region.width, region.height)
        else:  # groups, vector, file, clone and fill layers: their rendered pixels
            data = self.node.projectionPixelData(region.x, region.y, region.width, region.height)
        return bytes(data)

    def find_layer(self, name: str) -> Any:
        return find_node(self.document, name)

    def map_bounds(self, source: Any) -> p.Rect:
        # Document coordinates already: a moved layer's bounds include the move.
        return _rect(source.bounds())

    def read_map(self, source: Any, region: p.Rect) -> p.Mask:
        return map_source(source, region)

    def read_layer(self, source: Any, region: p.Rect) -> p.Image:
        return layer_image(source, region)

    def is_open(self) -> bool:
        try:
            from krita import Krita
        except ImportError:  # pragma: no cover - only without Krita
            return True
        try:
            return any(doc == self.document for doc in Krita.instance().documents())
        except Exception:  # a stand-in or shutting-down Krita: do not block the insert on this check
            return True

    def insert_layer(self, name: str, result: p.Result) -> Any:
        """A new paint layer above the job's layer, as one undo step.

        The result's alpha already is the composite mask (0 where the mask was 0),
        so it goes in as it is; the original layer is never written to.
        """
        layer = self.new_layer(name, result)
        self.add_above(layer)
        return layer

    def insert_group(self, name: str, layers: list[tuple[str, p.Result]]) -> Any:
        """A group of result layers (top to bottom as given, only the first visible) above
        the job's layer, as one undo step."""
        group = self.document.createGroupLayer(name)
        if group is None:
            raise _insert_failed("a new layer group")
        children = [self.new_layer(child_name, result) for child_name, result in layers]
        for i, child in enumerate(children):
            child.setVisible(i == 0)
        # Built complete before it joins the image: addChildNode into a group is an undo
        # step even while the group is outside the image (one per child, seen in Krita
        # 5.1.5), setChildNodes on such a group is none. It takes them bottom to top.
        group.setChildNodes(list(reversed(children)))
        if len(group.childNodes()) != len(children):
            raise _insert_failed("the layer group")
        self.add_above(group)
        # Adding the group redraws the image but not the group's own projection of
        # children it got outside the image (it stayed empty in Krita 5.1.5): redo it.
        self.document.refreshProjection()
        return group

    def new_layer(self, name: str, result: p.Result) -> Any:
        """A paint layer holding the result, not yet in the image."""
        layer = self.document.createNode(name, "paintlayer")
        if layer is None:
            raise _insert_failed("a new paint layer")
        # Pixels first: setPixelData on a layer that is not in the image yet is not an
        # undo step of its own, so adding the finished layer is the one and only step.
        image = result.image
        layer.setPixelData(image.data, result.x, result.y, image.width, image.height)
        return layer

    def add_above(self, node: Any, anchor: Any | None = None) -> None:
        """Add `node` right above `anchor` (default: the job's layer), one undo step; the
        painting stays the active layer. The anchor removed meanwhile: on top of the image."""
        document = self.document
        anchor = self.node if anchor is None else anchor
        parent = anchor.parentNode()
        if parent is None:
            parent, above = document.rootNode(), None
        else:
            above = anchor
        if not parent.addChildNode(node, above):
            raise _insert_failed("the new layer", "refused to add")
        if self.node.parentNode() is not None:
            # The painting stays the active layer, so "run again" works on it, not on a result.
            document.setActiveNode(self.node)


def _insert_failed(what: str, verb: str = "could not create") -> InpaintError:
    return InpaintError(
        f"Krita {verb} {what}; nothing was changed. Try again, or save the image and restart Krita.",
        "insert_failed",
    )
