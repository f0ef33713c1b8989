"""Wire pixel formats <-> the engine's float32 RGBA: layouts, exact round trips, linear light."""

from __future__ import annotations

import numpy as np
import pytest

from differential_inpaint.backend.daemon import pixels
from differential_inpaint.protocol import ColorEncoding, Image, Mask, MaskFormat, PixelFormat

H, W = 5, 7


def _wire(fmt: PixelFormat, array: np.ndarray, color: ColorEncoding = ColorEncoding.SRGB) -> Image:
    return Image(W, H, fmt, np.ascontiguousarray(array).tobytes(), color)


def _random_wire(fmt: PixelFormat, rng: np.random.Generator) -> np.ndarray:
    if fmt in (PixelFormat.RGBA8, PixelFormat.BGRA8):
        return rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    if fmt in (PixelFormat.RGBA16, PixelFormat.BGRA16):
        return rng.integers(0, 65536, (H, W, 4), dtype=np.uint16).astype("<u2")
    dtype = "<f2" if fmt is PixelFormat.RGBAF16 else "<f4"
    return rng.random((H, W, 4), dtype=np.float32).astype(dtype)


def test_rgba8_and_bgra8_decode_to_the_same_rgba() -> None:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 255, 128, 0, 64
    bgra = rgba[..., [2, 1, 0, 3]]
    a = pixels.decode_image(_wire(PixelFormat.RGBA8, rgba))
    b = pixels.decode_image(_wire(PixelFormat.BGRA8, bgra))
    assert a.dtype == np.float32 and a.shape == (H, W, 4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0, 0], [1.0, 128 / 255, 0.0, 64 / 255], rtol=1e-6)


def test_sixteen_bit_is_little_endian_and_bgra16_swizzles() -> None:
    rgba = np.zeros((H, W, 4), "<u2")
    rgba[..., 0] = 65535
    rgba[..., 1] = 0x0100  # bytes 00 01 little-endian: wrong byte order would read 1
    out = pixels.decode_image(_wire(PixelFormat.RGBA16, rgba))
    np.testing.assert_allclose(out[0, 0, :2], [1.0, 256 / 65535], rtol=1e-6)
    bgra = rgba[..., [2, 1, 0, 3]]
    np.testing.assert_array_equal(pixels.decode_image(_wire(PixelFormat.BGRA16, bgra)), out)


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_every_format_round_trips_bit_for_bit(fmt: PixelFormat) -> None:
    wire = _random_wire(fmt, np.random.default_rng(1))
    image = _wire(fmt, wire)
    back = pixels.encode_image(pixels.decode_image(image), fmt)
    assert back.format is fmt and (back.width, back.height) == (W, H)
    assert back.data == image.data


def test_every_8_and_16_bit_value_round_trips() -> None:
    for fmt, top in ((PixelFormat.RGBA8, 256), (PixelFormat.RGBA16, 65536)):
        values = np.arange(top, dtype=np.uint16 if top > 256 else np.uint8)
        array = np.repeat(values, 4).reshape(1, top, 4).astype(pixels._DTYPES[fmt])
        image = Image(top, 1, fmt, array.tobytes())
        assert pixels.encode_image(pixels.decode_image(image), fmt).data == image.data


def test_linear_floats_are_converted_to_srgb_for_the_engine_and_back() -> None:
    linear = np.zeros((H, W, 4), "<f4")
    linear[..., 0] = 0.2140  # sRGB 0.5
    linear[..., 1] = 0.001  # below the linear segment's knee: x * 12.92
    linear[..., 3] = 0.25  # alpha is never converted
    out = pixels.decode_image(_wire(PixelFormat.RGBAF32, linear, ColorEncoding.LINEAR))
    np.testing.assert_allclose(out[0, 0], [0.5, 0.01292, 0.0, 0.25], atol=2e-4)
    back = pixels.encode_image(out, PixelFormat.RGBAF32, ColorEncoding.LINEAR)
    assert back.color is ColorEncoding.LINEAR
    restored = np.frombuffer(back.data, "<f4").reshape(H, W, 4)
    np.testing.assert_allclose(restored, linear, rtol=1e-5, atol=1e-7)


