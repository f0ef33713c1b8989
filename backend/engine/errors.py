"""Errors the engine raises; every message is meant to be shown to a painter as is."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: something the user can read and act on."""


class InvalidRequest(EngineError):
    """The job's parameters or pixels cannot be used (size mismatch, NaN strength, ...)."""


class UnknownScheduler(InvalidRequest):
    """The scheduler is not one the engine offers (unknown, or one differential sampling cannot use)."""


class UnknownModel(EngineError):
    """The model spec names nothing that can be found or loaded."""


class JobCancelled(EngineError):
    """The job was cancelled by the caller; raised within one sampling step."""


class OutOfMemory(EngineError):
    """The device ran out of memory; what the job held is freed by `Engine.free_memory()`, at the latest
    before the next job."""
