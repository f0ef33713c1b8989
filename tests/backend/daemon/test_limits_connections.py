"""What one peer can hold and what it can make the daemon log.

A message must arrive whole within `message_timeout` of its first frame; open
connections are capped per client address and in total (HTTP 503 past either,
while the open ones go on); a plain HTTP request gets 426 and one log line a
minute per address; a broken opening handshake is one log line, never a
traceback. Small limits keep every test to a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from differential_inpaint import protocol as p
from differential_inpaint.client import DaemonConnection, DaemonUnavailable

from .conftest import TIMEOUT, RawClient, assert_good_job, make_submit, raw_handshake

# --- helpers -------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _host_header(daemon: Any) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{daemon.port}"}


def _exchange(port: int, data: bytes, *, source: str | None = None, hang_up: bool = False) -> bytes:
    """Send raw bytes (then half-close if `hang_up`) and read what comes back until the
    daemon closes."""
    options: dict[str, Any] = {"source_address": (source, 0)} if source else {}
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, **options) as sock:
        if data:
            sock.sendall(data)
        if hang_up:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):  # an aborted socket reads as a reset
            while chunk := sock.recv(4096):
                received += chunk
        return received


def _plain_get(daemon: Any) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/", timeout=TIMEOUT) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _slow_fragments(data: bytes, pause: float) -> Iterator[bytes]:
    """One message, a byte a fragment, `pause` seconds apart."""
    for i in range(len(data)):
        if i:
            time.sleep(pause)
        yield data[i : i + 1]


def _client_from(daemon: Any, source: str) -> RawClient:
    """A handshaken client whose socket comes from another loopback address (Linux routes
    all of 127.0.0.0/8 to lo); skips where the system does not."""
    try:
        sock = socket.create_connection(
            ("127.0.0.1", daemon.port), timeout=TIMEOUT, source_address=(source, 0)
        )
    except OSError as exc:
        pytest.skip(f"cannot connect from {source}: {exc}")
    return RawClient(daemon.url, sock=sock)


def _problems(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records with a traceback, or at ERROR and above."""
    return [r for r in caplog.records if r.exc_info or r.exc_text or r.levelno >= logging.ERROR]


# --- an unfinished message ------------------------------------------------------------


def test_a_message_that_arrives_too_slowly_closes_its_connection(engine: Any, make_daemon: Any) -> None:
    daemon = make_daemon(engine, message_timeout=0.5)
    with RawClient(daemon.url) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            # 1-byte fragments every 0.1 s, for at most 10 s: closed after about 0.5 s.
            client.ws.send(_slow_fragments(bytes(100), 0.1))
        assert time.monotonic() - started < 5.0
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert "took too long" in closed.value.rcvd.reason and "0.5 s" in closed.value.rcvd.reason
    assert_good_job(daemon.url)


def test_the_time_limit_is_per_message(engine: Any, make_daemon: Any) -> None:
    daemon = make_daemon(engine, message_timeout=2.0)
    status = p.encode(p.GetStatus())
    with RawClient(daemon.url) as client:
        # Several slow messages in a row, each well within the limit, all of them over it.
        for _ in range(4):
            client.ws.send(_slow_fragments(status, 0.5 / len(status)))
            assert isinstance(client.recv(), p.Status)
        # A big message in many fragments, as the plugins send them (smaller, here).
        submit = make_submit("big", 512, 384)
        frames = p.fragments(p.encode_parts(submit), 16 * 1024)
        assert len(frames) > 40
        client.ws.send(frames)  # type: ignore[arg-type]  # bytes-like fragments
        result = client.final("big")
        assert isinstance(result, p.Result), result


# --- connection caps ------------------------------------------------------------------


