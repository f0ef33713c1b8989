"""Control images made from a photo: canny edges and depth, and the inpaint ControlNet's image.

A ControlNet steers by an image of its own kind (white edges on black, a depth map with the
near bright). When a painter has a photo instead (`preprocess`), the daemon makes that image
from the control layer's region: canny edges here, in torch (no OpenCV), and depth with the
engine's depth model (depth.py). Every other kind takes the layer as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import InvalidRequest

PREPROCESSED_KINDS = ("canny", "depth")
# OpenCV's Canny thresholds as ControlNet's annotators use them (100, 200 on 8-bit values), on
# the Sobel gradient of values in [0, 1].
CANNY_LOW = 100 / 255
CANNY_HIGH = 200 / 255


def control_rgb(image: np.ndarray) -> np.ndarray:
    """A control layer as RGB float32 HxWx3 in [0, 1]: transparent pixels are black (the
    background of line art and edge maps)."""
    rgb = image[..., :3].astype(np.float32)
    if image.shape[-1] == 4:
        rgb = rgb * image[..., 3:4]
    return rgb


def canny_edges(rgb: np.ndarray, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> np.ndarray:
    """Canny edges of an RGB float HxWx3 image in [0, 1]: float32 HxWx3, 1 on an edge, 0 elsewhere.

    The steps of Canny's detector: luminance, a 5x5 Gaussian (sigma 1.4), Sobel gradients,
    non-maximum suppression across the gradient's direction (4 sectors), then hysteresis: weak
    edges (above `low`) are kept where they connect to strong ones (above `high`)."""
    import torch
    import torch.nn.functional as F

    gray = torch.from_numpy(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[None, None]
    taps = torch.arange(5, dtype=torch.float32) - 2
    gauss = torch.exp(-(taps**2) / (2 * 1.4**2))
    gauss = gauss / gauss.sum()
    kernel = (gauss[:, None] * gauss[None, :])[None, None]
    blurred = F.conv2d(F.pad(gray, (2, 2, 2, 2), mode="replicate"), kernel)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
    padded = F.pad(blurred, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel_x)
    gy = F.conv2d(padded, sobel_x.transpose(-1, -2))
    magnitude = torch.hypot(gx, gy)[0, 0]

    # Non-maximum suppression: keep a pixel that is the largest of its two neighbours along the
    # gradient (0, 45, 90 or 135 degrees).
    angle = torch.rad2deg(torch.atan2(gy, gx))[0, 0] % 180
    sector = ((angle + 22.5) // 45).long() % 4
    m = F.pad(magnitude[None, None], (1, 1, 1, 1))[0, 0]
    h, w = magnitude.shape

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return m[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    neighbours = [
        (shifted(0, -1), shifted(0, 1)),  # 0 deg: left, right
        (shifted(-1, 1), shifted(1, -1)),  # 45 deg (y down): up-right, down-left
        (shifted(-1, 0), shifted(1, 0)),  # 90 deg: up, down
        (shifted(-1, -1), shifted(1, 1)),  # 135 deg: up-left, down-right
    ]
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for index, (a, b) in enumerate(neighbours):
        keep |= (sector == index) & (magnitude >= a) & (magnitude >= b)
    thin = torch.where(keep, magnitude, torch.zeros_like(magnitude))

    # Hysteresis: grow the strong edges through the weak ones, 8-connected, until nothing changes.
    weak = thin > low
    edges = thin > high
    while True:
        grown = F.max_pool2d(edges[None, None].float(), 3, stride=1, padding=1)[0, 0].bool() & weak
        if torch.equal(grown, edges):
            break
        edges = grown
    out = edges.float().numpy()
    return np.repeat(out[..., None], 3, axis=-1).astype(np.float32)


def depth_image(relative_depth: np.ndarray) -> np.ndarray:
    """A depth estimate (larger = nearer) as a depth ControlNet's image: near white, far black,
    normalised over the region (float32 HxWx3)."""
    d = np.asarray(relative_depth, dtype=np.float64)
    low, high = float(d.min()), float(d.max())
    near = (d - low) / (high - low) if high > low else np.zeros_like(d)
    return np.repeat(near.astype(np.float32)[..., None], 3, axis=-1)


def inpaint_image(rgb: np.ndarray, change: np.ndarray) -> np.ndarray:
    """The inpaint ControlNet's image (SD1.5 control_v11p_sd15_inpaint): the image, with -1 where
    the change map is above one half (the pixels it is told to fill)."""
    out = rgb.astype(np.float32).copy()
    out[change > 0.5] = -1.0
    return out


def control_image(
    image: np.ndarray,
    kind: str,
    preprocess: bool,
    estimate_depth: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The control image of one control (float32 HxWx3): the layer as it is, or with `preprocess`
    its canny edges or depth (`estimate_depth`: the engine's depth model on RGBA);
    InvalidRequest for another kind with `preprocess`."""
    if not preprocess:
        return control_rgb(image)
    if kind == "canny":
        return canny_edges(control_rgb(image))
    if kind == "depth":
        rgba = image if image.shape[-1] == 4 else np.concatenate([image, np.ones_like(image[..., :1])], -1)
        return depth_image(estimate_depth(rgba.astype(np.float32)))
    raise InvalidRequest(
        f"Control type '{kind}' cannot be made from a photo here (only {', '.join(PREPROCESSED_KINDS)}): "
        "send its control image and turn off 'From a photo'."
    )
