"""Typed field readers for decoded msgpack maps: each names the field it rejects."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from .errors import ErrorCode, ProtocolError

_MISSING = object()


def wire_type(value: Any) -> str:
    """What a decoded value was on the wire, in msgpack's words with an article, for
    error texts: "nil", "a boolean", "an integer", "a float", "a string", "binary
    data", "an array", "a map", "an extension type"."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary data"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "a map"
    return "an extension type"  # msgpack's only other kind (ExtType, Timestamp)


def _invalid(where: str, key: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, f"{where}: field '{key}' {why}")


def _get(d: Mapping[str, Any], where: str, key: str, default: Any) -> Any:
    value = d.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise _invalid(where, key, "is missing")
        return default
    return value


def read_str(
    d: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = _MISSING,
    *,
    max_len: int = 256,
    min_len: int = 0,
    optional: bool = False,
) -> Any:
    value = _get(d, where, key, default)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _invalid(where, key, f"must be a string, not {wire_type(value)}")
    if len(value) > max_len:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{where}: field '{key}' is {len(value)} characters, over {max_len}",
        )
    if len(value) < min_len:
        raise _invalid(where, key, "must not be empty" if min_len == 1 else f"is shorter than {min_len}")
    return value


def read_int(
    d: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = _MISSING,
    *,
    lo: int | None = None,
    hi: int | None = None,
    optional: bool = False,
) -> Any:
    value = _get(d, where, key, default)
    if value is None and optional:
        return None
    # bool is an int in Python; on the wire it is a different type.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(where, key, f"must be an integer, not {wire_type(value)}")
    if lo is not None and value < lo:
        raise _invalid(where, key, f"is {value}, below the minimum {lo}")
    if hi is not None and value > hi:
        raise _invalid(where, key, f"is {value}, above the maximum {hi}")
    return value


def read_float(
    d: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = _MISSING,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    value = _get(d, where, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(where, key, f"must be a number, not {wire_type(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise _invalid(
            where, key, "must be a finite number, not " + ("NaN" if math.isnan(value) else "infinity")
        )
    if lo is not None and (value <= lo if lo_open else value < lo):
        bound = f"above {lo}" if lo_open else f"at least {lo}"
        raise _invalid(where, key, f"is {value}, must be {bound}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        bound = f"below {hi}" if hi_open else f"at most {hi}"
        raise _invalid(where, key, f"is {value}, must be {bound}")
    return value


def read_bool(d: Mapping[str, Any], where: str, key: str, default: Any = _MISSING) -> bool:
    value = _get(d, where, key, default)
    if not isinstance(value, bool):
        raise _invalid(where, key, f"must be true or false, not {wire_type(value)}")
    return value


def read_bytes(d: Mapping[str, Any], where: str, key: str) -> bytes:
    value = _get(d, where, key, _MISSING)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _invalid(where, key, f"must be binary data, not {wire_type(value)}")
    return value if isinstance(value, bytes) else bytes(value)


def read_map(d: Mapping[str, Any], where: str, key: str, default: Any = _MISSING) -> Mapping[str, Any]:
    value = _get(d, where, key, default)
    if not isinstance(value, Mapping):
        raise _invalid(where, key, f"must be a map, not {wire_type(value)}")
    for k in value:
        if not isinstance(k, str):
            raise _invalid(where, key, f"has a key that is {wire_type(k)}, not a string")
    return value


def read_list(d: Mapping[str, Any], where: str, key: str, default: Any = _MISSING) -> list[Any]:
    value = _get(d, where, key, default)
    if not isinstance(value, (list, tuple)):
        raise _invalid(where, key, f"must be an array, not {wire_type(value)}")
    return list(value)


def read_enum(d: Mapping[str, Any], where: str, key: str, enum: type[Enum], default: Any = _MISSING) -> Any:
    value = read_str(d, where, key, default)
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise _invalid(where, key, f"is '{value}', not one of: {allowed}") from None
