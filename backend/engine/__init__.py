"""The differential diffusion engine: every mask pixel sets its own denoising strength.

    from differential_inpaint.backend.engine import Engine
    from differential_inpaint.protocol import JobParams

    engine = Engine()                       # cuda (fp16) > mps (fp16) > cpu (fp32)
    result = engine.inpaint(rgba, mask, JobParams(prompt="a red door", strength=0.8),
                            model="builtin:tiny-sd15")

A job's parameters are the protocol's `JobParams` (protocol/spec.py), checked by its spec.
registry.py finds, names and caches the models; job.py runs one job. Heavy imports
(torch, diffusers) happen when an Engine is created, not on import.
"""

from .errors import EngineError, InvalidRequest, JobCancelled, OutOfMemory, UnknownModel, UnknownScheduler
from .schedulers import SCHEDULERS


def __getattr__(name: str):  # noqa: ANN202 - lazy attributes of the package
    if name in ("Engine", "InpaintResult"):
        from . import job

        return getattr(job, name)
    if name == "ModelInfo":
        from .registry import ModelInfo

        return ModelInfo
    raise AttributeError(name)


__all__ = [
    "SCHEDULERS",
    "Engine",
    "EngineError",
    "InpaintResult",
    "InvalidRequest",
    "JobCancelled",
    "ModelInfo",
    "OutOfMemory",
    "UnknownModel",
    "UnknownScheduler",
]
