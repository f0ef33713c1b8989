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
