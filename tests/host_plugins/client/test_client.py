"""The shared job client against scripted servers: every failure becomes one
InpaintError a painter can act on. (The real daemon is exercised end to end in
tests/backend/daemon and in the real-host plugin tests.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
from websockets.sync.server import ServerConnection, serve

from differential_inpaint import client as c
from differential_inpaint import protocol as p

Script = Callable[[ServerConnection], None]


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """A websocket server on an ephemeral loopback port that runs `script` per connection."""
    with serve(script, "127.0.0.1", 0, compression=None, max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        try:
            yield f"ws://{host}:{port}"
        finally:
            server.shutdown()
            thread.join(5)


def welcome(**limits: int) -> bytes:
    return p.encode(
        p.Welcome(
            server="scripted",
            server_version="0",
            models=[p.ModelInfo("m", "sd15")],
            default_model="m",
            limits=p.Limits(**limits),
        )
    )


def receive(ws: ServerConnection) -> object:
    return p.decode(ws.recv(), accept=p.CLIENT_MESSAGES)


def submit(width: int = 4, height: int = 4) -> p.Submit:
    return p.Submit(
        c.new_job_id(),
        p.Image(width, height, p.PixelFormat.RGBA8, bytes(width * height * 4)),
        p.Mask(width, height, b"\xff" * (width * height)),
        p.JobParams(prompt="x", steps=2),
        x=7,
        y=9,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_daemon_says_how_to_start_it() -> None:
    with pytest.raises(c.DaemonUnavailable) as err:
        c.run_job(submit(), server=f"ws://127.0.0.1:{free_port()}")
    assert "differential-inpaint serve" in err.value.message
    assert err.value.code == "daemon_unavailable"


def test_bad_address_is_explained() -> None:
    with pytest.raises(c.InpaintError) as err:
        c.server_info("ftp://example")
    assert "ws://127.0.0.1" in err.value.message


def test_full_job_with_progress_and_preview() -> None:
    def script(ws: ServerConnection) -> None:
        assert isinstance(receive(ws), p.Hello)
        ws.send(welcome())
        job = receive(ws)
        assert isinstance(job, p.Submit)
        ws.send(p.encode(p.Accepted(job.job_id, 0)))
        ws.send(p.encode(p.Progress("someone-elses-job", p.Stage.SAMPLING, 1, 2)))
        ws.send(p.encode(p.Progress(job.job_id, p.Stage.SAMPLING, 1, 2)))
        ws.send(p.encode(p.Preview(job.job_id, 1, p.Image(1, 1, p.PixelFormat.RGBA8, bytes(4)))))
        ws.send(p.encode(p.Result(job.job_id, job.image, job.x, job.y, seed=5)))

    progress: list[p.Progress] = []
    previews: list[p.Preview] = []
    job = submit()
    with scripted_server(script) as url:
        result = c.run_job(job, server=url, on_progress=progress.append, on_preview=previews.append)
    assert (result.x, result.y, result.seed) == (7, 9, 5)
    assert [(m.job_id, m.step) for m in progress] == [(job.job_id, 1)]
    assert len(previews) == 1


def test_big_submits_arrive_whole_in_fragments() -> None:
    got: list[int] = []

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        job = receive(ws)
        got.append(len(job.image.data))
        ws.send(p.encode(p.Error(p.ErrorCode.JOB_FAILED, "stop here", job.job_id)))

    with scripted_server(script) as url, pytest.raises(c.InpaintError):
        c.run_job(submit(1024, 1024), server=url)  # 4 MiB: sent as 2 MiB fragments
    assert got == [1024 * 1024 * 4]


def test_big_submits_go_out_as_one_message_of_bounded_fragments() -> None:
    frames: list[int] = []
    whole: list[bytes] = []

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        chunks = list(ws.recv_streaming())  # one message, fragment by fragment
        frames.extend(len(chunk) for chunk in chunks)
        whole.append(b"".join(chunks))
        job = p.decode(whole[0], accept=p.CLIENT_MESSAGES)
        ws.send(p.encode(p.Error(p.ErrorCode.JOB_FAILED, "stop here", job.job_id)))

    job = submit(1024, 1024)  # 4 MiB of pixels + 1 MiB of mask
    with scripted_server(script) as url, pytest.raises(c.InpaintError):
        c.run_job(job, server=url)
    assert whole == [p.encode(job)]
    assert len(frames) > 2 and max(frames) <= p.FRAGMENT_BYTES


def test_version_mismatch_is_explained() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(p.encode(p.Error(p.ErrorCode.UNSUPPORTED_VERSION, "this daemon speaks protocol 2")))

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.run_job(submit(), server=url)
    assert err.value.code == "unsupported_version"
    assert "same release" in err.value.message


def test_job_error_names_the_problem() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        job = receive(ws)
        ws.send(p.encode(p.Error(p.ErrorCode.UNKNOWN_MODEL, "no model 'zzz'", job.job_id)))

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.run_job(submit(), server=url)
    assert err.value.code == "unknown_model"
    assert "no model 'zzz'" in err.value.message


def test_connection_lost_mid_job() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        receive(ws)
        ws.close()

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.run_job(submit(), server=url)
    assert err.value.code == "connection_lost"
    assert "nothing was changed" in err.value.message


def test_too_large_is_refused_before_sending() -> None:
    sent: list[object] = []

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome(max_pixels=8))
        with suppress(Exception):
            sent.append(receive(ws))

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.run_job(submit(4, 4), server=url)
    assert err.value.code == "too_large"
    assert "Select a smaller area" in err.value.message
    assert sent == []


def test_cancel_is_sent_and_confirmed() -> None:
    cancel = threading.Event()
    seen: list[object] = []

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        job = receive(ws)
        ws.send(p.encode(p.Progress(job.job_id, p.Stage.SAMPLING, 1, 10)))
        message = receive(ws)
        seen.append(message)
        ws.send(p.encode(p.Cancelled(job.job_id)))

    with scripted_server(script) as url, pytest.raises(c.JobCancelled):
        c.run_job(submit(), server=url, on_progress=lambda _: cancel.set(), cancel=cancel)
    assert len(seen) == 1 and isinstance(seen[0], p.Cancel)


def test_a_result_that_crosses_the_cancel_is_not_returned() -> None:
    cancel = threading.Event()

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        job = receive(ws)
        ws.send(p.encode(p.Progress(job.job_id, p.Stage.SAMPLING, 10, 10)))
        assert isinstance(receive(ws), p.Cancel)
        ws.send(p.encode(p.Result(job.job_id, job.image, job.x, job.y, seed=1)))  # too late

    with scripted_server(script) as url, pytest.raises(c.JobCancelled):
        c.run_job(submit(), server=url, on_progress=lambda _: cancel.set(), cancel=cancel)


def test_timeout_cancels_the_job() -> None:
    seen: list[object] = []
    received = threading.Event()

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        receive(ws)
        seen.append(receive(ws))  # the client's cancel after its timeout
        received.set()

    with scripted_server(script) as url:
        with pytest.raises(c.InpaintError) as err:
            c.run_job(submit(), server=url, timeout=0.3)
        assert received.wait(5)
    assert err.value.code == "timeout"
    assert isinstance(seen[0], p.Cancel)


def test_garbage_from_the_server_is_a_clear_error() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(b"\xc1garbage")

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.server_info(url)
    assert err.value.code == "protocol"


def test_an_error_naming_no_job_fails_the_job_at_once() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())
        receive(ws)
        ws.send(p.encode(p.Error(p.ErrorCode.MALFORMED, "the daemon could not read that")))
        ws.recv()  # keep the connection open: only the error may end the job

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.run_job(submit(), server=url, timeout=30)
    assert err.value.code == "malformed"


def test_a_message_over_the_daemons_size_limit_is_refused_before_sending() -> None:
    sent: list[object] = []

    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome(max_message_bytes=10_000))  # the pixels fit; the message does not
        with suppress(Exception):
            sent.append(receive(ws))

    with scripted_server(script) as url, pytest.raises(c.InpaintError) as err:
        c.run_job(submit(64, 64), server=url)
    assert err.value.code == "too_large"
    assert "64x64 rgba8 region" in err.value.message and "Select a smaller area" in err.value.message
    assert sent == []


def test_a_server_that_never_answers_hello_is_a_clear_error() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        with suppress(Exception):
            ws.recv(timeout=5)  # say nothing until the client gives up

    with scripted_server(script) as url, pytest.raises(c.DaemonUnavailable) as err:
        c.DaemonConnection(url, open_timeout=0.3)
    assert "did not answer the handshake within 0.3 s" in err.value.message
    assert err.value.code == "daemon_unavailable"


def test_a_refused_handshake_passes_on_the_daemons_reason() -> None:
    reason = "Refused: Host 'my-pc' is not a loopback name. Connect to ws://127.0.0.1.\n"

    def refuse(connection: ServerConnection, request: object) -> object:
        return connection.respond(403, reason)

    with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        with pytest.raises(c.DaemonUnavailable) as err:
            c.server_info(f"ws://127.0.0.1:{port}")
        server.shutdown()
        thread.join(5)
    assert err.value.message.endswith("(HTTP 403): " + reason.strip())


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("", c.DEFAULT_SERVER),
        ("  ", c.DEFAULT_SERVER),
        ("localhost:7865", "ws://localhost:7865"),
        ("127.0.0.1:7865/", "ws://127.0.0.1:7865"),
        ("http://127.0.0.1:7865", "ws://127.0.0.1:7865"),
        ("HTTPS://gpu-box:7865/", "wss://gpu-box:7865"),
        ("ws://[::1]:7865", "ws://[::1]:7865"),
    ],
)
def test_addresses_as_painters_type_them(typed: str, url: str) -> None:
    assert c.normalize_server(typed) == url


def test_a_typed_address_without_scheme_reaches_the_daemon() -> None:
    def script(ws: ServerConnection) -> None:
        receive(ws)
        ws.send(welcome())

    with scripted_server(script) as url:
        assert c.server_info(url.removeprefix("ws://") + "/").server == "scripted"


def test_layer_names() -> None:
    assert c.layer_name("  a red\n fox ") == "a red fox"
    assert c.layer_name("") == "Differential Inpaint"
    long = c.layer_name("word " * 40)
    assert len(long) == 60 and long.endswith("\u2026")
