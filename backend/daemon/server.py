"""The websocket side of the daemon: connections, security, dispatch.

Each connection is a `Session` with two tasks: the handler reading client
messages and a sender draining the session's outbox. The protocol's rules
(the handshake, job ids, cancels, one last word per job) are the session's
`protocol.ServerSession`; this module does the I/O and runs what it asks.
Messages that matter (accepted, progress, result, cancelled, error) go out in
order; previews go through a one-slot "latest" box the sender empties only
when nothing else waits, so a slow client gets fewer, fresher previews and
never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

from ...protocol import (
    CLIENT_MESSAGES,
    PROTOCOL_VERSION,
    Cancel,
    Error,
    ErrorCode,
    GetStatus,
    Hello,
    Limits,
    ListModels,
    Models,
    ProtocolError,
    ServerSession,
    Status,
    Submit,
    Welcome,
    decode,
)
from .. import __version__
from ..engine.errors import InvalidRequest
from ..engine.schedulers import SCHEDULERS, check_scheduler_name
from . import jobs as jobs_module
from .jobs import Frames, Job, JobQueue, JobRunner, Refused, ThreadWorker, Worker, wire_frames
from .models import ModelCatalog
from .security import AccessPolicy, token_matches
from .workers import WorkerSupervisor

log = logging.getLogger("differential_inpaint.daemon")

SERVER_NAME = "differential-inpaint"
CAPABILITIES = ["preview", "cancel", "status", "list_models", "linear_color"]
HANDSHAKE_TIMEOUT = 30.0  # seconds a connection may sit without saying hello
_DECODE_OFF_LOOP = 8 * 1024 * 1024  # decode bigger messages in a thread
# Messages waiting for one client before the daemon stops reading its requests: far
# above what a job sends (one progress a step), low enough to bound a flood's memory.
BACKLOG_LIMIT = 256
# Seconds from a message's first frame to its last. The largest message
# (limits.max_message_bytes, ~273 MiB) needs ~37 Mbit/s to fit; loopback is far faster.
MESSAGE_TIMEOUT = 60.0
# Open connections: the plugins open one per job (plus a docker's), so 32 per address
# is far above real use; every local process shares 127.0.0.1.
MAX_CONNECTIONS_PER_ADDRESS = 32
MAX_CONNECTIONS = 256
LOG_EVERY = 60.0  # seconds: one line per address for refusals anyone can repeat at will
IDLE_POLL = 1.0  # seconds between the idle watcher's looks, at most (ServerConfig.idle_exit)
NOT_A_WEBSOCKET = (
    "This is the Differential Inpaint daemon's websocket port: the Krita and GIMP plugins "
    "connect here with ws://. There is nothing to see with a web browser.\n"
)


class Session:
    """One client connection: its protocol state, its jobs and its outbox."""

    def __init__(
        self, ws: ServerConnection, serial: int, token_ok: Callable[[str], bool] | None = None
    ) -> None:
        self.ws = ws
        self.serial = serial
        remote = ws.remote_address
        self.address = f"{remote[0]}:{remote[1]}" if remote else "?"
        self.name = f"client #{serial} {self.address}"
        self.protocol = ServerSession(token_ok)
        self.jobs: dict[str, Job] = {}  # the queue's jobs of this connection, by id
        self.closed = False
        self._outbox: deque[Frames] = deque()
        self._preview: tuple[Job, Frames] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writable = asyncio.Event()  # the backlog is below BACKLOG_LIMIT
        self._writable.set()

    # --- called by the handler and the job queue (loop thread) ---

    def send(self, message: Any) -> None:
        if self.protocol.outgoing(message):
            self.send_frames(wire_frames(message))

    def send_frames(self, frames: Frames) -> None:
        if self.closed:
            return
        self._outbox.append(frames)
        if len(self._outbox) >= BACKLOG_LIMIT:
            self._writable.clear()
        self._idle.clear()
        self._wake.set()

    def offer_preview(self, job: Job, frames: Frames) -> None:
        if self.closed or job.state != jobs_module.RUNNING:
            return
        self._preview = (job, frames)  # latest wins: an unsent older one is dropped
        self._idle.clear()
        self._wake.set()

    def preview_busy(self) -> bool:
        # Read from the worker thread as a hint: one attribute read is atomic.
        return self._preview is not None

    def forget(self, job: Job) -> None:
        if self.jobs.get(job.job_id) is job:
            del self.jobs[job.job_id]
            self.protocol.job_ended(job.job_id, job.outcome)
        if self._preview is not None and self._preview[0] is job:
            self._preview = None  # never a preview after the job's last word

    # --- the sender task ---

    async def run_sender(self) -> None:
        try:
            while True:
                if self._outbox:
                    frames = self._outbox.popleft()
                    if len(self._outbox) < BACKLOG_LIMIT // 2:
                        self._writable.set()
                elif self._preview is not None:
                    job, frames = self._preview
                    self._preview = None
                    if job.state != jobs_module.RUNNING:
                        continue
                else:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # Returns once the data is in the socket buffer below the high-water
                # mark; meanwhile new previews replace each other in the slot.
                # websockets sends any bytes-like object; its hints name only bytes.
                await self.ws.send(frames[0] if len(frames) == 1 else frames)  # type: ignore[arg-type]
        except ConnectionClosed:
            pass
        except Exception:  # a bug: close, rather than leave the client waiting for replies
            log.exception("%s: internal error while sending; closing this connection", self.name)
            with contextlib.suppress(Exception):
                await self.ws.close(1011, "internal error")
        finally:
            self.closed = True
            self._idle.set()
            self._writable.set()

    async def writable(self) -> None:
        """Back-pressure for a client that sends requests faster than it reads the
        replies: its requests wait, in its socket, until its backlog here shrinks."""
        await self._writable.wait()

    async def flush(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


class _LogLimit:
    """Which refusals to log: one line per kind and address every LOG_EVERY seconds,
    so that a process repeating a bad request cannot fill the log."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, kind: str, address: str) -> bool:
        now = time.monotonic()
        if len(self._last) > 4096:  # many addresses: forget the expired ones (all, if need be)
            self._last = {k: t for k, t in self._last.items() if now - t < self.every}
            if len(self._last) > 4096:
                self._last.clear()
        last = self._last.get((kind, address))
        if last is not None and now - last < self.every:
            return False
        self._last[(kind, address)] = now
        return True


