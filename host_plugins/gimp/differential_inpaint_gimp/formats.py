"""How each GIMP image precision travels, without touching GIMP (testable anywhere)."""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import MaskFormat, PixelFormat


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


def gray_map_format(depth: Depth) -> tuple[str, MaskFormat]:
    """How a channel or layer mask travels as a map in an image of `depth`: its gray as the
    painter sees it (perceptual, Y': a channel painted #808080 is 0.5, as a layer painted so
    is and as the "Strength map" layer shows 0.5), whether GIMP stores it non-linear (a
    channel of an 8-bit image) or linear (layer masks, deeper images); gray8 in 8-bit
    images, gray16 above."""
    if depth.wire is PixelFormat.RGBA8:
        return "Y' u8", MaskFormat.GRAY8
    return "Y' u16", MaskFormat.GRAY16
