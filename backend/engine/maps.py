"""The change map before grow/feather/snap: its source, invert, levels, depth and selection.

The order is the protocol's ("The maps of a submit", protocol/README.md): the source is
the depth estimate when `params.depth` asks for one, else the sent map; then invert; then
the levels (black and white point, a linear stretch clipped to [0, 1], then gamma); with
depth, the result is combined with the sent map; then it is multiplied by the selection.
masks.process_mask then grows, feathers and snaps it, and the sampler scales it by the
strength (`pixel_strength`).

Maps are float64 in [0, 1] (see masks.py for why not float32). Steps that are identity
at their defaults are skipped, so a default job's map is bit for bit what it always was.
"""

from __future__ import annotations

import numpy as np

from ...protocol import Combine, Depth, JobParams
from .errors import InvalidRequest


def unit_map(array: np.ndarray, what: str = "mask") -> np.ndarray:
    """A map as float64 HxW in [0, 1]: uint8 / 255, uint16 / 65535, bool 0 or 1, floats as
    they are (refused outside [0, 1] or not finite). InvalidRequest naming `what` otherwise."""
    if not isinstance(array, np.ndarray):
        raise InvalidRequest(f"The {what} must be an array of pixels.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise InvalidRequest(f"The {what} must be H x W (one channel), got shape {array.shape}.")
    if array.dtype == np.bool_:
        return array.astype(np.float64)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array, dtype=np.float64) / 255.0
    if array.dtype == np.uint16:
        return np.ascontiguousarray(array, dtype=np.float64) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        values = np.ascontiguousarray(array, dtype=np.float64)
        if not np.isfinite(values).all():
            raise InvalidRequest(f"The {what} contains NaN or infinite values.")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise InvalidRequest(
                f"The {what} has values from {values.min():g} to {values.max():g}; a map is 0 to 1."
            )
        return values
    raise InvalidRequest(f"The {what} must be 8-bit, 16-bit or float in [0, 1], got {array.dtype}.")


def levels(m: np.ndarray, black: float = 0.0, white: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """Levels on a float map: black -> 0, white -> 1 (a linear stretch, clipped), then
    value ** (1 / gamma). The identity (0, 1, 1) returns `m` itself."""
    if not 0.0 <= black < white <= 1.0:
        raise InvalidRequest(f"The map's black point ({black:g}) must be below its white point ({white:g}).")
    if not gamma > 0.0:
        raise InvalidRequest(f"The map's gamma must be above 0, got {gamma:g}.")
    if black != 0.0 or white != 1.0:
        m = np.clip((m - black) / (white - black), 0.0, 1.0)
    if gamma != 1.0:
        m = m ** (1.0 / gamma)
    return m


def combine(a: np.ndarray, b: np.ndarray, how: Combine | str) -> np.ndarray:
    """Two maps made one: their product, the lower or the higher of the two."""
    how = Combine(how)
    if how is Combine.MULTIPLY:
        return a * b
    return np.minimum(a, b) if how is Combine.MIN else np.maximum(a, b)


def depth_map(relative_depth: np.ndarray, depth: Depth | str) -> np.ndarray:
    """A depth estimate (larger = nearer, as Depth Anything's) as a map normalised over the
    region: `near` makes the nearest 1 and the farthest 0, `far` the other way round. A
    flat estimate (nothing nearer than anything else) is 0 everywhere."""
    d = np.asarray(relative_depth, dtype=np.float64)
    low, high = float(d.min()), float(d.max())
    if not high > low:
        return np.zeros_like(d)
    near = (d - low) / (high - low)
    return near if Depth(depth) is Depth.NEAR else 1.0 - near


def change_map(
    mask: np.ndarray,
    params: JobParams,
    *,
    depth: np.ndarray | None = None,
    selection: np.ndarray | None = None,
) -> np.ndarray:
    """The change map before grow/feather/snap (float64 HxW in [0, 1]).

    mask: the sent map, float64 in [0, 1]. depth: the map made from the depth estimate
    (`depth_map`), given when `params.depth` asks for one; it is then the source and the
    sent map is combined with it by `params.depth_combine`. selection: multiplies the
    result, after the levels.
    """
    m = mask if depth is None else depth
    if params.invert_mask:
        m = 1.0 - m
    m = levels(m, params.mask_black, params.mask_white, params.mask_gamma)
    if depth is not None:
        m = combine(m, mask, params.depth_combine)
    if selection is not None:
        m = m * selection
    return m


def pixel_strength(processed: np.ndarray, strength: float) -> np.ndarray:
    """Each pixel's strength, as the sampler gets it: the processed map times the global
    strength (float64 HxW). `Engine.strength_map` answers with this very function."""
    return processed * strength
