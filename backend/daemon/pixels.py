"""Wire pixels <-> the engine's arrays.

The engine works on float32 HxWx4 RGBA, sRGB-encoded, straight alpha, values
in [0, 1]. Clients send whatever their host holds natively (see
`protocol.PixelFormat`): 8/16-bit integers in RGBA or Krita's BGRA order,
half or single floats that may be linear light. Everything here is whole-array
numpy; nothing loops over pixels in Python.

Round trips are exact: u8 -> float32 -> u8, u16 -> float32 -> u16,
f16 -> float32 -> f16 and f32 -> f32 give the same bits back. Linear
conversion and clipping of out-of-range floats are not exact, so
`encode_result` copies the client's own bytes back wherever the effective
change map is 0: pixels the user asked to keep come back bit for bit (in
another output format: the client's own values, converted straight to it).

Maps (`Mask`) decode to float64 HxW in [0, 1], whatever their format: gray8,
gray16, or a layer's pixels, whose luminance times alpha is the map.

A result is in the input's colour encoding, values and label, whatever the
output format: linear in, linear out; sRGB in, sRGB out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...protocol import ColorEncoding, Image, Mask, MaskFormat, PixelFormat, Submit

PREVIEW_MAX_SIDE = 256

# Little-endian on the wire whatever this machine is.
_DTYPES: dict[PixelFormat, np.dtype] = {
    PixelFormat.RGBA8: np.dtype("u1"),
    PixelFormat.BGRA8: np.dtype("u1"),
    PixelFormat.RGBA16: np.dtype("<u2"),
    PixelFormat.BGRA16: np.dtype("<u2"),
    PixelFormat.RGBAF16: np.dtype("<f2"),
    PixelFormat.RGBAF32: np.dtype("<f4"),
}
_INT_SCALE = {
    PixelFormat.RGBA8: 255.0,
    PixelFormat.BGRA8: 255.0,
    PixelFormat.RGBA16: 65535.0,
    PixelFormat.BGRA16: 65535.0,
}
_BGRA = (PixelFormat.BGRA8, PixelFormat.BGRA16)
# Luminance of sRGB-encoded values, as the protocol defines a layer's map (Rec. 709 weights).
REC709 = np.array([0.2126, 0.7152, 0.0722])
_SWAP_RB = [2, 1, 0, 3]  # RGBA <-> BGRA; its own inverse


def wire_array(image: Image) -> np.ndarray:
    """The image's bytes as an HxWx4 array in its own dtype and channel order (no copy)."""
    fmt = PixelFormat(image.format)
    return np.frombuffer(image.data, dtype=_DTYPES[fmt]).reshape(image.height, image.width, 4)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer function's inverse (IEC 61966-2-1), float32 in, float32 out."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    # Clamp before the power: negative light has no sRGB code value.
    positive = np.maximum(x, 0.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * positive ** (1 / 2.4) - 0.055).astype(np.float32)


