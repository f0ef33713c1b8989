"""Origin and Host checks (HTTP 403 on the real server), the token policy and its file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon import security
from differential_inpaint.backend.daemon.cli import needs_token
from differential_inpaint.backend.daemon.security import AccessPolicy
from differential_inpaint.client import DaemonConnection, InpaintError

from .conftest import RawClient, assert_good_job, raw_handshake


def _host(daemon: Any) -> str:
    return f"127.0.0.1:{daemon.port}"


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "https://localhost:3000", "http://127.0.0.1:8188", "file://"],
)
def test_browser_origins_are_refused_with_403(daemon: Any, origin: str) -> None:
    status, body = raw_handshake(daemon.port, {"Host": _host(daemon), "Origin": origin})
    assert status == 403
    assert "--allow-origin" in body and "web page" in body
    assert_good_job(daemon.url)  # and nothing else is affected


def test_no_origin_and_a_loopback_host_is_accepted(daemon: Any) -> None:
    for host in (_host(daemon), f"localhost:{daemon.port}", "127.0.0.1", "[::1]:7865", "LOCALHOST"):
        status, _ = raw_handshake(daemon.port, {"Host": host})
        assert status == 101, host


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:7865",
        "127.0.0.1.nip.io",
        "192.168.1.20:7865",
        "localhost.evil.example",
        "",
    ],
)
def test_non_loopback_host_is_refused_on_loopback_dns_rebinding(daemon: Any, host: str) -> None:
    status, body = raw_handshake(daemon.port, {"Host": host})
    assert status == 403
    assert "Host" in body


def test_two_host_or_origin_headers_are_refused(daemon: Any) -> None:
    two_hosts = [("Host", _host(daemon)), ("Host", "evil.example")]
    assert raw_handshake(daemon.port, two_hosts)[0] == 403
    allowed_twice = [("Host", _host(daemon)), ("Origin", "null"), ("Origin", "null")]
    assert raw_handshake(daemon.port, allowed_twice)[0] == 403


def test_an_allowed_origin_connects(engine: Any, make_daemon: Any) -> None:
    daemon = make_daemon(engine, allowed_origins=["http://localhost:3000/"])
    assert raw_handshake(daemon.port, {"Host": _host(daemon), "Origin": "http://LOCALHOST:3000"})[0] == 101
    assert raw_handshake(daemon.port, {"Host": _host(daemon), "Origin": "http://localhost:3001"})[0] == 403
    assert raw_handshake(daemon.port, {"Host": _host(daemon), "Origin": "null"})[0] == 403
    with RawClient(daemon.url, origin="http://localhost:3000") as client:
        assert client.welcome is not None


def test_the_plugins_client_passes_the_checks(daemon: Any) -> None:
    # It sends no Origin and the Host of the URL it is given.
    for url in (daemon.url, f"ws://localhost:{daemon.port}"):
        with DaemonConnection(url) as conn:
            assert conn.welcome.server == "differential-inpaint"


# --- the policy, unit by unit ---------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "required"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.20", True),
        ("10.0.0.5", True),
        ("my-workstation.local", True),
    ],
)
def test_a_token_is_required_off_loopback(bind: str, required: bool) -> None:
    assert needs_token(bind, token_file=None) is required
    assert needs_token(bind, token_file=Path("t")) is True  # an explicit token file always requires it


def test_off_loopback_the_host_header_may_be_any_name_the_token_guards() -> None:
    policy = AccessPolicy.create("0.0.0.0")
    assert policy.check([], ["192.168.1.20:7865"]) is None
    assert policy.check([], ["workstation.local"]) is None
    assert policy.check(["http://evil.example"], ["workstation.local"]) is not None  # Origin still checked


def test_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "differential-inpaint" / "token"
    token, created = security.load_or_create_token(path)
    assert created and len(token) >= 40 and token.isprintable()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again, created_again = security.load_or_create_token(path)
    assert (again, created_again) == (token, False)


def test_token_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")
    os.chmod(path, 0o644)
    assert security.load_or_create_token(path) == ("s3cret-token", False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["", "   \n", "two words", "x" * 300])
def test_unusable_token_file_is_refused_with_advice(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(security.TokenError, match="delete it"):
        security.load_or_create_token(path)


def test_default_token_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert security.default_token_path() == tmp_path / "differential-inpaint" / "token"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert security.default_token_path() == Path.home() / ".config" / "differential-inpaint" / "token"


def test_token_comparison() -> None:
    assert security.token_matches("abc", "abc")
    assert not security.token_matches("abc", "abd")
    assert not security.token_matches("abc", None)
    assert not security.token_matches("abc", "")
    assert not security.token_matches("abc", "abcd")
    assert not security.token_matches("ä", "a")


# --- the token in the handshake (real server) -------------------------------------------


def test_hello_must_carry_the_right_token(engine: Any, make_daemon: Any) -> None:
    daemon = make_daemon(engine, token="the-right-token")
    for token, expected in ((None, "requires"), ("wrong", "does not match")):
        with pytest.raises(InpaintError) as refused:
            DaemonConnection(daemon.url, token=token)
        assert refused.value.code == p.ErrorCode.UNAUTHORIZED.value
        assert expected in refused.value.message
        assert "the-right-token" not in refused.value.message  # never echoed
    with DaemonConnection(daemon.url, token="the-right-token") as conn:
        assert conn.welcome.models
    with RawClient(daemon.url, hello=p.Hello(client="raw", token="the-right-token")) as client:
        result = client.run(_good_submit())
        assert isinstance(result, p.Result)


def _good_submit() -> p.Submit:
    from .conftest import make_submit

    return make_submit("with-token")
