"""Round trips of every message, and one clear error for every malformed case."""

from __future__ import annotations

import math

import msgpack
import pytest

from differential_inpaint import protocol as p
from differential_inpaint.protocol import ErrorCode, ProtocolError
from tests.support.wire import DELETE, edited


def _image(width: int = 3, height: int = 2, fmt: p.PixelFormat = p.PixelFormat.BGRA8) -> p.Image:
    size = width * height * fmt.bytes_per_pixel
    return p.Image(width, height, fmt, bytes(i % 251 for i in range(size)))


def _submit(**params: object) -> p.Submit:
    return p.Submit(
        job_id="job-1",
        image=_image(),
        mask=p.Mask(3, 2, bytes([0, 64, 128, 192, 255, 0])),
        params=p.JobParams(prompt="a red fox", **params),
        x=-5,
        y=12,
    )


EVERY_MESSAGE = [
    p.Hello(client="krita", client_version="0.1.0"),
    p.Hello(client="gimp", token="secret-token"),
    p.Welcome(
        server="differential-inpaint",
        server_version="0.1.0",
        models=[p.ModelInfo("builtin:tiny-sd15", "sd15"), p.ModelInfo("sdxl-base", "sdxl")],
        default_model="builtin:tiny-sd15",
        schedulers=["euler", "ddim"],
        capabilities=["preview", "cancel"],
        device="cuda:0 (float16)",
    ),
    _submit(),
    _submit(seed=42, model="sdxl-base", output_format=p.PixelFormat.RGBAF32, strength=0.5, preview=False),
    p.Submit(
        "j2",
        p.Image(1, 1, p.PixelFormat.RGBAF16, bytes(8), p.ColorEncoding.LINEAR),
        p.Mask(1, 1, b"\xff"),
    ),
    p.Submit(
        "j3",
        _image(),
        p.Mask(3, 2, bytes(96), p.PixelFormat.RGBAF32, p.ColorEncoding.LINEAR),
        p.JobParams(invert_mask=True, mask_black=0.2, mask_white=0.9, mask_gamma=0.5, depth=p.Depth.NEAR),
        selection=p.Mask(3, 2, bytes(6)),
        blend_mask=p.Mask(3, 2, bytes(12), p.MaskFormat.GRAY16),
    ),
    p.Submit(
        "j4",
        _image(),
        p.Mask(3, 2, bytes(6)),
        p.JobParams(loras=(p.Lora("watercolor", 0.8), p.Lora("x", -2.0))),
        controls=(p.Control(_image(), p.ControlParams("depth", None, 0.5, 0.5, 1.0, True)),),
        ip_adapters=(p.Reference(_image(1, 1), p.ReferenceParams(1.2, "ip-adapter_sd15")),),
    ),
    p.StrengthMapRequest("map-1", _image(), p.Mask(3, 2, bytes(6)), p.JobParams(strength=0.5), x=4, y=-4),
    p.StrengthMap("map-1", _image(), 4, -4, timings={"map": 0.25}),
    p.Cancel("job-1"),
    p.ListModels(),
    p.Models([p.ModelInfo("a", "sd15")], "a"),
    p.GetStatus(),
    p.Status(queued=2, running=True, loaded_model="a", device="cpu"),
    p.Status(
        queued=0, running=True, workers=[p.WorkerInfo("cuda:1", "cuda:1 (float16)", "m", busy=True, jobs=3)]
    ),
    p.Accepted("job-1", 3),
    p.Progress("job-1", p.Stage.SAMPLING, 4, 20),
    p.Progress("job-1", p.Stage.QUEUED, position=2),
    p.Preview("job-1", 5, p.Image(2, 2, p.PixelFormat.RGBA8, bytes(16))),
    p.Result("job-1", _image(), -5, 12, seed=2**40, model="a", timings={"sample": 1.5, "total": 2.0}),
    p.Cancelled("job-1"),
    p.Error(ErrorCode.UNKNOWN_MODEL, "no model 'x'", "job-1"),
    p.Error(ErrorCode.MALFORMED, "not msgpack"),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.TYPE)
def test_every_message_round_trips(message: object) -> None:
    data = p.encode(message)
    assert isinstance(data, bytes)
    assert p.decode(data) == message


def test_every_message_type_is_covered() -> None:
    assert {m.TYPE for m in EVERY_MESSAGE} == set(p.ALL_MESSAGES)


