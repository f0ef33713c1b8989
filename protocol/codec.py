"""Messages as bytes: msgpack maps with a `type` key, pixels as `bin`.

`encode` gives one message's bytes; `encode_parts` and `fragments` the same
bytes without copying the pixels, cut for one fragmented websocket message;
`decode` turns untrusted bytes into a message or raises `ProtocolError`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

import msgpack

from ._fields import wire_type
from .errors import ErrorCode, ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .messages import ALL_MESSAGES, Message


def _wire(message: Message) -> dict[str, Any]:
    wire = message.to_wire()
    wire["type"] = message.TYPE
    return wire


def encode(message: Message) -> bytes:
    """One message as the bytes of one binary websocket message."""
    return msgpack.packb(_wire(message), use_bin_type=True)


# Byte payloads this big travel as views of the message's own bytes; smaller ones
# are copied in with the msgpack around them, where a copy is cheaper than a part.
ZERO_COPY_MIN_BYTES = 64 * 1024
# Loopback websockets are fastest with 1-4 MiB fragments (measured: see README.md here).
FRAGMENT_BYTES = 2 * 1024 * 1024


def encode_parts(message: Message) -> list[bytes | memoryview]:
    """`encode(message)` without copying its pixels: pieces whose concatenation is
    exactly `encode(message)`.

    Maps, arrays, keys and small values are packed by msgpack itself, one call
    each, and runs of them joined into one `bytes`; every byte payload of at
    least `ZERO_COPY_MIN_BYTES` becomes a msgpack `bin` header (0xc4/0xc5/0xc6 +
    big-endian length) followed by a memoryview of the payload, not a copy. The
    views share the message's buffers: do not change those until it is sent.
    Send the parts as one websocket message, cut with `fragments`.
    """
    packer = msgpack.Packer(use_bin_type=True)  # autoreset: each call returns its bytes
    pieces: list[bytes | memoryview] = []
    _pack_parts(_wire(message), packer, pieces)
    parts: list[bytes | memoryview] = []
    run: list[bytes] = []
    for piece in pieces:
        if isinstance(piece, memoryview):
            if run:
                parts.append(b"".join(run))
                run = []
            parts.append(piece)
        else:
            run.append(piece)
    if run:
        parts.append(b"".join(run))
    return parts


def _pack_parts(value: Any, packer: msgpack.Packer, out: list[bytes | memoryview]) -> None:
    # The same walk as msgpack's own packer (dicts in insertion order, lists and
    # tuples as arrays), stopping short of big byte payloads.
    if isinstance(value, dict):
        out.append(packer.pack_map_header(len(value)))
        for key, item in value.items():
            out.append(packer.pack(key))
            _pack_parts(item, packer, out)
    elif isinstance(value, (list, tuple)):
        out.append(packer.pack_array_header(len(value)))
        for item in value:
            _pack_parts(item, packer, out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        view = _byte_view(value)
        if view.nbytes < ZERO_COPY_MIN_BYTES:
            out.append(packer.pack(value))
        else:
            out.append(_bin_header(view.nbytes))
            out.append(view)
    else:
        out.append(packer.pack(value))


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A flat view of unsigned bytes, so that len() is the byte count."""
    view = memoryview(data)
    return view if view.ndim == 1 and view.format in ("B", "b", "c") else view.cast("B")


def _bin_header(size: int) -> bytes:
    """msgpack's `bin` header: the shortest of bin 8, bin 16 and bin 32."""
    if size <= 0xFF:
        return struct.pack(">BB", 0xC4, size)
    if size <= 0xFFFF:
        return struct.pack(">BH", 0xC5, size)
    if size <= 0xFFFFFFFF:
        return struct.pack(">BI", 0xC6, size)
    raise ValueError(f"a byte payload of {size} bytes is too large for msgpack")


