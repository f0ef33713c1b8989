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


class MaskFormat(str, Enum):
    """One-channel map formats; a map may also come in a `PixelFormat` (a layer picked as
    the map: the daemon takes its luminance times its alpha)."""

    GRAY8 = "gray8"  # 0 keep ... 255 change fully: selections and the default
    GRAY16 = "gray16"  # unsigned 16-bit, 0 ... 65535: 16-bit channels and selections


def map_format(value: str) -> MaskFormat | PixelFormat:
    """A map's format from its wire name; ValueError when it is neither kind."""
    try:
        return MaskFormat(value)
    except ValueError:
        return PixelFormat(value)


def map_bytes_per_pixel(fmt: MaskFormat | PixelFormat) -> int:
    if isinstance(fmt, PixelFormat):
        return fmt.bytes_per_pixel
    return 2 if fmt is MaskFormat.GRAY16 else 1
