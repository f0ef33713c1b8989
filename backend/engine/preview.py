"""Cheap previews of the latents while sampling: a linear map from latent to RGB.

The factors are the widely used least-squares fits for the SD1.5 and SDXL VAEs' latent
spaces; they cost one small matrix product, no VAE decode.
"""

from __future__ import annotations

import numpy as np
import torch

from .configs import base_family

# family -> (4x3 factors, RGB bias)
_LATENT_RGB: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd15": (
        [
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        [0.0, 0.0, 0.0],
    ),
    "sdxl": (
        [
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        [0.1084, -0.0175, -0.0011],
    ),
}


def latent_preview(latents: torch.Tensor, family: str) -> np.ndarray:
    """(B, 4, h, w) latents -> uint8 h x w x 4 RGBA of the first image, opaque."""
    factors, bias = _LATENT_RGB[base_family(family)]
    x = latents[0, :4].detach().to(device="cpu", dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", x, torch.tensor(factors)) + torch.tensor(bias)
    rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).numpy()
    alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)