def test_connections_past_the_per_address_cap_are_refused_while_open_ones_go_on(
    engine: Any, make_daemon: Any
) -> None:
    daemon = make_daemon(engine, max_connections_per_address=3, max_connections=10)
    clients = [RawClient(daemon.url) for _ in range(3)]
    try:
        status, body = raw_handshake(daemon.port, _host_header(daemon))
        assert status == 503
        assert "3 connections from 127.0.0.1" in body and "--max-connections-per-address" in body
        with pytest.raises(DaemonUnavailable) as refused:  # what a plugin shows
            DaemonConnection(daemon.url)
        assert (
            "HTTP 503" in refused.value.message and "--max-connections-per-address" in refused.value.message
        )
        # The open connections are served as before.
        result = clients[0].run(make_submit("still-served"))
        assert isinstance(result, p.Result), result
    finally:
        for client in clients:
            client.close()
    # Closed connections no longer count.
    assert _wait_for(lambda: raw_handshake(daemon.port, _host_header(daemon))[0] == 101)
    assert_good_job(daemon.url)


def test_the_total_cap_counts_every_address(engine: Any, make_daemon: Any) -> None:
    daemon = make_daemon(engine, max_connections_per_address=2, max_connections=3)
    clients = [RawClient(daemon.url) for _ in range(2)]
    try:
        assert raw_handshake(daemon.port, _host_header(daemon))[0] == 503  # 127.0.0.1 is at its cap
        clients.append(_client_from(daemon, "127.0.0.2"))  # another address is not
        # A new address, but the total is reached.
        answer = _exchange(daemon.port, _handshake_bytes(daemon), source="127.0.0.3").decode()
        assert answer.startswith("HTTP/1.1 503")
        assert "3 connections are already open" in answer and "(--max-connections)" in answer
        result = clients[2].run(make_submit("from-127.0.0.2"))
        assert isinstance(result, p.Result), result
    finally:
        for client in clients:
            client.close()
    assert _wait_for(lambda: raw_handshake(daemon.port, _host_header(daemon))[0] == 101)


def test_a_handshake_that_fails_after_the_check_frees_its_place(
    engine: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    daemon = make_daemon(engine, max_connections_per_address=2)
    no_key = _handshake_bytes(daemon).replace(b"Sec-WebSocket-Key", b"X-Key")
    for _ in range(5):  # counted by the check, then refused by websockets (400)
        assert _exchange(daemon.port, no_key).startswith(b"HTTP/1.1 400")
    for _ in range(5):  # counted, then gone before the answer
        _exchange(daemon.port, _handshake_bytes(daemon), hang_up=True)
    with RawClient(daemon.url), RawClient(daemon.url):
        pass  # both places are free
    assert not _problems(caplog), [(r.levelname, r.getMessage()) for r in _problems(caplog)]


def _handshake_bytes(daemon: Any) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# --- plain HTTP and broken handshakes in the log -------------------------------------

_UPGRADE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


def test_a_plain_http_get_gets_426_and_one_log_line_a_minute(
    daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):
        status, body = _plain_get(daemon)
        assert status == 426
        assert "Differential Inpaint daemon's websocket port" in body
    lines = [r.getMessage() for r in caplog.records if "plain HTTP request" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0] and "426" in lines[0]
    assert not _problems(caplog), _problems(caplog)
    assert_good_job(daemon.url)


@pytest.mark.parametrize(
    ("data", "hang_up"),
    [
        (b"\x00\x01\x02 garbage \xff\xfe\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: 127", True),  # truncated
        (b"", True),  # connects and hangs up
        (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", False),
        (_UPGRADE + b"\r\n", False),  # no Sec-WebSocket-Key: websockets answers 400
    ],
    ids=["garbage", "truncated", "nothing", "post", "no key"],
)
def test_a_broken_handshake_is_one_log_line_without_traceback(
    engine: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture, data: bytes, hang_up: bool
) -> None:
    caplog.set_level(logging.INFO)
    daemon = make_daemon(engine)

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if "opening handshake" in r.getMessage()]

    for _ in range(3):
        _exchange(daemon.port, data, hang_up=hang_up)
    assert _wait_for(lambda: len(failures()) >= 1)
    time.sleep(0.2)  # let any further line arrive
    assert len(failures()) == 1, failures()
    assert "from 127.0.0.1 failed" in failures()[0] and "\n" not in failures()[0]
    assert not _problems(caplog), [(r.levelname, r.getMessage()) for r in _problems(caplog)]
    assert_good_job(daemon.url)
