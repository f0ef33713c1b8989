"""The blocking connection to the daemon both plugins share.

One job = connect, handshake, submit, follow progress and previews, honour
cancel, receive the result — and turn every failure into one `InpaintError`
whose message tells a painter what to do. Runs in a worker thread in Krita
and directly in GIMP's plug-in process; needs only the protocol package,
msgpack and websockets (pure-Python copies are fine).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from .. import protocol as p
from .errors import DaemonUnavailable, InpaintError, JobCancelled
from .version import VERSION


def _default_server() -> str:
    """ws://127.0.0.1:7865, or the address of the daemon whose start command install-plugin
    recorded beside this module (`launcher.RECORD_NAME`), which follows its `--port`."""
    from .launcher import recorded_server

    return recorded_server() or f"ws://127.0.0.1:{p.DEFAULT_PORT}"


DEFAULT_SERVER = _default_server()
START_HINT = (
    "Start it (in a terminal: `differential-inpaint serve`) and try again; if it runs, check the "
    "daemon address in the plugin's settings."
)
_POLL = 0.1  # seconds between checks of the cancel event while waiting


def normalize_server(address: str | None) -> str:
    """The daemon address as a websocket URL, from what a painter may type:
    "" (the default), "localhost:7865", "127.0.0.1:7865/", "http://host:7865"."""
    address = (address or "").strip().rstrip("/")
    if not address:
        return DEFAULT_SERVER
    scheme, sep, rest = address.partition("://")
    if not sep:
        return f"ws://{address}"
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower())
    return f"{scheme}://{rest}"


class DaemonConnection:
    """One handshaken connection to the daemon. Use as a context manager.

    `send` and `receive` carry messages; `session` (a `protocol.ClientSession`)
    holds the protocol's rules for what they mean.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        token: str | None = None,
        client: str = "differential-inpaint-client",
        client_version: str = VERSION,
        open_timeout: float = 10.0,
    ) -> None:
        server = self.server = normalize_server(server)
        self.session = p.ClientSession(client, client_version, token=token)
        try:
            self._ws: ClientConnection = connect(
                server,
                open_timeout=open_timeout,
                compression=None,  # pixels do not compress; deflate would cost ~20 MiB/s
                max_size=p.DEFAULT_LIMITS.max_message_bytes,
                close_timeout=2,
            )
        except InvalidURI:
            raise InpaintError(
                f"'{server}' is not a daemon address; use the form {DEFAULT_SERVER}", "protocol"
            ) from None
        except InvalidStatus as exc:
            raise DaemonUnavailable(_refusal(server, exc.response.status_code, exc.response.body)) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise DaemonUnavailable(
                f"The Differential Inpaint daemon is not running at {server} ({_why_unreachable(exc)}). "
                f"{START_HINT}"
            ) from None
        try:
            self.send(self.session.hello())
            reply = self.receive(timeout=open_timeout)
        except TimeoutError:
            self.close()
            raise DaemonUnavailable(
                f"The server at {server} accepted the connection but did not answer the "
                f"handshake within {open_timeout:g} s. Check that the address is the Differential "
                f"Inpaint daemon's ({DEFAULT_SERVER} by default) and that it is not stuck; "
                "restart it if needed."
            ) from None
        except BaseException:
            self.close()
            raise
        answer = self.session.receive(reply)
        if isinstance(answer, p.Error):
            self.close()
            raise InpaintError(_explain(answer), answer.code.value)
        if not isinstance(answer, p.Welcome):
            self.close()
            raise InpaintError(
                f"The daemon answered the handshake with '{reply.TYPE}'. Check that the address "
                "is the Differential Inpaint daemon's, and update the plugin and the daemon "
                "to the same release.",
                "protocol",
            )
        self.welcome: p.Welcome = answer

    def send(self, message: Any) -> None:
        # One websocket message in 2 MiB fragments, the pixels sliced out of the
        # caller's own bytes: nothing is copied to encode a big region.
        frames = p.fragments(p.encode_parts(message))
        try:
            # websockets sends any bytes-like object; its hints name only bytes.
            self._ws.send(frames[0] if len(frames) == 1 else frames)  # type: ignore[arg-type]
        except ConnectionClosed:
            raise _lost(self.server) from None

    def receive(self, timeout: float | None = None) -> Any:
        """The next server message; TimeoutError when none came within `timeout`."""
        try:
            data = self._ws.recv(timeout=timeout)
        except ConnectionClosed:
            raise _lost(self.server) from None
        try:
            return p.decode(data, p.DEFAULT_LIMITS, p.SERVER_MESSAGES)
        except p.ProtocolError as exc:
            raise InpaintError(
                f"The daemon sent a message this plugin cannot read: {exc.message}", "protocol"
            ) from None

    def close(self) -> None:
        self.session.close()
        self._ws.close()

    def __enter__(self) -> DaemonConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _why_unreachable(exc: BaseException) -> str:
    """A connection failure in words, never a Python class name."""
    if isinstance(exc, ConnectionRefusedError):
        return "nothing answers on that port"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, InvalidHandshake):
        return "something else answers on that port"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "the connection failed"


def _lost(server: str) -> InpaintError:
    return InpaintError(
        f"The connection to the daemon at {server} was lost; nothing was changed. "
        "Check the daemon's terminal for what happened, restart it if it stopped, and try again.",
        "connection_lost",
    )


