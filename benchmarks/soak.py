"""Soak test: many clients submitting, cancelling and disconnecting at random, for minutes.

Starts `differential-inpaint serve --model builtin:tiny-sd15 --port 0` (as
tests/support/daemon.py does), warms it up (the model load, one job of every region
shape the clients send), then runs N client threads for the soak's duration. Each
client, over and over: connects, submits 1-3 small jobs (random size, offset, pixel
format, steps; previews on or off) and, at random, cancels one soon after submitting it
or once it runs, or disconnects — cleanly or by dropping the socket — before its jobs
end. When the time is up, clients stop submitting and cancel what they still wait for.

Every client checks every message it gets: a result's job id, offset and size must be
one it sent and still waits for; every job on a connection it kept open must get exactly
one last word (`result`, `cancelled` or `error`) and nothing after it (a `status` round
trip at the end of each connection flushes stragglers out); the only error codes allowed
are the documented refusals (queue_full, shutting_down).

Every `--interval` seconds (a minute by default) it prints the daemon's resident memory
(VmRSS, /proc/PID/status) and open file descriptors (/proc/PID/fd; "conns" are the
client connections among them), and the jobs so far. At the end it prints the jobs
completed, cancelled, refused by error code, abandoned (their client disconnected), the
p50/p95 time from submit to `accepted` and to `result`, and checks:

- no job lost, nothing misrouted, no message after a job's last word;
- no error code but the documented ones;
- RSS and fds flat: at most 5 % above their sample after the first minute (`--warmup`),
  and every client connection closed by the daemon once the clients are gone;
- no traceback or ERROR line in the daemon's log, and a clean exit on SIGTERM.

It exits 1 when a check fails. Not a CI test (tests/backend/daemon/test_soak.py runs a
20-second version):

    .venv/bin/python benchmarks/soak.py [--clients 8] [--minutes 10 | --seconds S]
                                        [--interval 60] [--warmup 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support.daemon, the shared daemon launcher

from differential_inpaint import protocol as p  # noqa: E402
from tests.support.daemon import DaemonProcess, running_daemon  # noqa: E402

MODEL = "builtin:tiny-sd15"
DOCUMENTED_REFUSALS = {p.ErrorCode.QUEUE_FULL, p.ErrorCode.SHUTTING_DOWN}
PROBLEM_KINDS = ("misrouted", "errors", "connections")
GROWTH_LIMIT = 0.05  # RSS and fds: at most 5 % above the first minute's sample
LAST_WORD_TIMEOUT = 300.0  # a job waiting longer than this on an open connection is lost
CONNECT_TIMEOUT = 30.0
DRAIN_TIMEOUT = 120.0  # after the soak: for the clients to get their last words and leave
SIDES = (24, 32, 40, 48)  # small regions; a few sizes, so a misrouted result shows
FORMATS = (p.PixelFormat.RGBA8, p.PixelFormat.BGRA8)


# --- what the clients saw ----------------------------------------------------------------


@dataclass
class Job:
    job_id: str
    width: int
    height: int
    x: int
    y: int
    format: p.PixelFormat
    fate: str  # "finish", "cancel-soon" or "cancel-running"
    submitted: float
    cancel_at: float | None = None
    cancel_sent: bool = False
    accepted: float | None = None
    last: str | None = None  # "result", "cancelled" or the error code: the job's last word


@dataclass
class Tally:
    """Everything the clients count, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    abandoned: int = 0  # their client disconnected on purpose before their last word
    lost: int = 0  # no last word on a connection the client kept open
    cancels_sent: int = 0
    connections: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)  # "clean" / "abrupt", on purpose
    to_accepted: list[float] = field(default_factory=list)
    to_result: list[float] = field(default_factory=list)
    # What must not happen, by kind: "misrouted" (a message for a job its client did not
    # send or no longer waits for, a wrong offset or size, out of order), "errors" (an
    # undocumented error code), "connections" (dropped by the daemon, no answer, a crash).
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})

    def problem(self, kind: str, text: str) -> None:
        with self.lock:
            self.problems[kind].append(text)

    def count(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


# --- one client ----------------------------------------------------------------------------


class Client:
    """One simulated painter in a thread: connections one after another until the deadline."""

    def __init__(self, index: int, url: str, deadline: float, tally: Tally, seed: int) -> None:
        self.index = index
        self.url = url
        self.deadline = deadline
        self.tally = tally
        self.rng = random.Random(seed * 1000 + index)
        self.pixels = np.random.default_rng(seed * 1000 + index)
        self.serial = 0
        self.thread = threading.Thread(target=self.run, name=f"soak-client-{index}", daemon=True)

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                self.connection()
            except Exception as exc:  # a harness bug or a daemon gone: report, do not hang
                self.tally.problem("connections", f"client {self.index}: {type(exc).__name__}: {exc}")
                time.sleep(1.0)

    # One connection: submit, maybe cancel, maybe disconnect, collect every last word.
    def connection(self) -> None:
        ws = connect(self.url, compression=None, max_size=None, open_timeout=CONNECT_TIMEOUT, close_timeout=5)
        self.tally.count(connections=1)
        try:
            ws.send(p.encode(p.Hello(client="soak", client_version="1")))
            welcome = decode(ws.recv(timeout=CONNECT_TIMEOUT))
            if not isinstance(welcome, p.Welcome):
                self.tally.problem("connections", f"client {self.index}: hello answered by {welcome!r}")
                return
            self.follow(ws)
        finally:
            ws.close()

    def follow(self, ws: ClientConnection) -> None:
        rng, start = self.rng, time.monotonic()
        submit_times = sorted(start + rng.uniform(0.0, 1.0) for _ in range(rng.randint(1, 3)))
        disconnect = rng.choices(["no", "early", "running"], weights=[6, 1, 1])[0]
        disconnect_at = start + rng.uniform(0.1, 3.0) if disconnect == "early" else None
        jobs: dict[str, Job] = {}  # every job of this connection, ended or not
        cancel_all = False

        def waiting() -> list[Job]:
            return [job for job in jobs.values() if job.last is None]

        while True:
            now = time.monotonic()
            if submit_times and now >= submit_times[0]:
                submit_times.pop(0)
                if now < self.deadline:
                    job = self.submit(ws, now)
                    jobs[job.job_id] = job
            if now >= self.deadline and not cancel_all:
                cancel_all = True  # time is up: cancel what is left
                for job in waiting():
                    job.cancel_at = now
            for job in waiting():
                if job.cancel_at is not None and now >= job.cancel_at and not job.cancel_sent:
                    job.cancel_sent = True  # once: a second cancel of a cancelled job is unknown_job
                    ws.send(p.encode(p.Cancel(job.job_id)))
                    self.tally.count(cancels_sent=1)
            if disconnect_at is not None and now >= disconnect_at:
                self.drop(ws, waiting())
                return
            if not submit_times and not waiting():
                break
            for job in waiting():
                if now - job.submitted > LAST_WORD_TIMEOUT:
                    self.tally.problem(
                        "connections", f"{job.job_id}: no last word after {LAST_WORD_TIMEOUT:.0f} s"
                    )
                    self.tally.count(lost=1)
                    job.last = "lost"
            try:
                message = decode(ws.recv(timeout=0.05))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.lost_connection(exc, waiting())
                return
            started = self.take(message, jobs)
            if started is not None:
                if started.fate == "cancel-running" and started.cancel_at is None:
                    started.cancel_at = time.monotonic() + rng.uniform(0.0, 0.5)
                if disconnect == "running" and disconnect_at is None:
                    disconnect_at = time.monotonic() + rng.uniform(0.0, 1.0)
        # Every job had its last word: a status round trip brings in anything sent after one.
        ws.send(p.encode(p.GetStatus()))
        give_up = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < give_up:
            try:
                message = decode(ws.recv(timeout=give_up - time.monotonic()))
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                self.lost_connection(exc, [])
                return
            if isinstance(message, p.Status):
                return
            self.take(message, jobs)
        self.tally.problem("connections", f"client {self.index}: no status within {CONNECT_TIMEOUT:.0f} s")

    def submit(self, ws: ClientConnection, now: float) -> Job:
        rng = self.rng
        self.serial += 1
        width, height = rng.choice(SIDES), rng.choice(SIDES)
        fate = rng.choices(["finish", "cancel-soon", "cancel-running"], weights=[4, 1, 1])[0]
        job = Job(
            job_id=f"c{self.index}-{self.serial}",
            width=width,
            height=height,
            x=rng.randint(-5000, 5000),
            y=rng.randint(-5000, 5000),
            format=rng.choice(FORMATS),
            fate=fate,
            submitted=now,
            cancel_at=now + rng.uniform(0.0, 2.0) if fate == "cancel-soon" else None,
        )
        message = p.Submit(
            job_id=job.job_id,
            image=p.Image(width, height, job.format, self.pixels.bytes(width * height * 4)),
            mask=soak_mask(width, height),
            params=p.JobParams(
                prompt="soak",
                steps=rng.choice((1, 2, 3)),
                seed=rng.randrange(2**32),
                preview=rng.random() < 0.5,
            ),
            x=job.x,
            y=job.y,
        )
        job.submitted = time.monotonic()
        ws.send(p.encode(message))
        self.tally.count(submitted=1)
        return job

    def take(self, message: Any, jobs: dict[str, Job]) -> Job | None:
        """Check one message against this connection's jobs; the job it shows starting, if any."""
        now = time.monotonic()
        job_id = getattr(message, "job_id", None)
        job = jobs.get(job_id) if isinstance(job_id, str) else None
        where = f"client {self.index}"
        if isinstance(message, p.Status):
            return None  # a late answer to a status request
        if job is None:
            self.tally.problem("misrouted", f"{where}: {message.TYPE} for a job it never sent: {job_id!r}")
            return None
        if job.last is not None:
            self.tally.problem("misrouted", f"{job_id}: {message.TYPE} after its last word ({job.last})")
            return None
        if isinstance(message, p.Accepted):
            if job.accepted is not None:
                self.tally.problem("misrouted", f"{job_id}: accepted twice")
            job.accepted = now
            with self.tally.lock:
                self.tally.to_accepted.append(now - job.submitted)
            return None
        if isinstance(message, (p.Progress, p.Preview)):
            if job.accepted is None:
                self.tally.problem("misrouted", f"{job_id}: {message.TYPE} before accepted")
            running = isinstance(message, p.Progress) and message.stage != p.Stage.QUEUED
            return job if running else None
        if isinstance(message, p.Result):
            job.last = "result"
            sent = (job.x, job.y, job.width, job.height, job.format)
            got = (message.x, message.y, message.image.width, message.image.height, message.image.format)
            if got != sent or job.accepted is None:
                self.tally.problem("misrouted", f"{job_id}: result {got} for {sent}, accepted {job.accepted}")
            with self.tally.lock:
                self.tally.completed += 1
                self.tally.to_result.append(now - job.submitted)
            return None
        if isinstance(message, p.Cancelled):
            job.last = "cancelled"
            if job.accepted is None:
                self.tally.problem("misrouted", f"{job_id}: cancelled before accepted")
            self.tally.count(cancelled=1)
            return None
        if isinstance(message, p.Error):
            job.last = message.code.value
            with self.tally.lock:
                self.tally.refused[message.code.value] += 1
            if message.code not in DOCUMENTED_REFUSALS:
                self.tally.problem("errors", f"{job_id}: error {message.code.value}: {message.message}")
            return None
        self.tally.problem("misrouted", f"{job_id}: unexpected {message!r}")
        return None

    def drop(self, ws: ClientConnection, waiting: list[Job]) -> None:
        """Disconnect on purpose: the daemon drops these jobs and tells nobody."""
        abrupt = self.rng.random() < 0.5
        if abrupt:  # as a crashed host would: no close handshake
            with contextlib.suppress(OSError):
                ws.socket.shutdown(socket.SHUT_RDWR)
        ws.close()
        with self.tally.lock:
            self.tally.disconnects["abrupt" if abrupt else "clean"] += 1
            self.tally.abandoned += len(waiting)

    def lost_connection(self, exc: ConnectionClosed, waiting: list[Job]) -> None:
        self.tally.problem("connections", f"client {self.index}: the daemon closed the connection ({exc})")
        self.tally.count(lost=len(waiting))


def decode(data: bytes | str) -> Any:
    return p.decode(data, p.DEFAULT_LIMITS, p.SERVER_MESSAGES)


def soak_mask(width: int, height: int) -> p.Mask:
    """A white rectangle in the middle and a gray band (partial strength) at the top."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    mask[: height // 4, :] = 128
    return p.Mask(width, height, mask.tobytes())


# --- the daemon's resources ----------------------------------------------------------------


@dataclass
class Sample:
    elapsed: float
    rss_kib: int
    fds: int  # every open file descriptor
    conns: int  # of which: client connections (TCP sockets on the daemon's port, not the listener)
    completed: int
    cancelled: int
    refused: int

    @property
    def own_fds(self) -> int:
        """The fds that do not come and go with clients: what a leak would grow."""
        return self.fds - self.conns


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def socket_inodes(port: int) -> tuple[set[str], set[str]]:
    """(inodes of TCP connections to `port`, inodes of every other socket the kernel lists).

    A TCP socket that is fully closed (a reset, a finished close) leaves these tables
    while its owner may not have closed its fd yet: a socket in neither set.
    """
    connections, others = set(), set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6", "/proc/net/unix"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if table.endswith("unix"):
                others.add(fields[6])
            elif "tcp" in table and fields[3] != "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                connections.add(fields[9])  # not 0A: LISTEN
            else:
                others.add(fields[9])
    return connections, others


def open_fds(pid: int, port: int) -> tuple[int, int]:
    """(open fds, client connections among them: TCP sockets on `port` other than the
    listening one, and closed sockets whose fd is still open)."""
    connections, others = socket_inodes(port)
    total = conns = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        total += 1
        found = re.fullmatch(r"socket:\[(\d+)\]", target)
        conns += bool(found and (found[1] in connections or found[1] not in others))
    return total, conns


def sample(daemon: DaemonProcess, tally: Tally, elapsed: float) -> Sample:
    fds, conns = open_fds(daemon.process.pid, daemon.port)
    with tally.lock:
        return Sample(
            elapsed,
            rss_kib(daemon.process.pid),
            fds,
            conns,
            tally.completed,
            tally.cancelled,
            sum(tally.refused.values()),
        )


HEADER = (
    f"{'time':>6} {'RSS MiB':>8} {'fds':>5} {'conns':>6} {'completed':>10} {'cancelled':>10} {'refused':>8}"
)
LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")


def log_problems(daemon: DaemonProcess, found: dict[str, None]) -> None:
    """Collect the daemon's error lines (its output keeps the last 2000 lines: look often)."""
    for line in daemon.output.splitlines():
        if LOG_PROBLEM.search(line):
            found.setdefault(line)


# --- the soak ------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    tally: Tally
    samples: list[Sample]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def check(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def warm_up(url: str) -> float:
    """The model load and one job of every region shape the clients send, to their results.

    The daemon's memory grows the first time it runs a shape, then no more (measured on
    two cores: 418 -> 480 MiB over these 16 shapes, then flat over 40 more random jobs of
    the same shapes): without this, the first-minute baseline would fall inside that
    growth, which is not a leak.
    """
    started = time.monotonic()
    with connect(url, compression=None, max_size=None, open_timeout=CONNECT_TIMEOUT) as ws:
        ws.send(p.encode(p.Hello(client="soak-warm-up")))
        decode(ws.recv(timeout=CONNECT_TIMEOUT))
        for width, height in itertools.product(SIDES, SIDES):
            job_id = f"warm-up-{width}x{height}"
            image = p.Image(width, height, p.PixelFormat.RGBA8, bytes(width * height * 4))
            params = p.JobParams(prompt="soak", steps=1, preview=False)
            ws.send(p.encode(p.Submit(job_id, image, soak_mask(width, height), params)))
            while True:
                message = decode(ws.recv(timeout=LAST_WORD_TIMEOUT))
                if isinstance(message, (p.Result, p.Cancelled, p.Error)) and message.job_id == job_id:
                    break
            if not isinstance(message, p.Result):
                raise RuntimeError(f"the warm-up job {job_id} failed: {message!r}")
    return time.monotonic() - started


def run_soak(
    clients: int = 8,
    seconds: float = 600.0,
    *,
    interval: float = 60.0,
    warmup: float = 60.0,
    seed: int = 1,
    say: Callable[[str], None] = print,
) -> Report:
    """Run the soak against a fresh daemon and return what it saw and its checks."""
    tally = Tally()
    samples: list[Sample] = []
    log_lines: dict[str, None] = {}
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as config,
        running_daemon(model=MODEL, config_dir=config) as daemon,
    ):
        say(f"daemon pid {daemon.process.pid} on {daemon.url}, model {MODEL}")
        say(f"warm-up (the model load, one job per region shape): {warm_up(daemon.url):.1f} s")
        say(f"{clients} clients for {clock(seconds)} (m:ss); the daemon every {interval:g} s:")
        say(HEADER)

        def record(elapsed: float) -> None:
            row = sample(daemon, tally, elapsed)
            samples.append(row)
            say(
                f"{clock(row.elapsed):>6} {row.rss_kib / 1024:>8.1f} {row.fds:>5} {row.conns:>6} "
                f"{row.completed:>10} {row.cancelled:>10} {row.refused:>8}"
            )

        start = time.monotonic()
        deadline = start + seconds
        record(0.0)
        team = [Client(i, daemon.url, deadline, tally, seed) for i in range(clients)]
        for client in team:
            client.thread.start()
        next_sample = start + interval
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, min(next_sample, deadline) - time.monotonic())))
            log_problems(daemon, log_lines)
            if time.monotonic() >= next_sample and time.monotonic() < deadline:
                record(next_sample - start)
                next_sample += interval
        # Time is up: the clients cancel what is left and leave.
        give_up = time.monotonic() + DRAIN_TIMEOUT
        for client in team:
            client.thread.join(max(0.0, give_up - time.monotonic()))
        stuck = [client.index for client in team if client.thread.is_alive()]
        # The daemon closes its side of every connection: wait for it, briefly.
        settle = time.monotonic() + 10.0
        while open_fds(daemon.process.pid, daemon.port)[1] and time.monotonic() < settle:
            time.sleep(0.2)
        record(time.monotonic() - start)
        log_problems(daemon, log_lines)
        alive = daemon.process.poll() is None
        exit_code = daemon.stop()
        log_problems(daemon, log_lines)

    baseline = next((s for s in samples if s.elapsed >= warmup), samples[0])
    final = samples[-1]
    problems = tally.problems
    checks = [
        Check(
            "lost",
            tally.lost == 0 and not problems["connections"] and not stuck,
            f"{tally.lost} job(s) without a last word on an open connection"
            + (f"; clients {stuck} still running {DRAIN_TIMEOUT:.0f} s after the end" if stuck else "")
            + listed(problems["connections"]),
        ),
        Check(
            "misrouted",
            not problems["misrouted"],
            f"{len(problems['misrouted'])} message(s) for a job not sent, not waited for, or not "
            "matching what was sent; exactly one last word per job" + listed(problems["misrouted"]),
        ),
        Check(
            "errors",
            not problems["errors"],
            f"{len(problems['errors'])} error(s) other than "
            + ", ".join(sorted(code.value for code in DOCUMENTED_REFUSALS))
            + listed(problems["errors"]),
        ),
        growth_check("rss", "RSS", baseline.rss_kib / 1024, final.rss_kib / 1024, " MiB", baseline, final),
        growth_check(
            "fds", "fds less client connections", baseline.own_fds, final.own_fds, "", baseline, final
        ),
        Check("connections", final.conns == 0, f"{final.conns} client connection(s) open at the end"),
        Check(
            "log",
            not log_lines,
            f"{len(log_lines)} traceback/ERROR line(s) in the daemon's log" + listed(list(log_lines)),
        ),
        Check("exit", alive and exit_code == 0, f"daemon alive at the end: {alive}; exit status {exit_code}"),
    ]
    return Report(tally, samples, checks)


