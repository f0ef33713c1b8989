"""The rules of one connection, for both roles, without I/O.

A `ServerSession` (the daemon's side) and a `ClientSession` (the plugins'
side) take the messages their peer sent, already decoded, and say what they
mean now: the handshake, then the jobs — who may cancel what, and that a job
has one last word (`result`, `cancelled` or `error`) and nothing after it.
They never touch a socket: the daemon's asyncio server and the plugins'
blocking client do the I/O around them, and the tests drive them directly.

Server:

    session = ServerSession(token_ok=None)
    event = session.receive(decode(data))   # or session.receive_invalid(exc)
    # Hello: answer `welcome`; Submit: a new job (answer `accepted` or an error);
    # Cancel: of a live job; ListModels / GetStatus: answer them;
    # Error: send it, then close when `session.state` is CLOSED; None: nothing to do.
    if session.outgoing(message): send(message)   # drops what a job may no longer say
    session.job_ended(job_id, "done")             # a last word sent without `outgoing`

Client:

    session = ClientSession("krita-plugin", "1.0")
    send(session.hello())
    session.receive(welcome)                      # Welcome, Error or Unexpected
    send(session.submit(submit))
    event = session.receive(message)              # this client's jobs' messages, or None
    cancel = session.cancel(job_id)               # a Cancel to send, once
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .errors import ErrorCode, ProtocolError
from .messages import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Accepted,
    Cancel,
    Cancelled,
    Error,
    GetStatus,
    Hello,
    ListModels,
    Message,
    Models,
    Preview,
    Progress,
    Result,
    Status,
    StrengthMap,
    Submit,
    Welcome,
)

# A job's successful last word: its last `result`, or the `map` of a `strength_map`.
_DONE = (Result, StrengthMap)

# Errors that answer a request about a job id rather than end a job: a duplicate
# `submit` names the live job whose id it reuses, a `cancel` of an unknown job
# names a job that does not exist.
REPLY_ERRORS = frozenset({ErrorCode.DUPLICATE_JOB, ErrorCode.UNKNOWN_JOB})

# Ids of jobs that ended by themselves, kept per connection so that a cancel that
# crossed a job's last word on the wire is ignored rather than answered.
REMEMBERED_JOBS = 64


class SessionState(str, Enum):
    HANDSHAKE = "handshake"  # before `welcome` (server: waiting for `hello`)
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Unexpected:
    """A message the client cannot take now: anything but `welcome` or `error` in
    answer to `hello` (which ends the session), or a second `welcome`."""

    message: Message


class ServerSession:
    """The daemon's side of one connection.

    `token_ok(token)` says whether a `hello`'s token is the daemon's (it compares
    in constant time); None when the daemon requires no token.
    """

    def __init__(
        self,
        token_ok: Callable[[str], bool] | None = None,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        remember: int = REMEMBERED_JOBS,
    ) -> None:
        self.state = SessionState.HANDSHAKE
        self.hello: Hello | None = None
        self._token_ok = token_ok
        self._versions = versions
        self._live: set[str] = set()  # submitted, no last word yet
        self._ended: deque[str] = deque(maxlen=remember)  # last word sent: result or error

    # --- what the client sent ---

    def receive(self, message: Message) -> Message | Error | None:
        """What `message` asks of the daemon: the message itself when the daemon
        should act on it (see the module's docstring), an `Error` to send, or
        None when it needs no answer."""
        if self.state is SessionState.CLOSED:
            return None  # sent before the client saw the close
        if self.state is SessionState.HANDSHAKE:
            return self._receive_hello(message)
        if isinstance(message, Hello):
            return Error(ErrorCode.INVALID_FIELD, "'hello' was already received on this connection")
        if isinstance(message, Submit):
            return self._receive_submit(message)
        if isinstance(message, Cancel):
            return self._receive_cancel(message)
        if isinstance(message, (ListModels, GetStatus)):
            return message
        raise TypeError(f"a server does not receive '{message.TYPE}'")

    def receive_invalid(self, exc: ProtocolError) -> Error:
        """The `error` for a message that could not be decoded."""
        if self.state is SessionState.HANDSHAKE:
            self.state = SessionState.CLOSED
            return Error(exc.code, f"the first message must be a valid 'hello': {exc.message}")
        if exc.job_id is not None:
            # A submit whose id could be read starts a job that this error ends, unless
            # the id is a live job's: then the error must not read as that job's last word.
            if exc.job_id in self._live:
                return self._duplicate(exc.job_id)
            self._start(exc.job_id)
        return Error.from_exception(exc)

    def hello_timeout(self) -> Error:
        """The `error` for a client that said nothing within the handshake time."""
        self.state = SessionState.CLOSED
        return Error(ErrorCode.HANDSHAKE_REQUIRED, "no hello within the handshake time")

    # --- what the daemon sends ---

    def outgoing(self, message: Message) -> bool:
        """Whether `message` may go out now; a job's last word ends the job.

        A message naming a job that has had its last word (or was never
        submitted) is refused: each job gets one last `result` (the one whose
        index is its total - 1; the results before it do not end the job),
        `map` (of a `strength_map`), `cancelled` or `error`, and nothing after it.
        """
        job_id = getattr(message, "job_id", None)
        if job_id is None:
            return True
        if isinstance(message, Error) and message.code in REPLY_ERRORS:
            return True
        if job_id not in self._live:
            return False
        if isinstance(message, Result) and not message.is_last:
            return True  # one of several results: the job goes on
        if isinstance(message, (*_DONE, Cancelled, Error)):
            if isinstance(message, _DONE):
                self.job_ended(job_id, "done")
            else:
                self.job_ended(job_id, "cancelled" if isinstance(message, Cancelled) else "failed")
        return True

    def job_ended(self, job_id: str, outcome: str) -> None:
        """The job's last word went out (sent without `outgoing`, or the client is
        gone). `outcome` "cancelled" is not remembered: a second cancel of a
        cancelled job is answered `unknown_job`."""
        if job_id in self._live:
            self._live.discard(job_id)
            if outcome != "cancelled":
                self._ended.append(job_id)

    def is_live(self, job_id: str) -> bool:
        return job_id in self._live

    @property
    def live_jobs(self) -> frozenset[str]:
        return frozenset(self._live)

    def close(self) -> None:
        self.state = SessionState.CLOSED
        self._live.clear()

    # --- the rules ---

    def _receive_hello(self, message: Message) -> Message | Error:
        if not isinstance(message, Hello):
            return self._refuse(
                ErrorCode.HANDSHAKE_REQUIRED, f"the first message must be 'hello', not '{message.TYPE}'"
            )
        if message.protocol not in self._versions:
            text = (
                f"this daemon speaks protocol version {', '.join(map(str, self._versions))}, "
                f"the client speaks {message.protocol}"
            )
            return self._refuse(ErrorCode.UNSUPPORTED_VERSION, text)
        if self._token_ok is not None:
            if message.token is None:
                return self._refuse(ErrorCode.UNAUTHORIZED, "this daemon requires its token")
            if not self._token_ok(message.token):
                return self._refuse(ErrorCode.UNAUTHORIZED, "the token does not match this daemon's token")
        self.state = SessionState.OPEN
        self.hello = message
        return message

    def _refuse(self, code: ErrorCode, text: str) -> Error:
        self.state = SessionState.CLOSED
        return Error(code, text)

    def _receive_submit(self, submit: Submit) -> Submit | Error:
        if submit.job_id in self._live:
            return self._duplicate(submit.job_id)
        self._start(submit.job_id)
        return submit

    def _receive_cancel(self, cancel: Cancel) -> Cancel | Error | None:
        if cancel.job_id in self._live:
            return cancel
        if cancel.job_id in self._ended:
            return None  # it crossed the job's last word: the client has it, and needs no other
        text = f"no job '{cancel.job_id}' is queued or running on this connection"
        return Error(ErrorCode.UNKNOWN_JOB, text, cancel.job_id)

    def _start(self, job_id: str) -> None:
        self._live.add(job_id)
        if job_id in self._ended:  # an id used again after its job ended
            self._ended.remove(job_id)

    @staticmethod
    def _duplicate(job_id: str) -> Error:
        text = f"job '{job_id}' is already queued or running on this connection; use a new id"
        return Error(ErrorCode.DUPLICATE_JOB, text, job_id)


class ClientSession:
    """A plugin's side of one connection: the handshake, then the jobs it follows."""

    def __init__(
        self,
        client: str,
        client_version: str = "",
        *,
        token: str | None = None,
        protocol: int = PROTOCOL_VERSION,
    ) -> None:
        self.state = SessionState.HANDSHAKE
        self.welcome: Welcome | None = None
        self._hello = Hello(client=client, client_version=client_version, protocol=protocol, token=token)
        self._hello_sent = False
        self._jobs: dict[str, bool] = {}  # followed job id -> a cancel was sent

    def hello(self) -> Hello:
        """The first message to send."""
        if self._hello_sent:
            raise RuntimeError("'hello' was already sent on this connection")
        self._hello_sent = True
        return self._hello

    def receive(self, message: Message) -> Message | Unexpected | None:
        """What a server message means for this client.

        During the handshake: the `Welcome`, an `Error` (refused; the server
        closes) or `Unexpected`. Then: `Accepted`, `Progress`, `Preview`, the
        results of a job of several before its last (kept even after a cancel:
        they were done), and the last word of a job this client follows — its
        last `Result`, or `Cancelled` (also for a last result that crossed this
        client's cancel: the painter asked to keep nothing more), or its `Error`.
        An `Error` naming no job is returned too, and ends every job: the server could not read something this
        client sent and cannot say whose it was. Messages of jobs this client
        does not follow (another job's, or after a job's last word) give None.
        """
        if self.state is SessionState.CLOSED:
            return None
        if self.state is SessionState.HANDSHAKE:
            if not self._hello_sent:
                raise RuntimeError("send hello() before receiving")
            if isinstance(message, Welcome):
                self.state = SessionState.OPEN
                self.welcome = message
                return message
            self.state = SessionState.CLOSED
            return message if isinstance(message, Error) else Unexpected(message)
        if isinstance(message, Welcome):
            return Unexpected(message)
        if isinstance(message, (Models, Status)):
            return message
        job_id: str | None = getattr(message, "job_id", None)
        if job_id is None:  # an error that names no job
            self._jobs.clear()
            return message
        if job_id not in self._jobs:
            return None
        if isinstance(message, (Accepted, Progress, Preview)):
            return message
        if isinstance(message, Result) and not message.is_last:
            return message  # done before any cancel took effect: the painter keeps it
        cancel_sent = self._jobs.pop(job_id)
        if isinstance(message, _DONE) and cancel_sent:
            return Cancelled(job_id)
        return message

    def submit(self, submit: Submit) -> Submit:
        """Follow `submit`'s job; returns the message to send."""
        if self.state is not SessionState.OPEN:
            raise RuntimeError(f"cannot submit a job while the session is {self.state.value}")
        if submit.job_id in self._jobs:
            raise ValueError(f"job '{submit.job_id}' is already running on this connection")
        self._jobs[submit.job_id] = False
        return submit

    def cancel(self, job_id: str) -> Cancel | None:
        """The `cancel` to send for a job this client follows, once; None when it
        was already sent or the job has had its last word."""
        if self._jobs.get(job_id, True):
            return None
        self._jobs[job_id] = True
        return Cancel(job_id)

    def is_following(self, job_id: str) -> bool:
        return job_id in self._jobs

    def close(self) -> None:
        self.state = SessionState.CLOSED
        self._jobs.clear()
