"""Pixel formats that travel on the wire.

Each host sends its native bytes so that no plugin swizzles pixels in pure
Python: Krita's integer layers are B,G,R,A in memory, its float layers
R,G,B,A; GIMP's Gegl buffers give any of the RGBA forms. All formats are
straight (not premultiplied) alpha, little-endian, row-major, no row padding.
"""

from __future__ import annotations

from enum import Enum


class PixelFormat(str, Enum):
    RGBA8 = "rgba8"
    BGRA8 = "bgra8"  # Krita's native 8-bit order
    RGBA16 = "rgba16"  # unsigned 16-bit integers
    BGRA16 = "bgra16"  # Krita's native 16-bit integer order
    RGBAF16 = "rgbaf16"  # IEEE half floats
    RGBAF32 = "rgbaf32"  # IEEE single floats

    @property
    def bytes_per_pixel(self) -> int:
        return _BYTES_PER_PIXEL[self]

    @property
    def is_float(self) -> bool:
        return self in (PixelFormat.RGBAF16, PixelFormat.RGBAF32)


_BYTES_PER_PIXEL = {
    PixelFormat.RGBA8: 4,
    PixelFormat.BGRA8: 4,
    PixelFormat.RGBA16: 8,
    PixelFormat.BGRA16: 8,
    PixelFormat.RGBAF16: 8,
    PixelFormat.RGBAF32: 16,
}


class ColorEncoding(str, Enum):
    """How the channel values encode light: sRGB-encoded, or linear light (Krita's
    default float profiles, and some of its 16-bit ones, are linear). The daemon
    converts to sRGB for the model and back, so a layer keeps its encoding."""

    SRGB = "srgb"
    LINEAR = "linear"


MASK_BYTES_PER_PIXEL = 1  # masks are 8-bit gray: 0 keep, 255 change fully
