"""The decoder against hostile input: ProtocolError, and nothing else, ever."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from differential_inpaint import protocol as p

from .test_messages import EVERY_MESSAGE

SMALL_LIMITS = p.Limits(max_pixels=64, max_side=16, max_message_bytes=4096, max_steps=50, max_prompt_chars=64)

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "type",
        "job_id",
        "image",
        "mask",
        "params",
        "width",
        "height",
        "format",
        "data",
        "color",
        "x",
        "y",
        "protocol",
        "client",
        "token",
        "models",
        "limits",
        "stage",
        "step",
        "steps",
        "seed",
        "timings",
        "code",
        "message",
        "strength",
        "prompt",
    ]
)


def _decodes_or_refuses(data: bytes) -> None:
    try:
        p.decode(data, SMALL_LIMITS)
    except p.ProtocolError as exc:
        assert isinstance(exc.code, p.ErrorCode)
        assert exc.message


@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decodes_or_refuses(data)


@given(st.sampled_from(sorted(p.ALL_MESSAGES)), st.dictionaries(field_names, values, max_size=8))
def test_random_structures_of_every_type(kind: str, fields: dict) -> None:
    fields["type"] = kind
    _decodes_or_refuses(msgpack.packb(fields, use_bin_type=True))


@given(st.sampled_from(EVERY_MESSAGE), st.data())
def test_mutated_valid_messages(message: object, data: st.DataObject) -> None:
    wire = message.to_wire()  # type: ignore[attr-defined]
    wire["type"] = message.TYPE  # type: ignore[attr-defined]
    target = wire
    # Walk down a random path of nested maps, then replace or delete one field.
    while True:
        nested = [k for k, v in target.items() if isinstance(v, dict)]
        if not nested or data.draw(st.booleans()):
            break
        target = target[data.draw(st.sampled_from(nested))]
    if target:
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(values)
    _decodes_or_refuses(msgpack.packb(wire, use_bin_type=True))


@given(st.sampled_from(EVERY_MESSAGE), st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_truncated_and_corrupted_messages(message: object, cut: int, junk: bytes) -> None:
    data = p.encode(message)
    _decodes_or_refuses(data[: cut % max(len(data), 1)])
    position = cut % len(data)
    _decodes_or_refuses(data[:position] + junk + data[position + len(junk) :])


@pytest.mark.parametrize("header", [b"\xdd\x00\x01\x86\xa0", b"\xdf\x00\x01\x86\xa0\xa1k"])
def test_nested_container_headers_cost_little_memory(header: bytes) -> None:
    # Array and map headers announcing many items, nested deep: a few KiB that the
    # unpacker would turn into preallocated lists and dicts.
    data = b"\x81\xa4type" + header * 5000
    tracemalloc.start()
    try:
        with pytest.raises(p.ProtocolError) as err:
            p.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code is p.ErrorCode.MALFORMED
    assert peak < 16 * 1024 * 1024


def test_a_long_model_list_still_decodes() -> None:
    models = [p.ModelInfo(f"checkpoint-{i}", "sd15") for i in range(1000)]
    welcome = p.Welcome(server="s", server_version="1", models=models, default_model="checkpoint-0")
    assert p.decode(p.encode(welcome)) == welcome
