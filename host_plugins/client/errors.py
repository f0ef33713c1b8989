"""The one error type both plugins raise: a message for the painter, a code for code."""

from __future__ import annotations

from typing import Any


class InpaintError(Exception):
    """A job failed; `message` is for the painter, `code` for code (ErrorCode values,
    or 'daemon_unavailable', 'connection_lost', 'timeout', 'cancelled', 'protocol')."""

    def __init__(self, message: str, code: str = "job_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DaemonUnavailable(InpaintError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "daemon_unavailable")


class JobCancelled(InpaintError):
    """`kept`: the results of a job of several that were done before the cancel took effect."""

    def __init__(self, kept: list[Any] | None = None, total: int = 1) -> None:
        self.kept = list(kept or [])
        if self.kept:
            text = f"The job was cancelled after {len(self.kept)} of its {total} results; those were kept."
        else:
            text = "The job was cancelled; nothing was changed."
        super().__init__(text, "cancelled")


def as_inpaint_error(exc: BaseException) -> InpaintError:
    """Any failure as the one error type the painter sees."""
    if isinstance(exc, InpaintError):
        return exc
    error = InpaintError(
        f"Unexpected error in the plugin: {exc.__class__.__name__}: {exc}. Nothing was changed. "
        "Please report this with the steps that led to it.",
        "plugin_bug",
    )
    error.__cause__ = exc
    return error