def test_pixels_travel_as_msgpack_bin_not_text() -> None:
    raw = msgpack.unpackb(p.encode(_submit()), raw=True)
    assert isinstance(raw[b"image"][b"data"], bytes)
    assert isinstance(raw[b"mask"][b"data"], bytes)


def test_token_is_not_shown_in_repr() -> None:
    assert "secret" not in repr(p.Hello(client="c", token="secret"))


def test_accept_narrows_the_direction() -> None:
    data = p.encode(p.Accepted("j", 0))
    with pytest.raises(ProtocolError) as err:
        p.decode(data, accept=p.CLIENT_MESSAGES)
    assert err.value.code is ErrorCode.UNKNOWN_TYPE
    assert "accepted" in err.value.message


def _wire(message: object) -> dict:
    wire = message.to_wire()  # type: ignore[attr-defined]
    wire["type"] = message.TYPE  # type: ignore[attr-defined]
    return wire


def _submit_wire(**changes: object) -> dict:
    """A valid submit as a plain dict; 'image__data' names image.data (a keyword can hold no dot)."""
    return edited(_wire(_submit()), {path.replace("__", "."): value for path, value in changes.items()})


def _decode_obj(obj: object, limits: p.Limits = p.DEFAULT_LIMITS) -> object:
    return p.decode(msgpack.packb(obj, use_bin_type=True), limits)


MALFORMED_BYTES = [
    (b"", ErrorCode.MALFORMED),
    (b"\xc1", ErrorCode.MALFORMED),  # never used in msgpack
    (b"\x92\x01", ErrorCode.MALFORMED),  # truncated array
    (msgpack.packb([1, 2]), ErrorCode.MALFORMED),  # not a map
    (msgpack.packb({"type": "hello"}) + b"\x00", ErrorCode.MALFORMED),  # trailing bytes
    (msgpack.packb({1: 2}), ErrorCode.MALFORMED),  # non-string key
    (msgpack.packb({"no_type": 1}), ErrorCode.MALFORMED),
    (msgpack.packb({"type": 7}), ErrorCode.MALFORMED),
    (msgpack.packb({"type": "launch_missiles"}), ErrorCode.UNKNOWN_TYPE),
    (msgpack.packb({"type": "hello", "x": msgpack.ExtType(5, b"1")}), ErrorCode.MALFORMED),
]


@pytest.mark.parametrize(("data", "code"), MALFORMED_BYTES)
def test_malformed_bytes(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as err:
        p.decode(data)
    assert err.value.code is code
    assert err.value.message


def test_text_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ProtocolError, match="text"):
        p.decode('{"type": "hello"}')  # type: ignore[arg-type]


