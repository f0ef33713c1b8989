"""The session rules of both roles, driven without sockets: the handshake, job ids,
cancels and the one last word of each job."""

from __future__ import annotations

from typing import Any

import pytest

from differential_inpaint import protocol as p
from differential_inpaint.protocol.session import REMEMBERED_JOBS

TOKEN = "the-token"


def submit(job_id: str = "job-1") -> p.Submit:
    return p.Submit(
        job_id,
        p.Image(2, 2, p.PixelFormat.RGBA8, bytes(16)),
        p.Mask(2, 2, b"\xff" * 4),
        p.JobParams(prompt="fox", steps=2),
        x=3,
        y=4,
    )


def result(job_id: str = "job-1") -> p.Result:
    return p.Result(job_id, p.Image(2, 2, p.PixelFormat.RGBA8, bytes(16)), 3, 4, seed=7)


def welcome() -> p.Welcome:
    return p.Welcome(server="test", server_version="0", models=[p.ModelInfo("m", "sd15")], default_model="m")


def open_server(**options: Any) -> p.ServerSession:
    server = p.ServerSession(**options)
    assert server.receive(p.Hello(client="test", token=TOKEN if options else None)) is not None
    assert server.state is p.SessionState.OPEN
    return server


def open_client() -> p.ClientSession:
    client = p.ClientSession("test", "1")
    client.hello()
    assert isinstance(client.receive(welcome()), p.Welcome)
    return client


def token_ok(token: str) -> bool:
    return token == TOKEN


# --- the server: handshake ----------------------------------------------------------


def test_a_good_hello_opens_the_session() -> None:
    server = p.ServerSession()
    hello = p.Hello(client="krita", client_version="1.0")
    assert server.state is p.SessionState.HANDSHAKE
    assert server.receive(hello) is hello  # the daemon answers with its welcome
    assert server.state is p.SessionState.OPEN and server.hello is hello


def test_a_wrong_version_is_refused_and_closes() -> None:
    server = p.ServerSession()
    error = server.receive(p.Hello(client="future", protocol=99))
    assert isinstance(error, p.Error) and error.code is p.ErrorCode.UNSUPPORTED_VERSION
    assert "1" in error.message and "99" in error.message
    assert server.state is p.SessionState.CLOSED
    assert server.receive(p.GetStatus()) is None  # nothing more is read


@pytest.mark.parametrize(("token", "text"), [(None, "requires its token"), ("wrong", "does not match")])
def test_a_missing_or_wrong_token_is_refused_and_never_echoed(token: str | None, text: str) -> None:
    seen: list[str] = []

    def check(given: str) -> bool:
        seen.append(given)
        return given == TOKEN

    server = p.ServerSession(check)
    error = server.receive(p.Hello(client="x", token=token))
    assert isinstance(error, p.Error) and error.code is p.ErrorCode.UNAUTHORIZED
    assert text in error.message and TOKEN not in error.message and "wrong" not in error.message
    assert server.state is p.SessionState.CLOSED
    assert seen == ([] if token is None else [token])  # the daemon's comparison decides


def test_the_right_token_is_accepted() -> None:
    assert open_server(token_ok=token_ok).state is p.SessionState.OPEN


@pytest.mark.parametrize("first", [submit("early"), p.GetStatus(), p.Cancel("x")], ids=lambda m: m.TYPE)
def test_a_message_before_hello_is_refused_and_closes(first: p.Message) -> None:
    server = p.ServerSession()
    error = server.receive(first)
    assert isinstance(error, p.Error) and error.code is p.ErrorCode.HANDSHAKE_REQUIRED
    assert f"not '{first.TYPE}'" in error.message and error.job_id is None
    assert server.state is p.SessionState.CLOSED


def test_an_unreadable_first_message_is_refused_and_closes() -> None:
    server = p.ServerSession()
    error = server.receive_invalid(p.ProtocolError(p.ErrorCode.MALFORMED, "not msgpack"))
    assert error.code is p.ErrorCode.MALFORMED and "valid 'hello': not msgpack" in error.message
    assert server.state is p.SessionState.CLOSED


