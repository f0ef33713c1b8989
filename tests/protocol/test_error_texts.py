"""Error texts speak the protocol's language, never Python's.

A host in any language reads them, and a painter may see them: they name what
was wrong in msgpack's terms (nil, boolean, integer, float, string, binary,
array, map) and plain words ("trailing bytes", "nested too deeply",
"truncated"), never a Python type or exception (NoneType, dict, ExtraData,
ValueError...). Checked on hand-made cases, on every golden malformed vector,
on every field of every message given a value of every msgpack type, and on
the fuzzers' inputs, with msgpack's C unpacker and its pure-Python fallback
(the one the plugins may run).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import msgpack
import msgpack.fallback
import pytest
from hypothesis import given
from hypothesis import strategies as st

from differential_inpaint import protocol as p
from differential_inpaint.protocol import ErrorCode, ProtocolError, codec

from . import make_vectors as mv
from .test_fuzz import SMALL_LIMITS, field_names, values
from .test_messages import EVERY_MESSAGE, MALFORMED_BYTES

_PYTHON = [
    # Python's names of types: "list", "float" and "bytes" are also English (and msgpack
    # has a float), so only where Python's own texts put them.
    re.compile(r"\b(NoneType|None|dict|tuple|str|int|bool|bytearray|memoryview|object)\b"),
    re.compile(r"\b(not|got|of type|type)\s+(list|float|bytes)\b"),
    # Classes: msgpack's exceptions, any Python exception, their reprs.
    re.compile(r"\b(ExtType|Timestamp|ExtraData|OutOfData|StackError|FormatError|BufferFull)\b"),
    re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Warning|Interrupt)\b"),
    re.compile(r"<class|__\w+__|Traceback|0x[0-9a-f]{6,}"),
    # msgpack's and Python's own wording leaking through.
    re.compile(r"strict_map_key|max_\w+_len|codec can't|unpack\(|Unpack failed|unhashable"),
]
_QUOTED = re.compile(r"'[^']*'")  # the client's own text, echoed in quotes, is theirs


def python_names_in(text: str) -> list[str]:
    """The Python type or exception names in an error text (outside quoted echoes)."""
    ours = _QUOTED.sub("'…'", text)
    return [m.group(0) for pattern in _PYTHON for m in pattern.finditer(ours)]


def test_the_check_catches_what_decode_used_to_say() -> None:
    for old in (
        "not a msgpack message (ExtraData)",
        "not a msgpack message (StackError)",
        "not a msgpack message (ValueError)",
        "submit: field 'prompt' must be a string, not NoneType",
        "submit: field 'image' must be a map, not list",
        "welcome: field 'models' must be a list, not dict",
        "submit.image: field 'data' must be binary data, not str",
        "hello: field 'protocol' must be an integer, not float",
        "expected a msgpack map, got list",
        "expected bytes, got int",
        "<class 'int'> is not allowed for map key",
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    ):
        assert python_names_in(old), old
    for good in (
        "submit: field 'prompt' must be a string, not nil",
        "hello: field 'protocol' must be an integer, not a float",
        "submit: field 'image' must be a map, not an array",
        "submit.image: field 'data' must be binary data, not a string",
        "unknown message type 'dict'; expected one of: cancel, hello",
        "submit.image: 2x3 rgba8 needs 24 bytes, got 23",
        "not one msgpack message: 1 trailing byte after the message",
    ):
        assert python_names_in(good) == [], good


def _refusal(data: bytes | str, limits: p.Limits = p.DEFAULT_LIMITS, accept: Any = p.ALL_MESSAGES) -> str:
    """The text decode refuses `data` with (an empty string when it decodes)."""
    try:
        codec.decode(data, limits, accept)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.message
        return exc.message
    return ""


def _assert_clean(text: str) -> None:
    assert python_names_in(text) == [], text


@pytest.fixture(params=["c", "pure-python"])
def unpacker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with msgpack's C unpacker, then with the pure-Python fallback."""
    if request.param == "pure-python":
        monkeypatch.setattr(codec.msgpack, "unpackb", msgpack.fallback.unpackb)
    return str(request.param)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


HELLO = _pack({"type": "hello", "protocol": 1, "client": "c"})

