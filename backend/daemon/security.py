"""Who may talk to the daemon: browser origins, Host names (DNS rebinding), the token.

A web page in the user's browser can open ws://127.0.0.1:PORT (ComfyUI
CVE-2024-10481 and its `Origin: null` bypass; Ollama CVE-2024-28224, DNS
rebinding). Plugins are not browsers and send no Origin, so by default:

- any handshake carrying an Origin header is refused, `null` included, unless
  the origin was allowed with --allow-origin;
- on a loopback address the Host header must name loopback (`localhost`,
  127.0.0.0/8, ::1): a rebound DNS name is refused;
- off loopback a token is required in `hello` (generated, stored 0600 in the
  user's config folder, compared in constant time, never echoed or logged).

Everything here is pure policy, testable without a socket.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import os
import secrets
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

APP_DIR = "differential-inpaint"
TOKEN_FILE = "token"
TOKEN_BYTES = 32  # 256 bits, ~43 url-safe characters (hello.token allows 256)


def is_loopback_address(host: str) -> bool:
    """Is this bind address reachable only from this machine?"""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _host_name(header: str) -> str | None:
    """The name in a Host header (`name`, `name:port`, `[v6]:port`), or None if unreadable."""
    try:
        parts = urlsplit("//" + header.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts.hostname  # lower-cased, brackets removed


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


@dataclass(frozen=True)
class AccessPolicy:
    """The handshake checks; `check` returns why a request is refused, or None."""

    loopback_only: bool = True  # bound to a loopback address: Host must be loopback
    allowed_origins: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def create(cls, bind_host: str, allowed_origins: Iterable[str] = ()) -> AccessPolicy:
        return cls(
            loopback_only=is_loopback_address(bind_host),
            allowed_origins=frozenset(normalize_origin(o) for o in allowed_origins),
        )

    def check(self, origins: list[str], hosts: list[str]) -> str | None:
        """`origins`/`hosts`: every value of the request's Origin/Host headers."""
        if len(origins) > 1:
            return "Refused: more than one Origin header.\n"
        if origins:
            origin = normalize_origin(origins[0])
            if origin not in self.allowed_origins:
                shown = origins[0][:200]
                return (
                    f"Refused: connections from a web page (Origin: {shown}) are not allowed. "
                    "The Differential Inpaint daemon serves the Krita and GIMP plugins only; "
                    f"to allow this origin, restart it with --allow-origin {shown}\n"
                )
        if len(hosts) != 1:
            return "Refused: the request must carry exactly one Host header.\n"
        name = _host_name(hosts[0])
        if name is None:
            return "Refused: the Host header is not a valid host name.\n"
        if self.loopback_only and not is_loopback_address(name):
            # DNS rebinding: a page's own name now resolving to 127.0.0.1.
            return (
                f"Refused: Host '{name[:200]}' is not a loopback name. This daemon listens on "
                "loopback only; connect to ws://127.0.0.1 or ws://localhost.\n"
            )
        return None


# --- the token ------------------------------------------------------------------


def config_dir() -> Path:
    """The user's config folder for this program (not created)."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / APP_DIR
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / APP_DIR


def default_token_path() -> Path:
    return config_dir() / TOKEN_FILE


class TokenError(Exception):
    """The token file cannot be read or written; the message says what to do."""


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token stored at `path`, creating it (mode 0600) if missing; (token, created).

    Raises TokenError, whose message names the file and the reason (never the token), for
    every way the file can fail to be read or written: a folder in its place, no space left.
    """
    path = Path(path).expanduser()
    try:
        return _read_token(path), False
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TokenError(f"cannot create the folder of the token file {path}: {_reason(exc)}") from None
    try:
        # O_EXCL: never follow a planted link or overwrite a file another process made.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path), False  # another daemon created it just now
    except OSError as exc:
        raise TokenError(f"cannot create the token file {path}: {_reason(exc)}") from None
    try:
        try:
            _write_all(fd, (token + "\n").encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        # A half-written file would be refused at the next start: leave none behind.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise TokenError(f"cannot write the token file {path}: {_reason(exc)}") from None
    return token, True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # never for a file; do not spin if it happens
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[written:]


def _reason(exc: OSError) -> str:
    """What went wrong, without the path (the message names it once itself)."""
    return exc.strerror or type(exc).__name__


def _read_token(path: Path) -> str:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        advice = ""
        if isinstance(exc, IsADirectoryError):
            advice = "; it must be a file: remove that folder or give another --token-file"
        elif isinstance(exc, NotADirectoryError):
            advice = "; a part of that path is a file, not a folder: give another --token-file"
        raise TokenError(f"cannot read the token file {path}: {_reason(exc)}{advice}") from None
    except UnicodeDecodeError:
        raise TokenError(
            f"the token file {path} is not text; delete it to have a new one generated"
        ) from None
    if sys.platform != "win32" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        try:
            os.chmod(path, 0o600)  # others could read it: tighten, then go on
        except OSError:
            raise TokenError(
                f"the token file {path} is readable by other users and cannot be made private; "
                f"run: chmod 600 {path}"
            ) from None
    token = text.strip()
    if not token or len(token) > 256 or not token.isprintable() or any(c.isspace() for c in token):
        raise TokenError(
            f"the token file {path} must hold one token of 1-256 printable characters without "
            "spaces; delete it to have a new one generated"
        )
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the token."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