def test_no_hello_in_time() -> None:
    server = p.ServerSession()
    error = server.hello_timeout()
    assert error.code is p.ErrorCode.HANDSHAKE_REQUIRED and "hello" in error.message
    assert server.state is p.SessionState.CLOSED


def test_hello_twice_is_an_error_that_keeps_the_session() -> None:
    server = open_server()
    error = server.receive(p.Hello(client="again"))
    assert isinstance(error, p.Error) and error.code is p.ErrorCode.INVALID_FIELD
    assert "already" in error.message and server.state is p.SessionState.OPEN


def test_queries_are_passed_on() -> None:
    server = open_server()
    for query in (p.ListModels(), p.GetStatus()):
        assert server.receive(query) is query


def test_an_unreadable_message_after_hello_is_answered_and_the_session_goes_on() -> None:
    server = open_server()
    error = server.receive_invalid(p.ProtocolError(p.ErrorCode.UNKNOWN_TYPE, "unknown message type 'x'"))
    assert error == p.Error(p.ErrorCode.UNKNOWN_TYPE, "unknown message type 'x'")
    assert server.state is p.SessionState.OPEN


# --- the server: jobs -----------------------------------------------------------------


def test_a_full_job_lifecycle_on_the_server() -> None:
    server = open_server()
    job = submit()
    assert server.receive(job) is job and server.is_live("job-1")
    for message in (
        p.Accepted("job-1", 0),
        p.Progress("job-1", p.Stage.SAMPLING, 1, 2),
        p.Preview("job-1", 1, p.Image(1, 1, p.PixelFormat.RGBA8, bytes(4))),
        result(),
    ):
        assert server.outgoing(message)
    assert not server.is_live("job-1")
    # Nothing after the last word.
    assert not server.outgoing(p.Progress("job-1", p.Stage.DECODING))
    assert not server.outgoing(p.Error(p.ErrorCode.JOB_FAILED, "late", "job-1"))
    assert not server.outgoing(p.Cancelled("job-1"))
    # Messages naming no job always go.
    assert server.outgoing(p.Status(0, False))


def test_a_duplicate_job_id_is_refused_but_the_live_job_goes_on() -> None:
    server = open_server()
    server.receive(submit("same"))
    error = server.receive(submit("same"))
    assert isinstance(error, p.Error) and error.code is p.ErrorCode.DUPLICATE_JOB and error.job_id == "same"
    assert "use a new id" in error.message
    assert server.outgoing(error)  # a reply to the second submit, not the first job's last word
    assert server.is_live("same") and server.outgoing(result("same"))


def test_an_unreadable_submit_reusing_a_live_id_is_a_duplicate() -> None:
    server = open_server()
    server.receive(submit("same"))
    error = server.receive_invalid(p.ProtocolError(p.ErrorCode.SIZE_MISMATCH, "bad bytes", "same"))
    assert error.code is p.ErrorCode.DUPLICATE_JOB and server.outgoing(error)
    assert server.is_live("same")


def test_an_unreadable_submit_is_a_job_with_one_last_word() -> None:
    server = open_server()
    error = server.receive_invalid(p.ProtocolError(p.ErrorCode.SIZE_MISMATCH, "bad bytes", "bad"))
    assert error == p.Error(p.ErrorCode.SIZE_MISMATCH, "bad bytes", "bad")
    assert server.outgoing(error) and not server.is_live("bad")
    assert server.receive(p.Cancel("bad")) is None  # the cancel crossed that error


def test_a_job_refused_by_the_daemon_ends_with_its_error() -> None:
    server = open_server()
    server.receive(submit("j"))
    assert server.outgoing(p.Error(p.ErrorCode.UNKNOWN_MODEL, "no model", "j"))
    assert not server.is_live("j")
    assert not server.outgoing(p.Accepted("j", 0))