# (bytes, what the text must say)
UNPACK_FAILURES: list[tuple[bytes, str]] = [
    (HELLO + b"\x00", "1 trailing byte after the message"),
    (HELLO + b"\x00\x01\x02", "3 trailing bytes after the message"),
    (HELLO[:-1], "truncated"),
    (b"\x92\x01", "truncated"),
    (b"\xa5ab", "truncated"),
    (b"\xc1", "no msgpack value"),
    (b"\x91" * 5000, "nested too deeply"),
    (b"\x81\xa4type" + b"\x81\xa1k" * 3000 + b"\xc0", "nested too deeply"),
    (b"\xdd\x00\x01\x86\xa0" + b"\xc0" * 10, "an array of 100000 items, over the limit of 1024"),
    (b"\xdf\x00\x00\x10\x00", "a map of 4096 entries, over the limit of 1024"),
    (_pack({"type": "hello", "x": msgpack.ExtType(5, b"1")}), "extension type"),
    (b"\x81\xa4type\xd6\xff\x00\x00\x00\x01", "extension type"),  # a msgpack timestamp
    (b"\x81\xa4type\xa2\xff\xfe", "not valid UTF-8"),
    (b"\x81\xc0\x01", "a map key is nil, not a string"),
    (b"\x81\xc3\x01", "a map key is a boolean, not a string"),
    (b"\x81\x01\x01", "a map key is an integer, not a string"),
    (b"\x81\xcb" + bytes(8) + b"\x01", "a map key is a float, not a string"),
    (b"\x81\x91\x01\x01", "a map key is an array, not a string"),
    (b"\x81\x80\x01", "a map key is a map, not a string"),
    (b"\x82\xa4type\xa5hello\xa1x\x81\x01\x01", "a map key is an integer, not a string"),
    (_pack([1, 2]), "got an array"),
    (_pack(None), "got nil"),
    (_pack(True), "got a boolean"),
    (_pack(7), "got an integer"),
    (_pack(0.5), "got a float"),
    (_pack("hello"), "got a string"),
    (_pack(b"hello"), "got binary data"),
    (_pack({b"type": "hello"}), "every key"),
    (_pack({"type": None}), "'type'"),
]


@pytest.mark.parametrize(("data", "says"), UNPACK_FAILURES, ids=[c[1] for c in UNPACK_FAILURES])
def test_unpack_failures_are_told_in_msgpack_terms(unpacker: str, data: bytes, says: str) -> None:
    text = _refusal(data)
    assert says in text
    _assert_clean(text)


def test_text_and_other_non_bytes_are_told_plainly() -> None:
    assert "text" in _refusal('{"type": "hello"}')
    _assert_clean(_refusal(12345))  # type: ignore[arg-type]
    _assert_clean(_refusal(None))  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [c[0] for c in MALFORMED_BYTES])
def test_the_malformed_bytes_of_the_message_tests(unpacker: str, data: bytes) -> None:
    _assert_clean(_refusal(data))


VECTORS = json.loads((mv.VECTORS_DIR / mv.INDEX).read_text(encoding="ascii"))["vectors"]
MALFORMED_VECTORS = [v for v in VECTORS if not v["valid"]]


@pytest.mark.parametrize("entry", MALFORMED_VECTORS, ids=[v["file"] for v in MALFORMED_VECTORS])
def test_every_golden_malformed_vector(unpacker: str, entry: dict[str, Any]) -> None:
    data = (mv.VECTORS_DIR / entry["file"]).read_bytes()
    for accept in mv.ACCEPT[entry["direction"]]:
        text = _refusal(data, accept=accept)
        assert text, entry["file"]
        _assert_clean(text)


# One value of every msgpack type (and a few that only the daemon's checks refuse).
EVERY_WIRE_TYPE: list[Any] = [
    None,
    True,
    -1,
    2**64 - 1,
    1.5,
    float("nan"),
    float("-inf"),
    "",
    "x" * 300,
    b"\x00\x01",
    [],
    [1, "a"],
    {},
    {"k": 1},
    msgpack.ExtType(1, b"x"),
]


def _with_every_field_replaced(wire: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`wire` with each field, nested ones too, replaced by each value, then deleted."""
    for key in list(wire):
        original = wire[key]
        for value in EVERY_WIRE_TYPE:
            wire[key] = value
            yield wire
        if isinstance(original, dict):
            wire[key] = original
            yield from _with_every_field_replaced(original)
        del wire[key]
        yield wire
        wire[key] = original


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.TYPE)
def test_every_field_of_every_message_with_every_wire_type(message: Any) -> None:
    wire = message.to_wire()
    wire["type"] = message.TYPE
    refused = 0
    for changed in _with_every_field_replaced(wire):
        text = _refusal(_pack(changed))
        refused += bool(text)
        _assert_clean(text)
    assert refused or not wire.keys() - {"type"}


@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _assert_clean(_refusal(data, SMALL_LIMITS))


@given(st.sampled_from(sorted(p.ALL_MESSAGES)), st.dictionaries(field_names, values, max_size=8))
def test_random_structures_of_every_type(kind: str, fields: dict[str, Any]) -> None:
    fields["type"] = kind
    _assert_clean(_refusal(_pack(fields), SMALL_LIMITS))


@given(st.sampled_from(EVERY_MESSAGE), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_truncated_and_corrupted_messages(message: Any, cut: int, junk: bytes) -> None:
    data = p.encode(message)
    _assert_clean(_refusal(data[: cut % len(data)]))
    position = cut % len(data)
    _assert_clean(_refusal(data[:position] + junk + data[position + len(junk) :]))
    _assert_clean(_refusal(data + junk))


@given(st.sampled_from(EVERY_MESSAGE), st.binary(min_size=1, max_size=300))
def test_random_bytes_with_the_pure_python_unpacker(message: Any, junk: bytes) -> None:
    # The plugins' msgpack may be the fallback: its exceptions say other things.
    data = p.encode(message)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec.msgpack, "unpackb", msgpack.fallback.unpackb)
        _assert_clean(_refusal(junk, SMALL_LIMITS))
        _assert_clean(_refusal(data[: len(junk) % len(data)] + junk))