def test_float_nan_inf_and_hdr_are_clipped_for_the_engine() -> None:
    wire = np.full((H, W, 4), 0.5, "<f4")
    wire[0, 0] = [np.nan, np.inf, -np.inf, 7.0]
    out = pixels.decode_image(_wire(PixelFormat.RGBAF32, wire))
    np.testing.assert_array_equal(out[0, 0], [0.0, 1.0, 0.0, 1.0])
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize(
    ("fmt", "color"),
    [
        (PixelFormat.BGRA8, ColorEncoding.SRGB),
        (PixelFormat.RGBA16, ColorEncoding.SRGB),
        (PixelFormat.BGRA16, ColorEncoding.LINEAR),
        (PixelFormat.RGBAF16, ColorEncoding.LINEAR),
        (PixelFormat.RGBAF32, ColorEncoding.LINEAR),
    ],
)
def test_result_keeps_mask_zero_pixels_bit_for_bit(fmt: PixelFormat, color: ColorEncoding) -> None:
    rng = np.random.default_rng(2)
    wire = _random_wire(fmt, rng)
    if fmt.is_float:
        wire[0, 0, 0] = 3.5  # HDR: clipped for the engine, yet kept pixels come back as sent
        wire[0, 1, 1] = np.nan
    source = _wire(fmt, wire, color)
    mask = np.zeros((H, W), np.uint8)
    mask[2:, 3:] = 200
    engine_out = pixels.decode_image(source)
    engine_out[mask > 0, :3] = 0.25  # the engine painted inside the mask
    engine_out[..., 3] = (mask > 0).astype(np.float32)  # composite alpha
    result = pixels.encode_result(engine_out, source, mask)
    assert result.format is fmt and result.color is color
    out = np.frombuffer(result.data, pixels._DTYPES[fmt]).reshape(H, W, 4)
    keep = mask == 0
    assert out[keep, :3].tobytes() == wire[keep, :3].tobytes()  # NaN-safe byte comparison
    assert (out[keep, 3] == 0).all()
    assert (out[~keep, 3] == out[~keep, 3].max()).all() and out[~keep, 3].max() > 0
    expected_paint = pixels.encode_image(engine_out, fmt, color)
    painted = np.frombuffer(expected_paint.data, pixels._DTYPES[fmt]).reshape(H, W, 4)
    np.testing.assert_array_equal(out[~keep], painted[~keep])


# Half a step of each format, for values in [0, 1]: how far a value may move to fit it.
_PRECISION = {
    PixelFormat.RGBA8: 0.5 / 255 + 1e-6,
    PixelFormat.BGRA8: 0.5 / 255 + 1e-6,
    PixelFormat.RGBA16: 0.5 / 65535 + 1e-7,
    PixelFormat.BGRA16: 0.5 / 65535 + 1e-7,
    PixelFormat.RGBAF16: 2.0**-12,  # half a unit in the last place just below 1
    PixelFormat.RGBAF32: 1e-7,
}


def _values(image: Image) -> np.ndarray:
    """The image's numbers as float64 HxWx4 in RGBA order, in its own colour encoding
    (integers scaled to [0, 1]; no colour conversion): what its `color` label says they are."""
    array = pixels.wire_array(image).astype(np.float64)
    if image.format in (PixelFormat.BGRA8, PixelFormat.BGRA16):
        array = array[..., [2, 1, 0, 3]]
    if not image.format.is_float:
        array /= 255.0 if image.format in (PixelFormat.RGBA8, PixelFormat.BGRA8) else 65535.0
    return array


