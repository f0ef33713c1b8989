"""Regions: from the plugin's pixels to the model's working resolution and back."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def working_size(height: int, width: int, area: int, multiple: int) -> tuple[int, int]:
    """(h, w) with about `area` pixels, the region's aspect, both a multiple of `multiple`.

    The cost of a job follows this size, not the region's: a small selection on a huge
    canvas is scaled up to it, a large region down.
    """
    scale = math.sqrt(area / float(height * width))
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    # A strip thinner than `multiple` at this scale has its short side rounded up; shorten
    # its long side so that the area (the cost) stays about `area`. Its aspect cannot be kept.
    longest = max(multiple, round(area / multiple / multiple) * multiple)
    if h == multiple:
        w = min(w, longest)
    if w == multiple:
        h = min(h, longest)
    return int(h), int(w)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize (B, C, H, W); antialiased when shrinking, untouched when the size is equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrinking)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC float array -> (1, C, H, W) float32 tensor (a copy)."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None].clone()


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> HxWxC float32 array."""
    return x[0].permute(1, 2, 0).to(device="cpu", dtype=torch.float32).contiguous().numpy()


def composite_over(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Flatten a straight-alpha RGBA `layer` over an RGBA `base` ("over" operator).

    Where the layer's alpha is 0 the base comes back bit for bit; where it is 1, the
    layer's RGB with full opacity.
    """
    a = layer[..., 3:4].astype(np.float64)
    base_a = base[..., 3:4].astype(np.float64)
    out_a = a + base_a * (1.0 - a)
    premultiplied = layer[..., :3] * a + base[..., :3] * base_a * (1.0 - a)
    out_rgb = np.divide(premultiplied, out_a, out=np.zeros_like(premultiplied), where=out_a > 0)
    out = np.concatenate([out_rgb, out_a], axis=-1).astype(base.dtype)
    return np.where(a > 0, out, base)


Context = str | tuple[int, int, int, int] | None
CONTEXT_WORDS = ("auto", "image", "mask")


def context_window(context: Context, processed: np.ndarray) -> tuple[slice, slice] | None:
    """The part of a region the model sees, as (rows, columns); None for the whole region.

    context: None, "auto" or "image": the whole region (the hosts send the region they chose);
    "mask": the bounds of the processed change map (above 0); (x, y, w, h): that rectangle,
    cut to the region. Pixels outside it stay the input's.
    """
    from .errors import InvalidRequest

    height, width = processed.shape
    if context is None or context in ("auto", "image"):
        return None
    if context == "mask":
        rows, columns = np.nonzero(np.asarray(processed) > 0)
        if rows.size == 0:
            return None  # nothing changes anywhere: no window to cut
        y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(columns.min()), int(columns.max()) + 1
    elif isinstance(context, tuple) and len(context) == 4 and all(isinstance(v, int) for v in context):
        x, y, w, h = context
        if w <= 0 or h <= 0:
            raise InvalidRequest(
                f"The context {x},{y},{w},{h} is empty: its width and height must be above 0."
            )
        y0, y1, x0, x1 = max(0, y), min(height, y + h), max(0, x), min(width, x + w)
        if y0 >= y1 or x0 >= x1:
            raise InvalidRequest(f"The context {x},{y},{w},{h} lies outside the {width}x{height} image.")
    else:
        raise InvalidRequest(
            f"The context is {context!r}; it is one of {', '.join(CONTEXT_WORDS)} or X,Y,W,H."
        )
    if (y0, y1, x0, x1) == (0, height, 0, width):
        return None
    return slice(y0, y1), slice(x0, x1)