SUBMIT_CASES = {
    "missing job id": ({"job_id": DELETE}, ErrorCode.INVALID_FIELD, "job_id"),
    "job id with spaces": ({"job_id": "a b"}, ErrorCode.INVALID_FIELD, "job_id"),
    "job id too long": ({"job_id": "j" * 65}, ErrorCode.TOO_LARGE, "job_id"),
    "image not a map": ({"image": b"xx"}, ErrorCode.INVALID_FIELD, "image"),
    "missing image data": ({"image__data": DELETE}, ErrorCode.INVALID_FIELD, "data"),
    "image data as text": ({"image__data": "abc"}, ErrorCode.INVALID_FIELD, "binary"),
    "width as string": ({"image__width": "3"}, ErrorCode.INVALID_FIELD, "width"),
    "width as bool": ({"image__width": True}, ErrorCode.INVALID_FIELD, "width"),
    "zero height": ({"image__height": 0}, ErrorCode.INVALID_FIELD, "height"),
    "negative width": ({"image__width": -3}, ErrorCode.INVALID_FIELD, "width"),
    "bytes short": ({"image__data": bytes(23)}, ErrorCode.SIZE_MISMATCH, "24 bytes"),
    "bytes long": ({"image__data": bytes(25)}, ErrorCode.SIZE_MISMATCH, "got 25"),
    "unknown format": ({"image__format": "cmyk8"}, ErrorCode.INVALID_FIELD, "cmyk8"),
    "unknown color": ({"image__color": "p3"}, ErrorCode.INVALID_FIELD, "color"),
    "mask bytes wrong": ({"mask__data": bytes(5)}, ErrorCode.SIZE_MISMATCH, "mask"),
    "mask other size": (
        {"mask__width": 2, "mask__height": 3},
        ErrorCode.SIZE_MISMATCH,
        "the mask is 2x3 but the image is 3x2",
    ),
    "strength NaN": ({"params__strength": math.nan}, ErrorCode.INVALID_FIELD, "finite"),
    "strength inf": ({"params__strength": math.inf}, ErrorCode.INVALID_FIELD, "finite"),
    "strength zero": ({"params__strength": 0.0}, ErrorCode.INVALID_FIELD, "strength"),
    "strength above one": ({"params__strength": 1.5}, ErrorCode.INVALID_FIELD, "strength"),
    "steps zero": ({"params__steps": 0}, ErrorCode.INVALID_FIELD, "steps"),
    "steps float": ({"params__steps": 20.0}, ErrorCode.INVALID_FIELD, "steps"),
    "steps over limit": ({"params__steps": 10_000}, ErrorCode.INVALID_FIELD, "steps"),
    "guidance negative": ({"params__guidance": -1.0}, ErrorCode.INVALID_FIELD, "guidance"),
    "seed negative": ({"params__seed": -1}, ErrorCode.INVALID_FIELD, "seed"),
    "seed too big": ({"params__seed": 2**64 - 1}, ErrorCode.INVALID_FIELD, "seed"),
    "empty model": ({"params__model": ""}, ErrorCode.INVALID_FIELD, "model"),
    "grow negative": ({"params__grow": -2.0}, ErrorCode.INVALID_FIELD, "grow"),
    "prompt not text": ({"params__prompt": 5}, ErrorCode.INVALID_FIELD, "prompt"),
    "prompt too long": ({"params__prompt": "x" * 5000}, ErrorCode.TOO_LARGE, "prompt"),
    "preview not bool": ({"params__preview": 1}, ErrorCode.INVALID_FIELD, "preview"),
    "bad output format": (
        {"params__output_format": "png"},
        ErrorCode.INVALID_FIELD,
        "output_format",
    ),
    "x not int": ({"x": 1.5}, ErrorCode.INVALID_FIELD, "'x' must be an integer, not a float"),
    "params not a map": ({"params": [1]}, ErrorCode.INVALID_FIELD, "'params' must be a map, not an array"),
    # What arrived is named in msgpack's words, never Python's (NoneType, dict, bytes...).
    "prompt nil": ({"params__prompt": None}, ErrorCode.INVALID_FIELD, "'prompt' must be a string, not nil"),
    "width a map": ({"image__width": {}}, ErrorCode.INVALID_FIELD, "must be an integer, not a map"),
    "data an array": ({"image__data": [1]}, ErrorCode.INVALID_FIELD, "must be binary data, not an array"),
    "format binary": (
        {"image__format": b"rgba8"},
        ErrorCode.INVALID_FIELD,
        "must be a string, not binary data",
    ),
    "preview a string": ({"params__preview": "yes"}, ErrorCode.INVALID_FIELD, "true or false, not a string"),
    "strength a boolean": ({"params__strength": True}, ErrorCode.INVALID_FIELD, "a number, not a boolean"),
    "image key binary": ({"image": {b"width": 3}}, ErrorCode.INVALID_FIELD, "key that is binary data"),
}


@pytest.mark.parametrize(("changes", "code", "says"), SUBMIT_CASES.values(), ids=SUBMIT_CASES.keys())
def test_malformed_submit(changes: dict, code: ErrorCode, says: str) -> None:
    with pytest.raises(ProtocolError) as err:
        _decode_obj(_submit_wire(**changes))
    assert err.value.code is code
    assert says in err.value.message
    if "job_id" not in changes:
        assert err.value.job_id == "job-1"  # so the client can fail the right job


def test_hello_without_client_version_is_valid() -> None:
    """The README marks `client_version` optional: a hello of `protocol` and `client` alone."""
    hello = _decode_obj({"type": "hello", "protocol": p.PROTOCOL_VERSION, "client": "minimal"})
    assert hello == p.Hello(client="minimal", client_version="")
    with pytest.raises(ProtocolError) as err:
        _decode_obj({"type": "hello", "protocol": 1, "client": "c", "client_version": None})
    assert "'client_version' must be a string, not nil" in err.value.message


