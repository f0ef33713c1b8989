"""The job spec against the wire decoder: every declared parameter, its default and
its bounds, exactly as the decoder applies them. (The other surfaces — the CLI,
the engine, the Krita form, the GIMP procedure — are walked by their own tests.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.protocol.spec import ALL_HOSTS

NUMBERS = [q for q in p.JOB_PARAMS if q.kind in (int, float)]


def decode_params(**params: Any) -> p.JobParams:
    submit = p.Submit("j", p.Image(1, 1, p.PixelFormat.RGBA8, bytes(4)), p.Mask(1, 1, b"\xff"))
    wire = submit.to_wire()
    wire["params"] = params
    return p.Submit.from_wire(wire, p.DEFAULT_LIMITS).params


def test_every_field_of_job_params_is_declared_once() -> None:
    fields = [f.name for f in dataclasses.fields(p.JobParams)]
    assert [q.name for q in p.JOB_PARAMS] == fields
    assert len(set(fields)) == len(fields)
    for q in p.JOB_PARAMS:
        assert q.label and q.help and not q.help.endswith("."), q.name
        assert q.hosts <= ALL_HOSTS, q.name


def test_an_empty_params_map_decodes_to_every_declared_default() -> None:
    decoded = decode_params()
    assert decoded == p.JobParams()
    for q in p.JOB_PARAMS:
        assert getattr(decoded, q.name) == q.default, q.name


def test_the_wire_carries_exactly_the_declared_names() -> None:
    assert list(p.JobParams().to_wire()) == [q.name for q in p.JOB_PARAMS]


@pytest.mark.parametrize("q", NUMBERS, ids=lambda q: q.name)
def test_each_numeric_bound_is_enforced_by_the_decoder(q: p.Param) -> None:
    lo, hi = q.bounds()
    step = 1 if q.kind is int else 1e-6
    for value, ok in ((lo, not q.lo_open), (hi, not q.hi_open), (lo - step, False), (hi + step, False)):
        if ok:
            assert getattr(decode_params(**{q.name: q.kind(value)}), q.name) == value
        else:
            with pytest.raises(p.ProtocolError, match=f"'{q.name}'") as raised:
                decode_params(**{q.name: q.kind(value)})
            assert raised.value.code is p.ErrorCode.INVALID_FIELD


@pytest.mark.parametrize("q", p.JOB_PARAMS, ids=lambda q: q.name)
def test_a_value_of_the_wrong_type_is_refused_by_name(q: p.Param) -> None:
    wrong: Any = [] if q.kind is not bool else 1
    with pytest.raises(p.ProtocolError, match=f"'{q.name}'"):
        decode_params(**{q.name: wrong})


def test_none_is_a_value_only_for_optional_parameters() -> None:
    for q in p.JOB_PARAMS:
        if q.optional:
            assert getattr(decode_params(**{q.name: None}), q.name) is None
        else:
            with pytest.raises(p.ProtocolError, match=f"'{q.name}'"):
                decode_params(**{q.name: None})


def test_bounds_named_after_limits_follow_the_limits() -> None:
    steps = next(q for q in p.JOB_PARAMS if q.name == "steps")
    assert steps.bounds(p.Limits(max_steps=50)) == (1, 50)
    prompt = next(q for q in p.JOB_PARAMS if q.name == "prompt")
    assert prompt.max_chars(p.Limits(max_prompt_chars=10)) == 10
    with pytest.raises(p.ProtocolError) as raised:
        p.JobParams(prompt="x" * 11).validated(p.Limits(max_prompt_chars=10))
    assert raised.value.code is p.ErrorCode.TOO_LARGE


def test_validated_is_the_wire_check_for_params_built_in_code() -> None:
    assert p.JobParams(strength=1, guidance=3).validated() == p.JobParams(strength=1.0, guidance=3.0)
    with pytest.raises(p.ProtocolError, match="'seed'"):
        p.JobParams(seed=p.MAX_SEED + 1).validated()
    with pytest.raises(p.ProtocolError, match="'snap'.*below 0.5"):
        p.JobParams(snap=0.5).validated()


def test_ranges_in_words() -> None:
    by_name = {q.name: q for q in p.JOB_PARAMS}
    assert by_name["grow"].describe_range() == "between 0 and 1024 px"
    assert by_name["strength"].describe_range() == "above 0 and at most 1"
    assert by_name["snap"].describe_range() == "at least 0 and below 0.5"
    assert by_name["steps"].describe_range() == f"between 1 and {p.DEFAULT_LIMITS.max_steps}"
    assert by_name["prompt"].describe_range() == ""