def test_a_job_id_may_be_used_again_after_its_job_ended() -> None:
    server = open_server()
    server.receive(submit("again"))
    server.outgoing(result("again"))
    assert server.receive(submit("again")) is not None and server.is_live("again")
    server.outgoing(p.Cancelled("again"))
    assert server.receive(p.Cancel("again")).code is p.ErrorCode.UNKNOWN_JOB  # cancelled, not crossed


def test_cancel_of_a_live_job_is_passed_on() -> None:
    server = open_server()
    server.receive(submit("j"))
    cancel = p.Cancel("j")
    assert server.receive(cancel) is cancel
    assert server.outgoing(p.Cancelled("j")) and not server.is_live("j")


@pytest.mark.parametrize("last_word", ["result", "error"])
def test_a_cancel_that_crossed_the_last_word_is_ignored(last_word: str) -> None:
    server = open_server()
    server.receive(submit("j"))
    if last_word == "result":
        server.job_ended("j", "done")  # the daemon's queue sent the result itself
    else:
        server.outgoing(p.Error(p.ErrorCode.JOB_FAILED, "failed", "j"))
    assert server.receive(p.Cancel("j")) is None


def test_cancel_of_an_unknown_job_is_an_error() -> None:
    server = open_server()
    error = server.receive(p.Cancel("nope"))
    assert isinstance(error, p.Error) and error.code is p.ErrorCode.UNKNOWN_JOB and error.job_id == "nope"
    assert server.outgoing(error)
    assert server.receive(p.Cancel("nope")).code is p.ErrorCode.UNKNOWN_JOB  # still unknown


def test_a_cancel_of_a_cancelled_job_is_an_error() -> None:
    server = open_server()
    server.receive(submit("j"))
    server.job_ended("j", "cancelled")
    assert server.receive(p.Cancel("j")).code is p.ErrorCode.UNKNOWN_JOB


def test_the_ended_jobs_remembered_are_bounded() -> None:
    server = open_server()
    for n in range(REMEMBERED_JOBS + 1):
        server.receive(submit(f"j{n}"))
        server.job_ended(f"j{n}", "done")
    assert server.receive(p.Cancel(f"j{REMEMBERED_JOBS}")) is None
    assert server.receive(p.Cancel("j0")).code is p.ErrorCode.UNKNOWN_JOB  # forgotten


def test_job_ended_twice_or_for_no_job_changes_nothing() -> None:
    server = open_server()
    server.receive(submit("j"))
    server.job_ended("j", "done")
    server.job_ended("j", "cancelled")
    server.job_ended("never", "done")
    assert server.receive(p.Cancel("j")) is None
    assert server.receive(p.Cancel("never")).code is p.ErrorCode.UNKNOWN_JOB


def test_close_ends_every_job() -> None:
    server = open_server()
    server.receive(submit("j"))
    server.close()
    assert server.state is p.SessionState.CLOSED and not server.live_jobs
    assert not server.outgoing(p.Progress("j", p.Stage.SAMPLING))
    assert server.receive(submit("k")) is None


def test_a_server_message_is_not_a_request() -> None:
    with pytest.raises(TypeError):
        open_server().receive(p.Status(0, False))


# --- the client -----------------------------------------------------------------------


def test_the_client_handshake() -> None:
    client = p.ClientSession("krita", "1.0", token="t")
    assert client.state is p.SessionState.HANDSHAKE
    assert client.hello() == p.Hello(client="krita", client_version="1.0", token="t")
    with pytest.raises(RuntimeError):
        client.hello()
    hello_reply = welcome()
    assert client.receive(hello_reply) is hello_reply
    assert client.state is p.SessionState.OPEN and client.welcome is hello_reply


def test_the_client_must_say_hello_before_reading_and_be_open_to_submit() -> None:
    client = p.ClientSession("x")
    with pytest.raises(RuntimeError):
        client.receive(welcome())
    with pytest.raises(RuntimeError):
        client.submit(submit())


