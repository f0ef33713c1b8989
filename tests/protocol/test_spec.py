"""The job spec against the wire decoder: every declared parameter, its default and
its bounds, exactly as the decoder applies them. (The other surfaces — the CLI,
the engine, the Krita form, the GIMP procedure — are walked by their own tests.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.protocol import spec
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
    wrong: Any = 1 if q.kind is bool else "0.5" if q.kind is tuple else []
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


def test_a_fan_is_bounded_per_strength_and_in_length() -> None:
    assert decode_params(fan=[0.25, 1]).fan == (0.25, 1.0)
    for bad, why in (
        ([0.5, 0.0], r"'fan\[1\]'.*above 0"),
        ([1.5], r"'fan\[0\]'.*at most 1"),
        ([0.5] * 9, "9 values, over 8"),
    ):
        with pytest.raises(p.ProtocolError, match=why) as raised:
            decode_params(fan=bad)
        assert raised.value.code is p.ErrorCode.INVALID_FIELD
    with pytest.raises(p.ProtocolError, match=r"'fan\[0\]' must be a number, not a string"):
        decode_params(fan=["0.5"])


def test_count_and_fan_exclude_each_other() -> None:
    with pytest.raises(p.ProtocolError, match="'count' and 'fan' cannot be used together"):
        decode_params(count=2, fan=[0.5])
    assert decode_params(count=1, fan=[0.5]).results == 1


def test_each_result_has_its_own_seed_and_strength() -> None:
    variations = p.JobParams(count=3, strength=0.6)
    assert variations.results == 3
    assert [variations.result_seed(7, k) for k in range(3)] == [7, 8, 9]
    assert [variations.result_strength(k) for k in range(3)] == [0.6] * 3
    assert variations.result_seed(p.MAX_SEED, 1) == 0  # wraps: every seed stays valid
    fan = p.JobParams(fan=(0.3, 0.9))
    assert fan.results == 2
    assert [fan.result_seed(7, k) for k in range(2)] == [7, 7]
    assert [fan.result_strength(k) for k in range(2)] == [0.3, 0.9]


def test_a_list_typed_by_a_painter() -> None:
    fan = p.spec.BY_NAME["fan"]
    assert fan.parse_text("0.3, 0.5,0.7 ; 0.9") == (0.3, 0.5, 0.7, 0.9)
    assert fan.parse_text("30%, 50 %, 0.7") == (0.3, 0.5, 0.7)
    assert fan.parse_text("70") == (70.0,)  # a fraction, refused by the bounds: no guessing
    assert fan.parse_text(" ") == ()
    assert fan.format_text((0.3, 0.55)) == "30%, 55%"
    assert fan.parse_text(fan.format_text((0.3, 0.55))) == (0.3, 0.55)
    with pytest.raises(ValueError, match="'half' is not a number"):
        fan.parse_text("0.3, half")


def test_loras_typed_by_a_painter() -> None:
    loras = p.spec.BY_NAME["loras"]
    assert loras.parse_text("watercolor:0.8, detail tweaker : -0.5; plain") == (
        p.Lora("watercolor", 0.8),
        p.Lora("detail tweaker", -0.5),
        p.Lora("plain", 1.0),
    )
    assert loras.format_text((p.Lora("a", 0.8), p.Lora("b", -1.0))) == "a:0.8, b:-1"
    assert loras.parse_text(loras.format_text((p.Lora("a", 0.25),))) == (p.Lora("a", 0.25),)
    # A name with colons needs no weight: one is read only where a number follows the last.
    assert loras.parse_text("builtin:tiny-lora-sd15, hf:org/x:0.5") == (
        p.Lora("builtin:tiny-lora-sd15", 1.0),
        p.Lora("hf:org/x", 0.5),
    )
    # The weights keep to the declared bounds on the wire.
    with pytest.raises(p.ProtocolError, match=r"loras\[1\].*weight"):
        p.JobParams.from_wire({"loras": [{"name": "a"}, {"name": "b", "weight": -2.5}]}, "params")
    assert p.JobParams.from_wire({"loras": [{"name": "a"}]}, "params").loras == (p.Lora("a", 1.0),)


def test_a_control_acts_over_a_range_of_steps() -> None:
    assert p.ControlParams.from_wire({"kind": "depth", "end": 0.5}, "c") == p.ControlParams("depth", end=0.5)
    with pytest.raises(p.ProtocolError, match="'start' \\(0.5\\) must be below 'end' \\(0.5\\)"):
        p.ControlParams.from_wire({"start": 0.5, "end": 0.5}, "c")


# --- which model families take which settings ---


def test_every_family_has_a_name_for_the_painter() -> None:
    assert set(spec.FAMILY_LABELS) == spec.FAMILIES
    assert len(set(spec.FAMILY_LABELS.values())) == len(spec.FAMILIES)
    assert spec.family_label("flux-fill") == "FLUX Fill"
    assert spec.family_label("flux-2") == "flux-2"  # a newer daemon's family, as it came


def test_schnell_takes_neither_negative_prompt_nor_guidance() -> None:
    assert not spec.applies_to(spec.BY_NAME["negative_prompt"], "flux-schnell")
    assert not spec.applies_to(spec.BY_NAME["guidance"], "flux-schnell")
    assert spec.applies_to(spec.BY_NAME["prompt"], "flux-schnell")


def test_flux_dev_takes_guidance_not_a_negative_prompt_and_sd3_takes_both() -> None:
    for family in ("flux", "flux-fill"):
        assert spec.applies_to(spec.BY_NAME["guidance"], family)
        assert not spec.applies_to(spec.BY_NAME["negative_prompt"], family)
    for family in ("sd3", *spec.SD_FAMILIES):
        assert spec.applies_to(spec.BY_NAME["guidance"], family)
        assert spec.applies_to(spec.BY_NAME["negative_prompt"], family)


@pytest.mark.parametrize("family", [None, "", "a-family-of-tomorrow"])
def test_an_unknown_family_takes_every_parameter(family: str | None) -> None:
    assert all(spec.applies_to(q, family) for q in p.JOB_PARAMS)


def test_family_declarations_name_known_families_only() -> None:
    for q in p.JOB_PARAMS:
        assert q.families is None or q.families <= spec.FAMILIES, q.name
        for family, default in q.family_defaults:
            assert family in spec.FAMILIES and spec.applies_to(q, family), (q.name, family)
            assert q.read({q.name: default}, "test") == default, (q.name, family)
    assert any(q.families is not None for q in p.JOB_PARAMS)


def test_guidance_defaults_follow_the_family() -> None:
    guidance = spec.BY_NAME["guidance"]
    assert guidance.default_for("flux") == 3.5
    assert guidance.default_for("flux-fill") == 30.0
    for family in (None, "", "sd15", "sdxl", "sd3", "unknown"):
        assert guidance.default_for(family) == guidance.default == p.JobParams().guidance
    assert spec.BY_NAME["steps"].default_for("flux") == spec.BY_NAME["steps"].default


def test_a_declaration_is_hashable_and_its_family_defaults_a_mapping_once_declared() -> None:
    guidance = spec.BY_NAME["guidance"]
    hash(guidance)
    assert dict(guidance.family_defaults) == {"flux": 3.5, "flux-fill": 30.0}
    assert isinstance(guidance.families, frozenset)


def test_text_encoders_are_names_typed_by_a_painter() -> None:
    names = p.spec.BY_NAME["text_encoders"]
    assert names.item is str and names.choices == "text_encoders" and spec.CLI not in names.hosts
    assert names.parse_text("clip_l.safetensors, t5xxl_fp16.safetensors;") == (
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
    )
    assert names.format_text(("a", "b")) == "a, b"
    params = p.JobParams(text_encoders=("t5.safetensors",), vae="ae.safetensors")
    assert p.JobParams.from_wire(params.to_wire(), "params") == params
    with pytest.raises(p.ProtocolError, match=r"'text_encoders' names 't5' twice"):
        p.JobParams(text_encoders=("t5", "t5")).validated()
    with pytest.raises(p.ProtocolError, match=r"text_encoders\[1\]' must be a string"):
        p.JobParams.from_wire({"text_encoders": ["a", 1]}, "params")
    # Only the families whose single files take parts: an SD model's form does not offer them.
    assert (
        spec.applies_to(names, "flux")
        and spec.applies_to(names, "sd3")
        and not spec.applies_to(names, "sdxl")
    )