@pytest.mark.parametrize("output", [None, *PixelFormat], ids=lambda f: f"to-{f.value if f else 'same'}")
@pytest.mark.parametrize("color", list(ColorEncoding), ids=lambda c: c.value)
@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
def test_result_is_in_the_input_colour_encoding_whatever_the_output_format(
    fmt: PixelFormat, color: ColorEncoding, output: PixelFormat | None
) -> None:
    rng = np.random.default_rng(3)
    wire = _random_wire(fmt, rng)
    source = _wire(fmt, wire, color)
    mask = np.zeros((H, W), np.uint8)
    mask[2:, 3:] = 200
    keep = mask == 0
    engine_out = pixels.decode_image(source)
    engine_out[~keep, :3] = rng.random((int((~keep).sum()), 3), dtype=np.float32)  # the engine painted
    engine_out[..., 3] = (~keep).astype(np.float32)  # composite alpha
    target = output or fmt

    result = pixels.encode_result(engine_out, source, mask, output)

    assert result.format is target and (result.width, result.height) == (W, H)
    assert result.color is color  # the label is the input's colour...
    got = _values(result)
    tolerance = _PRECISION[target]
    # ...and so are the values: kept pixels are the client's own numbers,
    np.testing.assert_allclose(got[keep, :3], _values(source)[keep, :3], rtol=0, atol=tolerance)
    if target is fmt:  # bit for bit in the client's own format
        kept_bytes = pixels.wire_array(result)[keep, :3].tobytes()
        assert kept_bytes == wire[keep, :3].tobytes()
    # painted ones the engine's sRGB in the input's encoding,
    painted = engine_out[~keep, :3].astype(np.float64)
    if color is ColorEncoding.LINEAR:
        painted = pixels.srgb_to_linear(engine_out[~keep, :3]).astype(np.float64)
    np.testing.assert_allclose(got[~keep, :3], painted, rtol=0, atol=tolerance + 1e-6)
    # and alpha is the composite alpha.
    np.testing.assert_array_equal(got[..., 3], (~keep).astype(np.float64))


@pytest.mark.parametrize(
    ("fmt", "output"),
    [
        (PixelFormat.RGBA8, PixelFormat.RGBA8),  # was linear, by the input's format
        (PixelFormat.BGRA8, PixelFormat.RGBA8),  # was srgb: an integer format other than the input's
        (PixelFormat.RGBAF32, PixelFormat.RGBA8),
        (PixelFormat.BGRA16, PixelFormat.RGBAF16),
    ],
)
def test_linear_input_comes_back_linear_in_any_output_format(fmt: PixelFormat, output: PixelFormat) -> None:
    linear_of_128 = float(pixels.srgb_to_linear(np.float32(128 / 255)))  # ~0.2159
    engine_out = np.full((H, W, 4), 128 / 255, np.float32)  # sRGB 128: what the model painted
    source = pixels.encode_image(engine_out, fmt, ColorEncoding.LINEAR)
    mask = np.full((H, W), 255, np.uint8)
    result = pixels.encode_result(engine_out, source, mask, output)
    assert result.format is output and result.color is ColorEncoding.LINEAR
    np.testing.assert_allclose(_values(result)[..., 0], linear_of_128, atol=_PRECISION[output])
    if output is PixelFormat.RGBA8:
        assert pixels.wire_array(result)[0, 0, 0] == 55  # linear 0.2159 x 255, not sRGB's 128


def test_kept_float_pixels_keep_hdr_and_nan_in_another_float_format() -> None:
    wire = np.full((H, W, 4), 0.5, "<f4")
    wire[0, 0, :3] = [3.5, np.nan, -0.25]
    source = _wire(PixelFormat.RGBAF32, wire, ColorEncoding.LINEAR)
    mask = np.zeros((H, W), np.uint8)
    result = pixels.encode_result(pixels.decode_image(source), source, mask, PixelFormat.RGBAF16)
    out = pixels.wire_array(result)
    assert out[0, 0, 0] == 3.5 and np.isnan(out[0, 0, 1]) and out[0, 0, 2] == -0.25
    as_bytes = pixels.encode_result(pixels.decode_image(source), source, mask, PixelFormat.BGRA8)
    assert pixels.wire_array(as_bytes)[0, 0, :3].tolist() == [0, 0, 255]  # B, G, R: clipped, NaN as 0


def test_linear_16_bit_integers_are_converted_like_linear_floats() -> None:
    """Krita's 16-bit documents may carry a linear profile: the model must see sRGB."""
    linear = np.zeros((H, W, 4), "<u2")
    linear[..., 2] = round(0.2140 * 65535)  # R of BGRA: linear 0.214 = sRGB 0.5
    linear[..., 3] = 65535
    out = pixels.decode_image(_wire(PixelFormat.BGRA16, linear, ColorEncoding.LINEAR))
    np.testing.assert_allclose(out[..., 0], 0.5, atol=1e-3)
    back = pixels.encode_image(out, PixelFormat.BGRA16, ColorEncoding.LINEAR)
    assert back.color is ColorEncoding.LINEAR
    restored = np.frombuffer(back.data, "<u2").reshape(H, W, 4)
    assert np.abs(restored.astype(int) - linear.astype(int)).max() <= 2


