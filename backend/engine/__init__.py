"""The differential diffusion engine: every mask pixel sets its own denoising strength.

    from differential_inpaint.backend.engine import Engine, InpaintParams

    engine = Engine()                       # cuda (fp16) > mps > cpu (fp32)
    result = engine.inpaint(rgba, mask, InpaintParams(prompt="a red door", strength=0.8),
                            model="builtin:tiny-sd15")

Heavy imports (torch, diffusers) happen when an Engine is created, not on import.
"""

from .errors import EngineError, InvalidRequest, JobCancelled, OutOfMemory, UnknownModel
from .params import DEFAULT_SNAP, InpaintParams, InpaintResult, ModelInfo
from .schedulers import SCHEDULERS


def __getattr__(name: str):  # noqa: ANN202 - lazy attribute of the package
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)


__all__ = [
    "DEFAULT_SNAP",
    "SCHEDULERS",
    "Engine",
    "EngineError",
    "InpaintParams",
    "InpaintResult",
    "InvalidRequest",
    "JobCancelled",
    "ModelInfo",
    "OutOfMemory",
    "UnknownModel",
]
