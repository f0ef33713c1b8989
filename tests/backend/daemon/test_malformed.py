"""Bad input is normal input: every malformed message gets its error, and the daemon serves on.

Each case runs on a fresh handshaken connection; after the error, a good job
runs to its result on the same connection (messages after the handshake) or
on a new one (a refused handshake closes its connection).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from differential_inpaint import protocol as p
from tests.protocol.test_error_texts import python_names_in
from tests.support.wire import DELETE, edited

from .conftest import RawClient, assert_good_job, make_submit


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _submit_wire(**changes: Any) -> dict[str, Any]:
    """A valid submit as a plain dict, with changes ('image.width' names a nested field)."""
    wire = make_submit("bad-job").to_wire()
    wire["type"] = "submit"
    return edited(wire, changes)


GOOD = make_submit("bad-job").to_wire()

# (case id, bytes or text to send, expected code, whether the error names the job)
CASES: list[tuple[str, bytes | str, p.ErrorCode, bool]] = [
    ("not msgpack", b"\xc1\xc1 this is not msgpack", p.ErrorCode.MALFORMED, False),
    ("text frame", '{"type": "submit"}', p.ErrorCode.MALFORMED, False),
    ("empty message", b"", p.ErrorCode.MALFORMED, False),
    ("msgpack list, not map", _pack([1, 2, 3]), p.ErrorCode.MALFORMED, False),
    ("trailing bytes", _pack({"type": "get_status"}) + b"\x00", p.ErrorCode.MALFORMED, False),
    ("no type", _pack({"job_id": "x"}), p.ErrorCode.MALFORMED, False),
    ("type not a string", _pack({"type": 7}), p.ErrorCode.MALFORMED, False),
    ("non-string key", _pack({1: 2, "type": "get_status"}), p.ErrorCode.MALFORMED, False),
    ("unknown type", _pack({"type": "explode"}), p.ErrorCode.UNKNOWN_TYPE, False),
    ("server-only type", _pack({"type": "result", "job_id": "x"}), p.ErrorCode.UNKNOWN_TYPE, False),
    ("width is a string", _pack(_submit_wire(**{"image.width": "32"})), p.ErrorCode.INVALID_FIELD, True),
    ("height is a bool", _pack(_submit_wire(**{"image.height": True})), p.ErrorCode.INVALID_FIELD, True),
    ("negative width", _pack(_submit_wire(**{"image.width": -32})), p.ErrorCode.INVALID_FIELD, True),
    ("data is text", _pack(_submit_wire(**{"image.data": "AAAA"})), p.ErrorCode.INVALID_FIELD, True),
    ("params not a map", _pack(_submit_wire(params=[1])), p.ErrorCode.INVALID_FIELD, True),
    ("missing mask", _pack(_submit_wire(mask=DELETE)), p.ErrorCode.INVALID_FIELD, True),
    ("missing image data", _pack(_submit_wire(**{"image.data": DELETE})), p.ErrorCode.INVALID_FIELD, True),
    ("missing job id", _pack(_submit_wire(job_id=DELETE)), p.ErrorCode.INVALID_FIELD, False),
    ("job id with a path", _pack(_submit_wire(job_id="../../etc/passwd")), p.ErrorCode.INVALID_FIELD, False),
    (
        "NaN strength",
        _pack(_submit_wire(**{"params.strength": float("nan")})),
        p.ErrorCode.INVALID_FIELD,
        True,
    ),
    (
        "infinite guidance",
        _pack(_submit_wire(**{"params.guidance": float("inf")})),
        p.ErrorCode.INVALID_FIELD,
        True,
    ),
    ("negative steps", _pack(_submit_wire(**{"params.steps": -1})), p.ErrorCode.INVALID_FIELD, True),
    ("negative seed", _pack(_submit_wire(**{"params.seed": -5})), p.ErrorCode.INVALID_FIELD, True),
    (
        "unknown pixel format",
        _pack(_submit_wire(**{"image.format": "cmyk8"})),
        p.ErrorCode.INVALID_FIELD,
        True,
    ),
    (
        "image bytes one short",
        _pack(_submit_wire(**{"image.data": GOOD["image"]["data"][:-1]})),
        p.ErrorCode.SIZE_MISMATCH,
        True,
    ),
    (
        "mask bytes one extra",
        _pack(_submit_wire(**{"mask.data": GOOD["mask"]["data"] + b"\x00"})),
        p.ErrorCode.SIZE_MISMATCH,
        True,
    ),
    (
        "mask of another size",
        _pack(_submit_wire(mask={"width": 16, "height": 16, "data": bytes(256)})),
        p.ErrorCode.SIZE_MISMATCH,
        True,
    ),
    (
        # 8192x8192 claims 256 MiB but sends 4 bytes: refused on the numbers, nothing allocated
        "over the pixel limit",
        _pack(_submit_wire(image={"width": 8192, "height": 8192, "format": "rgba8", "data": b"abcd"})),
        p.ErrorCode.TOO_LARGE,
        True,
    ),
    ("over the side limit", _pack(_submit_wire(**{"image.width": 100_000})), p.ErrorCode.INVALID_FIELD, True),
    ("too many steps", _pack(_submit_wire(**{"params.steps": 10_000})), p.ErrorCode.INVALID_FIELD, True),
    ("prompt too long", _pack(_submit_wire(**{"params.prompt": "x" * 5000})), p.ErrorCode.TOO_LARGE, True),
    (
        "unknown model",
        _pack(_submit_wire(**{"params.model": "sd-ultra-9000"})),
        p.ErrorCode.UNKNOWN_MODEL,
        True,
    ),
    (
        "model given as a path",
        _pack(_submit_wire(**{"params.model": "/home/user/evil.safetensors"})),
        p.ErrorCode.UNKNOWN_MODEL,
        True,
    ),
    (
        "unknown scheduler",
        _pack(_submit_wire(**{"params.scheduler": "heun"})),
        p.ErrorCode.UNKNOWN_SCHEDULER,
        True,
    ),
    # The engine's command-line aliases are not wire names: only what welcome lists, exactly.
    (
        "scheduler in capitals",
        _pack(_submit_wire(**{"params.scheduler": "EULER"})),
        p.ErrorCode.UNKNOWN_SCHEDULER,
        True,
    ),
    (
        "scheduler with a space",
        _pack(_submit_wire(**{"params.scheduler": "euler "})),
        p.ErrorCode.UNKNOWN_SCHEDULER,
        True,
    ),
    (
        "scheduler the engine has but the daemon does not offer",
        _pack(_submit_wire(**{"params.scheduler": "unipc"})),
        p.ErrorCode.UNKNOWN_SCHEDULER,
        True,
    ),
    ("prompt is nil", _pack(_submit_wire(**{"params.prompt": None})), p.ErrorCode.INVALID_FIELD, True),
    ("image is an array", _pack(_submit_wire(image=[1, 2])), p.ErrorCode.INVALID_FIELD, True),
    ("nested too deeply", b"\x91" * 5000, p.ErrorCode.MALFORMED, False),
    ("truncated", _pack({"type": "get_status"})[:-3], p.ErrorCode.MALFORMED, False),
    ("cancel of an unknown job", _pack({"type": "cancel", "job_id": "nope"}), p.ErrorCode.UNKNOWN_JOB, True),
    ("second hello", p.encode(p.Hello(client="again")), p.ErrorCode.INVALID_FIELD, False),
]


@pytest.mark.parametrize(("payload", "code", "names_job"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_message_gets_its_error_and_the_connection_goes_on(
    daemon: Any, payload: bytes | str, code: p.ErrorCode, names_job: bool
) -> None:
    with RawClient(daemon.url) as client:
        client.send_raw(payload)
        error = client.recv()
        assert isinstance(error, p.Error), error
        assert error.code is code, error
        assert error.message and len(error.message) < 2000
        assert python_names_in(error.message) == [], error.message
        if names_job:
            assert error.job_id in ("bad-job", "nope")
        # The same connection still works: a good job runs to its result.
        result = client.run(make_submit("good"))
        assert isinstance(result, p.Result), result
        assert all(not isinstance(m, p.Error) for m in client.seen[2:]), (
            client.seen
        )  # welcome, error, then only good news


def test_error_texts_say_what_was_wrong(daemon: Any) -> None:
    with RawClient(daemon.url) as client:
        client.send_raw(_pack(_submit_wire(**{"image.data": GOOD["image"]["data"][:-1]})))
        assert "needs 3072 bytes, got 3071" in client.recv().message
        client.send_raw(_pack(_submit_wire(**{"params.model": "sd-ultra-9000"})))
        text = client.recv().message
        assert "sd-ultra-9000" in text and "builtin:tiny-sd15" in text  # names what exists
        client.send_raw(_pack(_submit_wire(**{"params.strength": float("nan")})))
        assert "strength" in client.recv().message
        client.send_raw(_pack(_submit_wire(**{"params.prompt": None})))
        assert "field 'prompt' must be a string, not nil" in client.recv().message
        client.send_raw(_pack({"type": "get_status"}) + b"\x00")
        assert "trailing byte" in client.recv().message


@pytest.mark.parametrize("name", ["EULER", "euler ", " euler", "Euler", "DDIM", "heun", "unipc", "x"])
def test_only_the_announced_scheduler_names_run(daemon: Any, engine: Any, name: str) -> None:
    with RawClient(daemon.url) as client:
        assert client.welcome is not None and client.welcome.schedulers == ["euler", "ddim"]
        client.send(make_submit("sched", scheduler=name))
        error = client.until_type(p.Error, "sched")
        assert error.code is p.ErrorCode.UNKNOWN_SCHEDULER, error
        assert "this daemon offers: euler, ddim" in error.message  # the names to use instead
        assert f"'{name}'" in error.message
        if name.strip().lower() in ("euler", "ddim"):
            assert f"did you mean '{name.strip().lower()}'" in error.message
        for good in client.welcome.schedulers:
            assert isinstance(client.run(make_submit(f"ok-{good}", scheduler=good)), p.Result)
    assert [c.params.scheduler for c in engine.calls] == ["euler", "ddim"]  # only the good ones ran


def test_hello_without_client_version_is_welcomed(daemon: Any) -> None:
    """`client_version` is optional (default ""): a hello of the protocol and client alone."""
    client = RawClient(daemon.url, hello=None)
    try:
        client.send_raw(_pack({"type": "hello", "protocol": p.PROTOCOL_VERSION, "client": "minimal"}))
        assert isinstance(client.recv(), p.Welcome)
        assert isinstance(client.run(make_submit("minimal")), p.Result)
    finally:
        client.close()


def test_duplicate_job_id_on_one_connection_but_not_across_connections(daemon: Any, engine: Any) -> None:
    import threading

    engine.hold = threading.Event()
    with RawClient(daemon.url) as first, RawClient(daemon.url) as second:
        first.send(make_submit("same"))
        first.until_type(p.Accepted, "same")
        first.send(make_submit("same"))
        error = first.until_type(p.Error, "same")
        assert error.code is p.ErrorCode.DUPLICATE_JOB
        second.send(make_submit("same"))  # job ids are per connection
        assert isinstance(second.until_type(p.Accepted, "same"), p.Accepted)
        engine.hold.set()
        assert isinstance(first.final("same"), p.Result)
        assert isinstance(second.final("same"), p.Result)


def _expect_refused_handshake(url: str, first: bytes, code: p.ErrorCode) -> p.Error:
    client = RawClient(url, hello=None)
    try:
        client.send_raw(first)
        error = client.recv()
        assert isinstance(error, p.Error) and error.code is code, error
        with pytest.raises(ConnectionClosed) as closed:
            client.ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        return error
    finally:
        client.close()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (p.encode(p.Hello(client="future", protocol=99)), p.ErrorCode.UNSUPPORTED_VERSION),
        (p.encode(make_submit("early")), p.ErrorCode.HANDSHAKE_REQUIRED),
        (p.encode(p.GetStatus()), p.ErrorCode.HANDSHAKE_REQUIRED),
        (b"\x00garbage", p.ErrorCode.MALFORMED),
        (_pack({"type": "hello", "protocol": "one", "client": "x"}), p.ErrorCode.INVALID_FIELD),
    ],
    ids=["wrong protocol version", "submit before hello", "status before hello", "garbage", "bad hello"],
)
def test_bad_handshake_gets_its_error_then_a_clean_close(
    daemon: Any, first: bytes, code: p.ErrorCode
) -> None:
    error = _expect_refused_handshake(daemon.url, first, code)
    if code is p.ErrorCode.UNSUPPORTED_VERSION:
        assert "1" in error.message and "99" in error.message
    assert_good_job(daemon.url)


def test_message_over_the_size_limit_is_refused_before_buffering(engine: Any, make_daemon: Any) -> None:
    limits = p.Limits(max_message_bytes=64 * 1024)
    daemon = make_daemon(engine, limits=limits)
    with RawClient(daemon.url) as client:
        assert client.welcome.limits.max_message_bytes == 64 * 1024  # announced to clients
        client.send_raw(b"\x00" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            client.recv()
        assert closed.value.rcvd.code == 1009  # "message too big", with the limit in the reason
        assert "65536" in closed.value.rcvd.reason
    assert_good_job(daemon.url)


def test_queries_are_answered(daemon: Any) -> None:
    with RawClient(daemon.url) as client:
        assert client.welcome.default_model == "builtin:tiny-sd15"
        assert "cancel" in client.welcome.capabilities and "preview" in client.welcome.capabilities
        assert client.welcome.schedulers == ["euler", "ddim"]
        client.send(p.ListModels())
        models = client.recv()
        assert [m.name for m in models.models] == ["builtin:tiny-sd15", "test:sdxl"]
        client.send(p.GetStatus())
        status = client.recv()
        worker = p.WorkerInfo("inpaint-worker", "cpu")
        assert status == p.Status(queued=0, running=False, loaded_model=None, device="cpu", workers=[worker])


def test_a_silent_connection_is_closed_after_the_handshake_time(engine: Any, make_daemon: Any) -> None:
    daemon = make_daemon(engine, handshake_timeout=0.3)
    client = RawClient(daemon.url, hello=None)
    try:
        error = client.recv()
        assert error.code is p.ErrorCode.HANDSHAKE_REQUIRED and "hello" in error.message
        with pytest.raises(ConnectionClosed):
            client.ws.recv(timeout=10)
    finally:
        client.close()
    assert_good_job(daemon.url)


def test_client_names_cannot_forge_log_lines(daemon: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="differential_inpaint.daemon")
    hello = p.Hello(client="krita\n12:00:00 INFO job x: done", client_version="1\r\n")
    with RawClient(daemon.url, hello=hello) as client:
        client.run(make_submit("named"))
    lines = [r.getMessage() for r in caplog.records if "connected" in r.getMessage()]
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    assert "krita?12:00:00 INFO job x: done 1??" in lines[-1]


def test_bad_messages_cannot_forge_log_lines(daemon: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="differential_inpaint.daemon")
    forged = "x\n12:00:00 INFO job y: done"
    with RawClient(daemon.url) as client:
        client.send_raw(_pack({"type": forged}))
        assert client.until_type(p.Error).code is p.ErrorCode.UNKNOWN_TYPE
        client.send_raw(_pack(_submit_wire(**{"image.format": forged})))
        assert client.until_type(p.Error, "bad-job").code is p.ErrorCode.INVALID_FIELD
    with RawClient(daemon.url, hello=None) as client:
        client.send_raw(_pack({"type": forged}))
        assert client.until_type(p.Error).code is p.ErrorCode.UNKNOWN_TYPE
    lines = [r.getMessage() for r in caplog.records if "bad message" in r.getMessage() or "refused" in r.msg]
    assert len(lines) == 3 and all("\n" not in line and "\r" not in line for line in lines)
    assert all("x?12:00:00 INFO job y: done" in line for line in lines)
