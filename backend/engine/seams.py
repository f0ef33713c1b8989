"""Seams that do not show: colour match of the partly changed zone, and a composite that
keeps what the sampler barely touched.

Both work on the decoded result in pixel space, before the composite, and never touch a
pixel whose map value is 0 (those stay the input's, bit for bit, by the composite).

- `match_colors`: a model's or VAE's colour drift (a cast, desaturation) shows most
  where the map is gray: there the painter asked for a small change, and gets a halo of
  another colour. The drift is measured where the map is gray (spread and mean of each
  channel in Oklab, a perceptual space, over the pixels meant to change at most half)
  and taken out there, fading out towards the fully repainted pixels, which keep the
  colours the prompt asked for.
- `keep_unchanged`: pixels the sampler changed by less than a threshold keep their
  original value exactly (the result layer is transparent there), fading in over one
  more threshold, as A1111's soft inpainting does with its difference threshold.
"""

from __future__ import annotations

import numpy as np

# sRGB <-> Oklab (Björn Ottosson's matrices).
_LMS_FROM_LINEAR = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_OKLAB_FROM_LMS = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_MIN_SPREAD = 1e-4  # a flat channel: move its mean only


def _to_linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, None)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def to_oklab(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 sRGB in [0, 1] -> Oklab (float64)."""
    lms = _to_linear(rgb.astype(np.float64)) @ _LMS_FROM_LINEAR.T
    return np.cbrt(lms) @ _OKLAB_FROM_LMS.T


def from_oklab(lab: np.ndarray) -> np.ndarray:
    """Oklab -> sRGB clipped to [0, 1] (float64)."""
    lms = (lab @ np.linalg.inv(_OKLAB_FROM_LMS).T) ** 3
    return np.clip(_to_srgb(lms @ np.linalg.inv(_LMS_FROM_LINEAR).T), 0.0, 1.0)


def match_colors(new: np.ndarray, original: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """`new` (H x W x 3 sRGB) with its colour drift in the partly changed zone taken out.

    strength: the per-pixel strength e (the processed mask x the global strength). The
    weight of a pixel, where 0 < e < 1 (0 elsewhere), is 1 up to e = 0.5, then falls to 0
    at e = 1: its share in the statistics and how much of the correction it gets. In
    Oklab, per channel: the spread of `new` is scaled to the original's, then the mean
    difference left is fitted as a + b*e (a drift of the VAE is the same at any e, one of
    the model grows with e) and taken out. Without a gray zone (a hard mask) nothing
    changes.
    """
    weight = np.where((strength > 0) & (strength < 1), np.clip(2.0 * (1.0 - strength), 0.0, 1.0), 0.0)
    total = weight.sum()
    if total <= 0:
        return new
    new_lab, old_lab = to_oklab(new), to_oklab(original)
    w = weight[..., None] / total
    mean_new, mean_old = (new_lab * w).sum((0, 1)), (old_lab * w).sum((0, 1))
    spread_new = np.sqrt((((new_lab - mean_new) ** 2) * w).sum((0, 1)))
    spread_old = np.sqrt((((old_lab - mean_old) ** 2) * w).sum((0, 1)))
    scale = np.where(spread_new > _MIN_SPREAD, spread_old / np.maximum(spread_new, _MIN_SPREAD), 1.0)
    scaled = mean_new + (new_lab - mean_new) * scale
    drift = _fit_drift(scaled - old_lab, strength, weight)
    corrected = new_lab + weight[..., None] * (scaled - drift - new_lab)
    out = from_oklab(corrected).astype(new.dtype)
    return np.where(weight[..., None] > 0, out, new)


def _fit_drift(difference: np.ndarray, strength: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per pixel, a + b*e: the weighted least-squares line of `difference` (H x W x 3)
    against the strength e, per channel; a constant where e does not vary."""
    e, w = strength[weight > 0], weight[weight > 0]
    d = difference[weight > 0]
    mean_e = (w * e).sum() / w.sum()
    mean_d = (w[:, None] * d).sum(0) / w.sum()
    variance = (w * (e - mean_e) ** 2).sum()
    slope = (w[:, None] * (e - mean_e)[:, None] * (d - mean_d)).sum(0) / variance if variance > 1e-12 else 0.0
    return mean_d + slope * (strength[..., None] - mean_e)


def keep_unchanged(alpha: np.ndarray, new: np.ndarray, original: np.ndarray, threshold: float) -> np.ndarray:
    """The composite alpha with pixels changed by less than `threshold` (the largest
    channel difference, 0..1) made 0, fading back in up to twice the threshold."""
    if threshold <= 0:
        return alpha
    difference = np.abs(new.astype(np.float32) - original.astype(np.float32)).max(axis=-1)
    fade = np.clip((difference - threshold) / threshold, 0.0, 1.0)
    return (alpha * fade).astype(np.float32)