def test_result_of_the_wrong_size_is_refused() -> None:
    source = _wire(PixelFormat.RGBA8, np.zeros((H, W, 4), np.uint8))
    with pytest.raises(ValueError, match="returned"):
        pixels.encode_result(np.zeros((H + 1, W, 4), np.float32), source, np.zeros((H, W), np.uint8))


def test_gray8_and_gray16_maps_decode_to_unit_floats() -> None:
    data = bytes(range(H * W))
    mask = pixels.decode_mask(Mask(W, H, data))
    assert mask.dtype == np.float64 and mask.shape == (H, W)
    assert mask[1, 0] == W / 255.0
    deep = np.arange(H * W, dtype="<u2") * 1000
    gray16 = pixels.decode_mask(Mask(W, H, deep.tobytes(), MaskFormat.GRAY16))
    np.testing.assert_array_equal(gray16, deep.reshape(H, W) / 65535.0)
    # An 8-bit value sent as 16 bits (x 257) is the same map, exactly.
    as16 = (np.frombuffer(data, np.uint8).astype("<u2") * 257).tobytes()
    np.testing.assert_array_equal(pixels.decode_mask(Mask(W, H, as16, MaskFormat.GRAY16)), mask)


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_a_layer_map_is_its_luminance_times_its_alpha(fmt: PixelFormat) -> None:
    values = np.zeros((H, W, 4), np.float32)
    values[..., :3] = 0.5  # gray: its luminance is its value
    values[0, 0] = [1.0, 0.0, 0.0, 1.0]  # pure red: Rec. 709's red weight
    values[0, 1] = [1.0, 1.0, 1.0, 0.25]  # white, a quarter opaque
    values[0, 2] = [0.0, 0.0, 0.0, 1.0]  # black: keep
    values[1:, :, 3] = 1.0
    layer = pixels.encode_image(values, fmt)
    decoded = pixels.decode_mask(Mask(W, H, layer.data, fmt))
    tolerance = _PRECISION[fmt] * 2
    assert abs(decoded[0, 0] - 0.2126) < tolerance
    assert abs(decoded[0, 1] - 0.25) < tolerance
    assert decoded[0, 2] == 0.0 and decoded[0, 3] == 0.0  # alpha 0: no map there
    assert np.abs(decoded[1:] - 0.5).max() < tolerance


@pytest.mark.parametrize("color", list(ColorEncoding))
@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_a_strength_map_read_back_as_a_map_gives_its_strengths(
    fmt: PixelFormat, color: ColorEncoding
) -> None:
    strength = np.linspace(0.0, 1.0, H * W).reshape(H, W)
    source = Image(W, H, fmt, bytes(H * W * fmt.bytes_per_pixel), color)
    image = pixels.encode_strength_map(strength, source)
    assert (image.format, image.color) == (fmt, color)
    back = pixels.decode_mask(Mask(W, H, image.data, fmt, color))
    if color is ColorEncoding.LINEAR:  # the format's precision is in linear light there
        back, strength = pixels.srgb_to_linear(back), pixels.srgb_to_linear(strength)
    assert np.abs(back - strength).max() <= _PRECISION[fmt] * 2
    assert back[0, 0] == 0.0  # keep stays keep, exactly
    opaque = pixels.decode_image(image)[..., 3]
    assert (opaque == 1.0).all()


def test_preview_is_shrunk_to_256_and_rgba8() -> None:
    big = np.zeros((1000, 500, 4), np.uint8)
    preview = pixels.encode_preview(big)
    assert (preview.width, preview.height) == (128, 256)
    assert preview.format is PixelFormat.RGBA8 and len(preview.data) == preview.expected_bytes
    small = pixels.encode_preview(np.ones((10, 20, 3), np.float32))
    assert (small.width, small.height) == (20, 10) and small.data[:4] == b"\xff\xff\xff\xff"
