"""The job description the daemon and the CLI send, the result they get back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from .errors import InvalidRequest
from .schedulers import check_scheduler_name

ModelFamily = Literal["sd15", "sdxl", "sd15-inpaint", "sdxl-inpaint"]

# Mask values within SNAP of 0 or 1 are snapped there. 0.03 (about 8/255) absorbs the
# ringing a JPEG puts around a hard black/white mask (0.98 where 1 was meant) while
# leaving every deliberate gray level alone.
DEFAULT_SNAP = 0.03

# Far more than any scheduler here needs. Not 1000: the reference configs' "leading"
# spacing with steps_offset 1 then reaches timestep 1000, past DDIM's 1000-entry schedule.
MAX_STEPS = 500


@dataclass
class InpaintParams:
    """One job's settings. The mask's gray value times `strength` is each pixel's strength."""

    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0  # (0, 1]
    steps: int = 20  # >= 1
    guidance: float = 7.0  # classifier-free guidance scale; <= 1 disables it
    seed: int | None = None  # None: a random seed, reported in the result
    scheduler: str = "euler"
    grow: float = 0.0  # px: dilate the mask before anything else
    feather: float = 0.0  # px: width of the soft edge (Gaussian blur, sigma = feather / 2)
    snap: float = DEFAULT_SNAP  # snap mask values <= snap to 0 and >= 1 - snap to 1

    def validated(self) -> InpaintParams:
        """A copy with the scheduler name canonical; InvalidRequest on anything unusable."""
        _finite("strength", self.strength)
        if not 0.0 < self.strength <= 1.0:
            raise InvalidRequest(f"Strength must be in (0, 1], got {self.strength}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)):
            raise InvalidRequest(f"Steps must be a whole number, got {self.steps!r}.")
        if not 1 <= self.steps <= MAX_STEPS:
            raise InvalidRequest(f"Steps must be between 1 and {MAX_STEPS}, got {self.steps}.")
        _finite("guidance", self.guidance)
        if not 0.0 <= self.guidance <= 100.0:
            raise InvalidRequest(f"Guidance must be between 0 and 100, got {self.guidance}.")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
        ):
            raise InvalidRequest(f"Seed must be a whole number, got {self.seed!r}.")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise InvalidRequest(f"Seed must be between 0 and 2^64 - 1, got {self.seed}.")
        for name in ("grow", "feather"):
            value = getattr(self, name)
            _finite(name, value)
            if not 0.0 <= value <= 1024.0:
                raise InvalidRequest(f"{name.capitalize()} must be between 0 and 1024 px, got {value}.")
        _finite("snap", self.snap)
        if not 0.0 <= self.snap < 0.5:
            raise InvalidRequest(f"Snap must be in [0, 0.5), got {self.snap}.")
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise InvalidRequest("Prompt and negative prompt must be text.")
        return replace(self, scheduler=check_scheduler_name(str(self.scheduler)), steps=int(self.steps))


def _finite(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidRequest(f"{name.capitalize()} must be a number, got {value!r}.")
    if not math.isfinite(float(value)):
        raise InvalidRequest(f"{name.capitalize()} must be a finite number, got {value}.")


@dataclass
class InpaintResult:
    """The result region, the size of the request's region.

    image: float32 HxWx4 RGBA in [0, 1], straight alpha. RGB holds the new pixels (and
    the input's RGB, bit for bit, wherever alpha is 0); A is the composite alpha: 0
    where the processed mask is 0, 1 as soon as the mask is clearly above 0.
    """

    image: np.ndarray
    seed: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """A model clients may name. `name` is the spec to send back; no paths are exposed."""

    name: str
    family: ModelFamily
    source: str  # "builtin", "huggingface-cache", or the kind of folder it was found in