def fragments(parts: list[bytes | memoryview], max_bytes: int = FRAGMENT_BYTES) -> list[bytes | memoryview]:
    """The parts of one message (from `encode_parts`) cut into the fragments of one
    websocket message, each at most `max_bytes`: big payloads are sliced as
    views (no copy), runs of small parts joined. A message that fits one
    fragment comes back as a list of one."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    out: list[bytes | memoryview] = []
    run: list[bytes | memoryview] = []
    run_bytes = 0
    for part in parts:
        view = _byte_view(part)
        size = view.nbytes
        if run_bytes + size <= max_bytes:
            run.append(part)
            run_bytes += size
            continue
        if run_bytes:
            out.append(run[0] if len(run) == 1 else b"".join(run))
        run, run_bytes = [], 0
        for start in range(0, size, max_bytes):
            piece = view[start : start + max_bytes]
            if piece.nbytes == max_bytes:
                out.append(piece)
            else:  # the tail starts the next run
                run, run_bytes = [piece], piece.nbytes
    if run_bytes or not out:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def decode(
    data: bytes | bytearray | memoryview | str,
    limits: Limits = DEFAULT_LIMITS,
    accept: Mapping[str, type[Message]] = ALL_MESSAGES,
) -> Any:
    """Bytes from the peer -> a message object, or `ProtocolError`.

    `accept` narrows the message types this side takes: the daemon passes
    CLIENT_MESSAGES, the plugins SERVER_MESSAGES.
    """
    if isinstance(data, str):
        raise ProtocolError(ErrorCode.MALFORMED, "expected a binary message holding msgpack, got text")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(ErrorCode.MALFORMED, "expected a binary message holding msgpack")
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"the message is {len(data)} bytes, over the limit of {limits.max_message_bytes}",
        )
    if len(data) == 0:
        raise ProtocolError(ErrorCode.MALFORMED, "empty message")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=limits.max_message_bytes,
            max_str_len=limits.max_message_bytes,
            # Each array or map header preallocates its room, nested up to 1024 deep:
            # small caps keep a few KiB of hostile headers from costing many MiB.
            max_array_len=1024,
            max_map_len=1024,
            max_ext_len=0,
        )
    except Exception as exc:  # any failure of the untrusted bytes, C or pure-Python unpacker
        raise ProtocolError(ErrorCode.MALFORMED, _unpack_failure(exc)) from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"expected a msgpack map, got {wire_type(obj)}")
    if not all(isinstance(k, str) for k in obj):
        raise ProtocolError(ErrorCode.MALFORMED, "every key of a message must be a string")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.MALFORMED, "the message has no string field 'type'")
    cls = accept.get(kind)
    if cls is None:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type '{shown}'; expected one of: {', '.join(sorted(accept))}",
        )
    return cls.from_wire(obj, limits)


# msgpack's Python names for map keys it refuses ("int is not allowed for map key", or
# "<class 'int'> ..." from the pure-Python unpacker), in msgpack's own words.
_KEY_TYPES = {
    "NoneType": "nil",
    "bool": "a boolean",
    "int": "an integer",
    "float": "a float",
    "list": "an array",
    "tuple": "an array",
    "dict": "a map",
    "ExtType": "an extension type",
    "Timestamp": "an extension type",
}
_KEY_TYPE = re.compile(r"^(?:<class '(?:\w+\.)*)?(\w+)'?>? is not allowed for map key")
_OVER_LIMIT = re.compile(r"^(\d+) exceeds max_(\w+)_len\((\d+)\)")
_LIMITED = {"array": "an array of {} items", "map": "a map of {} entries", "str": "a string of {} bytes"}


def _unpack_failure(exc: Exception) -> str:
    """What was wrong with bytes msgpack could not unpack, in the protocol's words: the
    unpacker's exceptions (C or pure Python) name Python types and classes."""
    text = str(exc)
    if isinstance(exc, msgpack.ExtraData):
        extra = len(exc.extra) if isinstance(exc.extra, (bytes, bytearray, memoryview)) else 0
        count = {0: "", 1: "1 trailing byte"}.get(extra, f"{extra} trailing bytes")
        return f"not one msgpack message: {count or 'trailing bytes'} after the message"
    if isinstance(exc, msgpack.StackError):
        return "not a msgpack message: arrays and maps nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "not a msgpack message: a byte where no msgpack value can start"
    if isinstance(exc, UnicodeDecodeError):
        return "not a msgpack message: a string that is not valid UTF-8"
    if isinstance(exc, msgpack.OutOfData) or "incomplete input" in text:
        return "not a msgpack message: truncated (it ends inside a value)"
    key = _KEY_TYPE.match(text)
    if key:
        kind = _KEY_TYPES.get(key.group(1), "a value that is not a string")
        return f"not a msgpack message this protocol reads: a map key is {kind}, not a string"
    over = _OVER_LIMIT.match(text)
    if over:
        size, kind, limit = over.groups()
        if kind == "ext":
            return "not a msgpack message this protocol reads: it holds an extension type"
        what = _LIMITED.get(kind, "binary data of {} bytes").format(size)
        return f"not a msgpack message this protocol reads: {what}, over the limit of {limit}"
    return "not a valid msgpack message"