def test_a_refused_handshake_closes_the_client() -> None:
    client = p.ClientSession("x")
    client.hello()
    error = p.Error(p.ErrorCode.UNSUPPORTED_VERSION, "this daemon speaks protocol version 2")
    assert client.receive(error) is error and client.state is p.SessionState.CLOSED
    assert client.receive(welcome()) is None


def test_any_other_answer_to_hello_is_unexpected() -> None:
    client = p.ClientSession("x")
    client.hello()
    event = client.receive(p.Status(0, False))
    assert event == p.Unexpected(p.Status(0, False)) and client.state is p.SessionState.CLOSED


def test_a_full_job_lifecycle_on_the_client() -> None:
    client = open_client()
    job = submit()
    assert client.submit(job) is job and client.is_following("job-1")
    messages = [
        p.Accepted("job-1", 0),
        p.Progress("job-1", p.Stage.SAMPLING, 1, 2),
        p.Preview("job-1", 1, p.Image(1, 1, p.PixelFormat.RGBA8, bytes(4))),
        result(),
    ]
    assert [client.receive(m) for m in messages] == messages
    assert not client.is_following("job-1")
    assert client.receive(p.Progress("job-1", p.Stage.DECODING)) is None  # after its last word
    assert client.cancel("job-1") is None  # nothing left to cancel


def test_the_client_ignores_other_jobs_messages() -> None:
    client = open_client()
    client.submit(submit("mine"))
    for message in (
        p.Progress("theirs", p.Stage.SAMPLING, 1, 2),
        result("theirs"),
        p.Error(p.ErrorCode.JOB_FAILED, "not mine", "theirs"),
        p.Cancelled("theirs"),
    ):
        assert client.receive(message) is None
    assert client.is_following("mine")


def test_an_error_naming_no_job_ends_the_clients_jobs() -> None:
    client = open_client()
    client.submit(submit("a"))
    client.submit(submit("b"))
    error = p.Error(p.ErrorCode.MALFORMED, "the daemon could not read that")
    assert client.receive(error) is error
    assert not client.is_following("a") and not client.is_following("b")


def test_a_job_error_ends_that_job_only() -> None:
    client = open_client()
    client.submit(submit("a"))
    client.submit(submit("b"))
    error = p.Error(p.ErrorCode.UNKNOWN_MODEL, "no model", "a")
    assert client.receive(error) is error
    assert not client.is_following("a") and client.is_following("b")


def test_the_client_cancel_is_sent_once() -> None:
    client = open_client()
    client.submit(submit("j"))
    assert client.cancel("j") == p.Cancel("j")
    assert client.cancel("j") is None
    assert client.cancel("never-submitted") is None
    assert client.receive(p.Cancelled("j")) == p.Cancelled("j")


def test_a_result_that_crossed_the_clients_cancel_counts_as_cancelled() -> None:
    client = open_client()
    client.submit(submit("j"))
    client.cancel("j")
    assert client.receive(result("j")) == p.Cancelled("j")
    assert not client.is_following("j")


def one_of(index: int, total: int, job_id: str = "job-1") -> p.Result:
    return p.Result(
        job_id, p.Image(2, 2, p.PixelFormat.RGBA8, bytes(16)), 3, 4, seed=7 + index, index=index, total=total
    )


def test_a_job_of_several_results_ends_with_its_last_on_the_server() -> None:
    server = open_server()
    server.receive(submit())
    for index in range(2):
        assert server.outgoing(one_of(index, 3))
        assert server.is_live("job-1"), "a result before the last does not end the job"
    assert server.outgoing(p.Progress("job-1", p.Stage.SAMPLING, 1, 2))
    assert server.outgoing(one_of(2, 3))
    assert not server.is_live("job-1")
    assert not server.outgoing(one_of(2, 3)), "nothing after the last word"