def test_welcome_lists_are_arrays_of_strings() -> None:
    wire = _wire(EVERY_MESSAGE[2])
    wire["models"] = {"a": 1}
    with pytest.raises(ProtocolError) as err:
        _decode_obj(wire)
    assert "'models' must be an array, not a map" in err.value.message


def test_defaults_fill_missing_params() -> None:
    message = _decode_obj(_submit_wire(params={}))
    assert message.params == p.JobParams()  # type: ignore[attr-defined]


def test_pixel_limit_is_checked_before_the_bytes() -> None:
    limits = p.Limits(max_pixels=100, max_side=1000)
    # The declared size alone is over the limit: refused without looking at the data.
    wire = _submit_wire(image__width=20, image__height=20, image__data=b"")
    with pytest.raises(ProtocolError) as err:
        _decode_obj(wire, limits)
    assert err.value.code is ErrorCode.TOO_LARGE
    assert "400 pixels" in err.value.message


def test_side_limit() -> None:
    with pytest.raises(ProtocolError) as err:
        _decode_obj(_submit_wire(image__width=9000), p.Limits(max_side=8192))
    assert err.value.code is ErrorCode.INVALID_FIELD


def test_message_size_limit_before_unpacking() -> None:
    limits = p.Limits(max_message_bytes=1000)
    with pytest.raises(ProtocolError) as err:
        p.decode(b"\x00" * 1001, limits)
    assert err.value.code is ErrorCode.TOO_LARGE


def test_bytes_per_pixel() -> None:
    assert [f.bytes_per_pixel for f in p.PixelFormat] == [4, 4, 8, 8, 8, 16]
    assert p.PixelFormat.RGBAF16.is_float and not p.PixelFormat.BGRA16.is_float


def test_unknown_error_code_from_a_newer_server_is_refused_clearly() -> None:
    with pytest.raises(ProtocolError) as err:
        _decode_obj({"type": "error", "code": "brand_new", "message": "m"})
    assert err.value.code is ErrorCode.INVALID_FIELD


def test_welcome_ignores_unknown_limits_and_keeps_known() -> None:
    wire = _wire(EVERY_MESSAGE[2])
    wire["limits"] = {"max_pixels": 10, "max_future_thing": 3}
    welcome = _decode_obj(wire)
    assert welcome.limits.max_pixels == 10  # type: ignore[attr-defined]
    assert welcome.limits.max_side == p.DEFAULT_LIMITS.max_side  # type: ignore[attr-defined]


def test_limits_fit_counts_pixels_and_sides() -> None:
    limits = p.Limits(max_pixels=100, max_side=20)
    assert limits.fits(10, 10) and limits.fits(20, 5)
    assert not limits.fits(11, 10)  # 110 pixels
    assert not limits.fits(21, 1)  # a side over 20


def test_the_parts_a_daemon_lists_are_optional_and_sent_only_when_some() -> None:
    flow = ("flux", "sd3")
    listing = p.Models(
        [p.ModelInfo("lone.safetensors", "flux", ("vae", "t5")), p.ModelInfo("sd", "sd15")],
        text_encoders=[p.PartInfo("t5.safetensors", "t5", flow)],
        vaes=[p.PartInfo("ae.safetensors", "vae", flow)],
    )
    wire = listing.to_wire()
    assert wire["models"][0]["lacks"] == ["vae", "t5"] and "lacks" not in wire["models"][1]
    assert wire["text_encoders"] == [{"name": "t5.safetensors", "role": "t5", "families": ["flux", "sd3"]}]
    assert p.Models.from_wire(wire, p.DEFAULT_LIMITS) == listing
    # A daemon without them (an older one) says what it always said, and is read so.
    plain = p.Models([p.ModelInfo("sd", "sd15")]).to_wire()
    assert "text_encoders" not in plain and "vaes" not in plain
    old = p.Models.from_wire(plain, p.DEFAULT_LIMITS)
    assert (old.text_encoders, old.vaes, old.models[0].lacks) == ([], [], ())
    with pytest.raises(ProtocolError, match=r"models: field 'families' must list strings"):
        p.Models.from_wire(
            {**wire, "vaes": [{"name": "ae", "role": "vae", "families": [3]}]}, p.DEFAULT_LIMITS
        )
    assert listing.vaes[0].fits("flux") and not listing.vaes[0].fits("sdxl") and listing.vaes[0].fits("")
