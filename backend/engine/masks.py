"""Mask pre-processing (grow, feather, snap) and the composite alpha.

Masks are float64 in [0, 1] here: the step thresholds compare N * strength against
whole numbers, and float32 would move values like 0.7 across them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# The composite alpha climbs from 0 to 1 across this much mask value above the snap
# threshold (about 13/255): enough to hide the VAE round trip of kept pixels next to
# changed ones, small enough that a 10% gray is already fully the sampler's result.
COMPOSITE_RAMP = 0.05


def process_mask(
    mask: np.ndarray, *, grow: float = 0.0, feather: float = 0.0, snap: float = 0.0
) -> np.ndarray:
    """A map (float in [0, 1], or uint8 0 keep ... 255 change; see maps.unit_map) ->
    float64 HxW in [0, 1]: grown, feathered, snapped."""
    from .maps import unit_map

    m = torch.from_numpy(unit_map(mask))[None, None]
    radius = round(grow)
    if radius > 0:
        m = dilate(m, radius)
    if feather >= 0.01:  # a blur below 1/100 px changes nothing (and sigma could underflow)
        m = gaussian_blur(m, sigma=feather / 2.0)
    if snap > 0:
        m = snap_values(m, snap)
    return m[0, 0].numpy()


def dilate(m: torch.Tensor, radius: int) -> torch.Tensor:
    """Grayscale dilation of (B, 1, H, W) by an octagon of inradius `radius`.

    Square (a) then diamond (b) dilations with a = r / (1 + sqrt 2) make an octagon whose
    extent along axes and diagonals are both r: a disk to within 8%, at O(r) cost.
    """
    a = round(radius / (1.0 + math.sqrt(2.0)))
    b = radius - a
    if a > 0:
        k = 2 * a + 1
        m = F.max_pool2d(m, kernel_size=(1, k), stride=1, padding=(0, a))
        m = F.max_pool2d(m, kernel_size=(k, 1), stride=1, padding=(a, 0))
    for _ in range(b):
        horizontal = F.max_pool2d(m, kernel_size=(1, 3), stride=1, padding=(0, 1))
        vertical = F.max_pool2d(m, kernel_size=(3, 1), stride=1, padding=(1, 0))
        m = torch.maximum(horizontal, vertical)
    return m


def gaussian_blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W); edges continue the border values."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=m.dtype, device=m.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    m = F.pad(m, (radius, radius, 0, 0), mode="replicate")
    m = F.conv2d(m, kernel.view(1, 1, 1, -1))
    m = F.pad(m, (0, 0, radius, radius), mode="replicate")
    m = F.conv2d(m, kernel.view(1, 1, -1, 1))
    return m.clamp_(0.0, 1.0)


def snap_values(m: torch.Tensor, snap: float) -> torch.Tensor:
    """Values <= snap become 0, values >= 1 - snap become 1."""
    m = torch.where(m <= snap, torch.zeros_like(m), m)
    return torch.where(m >= 1.0 - snap, torch.ones_like(m), m)


def composite_alpha(
    mask: np.ndarray, snap: float = 0.0, *, steps: int | None = None, strength: float = 1.0
) -> np.ndarray:
    """float32 HxW alpha of the result layer from the processed mask.

    0 exactly where the mask is 0 (those pixels are the input, bit for bit), 1 from
    snap + ramp up. The sampler already changed a gray pixel by its gray value, so the
    alpha only softens the lowest values and never scales by the mask again.

    The ramp is COMPOSITE_RAMP of mask value, or wider when `steps` and `strength` leave
    low mask values that the sampler never frees (mask x strength < 1 / steps): such
    pixels only went through the VAE, so they must never cover the input fully.
    """
    ramp = COMPOSITE_RAMP
    if steps:
        ramp = max(ramp, 1.0 / (steps * strength))
    alpha = np.clip((mask - snap) / ramp, 0.0, 1.0)
    alpha[mask <= 0.0] = 0.0
    return alpha.astype(np.float32)
