"""`encode_parts` and `fragments`: the zero-copy way of sending a message must put
exactly `encode`'s bytes on the wire, with the C msgpack and its pure-Python fallback."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any
from unittest import mock

import msgpack
import msgpack.fallback
import pytest
from hypothesis import given
from hypothesis import strategies as st

from differential_inpaint import protocol as p
from differential_inpaint.protocol import codec, messages

from .test_messages import EVERY_MESSAGE

MiB = 1024 * 1024

# msgpack's pure-Python implementation, as Krita's and GIMP's Pythons may run it
# (MSGPACK_PUREPYTHON=1 or no wheel for the host's Python).
FALLBACK = types.SimpleNamespace(
    Packer=msgpack.fallback.Packer,
    packb=lambda o, **kwargs: msgpack.fallback.Packer(**kwargs).pack(o),
)


@contextmanager
def packer(kind: str, zero_copy_min: int = p.codec.ZERO_COPY_MIN_BYTES) -> Iterator[None]:
    """Run the protocol's encoders on the C or the fallback msgpack, with a chosen
    threshold for payloads sent as views (0: every payload, so bin 8/16/32 headers
    are all written by `encode_parts` itself)."""
    with mock.patch.object(codec, "ZERO_COPY_MIN_BYTES", zero_copy_min):
        if kind == "fallback":
            with mock.patch.object(codec, "msgpack", FALLBACK):
                yield
        else:
            yield


KINDS = ("c", "fallback")
THRESHOLDS = (0, 1, 300, p.codec.ZERO_COPY_MIN_BYTES)


def big_submit(side: int = 256) -> p.Submit:
    image = p.Image(side, side, p.PixelFormat.RGBA8, bytes(range(256)) * (side * side // 64))
    mask = p.Mask(side, side, b"\x00\xff" * (side * side // 2))
    return p.Submit("big", image, mask, p.JobParams(prompt="fox", seed=3), x=-1, y=2**20)


ALL_CASES = [
    *EVERY_MESSAGE,
    big_submit(),
    p.Result("r", big_submit().image, 0, 0, seed=1, timings={"sample": 0.25}),
    p.Preview("pv", 3, p.Image(200, 100, p.PixelFormat.RGBA8, bytes(200 * 100 * 4))),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("message", ALL_CASES, ids=lambda m: m.TYPE)
def test_parts_join_to_exactly_the_encoded_message(message: Any, threshold: int, kind: str) -> None:
    with packer(kind, threshold):
        parts = p.encode_parts(message)
        encoded = p.encode(message)
    assert b"".join(parts) == encoded
    assert all(isinstance(part, (bytes, memoryview)) and len(part) > 0 for part in parts)
    # Small pieces are joined: never two `bytes` parts in a row.
    assert not any(isinstance(a, bytes) and isinstance(b, bytes) for a, b in pairwise(parts))


def test_c_and_fallback_msgpack_write_the_same_bytes() -> None:
    for message in ALL_CASES:
        with packer("fallback"):
            fallback = p.encode(message), b"".join(p.encode_parts(message))
        assert fallback == (p.encode(message), p.encode(message))


def test_pixel_payloads_are_views_of_the_callers_bytes_not_copies() -> None:
    submit = big_submit()
    parts = p.encode_parts(submit)
    views = [part for part in parts if isinstance(part, memoryview)]
    assert [view.obj for view in views] == [submit.image.data, submit.mask.data]
    assert [len(view) for view in views] == [len(submit.image.data), len(submit.mask.data)]
    # Everything else is a few hundred bytes of msgpack around them.
    assert sum(len(part) for part in parts if isinstance(part, bytes)) < 600


def test_small_messages_are_one_part() -> None:
    for message in EVERY_MESSAGE:  # their payloads are all under the threshold
        assert p.encode_parts(message) == [p.encode(message)]


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\xc4\x00"),
        (255, b"\xc4\xff"),
        (256, b"\xc5\x01\x00"),
        (65535, b"\xc5\xff\xff"),
        (65536, b"\xc6\x00\x01\x00\x00"),
    ],
)
def test_bin_headers_are_msgpacks_own(size: int, header: bytes) -> None:
    assert codec._bin_header(size) == header
    assert msgpack.packb(bytes(size), use_bin_type=True)[: len(header)] == header


def test_views_of_typed_buffers_count_bytes_not_items() -> None:
    import array

    # e.g. a float32 buffer handed over as a view: msgpack packs its bytes.
    floats = array.array("f", [0.5] * 20_000)
    image = p.Image(100, 50, p.PixelFormat.RGBAF32, memoryview(floats))  # type: ignore[arg-type]
    message = p.Preview("f", 1, image)
    for threshold in (0, p.codec.ZERO_COPY_MIN_BYTES):
        with packer("c", threshold):
            assert b"".join(p.encode_parts(message)) == p.encode(message)


# --- random structures: the walk must agree with msgpack's own packer everywhere ---

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=600)
)
structures = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


class _Raw(messages.Message):
    """Any structure as a message, to drive `encode_parts` beyond the real messages."""

    TYPE = "raw"

    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire

    def to_wire(self) -> dict[str, Any]:
        return dict(self.wire)


@given(
    st.dictionaries(st.text(max_size=8), structures, max_size=6),
    st.sampled_from(THRESHOLDS),
    st.sampled_from(KINDS),
)
def test_random_structures_encode_the_same_in_parts(wire: dict[str, Any], threshold: int, kind: str) -> None:
    message = _Raw(wire)
    expected = msgpack.packb({**wire, "type": "raw"}, use_bin_type=True)
    with packer(kind, threshold):
        assert p.encode(message) == expected
        parts = p.encode_parts(message)
    assert b"".join(parts) == expected


# --- fragments --------------------------------------------------------------------


def test_fragments_of_a_big_submit_are_at_most_2_mib_and_share_the_pixels() -> None:
    submit = big_submit(2048)  # 16 MiB of pixels + 4 MiB of mask
    frames = p.fragments(p.encode_parts(submit))
    assert b"".join(frames) == p.encode(submit)
    assert all(0 < len(frame) <= p.FRAGMENT_BYTES for frame in frames)
    assert len(frames) <= 20 // 2 + 3  # the payloads' slices, plus the small parts around them
    full = [f for f in frames if isinstance(f, memoryview) and len(f) == p.FRAGMENT_BYTES]
    assert len(full) >= 9 and all(f.obj in (submit.image.data, submit.mask.data) for f in full)


def test_a_small_message_is_one_fragment() -> None:
    message = p.Accepted("j", 0)
    assert p.fragments(p.encode_parts(message)) == [p.encode(message)]


def test_fragment_sizes_exactly() -> None:
    big = bytes(5 * MiB + 3)
    frames = p.fragments([big])
    assert [len(x) for x in frames] == [2 * MiB, 2 * MiB, MiB + 3]
    assert b"".join(frames) == big
    assert p.fragments([b"a", b"bc", b"d"], 3) == [b"abc", b"d"]


@given(
    st.lists(st.binary(max_size=50) | st.binary(max_size=300).map(memoryview), max_size=12),
    st.integers(1, 120),
)
def test_random_parts_cut_into_bounded_fragments(parts: list, max_bytes: int) -> None:
    frames = p.fragments(parts, max_bytes)
    joined = b"".join(parts)
    assert b"".join(frames) == joined
    assert all(len(frame) <= max_bytes for frame in frames)
    if joined:
        assert all(len(frame) > 0 for frame in frames)
        # Each boundary is forced: a frame and the next could not have been one.
        assert all(len(a) + len(b) > max_bytes for a, b in pairwise(frames))
    else:
        assert frames == [b""]