def _refusal(server: str, status: int, body: bytes | None) -> str:
    """Why the websocket handshake was refused: the daemon says why in the body (an
    Origin or Host it does not accept, and what to connect to instead)."""
    text = bytes(body or b"")[:500].decode("utf-8", "replace")
    reason = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if reason:
        return f"The daemon at {server} refused the connection (HTTP {status}): {reason}"
    return (
        f"The server at {server} refused the connection (HTTP {status}). Check that the "
        f"address and port are the Differential Inpaint daemon's ({DEFAULT_SERVER} by default)."
    )


def _explain(error: p.Error) -> str:
    code = error.code
    if code is p.ErrorCode.UNSUPPORTED_VERSION:
        return (
            f"The daemon does not speak this plugin's protocol version {p.PROTOCOL_VERSION}: "
            f"{error.message}. Update the plugin and the daemon to the same release."
        )
    if code is p.ErrorCode.UNAUTHORIZED:
        return f"The daemon refused this plugin: {error.message}. Enter the token the daemon printed."
    if code is p.ErrorCode.UNKNOWN_MODEL:
        return f"{error.message}. Pick one of the models the daemon lists."
    if code is p.ErrorCode.OUT_OF_MEMORY:
        return f"{error.message}. Try a smaller selection, fewer other GPU programs, or a smaller model."
    if code in (p.ErrorCode.INVALID_FIELD, p.ErrorCode.UNKNOWN_SCHEDULER):
        return f"The daemon refused the job's settings ({error.message}). Change that setting and try again."
    if code in (p.ErrorCode.MALFORMED, p.ErrorCode.UNKNOWN_TYPE, p.ErrorCode.SIZE_MISMATCH):
        return (
            f"The daemon could not read this plugin's request ({error.message}). "
            "Update the plugin and the daemon to the same release."
        )
    return error.message


def server_info(server: str = DEFAULT_SERVER, *, token: str | None = None, timeout: float = 5.0) -> p.Welcome:
    """The daemon's `welcome`: its models, limits and schedulers."""
    with DaemonConnection(server, token=token, open_timeout=timeout) as conn:
        return conn.welcome


def run_job(
    submit: p.Submit,
    *,
    server: str = DEFAULT_SERVER,
    token: str | None = None,
    on_progress: Callable[[p.Progress], None] | None = None,
    on_preview: Callable[[p.Preview], None] | None = None,
    on_result: Callable[[p.Result | p.StrengthMap], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    client: str = "differential-inpaint-client",
) -> p.Result | p.StrengthMap:
    """Run one job to its end and return its last `result` (a `strength_map` request: its
    `map`); raise `InpaintError` otherwise.

    `on_result` gets every result as it arrives, the last included (a job of `count`
    or `fan` gives several). `cancel` may be set from another thread: the job is
    cancelled on the daemon and `JobCancelled` raised; results handed to `on_result`
    before stay valid. `timeout` bounds the whole job, in seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    job_id = submit.job_id
    with DaemonConnection(server, token=token, client=client) as conn:
        _check_fits(submit, conn.welcome.limits)
        conn.send(conn.session.submit(submit))
        while True:
            try:
                message = conn.receive(timeout=_POLL)
            except TimeoutError:
                message = None
            # Before reading the message: a result that crossed the cancel is not kept.
            if cancel is not None and cancel.is_set():
                request = conn.session.cancel(job_id)
                if request is not None:
                    conn.send(request)
                    # The daemon confirms within one sampling step; do not wait forever.
                    deadline = time.monotonic() + 30.0
            event = None if message is None else conn.session.receive(message)
            if isinstance(event, (p.Result, p.StrengthMap)):
                if on_result is not None:
                    on_result(event)
                if event.is_last:
                    return event
            if isinstance(event, p.Progress):
                if on_progress is not None:
                    on_progress(event)
            elif isinstance(event, p.Preview):
                if on_preview is not None:
                    on_preview(event)
            elif isinstance(event, p.Cancelled):
                raise JobCancelled()
            elif isinstance(event, p.Error):
                raise InpaintError(_explain(event), event.code.value)
            if deadline is not None and time.monotonic() > deadline:
                request = conn.session.cancel(job_id)
                if request is None:  # cancelled by the painter, unconfirmed for 30 s
                    raise JobCancelled()
                conn.send(request)
                raise InpaintError(
                    f"The job took longer than {timeout:g} s and was cancelled; nothing was changed.",
                    "timeout",
                )


def _check_fits(submit: p.Submit, limits: p.Limits) -> None:
    """Refuse locally what the daemon would refuse, before sending megabytes."""
    image = submit.image
    advice = "Select a smaller area and try again."
    if not limits.fits(image.width, image.height):
        raise InpaintError(
            f"The region is {image.width}x{image.height} pixels; the daemon takes at most "
            f"{limits.max_pixels} pixels and {limits.max_side} on a side. {advice}",
            p.ErrorCode.TOO_LARGE.value,
        )
    # Over this the daemon would close the connection unread; counting is free (no copy).
    size = sum(len(part) for part in p.encode_parts(submit))
    if size > limits.max_message_bytes:
        mib = 1024 * 1024
        raise InpaintError(
            f"This {image.width}x{image.height} {image.format.value} region makes a "
            f"{size / mib:.0f} MiB message; the daemon takes at most "
            f"{limits.max_message_bytes / mib:.0f} MiB. {advice} An 8-bit or 16-bit "
            "document needs less than a float one.",
            p.ErrorCode.TOO_LARGE.value,
        )
