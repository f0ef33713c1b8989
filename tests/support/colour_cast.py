"""A stand-in model whose output drifts in colour, for the seam options' tests and benchmark.

Real models and VAEs shift colours (a cast, desaturation) in what they repaint; this one
only does that: it returns its input with a warm, dull cast in proportion to each
pixel's strength, so the colour error it leaves is known and nothing else changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def cast(rgb: np.ndarray) -> np.ndarray:
    """The drift: warmer and duller (H x W x 3 or B x H x W x 3 sRGB in [0, 1])."""
    gray = rgb.mean(axis=-1, keepdims=True)
    return np.clip(0.7 * rgb + 0.3 * gray + np.array([0.08, 0.0, -0.06]), 0.0, 1.0)


class ColourCastSampler:
    """In place of a loaded model's DifferentialDiffusionPipeline (`LoadedModel.sampler`)."""

    def __init__(self, real: Any) -> None:
        self.pipe = real.pipe  # the scheduler config the engine reads
        self.dtype = real.dtype  # the batch estimate's element size

    def __call__(self, image: torch.Tensor, strength: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        for stage in ("encoding", "sampling", "decoding"):
            kwargs["on_stage"](stage)
        drifted = torch.from_numpy(cast(image.permute(0, 2, 3, 1).numpy())).permute(0, 3, 1, 2).float()
        return image + strength.float() * (drifted - image)


def engine_with_colour_cast(engine: Any, working_area: int, model: str = "builtin:tiny-sd15") -> Any:
    """`engine` whose model `model` is replaced by the colour-casting stand-in, sampling at
    `working_area` pixels (the region's own area: no resampling error on top of the cast)."""
    from differential_inpaint.backend.engine.registry import LoadedModel

    loaded = engine.models.load(engine.models.resolve(model))
    fake = LoadedModel(loaded.name, loaded.family, ColourCastSampler(loaded.sampler), working_area, 16)
    engine.models.load = lambda _entry, _parts=None: fake  # whatever parts a job chose
    return engine