def listed(lines: list[str], most: int = 10) -> str:
    more = f"\n      ... and {len(lines) - most} more" if len(lines) > most else ""
    return "".join(f"\n      {line}" for line in lines[:most]) + more


def growth_check(
    name: str, what: str, before: float, after: float, unit: str, first: Sample, last: Sample
) -> Check:
    growth = (after - before) / before if before else 0.0
    detail = (
        f"{what} {before:.1f}{unit} at {clock(first.elapsed)} -> {after:.1f}{unit} at {clock(last.elapsed)} "
        f"({growth:+.1%}, limit +{GROWTH_LIMIT:.0%})"
    )
    return Check(name, growth <= GROWTH_LIMIT, detail)


def print_report(report: Report, say: Callable[[str], None] = print) -> None:
    tally = report.tally
    refused = ", ".join(f"{code} {n}" for code, n in sorted(tally.refused.items())) or "none"
    say("")
    say(
        f"connections          {tally.connections} ({tally.disconnects['clean']} closed and "
        f"{tally.disconnects['abrupt']} dropped mid-job on purpose)"
    )
    say(f"jobs submitted       {tally.submitted}")
    say(f"  completed          {tally.completed}")
    say(f"  cancelled          {tally.cancelled} ({tally.cancels_sent} cancels sent)")
    say(f"  refused            {sum(tally.refused.values())} ({refused})")
    say(f"  abandoned          {tally.abandoned} (their client disconnected first)")
    say(f"  lost               {tally.lost}")
    for label, values, scale, unit in (
        ("submit -> accepted", tally.to_accepted, 1000.0, "ms"),
        ("submit -> result  ", tally.to_result, 1.0, "s"),
    ):
        say(
            f"{label}   p50 {percentile(values, 0.5) * scale:.1f} {unit}, "
            f"p95 {percentile(values, 0.95) * scale:.1f} {unit} (n={len(values)})"
        )
    say("")
    for check in report.checks:
        say(f"{'PASS' if check.ok else 'FAIL'}  {check.name:<12} {check.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="how long, in seconds (overrides --minutes)"
    )
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the baseline sample (default: 60, or a quarter of a shorter soak)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60.0
    if seconds <= 0 or args.clients < 1 or args.interval <= 0:
        parser.error("--clients, the duration and --interval must be positive")
    warmup = args.warmup if args.warmup is not None else min(60.0, seconds / 4)
    report = run_soak(
        args.clients, seconds, interval=min(args.interval, seconds), warmup=warmup, seed=args.seed
    )
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