class _HandshakeLog(logging.LoggerAdapter):
    """websockets' logger for one connection, with its failed opening handshakes in one line.

    websockets logs "opening handshake failed" at ERROR with a traceback for anything a
    peer can do (send garbage or a bad header, hang up before the answer): here that is
    one INFO line of the daemon's log with the reason, once per address a minute (so a
    client speaking something else to this port shows there). Any other exception (a
    bug in `_check_request`, say) keeps its traceback.
    """

    def __init__(self, logger: Any, connection: ServerConnection, limit: _LogLimit) -> None:
        super().__init__(logger, {})
        self.connection = connection
        self.limit = limit

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        failure = sys.exc_info()[1]
        if msg == "opening handshake failed" and isinstance(failure, (InvalidHandshake, ConnectionClosed)):
            address = _host(self.connection)
            if self.limit.allow("handshake", address):
                log.info(
                    "opening handshake from %s failed: %s (more from this address are not logged "
                    "for a minute)",
                    address,
                    _printable(_reasons(failure), 300),
                )
            return
        self.logger.log(level, msg, *args, **kwargs)


class _Connection(ServerConnection):
    """websockets' server connection with a deadline on every fragmented message.

    A client that sends a message in tiny continuation frames, answering pings in
    between, would otherwise hold its connection and its half-message forever. The
    sans-I/O protocol hands each parsed frame to `process_event`: a message's first
    frame (text or binary, not final) starts a timer, its final continuation frame
    stops it; when the timer fires first, the connection fails with 1008. A single
    frame needs no timer: no pong can come in the middle of one, so keepalive (a ping
    unanswered for 20 s) ends a frame that stalls. The time also runs while the daemon
    itself is not reading (decoding the previous message, or waiting for a client that
    does not read its replies): seconds, far below the limit.

    `DaemonServer.start` makes a subclass that sets the class attributes.
    """

    message_timeout: float = MESSAGE_TIMEOUT
    log_limit: _LogLimit = _LogLimit()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _HandshakeLog(self.logger, self, self.log_limit)
        self._message_timer: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):
            if event.opcode in (Opcode.TEXT, Opcode.BINARY) and not event.fin:
                self._message_timer = self.loop.call_later(self.message_timeout, self._message_too_slow)
            elif event.opcode is Opcode.CONT and event.fin and self._message_timer is not None:
                self._message_timer.cancel()
                self._message_timer = None
        super().process_event(event)

    def _message_too_slow(self) -> None:
        self._message_timer = None
        log.info(
            "%s: a message was still incomplete %g s after its first frame; closing the connection",
            _address(self),
            self.message_timeout,
        )
        reason = f"message took too long: not complete {self.message_timeout:g} s after its first frame"
        self._closer = self.loop.create_task(self._fail(reason))

    async def _fail(self, reason: str) -> None:
        # As websockets' own keepalive timeout does: a close frame, then the TCP close
        # (the socket is dropped if the peer does not close within close_timeout).
        with contextlib.suppress(ConnectionClosed):
            async with self.send_context():
                self.protocol.fail(1008, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None
        super().connection_lost(exc)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    limits: Limits = field(default_factory=Limits)
    allowed_origins: Sequence[str] = ()
    token: str | None = None  # required in hello when set
    preview_interval: float = 0.5
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    shutdown_grace: float = 30.0
    # Pixels waiting in the queue, all clients together: each submit may be hundreds
    # of MiB, and the plugins open one connection per job, so a per-connection cap
    # would not bound memory.
    max_queued_bytes: int = 2 * 1024**3
    # A whole message must arrive within this many seconds of its first frame.
    message_timeout: float = MESSAGE_TIMEOUT
    # Open connections from one client address, and from all together; more are
    # refused at the handshake (HTTP 503) while the open ones go on.
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    max_connections: int = MAX_CONNECTIONS
    # Seconds without a connected client and without a job (queued or running) after which
    # the daemon stops by itself (`serve_until` shuts it down as on SIGTERM); 0: never.
    idle_exit: float = 0.0


class DaemonServer:
    """The daemon: start(), then wait; shutdown() cancels jobs, tells clients, closes."""

    def __init__(
        self,
        engine: Any,
        catalog: ModelCatalog,
        config: ServerConfig,
        *,
        supervisor: WorkerSupervisor | None = None,
        **runner_options: Any,
    ) -> None:
        """`engine` runs the jobs in a thread of this process; with a `supervisor`, the workers
        it starts (other devices' processes, cluster actors) run them, and `engine` only names
        the models and schedulers."""
        self.engine = engine
        self.catalog = catalog
        self.config = config
        self.supervisor = supervisor
        self.policy = AccessPolicy.create(config.host, config.allowed_origins)
        self.schedulers: list[str] = list(getattr(engine, "schedulers", None) or SCHEDULERS)
        self._runner_options = runner_options
        self._sessions: set[Session] = set()
        self._serial = 0
        self._connections: dict[str, int] = {}  # open connections by client address
        self._connection_count = 0
        self._log_limit = _LogLimit()
        self._server: Server | None = None
        self.jobs: JobQueue | None = None
        self.port = 0
        # Set while the daemon has been idle for config.idle_exit seconds (see `_watch_idle`).
        self.idle = asyncio.Event()
        self._idle_since: float | None = None  # when the watcher first saw it idle; None: busy
        self._idle_watcher: asyncio.Task[None] | None = None

    @property
    def device(self) -> str:
        """What runs the jobs, for `welcome` and `status`: the device, or the workers' devices."""
        if self.supervisor is None or self.jobs is None:
            return str(getattr(self.engine, "device", "") or "")
        devices = [worker.device for worker in self.jobs.workers]
        return f"{len(devices)} workers: {', '.join(devices)}" if len(devices) != 1 else devices[0]

    # --- lifecycle ---

    async def start(self) -> int:
        """Bind and start serving; returns the real port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        workers: list[Worker] = []
        if self.supervisor is None:
            runner = JobRunner(
                self.engine,
                loop.call_soon_threadsafe,
                preview_interval=self.config.preview_interval,
                **self._runner_options,
            )
            workers.append(ThreadWorker(runner))
        self.jobs = JobQueue(workers, self.config.limits.max_queued_jobs, self.config.max_queued_bytes)
        if self.supervisor is not None:
            await self.supervisor.start(self.jobs)  # WorkerStartError: no worker could start
        self.jobs.start()
        try:
            self._server = await self._listen()
        except BaseException:
            await self._stop_workers()
            raise
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        if self.config.idle_exit > 0:
            log.info(
                "stops by itself after %g s with no client connected and no job (--idle-exit)",
                self.config.idle_exit,
            )
            self._idle_watcher = loop.create_task(
                self._watch_idle(self.config.idle_exit), name="idle-watcher"
            )
        return self.port

    async def _listen(self) -> Server:
        class Connection(_Connection):
            message_timeout = self.config.message_timeout
            log_limit = self._log_limit

        return await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._check_request,
            compression=None,  # pixels do not compress; deflate would cost ~20 MiB/s
            # Refused before buffering: the frame header announces the size.
            max_size=self.config.limits.max_message_bytes,
            max_queue=4,  # bounded read-ahead of big messages per connection
            server_header=f"{SERVER_NAME}/{__version__}",
            create_connection=Connection,
        )

    async def _stop_workers(self) -> None:
        """The workers' processes and actors, when the daemon cannot start after all."""
        if self.supervisor is not None:
            await self.supervisor.close()
        if self.jobs is not None:
            await asyncio.gather(*(worker.close() for worker in self.jobs.workers), return_exceptions=True)

    async def shutdown(self) -> None:
        if self._server is None:
            return
        log.info("shutting down")
        self._server.close(close_connections=False)  # stop accepting first
        if self._idle_watcher is not None:
            self._idle_watcher.cancel()
            self._idle_watcher = None
        if self.supervisor is not None:
            await self.supervisor.close()  # no worker starts any more
        if self.jobs is not None:
            await self.jobs.shutdown(self.config.shutdown_grace)
        # Let the last words (the stopped job's error) reach their clients.
        await asyncio.gather(*(s.flush(5.0) for s in list(self._sessions)))
        # All at once: a client that stopped reading costs the 5 s once, not 5 s each.
        await asyncio.gather(*(self._close(s.ws, 1001, "daemon shutting down") for s in list(self._sessions)))
        await self._server.wait_closed()
        self._server = None

    @staticmethod
    async def _close(ws: ServerConnection, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code, reason), 5.0)

    # --- the idle stop (--idle-exit) ---

    def busy(self) -> bool:
        """Whether anything keeps the daemon from being idle: a connection (counted from its
        handshake's acceptance to its socket's close, whether it has a job or not), or a job
        queued or running (a running job whose client left included)."""
        jobs = self.jobs
        return bool(
            self._connection_count or self._sessions or (jobs is not None and (jobs.queued or jobs.running))
        )

    def idle_expired(self) -> bool:
        """Whether the daemon is idle now and has been for `config.idle_exit` seconds."""
        if self.busy():
            self._idle_since = None
            return False
        if self.config.idle_exit <= 0 or self._idle_since is None:
            return False
        return time.monotonic() - self._idle_since >= self.config.idle_exit

    async def _watch_idle(self, seconds: float) -> None:
        """Set `self.idle` once the daemon has been idle for `seconds`, continuously.

        It looks every IDLE_POLL seconds (a quarter of `seconds` if less), so the stop comes
        up to one look late, never early: a connection that opens and closes between two
        looks restarts the count when it closes (`_connection_closed`), and the end of a job
        is seen at the next look.
        """
        period = min(IDLE_POLL, seconds / 4)
        while True:
            if self.busy():
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = time.monotonic()
            if self.idle_expired():
                self.idle.set()
            else:
                self.idle.clear()
            await asyncio.sleep(period)

    # --- HTTP-level checks ---

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers: Headers = request.headers
        reason = self.policy.check(headers.get_all("Origin"), headers.get_all("Host"))
        if reason is not None:
            log.warning(
                "refused a connection from %s: %s",
                _address(connection),
                reason.strip(),
            )
            return connection.respond(http.HTTPStatus.FORBIDDEN, reason)
        address = _host(connection)
        if not _asks_for_websocket(headers):
            # Answered here: websockets would answer 426 too, but log a traceback each time.
            if self._log_limit.allow("http", address):
                log.info(
                    "answered a plain HTTP request from %s (GET %s, no websocket upgrade) with 426 "
                    "(more from this address are not logged for a minute)",
                    address,
                    _printable(request.path, 100),
                )
            response = connection.respond(http.HTTPStatus.UPGRADE_REQUIRED, NOT_A_WEBSOCKET)
            response.headers["Upgrade"] = "websocket"
            return response
        reason = self._connection_limit(address)
        if reason is not None:
            if self._log_limit.allow("busy", address):
                log.warning(
                    "refused a connection from %s: %s (more refusals are not logged for a minute)",
                    address,
                    reason.removeprefix("Refused: ").strip(),
                )
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, reason)
        # Counted from here until its socket is closed, whatever happens in between (the
        # handshake may still fail, and then no handler runs).
        self._connections[address] = self._connections.get(address, 0) + 1
        self._connection_count += 1
        connection.connection_lost_waiter.add_done_callback(lambda _: self._connection_closed(address))
        return None

    def _connection_limit(self, address: str) -> str | None:
        """Why one more connection from `address` is refused, or None."""
        limit = self.config.max_connections_per_address
        if self._connections.get(address, 0) >= limit:
            return (
                f"Refused: {limit} connections from {address} are already open, the most this "
                "daemon accepts from one address (--max-connections-per-address). Wait for some "
                "to finish and try again.\n"
            )
        limit = self.config.max_connections
        if self._connection_count >= limit:
            return (
                f"Refused: {limit} connections are already open, the most this daemon accepts "
                "(--max-connections). Try again later.\n"
            )
        return None

    def _connection_closed(self, address: str) -> None:
        self._idle_since = None  # idle from the watcher's next look, not from before this one
        self._connection_count -= 1
        left = self._connections[address] - 1
        if left:
            self._connections[address] = left
        else:
            del self._connections[address]

    # --- connections ---

    async def _handle(self, ws: ServerConnection) -> None:
        self._serial += 1
        session = Session(ws, self._serial, self._token_ok())
        self._sessions.add(session)
        sender = asyncio.create_task(session.run_sender(), name=f"sender-{session.serial}")
        try:
            if await self._handshake(session):
                async for data in ws:
                    await self._dispatch(session, data)
                    await session.writable()
        except ConnectionClosed:
            pass
        except Exception:  # a bug must cost one connection, never the daemon
            log.exception("%s: internal error; closing this connection", session.name)
            with contextlib.suppress(Exception):
                await ws.close(1011, "internal error")
        finally:
            session.closed = True
            session.protocol.close()
            if session.jobs and self.jobs is not None:
                self.jobs.drop_owner(session, list(session.jobs.values()))
            sender.cancel()
            self._sessions.discard(session)
            log.debug("%s: disconnected (%s)", session.name, ws.close_code)

    def _token_ok(self) -> Callable[[str], bool] | None:
        token = self.config.token
        return None if token is None else lambda given: token_matches(token, given)

    async def _refuse(self, session: Session, error: Error) -> bool:
        """A failed handshake: the error, then a clean close (1008 policy violation)."""
        log.info("%s: handshake refused: %s", session.name, _printable(error.message, 300))
        session.send(error)
        await session.flush(5.0)
        await session.ws.close(1008, error.code.value)
        return False

    async def _handshake(self, session: Session) -> bool:
        try:
            data = await asyncio.wait_for(session.ws.recv(), self.config.handshake_timeout)
        except asyncio.TimeoutError:
            return await self._refuse(session, session.protocol.hello_timeout())
        hello = await self._receive(session, data)
        if isinstance(hello, Error):
            return await self._refuse(session, hello)
        assert isinstance(hello, Hello)
        client = f"{_printable(hello.client, 64)} {_printable(hello.client_version, 32)}".strip()
        session.name = f"client #{session.serial} {client} ({session.address})"
        log.info("%s: connected", session.name)
        session.send(
            Welcome(
                server=SERVER_NAME,
                server_version=__version__,
                models=list(self.catalog.models),
                default_model=self.catalog.default,
                limits=self.config.limits,
                schedulers=self.schedulers,
                capabilities=CAPABILITIES,
                device=self.device,
                protocol=PROTOCOL_VERSION,
                **self.catalog.listed(),
            )
        )
        return True

    async def _dispatch(self, session: Session, data: bytes | str) -> None:
        event = await self._receive(session, data)
        if isinstance(event, Error):
            # The text may quote the client (a type name, a field's value): one log line.
            log.info("%s: bad message: %s", session.name, _printable(event.message, 300))
            session.send(event)
        elif isinstance(event, Submit):
            self._submit(session, event)
        elif isinstance(event, Cancel):
            job = session.jobs.get(event.job_id)
            if job is not None:
                assert self.jobs is not None
                self.jobs.cancel(job)
        elif isinstance(event, ListModels):
            session.send(
                Models(
                    list(self.catalog.models),
                    self.catalog.default,
                    **self.catalog.listed(),
                )
            )
        elif isinstance(event, GetStatus):
            assert self.jobs is not None
            workers = [worker.info() for worker in self.jobs.workers]
            session.send(
                Status(
                    queued=self.jobs.queued,
                    running=bool(self.jobs.running),
                    loaded_model=next((w.model for w in workers if w.model is not None), None),
                    device=self.device,
                    workers=workers,
                )
            )
        # None: nothing to answer (a cancel that crossed its job's last word).

    async def _receive(self, session: Session, data: bytes | str) -> Any:
        """What the client's message asks for, by the session's rules (see `ServerSession`)."""
        try:
            message = await self._decode(data)
        except ProtocolError as exc:
            return session.protocol.receive_invalid(exc)
        return session.protocol.receive(message)

    async def _decode(self, data: bytes | str) -> Any:
        """A client message, or ProtocolError; big ones are decoded off the event loop
        (before the handshake too: an unauthenticated peer may send the largest)."""
        if isinstance(data, bytes) and len(data) > _DECODE_OFF_LOOP:
            return await asyncio.to_thread(decode, data, self.config.limits, CLIENT_MESSAGES)
        return decode(data, self.config.limits, CLIENT_MESSAGES)

    def _submit(self, session: Session, submit: Submit) -> None:
        """A new job (its id is new on this connection): queue it, or send the error that ends it."""
        assert self.jobs is not None
        job_id = submit.job_id
        model = self.catalog.lookup(submit.params.model)
        if model is None:
            if submit.params.model is None:
                text = "this daemon has no model to run; start it with --model"
            else:
                shown = submit.params.model[:100]
                text = f"unknown model '{shown}'; this daemon offers: {', '.join(self.catalog.names)}"
            session.send(Error(ErrorCode.UNKNOWN_MODEL, text, job_id))
            return
        unlisted = self.catalog.unlisted_part(submit.params.text_encoders, submit.params.vae)
        if unlisted is not None:
            kind, name, known = unlisted
            offered = ", ".join(known) or "none"
            text = f"unknown {kind} '{_printable(name, 100)}'; this daemon offers: {offered}"
            session.send(Error(ErrorCode.UNKNOWN_MODEL, text, job_id))
            return
        scheduler_error = self._scheduler_error(submit.params.scheduler)
        if scheduler_error is not None:
            session.send(Error(ErrorCode.UNKNOWN_SCHEDULER, scheduler_error, job_id))
            return
        job = Job(job_id, session, submit, model)
        try:
            self.jobs.accept(job)
        except Refused as exc:
            session.send(Error(exc.code, str(exc), job_id))
            return
        session.jobs[job_id] = job
        log.debug("%s: queued at position %d", job.describe(), job.position)

    def _scheduler_error(self, name: str) -> str | None:
        """Why this scheduler is refused, told before the job waits in the queue.

        The wire takes exactly the names `welcome.schedulers` lists: the engine's
        aliases ("EULER", "euler ", "dpm++ 2m") are for the command line only.
        """
        if name in self.schedulers:
            return None
        try:
            canonical: str | None = check_scheduler_name(name)
        except InvalidRequest:
            canonical = None
        hint = f" (names are exact: did you mean '{canonical}'?)" if canonical in self.schedulers else ""
        offered = ", ".join(self.schedulers)
        return f"unknown scheduler '{_printable(name, 64)}'{hint}; this daemon offers: {offered}"