def decode_image(image: Image) -> np.ndarray:
    """Wire image -> float32 HxWx4 RGBA, sRGB, straight alpha, clipped to [0, 1].

    Float images may hold HDR values, NaN or infinities (a client's bug or a
    scene-referred document): the model sees them clipped, and pixels under
    mask 0 still come back untouched (see `encode_result`).
    """
    fmt = PixelFormat(image.format)
    wire = wire_array(image)
    if fmt in _BGRA:
        wire = wire[..., _SWAP_RB]
    if fmt.is_float:
        rgba = wire.astype(np.float32)  # always a fresh, writable copy
        np.nan_to_num(rgba, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        if ColorEncoding(image.color) is ColorEncoding.LINEAR:
            rgba[..., :3] = linear_to_srgb(rgba[..., :3])
        np.clip(rgba, 0.0, 1.0, out=rgba)
        return rgba
    rgba = wire.astype(np.float32)
    rgba *= np.float32(1.0 / _INT_SCALE[fmt])
    if ColorEncoding(image.color) is ColorEncoding.LINEAR:
        # Krita's 16-bit documents can be linear too (its default profile for them).
        rgba[..., :3] = linear_to_srgb(rgba[..., :3])
    return rgba


def decode_mask(mask: Mask) -> np.ndarray:
    """Wire map -> float64 HxW in [0, 1] (0 keep, 1 change fully), an array the engine may keep.

    gray8 / 255, gray16 / 65535; a layer's pixels (any image format): its luminance (Rec. 709
    on sRGB-encoded values, linear ones converted first) times its alpha. A gray pixel's
    luminance is its value exactly, so a map read back from `encode_strength_map` is the
    strength it was written from (to the format's precision).
    """
    fmt = mask.format
    if fmt is MaskFormat.GRAY8:
        return np.frombuffer(mask.data, dtype=np.uint8).reshape(mask.height, mask.width) / 255.0
    if fmt is MaskFormat.GRAY16:
        return np.frombuffer(mask.data, dtype="<u2").reshape(mask.height, mask.width) / 65535.0
    rgba = decode_image(Image(mask.width, mask.height, fmt, mask.data, mask.color)).astype(np.float64)
    rgb = rgba[..., :3]
    gray = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    luminance = np.where(gray, rgb[..., 0], np.clip(rgb @ REC709, 0.0, 1.0))
    return luminance * rgba[..., 3]


def decode_maps(submit: Submit) -> dict[str, np.ndarray]:
    """The optional maps a submit carries, as the engine's keywords: `selection` and `blend`
    (from `blend_mask`), each decoded as `decode_mask`; absent ones are left out."""
    sent = {"selection": submit.selection, "blend": submit.blend_mask}
    return {key: decode_mask(value) for key, value in sent.items() if value is not None}


def decode_references(submit: Submit) -> list[Any]:
    """The submit's reference images (IP-Adapter) as the engine takes them (`ReferenceImage`s),
    each decoded as `decode_image`, with its weight and IP-Adapter."""
    from ..engine.ip_adapter import ReferenceImage  # the engine's heavy imports wait for a job

    return [
        ReferenceImage(decode_image(reference.image), reference.params.weight, reference.params.model)
        for reference in submit.ip_adapters
    ]


def decode_controls(submit: Submit) -> list[Any]:
    """The submit's control images (ControlNet) as the engine takes them (`ControlInput`s), each
    decoded as `decode_image` with its kind, model, strength, start, end and preprocess."""
    from ..engine.controlnet import ControlInput  # the engine's heavy imports wait for a job

    return [ControlInput(decode_image(control.image), control.params) for control in submit.controls]


def encode_image(rgba: np.ndarray, fmt: PixelFormat, color: ColorEncoding = ColorEncoding.SRGB) -> Image:
    """float32 HxWx4 RGBA sRGB in [0, 1] -> wire image in `fmt`.

    `color` LINEAR converts the RGB channels to linear light before they are written.
    """
    fmt = PixelFormat(fmt)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected an HxWx4 RGBA array, got shape {rgba.shape}")
    height, width = rgba.shape[:2]
    if fmt.is_float:
        color = ColorEncoding(color)
        out = np.array(rgba, dtype=np.float32, copy=True)
        if color is ColorEncoding.LINEAR:
            out[..., :3] = srgb_to_linear(out[..., :3])
        wire = out.astype(_DTYPES[fmt], copy=False)
    else:
        color = ColorEncoding(color)
        scale = _INT_SCALE[fmt]
        values = np.clip(np.asarray(rgba, dtype=np.float32), 0.0, 1.0)
        if color is ColorEncoding.LINEAR:
            values = values.copy()
            values[..., :3] = srgb_to_linear(values[..., :3])
        scaled = values * np.float32(scale)
        wire = np.rint(scaled).astype(_DTYPES[fmt])
    if fmt in _BGRA:
        wire = wire[..., _SWAP_RB]
    return Image(width, height, fmt, np.ascontiguousarray(wire).tobytes(), color)


def encode_strength_map(
    strength: np.ndarray, source: Image, output_format: PixelFormat | None = None
) -> Image:
    """Each pixel's strength (float HxW in [0, 1]) -> an opaque gray wire image, in
    `output_format` or the source's format and in the source's colour encoding, so that a
    host reading it back as a map (see `decode_mask`) gets the same strengths."""
    gray = np.asarray(strength, dtype=np.float32)
    rgba = np.stack([gray, gray, gray, np.ones_like(gray)], axis=-1)
    return encode_image(rgba, PixelFormat(output_format or source.format), ColorEncoding(source.color))


def encode_result(
    rgba: np.ndarray,
    source: Image,
    mask: np.ndarray,
    output_format: PixelFormat | None = None,
) -> Image:
    """The engine's result -> wire image, in `output_format` or the source's format.

    One rule for the colour: the result is in the source's colour encoding, its
    values and its `color` label, whatever the output format (a linear layer gets
    linear values back, in 8 bits too; nothing on the wire asks for another
    encoding). Where `mask` is 0 the RGB channels are the client's own values:
    its very bytes when the output format is the source's, else its values
    converted straight to the output format (no trip through sRGB; integers
    clip to [0, 1]). `mask` is the effective change map the engine made the result
    with (`InpaintResult.mask`), not the wire's: levels, depth and grow move its zeros.
    Alpha is always the engine's.
    """
    fmt = PixelFormat(output_format or source.format)
    color = ColorEncoding(source.color)
    if rgba.shape[:2] != (source.height, source.width):
        raise ValueError(
            f"the engine returned {rgba.shape[1]}x{rgba.shape[0]} for a {source.width}x{source.height} region"
        )
    image = encode_image(rgba, fmt, color)
    keep = mask == 0
    if not keep.any():
        return image
    out = np.frombuffer(image.data, dtype=_DTYPES[fmt]).reshape(source.height, source.width, 4).copy()
    kept = wire_array(source)[keep]
    if fmt is not PixelFormat(source.format):
        kept = _convert(kept, PixelFormat(source.format), fmt)
    # Channels 0-2 are the colour in either order (RGBA or BGRA); 3 is alpha.
    out[keep, :3] = kept[:, :3]
    return Image(source.width, source.height, fmt, out.tobytes(), color)


def _convert(wire: np.ndarray, source: PixelFormat, target: PixelFormat) -> np.ndarray:
    """Pixels (..., 4) of one wire format as another's dtype and channel order, same
    colour encoding: integers scaled, floats cast (HDR, NaN and infinities kept),
    floats into integers clipped to [0, 1] with NaN as 0."""
    if source in _BGRA:
        wire = wire[..., _SWAP_RB]
    values = wire.astype(np.float32)
    if not source.is_float:
        values *= np.float32(1.0 / _INT_SCALE[source])
    if target.is_float:
        with np.errstate(over="ignore"):  # beyond half's range is infinity, as in any cast
            out = values.astype(_DTYPES[target])
    else:
        np.nan_to_num(values, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(values, 0.0, 1.0, out=values)
        out = np.rint(values * np.float32(_INT_SCALE[target])).astype(_DTYPES[target])
    return out[..., _SWAP_RB] if target in _BGRA else out


def encode_preview(rgba8: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> Image:
    """The engine's preview (uint8 HxWx4 RGBA, or float in [0, 1]) -> small rgba8 wire image."""
    array = np.asarray(rgba8)
    if array.ndim == 3 and array.shape[2] == 3:
        alpha = np.full(array.shape[:2] + (1,), 255 if array.dtype == np.uint8 else 1.0, array.dtype)
        array = np.concatenate([array, alpha], axis=2)
    if array.ndim != 3 or array.shape[2] != 4:
        raise ValueError(f"a preview must be HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.rint(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    height, width = array.shape[:2]
    if max(height, width) > max_side:
        from PIL import Image as PILImage  # only when the engine's preview is too big

        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        array = np.asarray(
            PILImage.fromarray(np.ascontiguousarray(array), "RGBA").resize(size, PILImage.Resampling.BILINEAR)
        )
        height, width = array.shape[:2]
    return Image(width, height, PixelFormat.RGBA8, np.ascontiguousarray(array).tobytes())