def test_a_cancel_mid_batch_keeps_the_finished_results_on_the_server() -> None:
    server = open_server()
    server.receive(submit())
    assert server.outgoing(one_of(0, 4))
    assert isinstance(server.receive(p.Cancel("job-1")), p.Cancel)
    assert server.outgoing(p.Cancelled("job-1"))
    assert not server.is_live("job-1")


def test_the_client_keeps_results_done_before_its_cancel_took_effect() -> None:
    client = open_client()
    client.submit(submit())
    assert client.receive(one_of(0, 3)) == one_of(0, 3)
    assert client.cancel("job-1") is not None
    # Done and sent before the daemon saw the cancel: kept.
    assert client.receive(one_of(1, 3)) == one_of(1, 3)
    assert client.is_following("job-1")
    # The last one crossed the cancel: the painter asked for nothing more.
    assert client.receive(one_of(2, 3)) == p.Cancelled("job-1")
    assert not client.is_following("job-1")


def test_the_client_refuses_to_follow_one_id_twice() -> None:
    client = open_client()
    client.submit(submit("j"))
    with pytest.raises(ValueError):
        client.submit(submit("j"))


def test_queries_and_a_second_welcome_on_the_client() -> None:
    client = open_client()
    status = p.Status(1, True)
    assert client.receive(status) is status
    assert isinstance(client.receive(welcome()), p.Unexpected)


# --- both roles, through the codec -------------------------------------------------


class Wire:
    """A ClientSession and a ServerSession joined by encode/decode, as the daemon and
    a plugin are: the server's `outgoing` decides what crosses."""

    def __init__(self, token: str | None = None) -> None:
        self.client = p.ClientSession("wired", "1", token=token)
        self.server = p.ServerSession(token_ok)
        self.to_client: list[bytes] = []

    def client_sends(self, message: p.Message | None) -> Any:
        """What the server makes of the client's message."""
        assert message is not None
        return self.server.receive(p.decode(p.encode(message), accept=p.CLIENT_MESSAGES))

    def server_sends(self, message: p.Message) -> bool:
        if not self.server.outgoing(message):
            return False
        self.to_client.append(p.encode(message))
        return True

    def client_reads(self) -> list[Any]:
        events = [self.client.receive(p.decode(data, accept=p.SERVER_MESSAGES)) for data in self.to_client]
        self.to_client.clear()
        return events


def test_a_job_end_to_end_through_the_codec() -> None:
    wire = Wire(TOKEN)
    hello = wire.client_sends(wire.client.hello())
    assert isinstance(hello, p.Hello)
    wire.server_sends(welcome())
    assert isinstance(wire.client_reads()[0], p.Welcome)
    job = wire.client_sends(wire.client.submit(submit("j")))
    assert job == submit("j")
    wire.server_sends(p.Accepted("j", 0))
    wire.server_sends(p.Progress("j", p.Stage.SAMPLING, 1, 2))
    wire.server_sends(result("j"))
    assert not wire.server_sends(p.Progress("j", p.Stage.DECODING))  # never after the last word
    events = wire.client_reads()
    assert [type(e) for e in events] == [p.Accepted, p.Progress, p.Result]
    assert events[-1] == result("j")


def test_a_cancel_crossing_the_result_through_the_codec() -> None:
    wire = Wire(TOKEN)
    wire.client_sends(wire.client.hello())
    wire.server_sends(welcome())
    wire.client_reads()
    wire.client_sends(wire.client.submit(submit("j")))
    wire.server_sends(result("j"))  # the job finishes ...
    cancel = wire.client.cancel("j")  # ... as the painter cancels, before reading it
    assert wire.client_sends(cancel) is None  # the daemon has nothing more to say
    assert wire.client_reads() == [p.Cancelled("j")]  # and the client keeps nothing


def test_a_bad_token_through_the_codec() -> None:
    wire = Wire("wrong")
    error = wire.client_sends(wire.client.hello())
    assert isinstance(error, p.Error) and wire.server.state is p.SessionState.CLOSED
    wire.server_sends(error)
    assert wire.client_reads() == [error] and wire.client.state is p.SessionState.CLOSED