def _printable(text: str, limit: int) -> str:
    """A client-chosen name made safe for one log line (no newlines or control characters)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return f"{remote[0]}:{remote[1]}" if remote else "?"


def _host(connection: ServerConnection) -> str:
    """The client's address without its port: what the connection limits count by."""
    remote = connection.remote_address
    return str(remote[0]) if remote else "?"


def _asks_for_websocket(headers: Headers) -> bool:
    """Does the request ask for a websocket at all? (websockets checks the details.)"""
    return any(
        token.strip().lower() == "websocket"
        for value in headers.get_all("Upgrade")
        for token in value.split(",")
    )


def _reasons(exc: BaseException) -> str:
    """An exception and its causes in one line, as websockets' own 400 body gives them."""
    text = str(exc) or type(exc).__name__
    while exc.__cause__ is not None:
        exc = exc.__cause__
        text += f"; {exc}"
    return text


async def serve_until(server: DaemonServer, stop: asyncio.Event) -> None:
    """Run `server` (already started) until `stop` is set, or until it has been idle for
    `config.idle_exit` seconds (when above 0), then shut it down."""
    try:
        await _stop_or_idle(server, stop)
    finally:
        started = time.monotonic()
        await server.shutdown()
        log.info("stopped in %.1f s", time.monotonic() - started)


async def _stop_or_idle(server: DaemonServer, stop: asyncio.Event) -> None:
    while True:
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.idle.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if stop.is_set():
            return
        # Checked again now: a client may have connected since the watcher's last look.
        if server.idle_expired():
            log.info(
                "idle for %g s (no client connected, no job queued or running): stopping (--idle-exit)",
                server.config.idle_exit,
            )
            return
        server.idle.clear()
