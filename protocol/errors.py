"""The protocol's one error type and its machine-readable codes."""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Codes carried by `error` messages. Clients branch on these, never on text."""

    MALFORMED = "malformed"  # not msgpack, not a map, trailing bytes
    UNKNOWN_TYPE = "unknown_type"  # `type` is not a message this peer accepts
    INVALID_FIELD = "invalid_field"  # missing field, wrong type, NaN, out of range
    SIZE_MISMATCH = "size_mismatch"  # byte length does not match width x height x format
    TOO_LARGE = "too_large"  # over a limit announced in `welcome`
    UNSUPPORTED_VERSION = "unsupported_version"  # no common protocol version
    HANDSHAKE_REQUIRED = "handshake_required"  # a message before `hello`
    UNAUTHORIZED = "unauthorized"  # missing or wrong token
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_SCHEDULER = "unknown_scheduler"
    DUPLICATE_JOB = "duplicate_job"  # a job id this connection already uses
    UNKNOWN_JOB = "unknown_job"  # cancel of a job this connection does not own
    QUEUE_FULL = "queue_full"
    OUT_OF_MEMORY = "out_of_memory"  # the device ran out of memory for this job
    JOB_FAILED = "job_failed"  # the engine failed this job; the daemon goes on
    SHUTTING_DOWN = "shutting_down"  # the daemon was stopped before the job finished
    INTERNAL = "internal"  # a bug in the daemon; the daemon goes on


class ProtocolError(Exception):
    """Raised for every malformed or unacceptable message; nothing else escapes the decoder."""

    def __init__(self, code: ErrorCode, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r}, job_id={self.job_id!r})"
