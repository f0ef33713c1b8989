"""How each GIMP precision travels (`formats`, as installed), without GIMP.

The rest of a job's decisions are host-neutral: tests/host_plugins/client/test_flow.py."""

from __future__ import annotations

from types import ModuleType


def test_depths(plugin_formats: ModuleType) -> None:
    depth = plugin_formats.depth_for_precision
    P = plugin_formats.PixelFormat
    assert set(plugin_formats.BABL_FOR_WIRE) == {d.wire for d in plugin_formats.DEPTHS.values()}
    cases = {
        "U8_NON_LINEAR": ("R'G'B'A u8", P.RGBA8),
        "u8_linear": ("R'G'B'A u8", P.RGBA8),
        "U8_PERCEPTUAL": ("R'G'B'A u8", P.RGBA8),
        "U16_LINEAR": ("R'G'B'A u16", P.RGBA16),
        "U16_NON_LINEAR": ("R'G'B'A u16", P.RGBA16),
        "HALF_LINEAR": ("R'G'B'A half", P.RGBAF16),
        "FLOAT_NON_LINEAR": ("R'G'B'A float", P.RGBAF32),
        "U32_LINEAR": ("R'G'B'A float", P.RGBAF32),  # no 32-bit integer wire format
        "DOUBLE_PERCEPTUAL": ("R'G'B'A float", P.RGBAF32),
    }
    for name, (babl, wire) in cases.items():
        assert (depth(name).babl, depth(name).wire) == (babl, wire), name


def test_gray_map_formats(plugin_formats: ModuleType) -> None:
    """Channels and layer masks travel as the gray the painter sees (Y'): gray8 in 8-bit
    images, gray16 above."""
    gray = plugin_formats.gray_map_format
    M, D = plugin_formats.MaskFormat, plugin_formats.DEPTHS
    assert gray(D["u8"]) == ("Y' u8", M.GRAY8)
    assert gray(D["u16"]) == gray(D["half"]) == gray(D["float"]) == ("Y' u16", M.GRAY16)
