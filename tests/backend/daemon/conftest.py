"""Fixtures for the daemon's tests: a scripted engine, an in-process server, raw clients.

The in-process server runs the real `DaemonServer` on its own event loop in a
background thread, bound to 127.0.0.1 on an ephemeral port; tests talk to it
over real websockets from the test thread (blocking clients), exactly as the
plugins do.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon.models import ModelCatalog
from differential_inpaint.backend.daemon.server import DaemonServer, ServerConfig
from differential_inpaint.backend.engine.errors import JobCancelled, UnknownModel

TIMEOUT = 20.0  # generous: the suite must pass on a loaded 2-core machine


@dataclass
class EngineModel:
    name: str
    family: str
    source: str = "test"


@dataclass
class Call:
    """One `inpaint` call as the fake engine saw it."""

    shape: tuple[int, ...]
    params: Any
    model: str
    cancelled_at: int | None = None  # the step at which should_cancel() was seen
    preview_times: list[float] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)


class FakeEngine:
    """The engine's API with scripted behaviour, fast and deterministic.

    Output: RGB inverted wherever the mask is above 0, alpha = (mask > 0);
    RGB untouched and alpha 0 where the mask is 0 (like the real engine).
    `hold` (when set by a test) pauses every job at step 1 until released,
    polling should_cancel() as the real sampler does once per step.
    """

    device = "cpu"
    schedulers = ("euler", "ddim")

    def __init__(self, step_seconds: float = 0.0) -> None:
        self.step_seconds = step_seconds
        self.models = [EngineModel("builtin:tiny-sd15", "sd15", "builtin"), EngineModel("test:sdxl", "sdxl")]
        self.calls: list[Call] = []
        self.running = threading.Event()  # set when a job reaches step 1
        self.hold: threading.Event | None = None
        self.fail_with: BaseException | None = None  # raised by the next inpaint call
        self.lock = threading.Lock()

    def list_models(self) -> list[EngineModel]:
        return list(self.models)

    def resolve_model(self, spec: str | None) -> str:
        if spec is None:
            return self.models[0].name
        for m in self.models:
            if m.name == spec:
                return m.name
        raise UnknownModel(f"no model '{spec}'")

    def inpaint_batch(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: Any,
        *,
        model: str | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
        on_preview: Callable[[int, int, Callable[[], np.ndarray]], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        selection: np.ndarray | None = None,
        blend: np.ndarray | None = None,
    ) -> list[Any]:
        """Each result: `steps` steps, then the input with the mask's area inverted;
        result k's seed is the job's + k (42 + k without one)."""
        call = Call(image.shape, params, model or "")
        with self.lock:
            self.calls.append(call)
            failure, self.fail_with = self.fail_with, None
        try:
            assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 4
            assert mask.dtype == np.float64 and mask.shape == image.shape[:2]
            if failure is not None:
                raise failure
            steps = params.steps
            on_progress("loading", 0, 0)
            on_progress("encoding", 0, 0)

            def make_preview() -> np.ndarray:
                call.preview_times.append(time.monotonic())
                return np.full((300, 200, 4), 128, np.uint8)  # too big on purpose: the daemon shrinks it

            results = []
            for index in range(params.results):
                for step in range(1, steps + 1):
                    if should_cancel():
                        call.cancelled_at = step
                        raise JobCancelled("cancelled")
                    if step == 1 and index == 0:
                        self.running.set()
                        while self.hold is not None and not self.hold.wait(0.005):
                            if should_cancel():
                                call.cancelled_at = step
                                raise JobCancelled("cancelled")
                    if self.step_seconds:
                        time.sleep(self.step_seconds)
                    on_progress("sampling", index * steps + step, params.results * steps)
                    on_preview(index, step, make_preview)
                on_progress("decoding", 0, 0)
                out = image.copy()
                changed = mask > 0
                out[changed, :3] = 1.0 - out[changed, :3]
                out[..., 3] = changed.astype(np.float32)
                seed = params.result_seed(42 if params.seed is None else params.seed, index)
                results.append(
                    FakeResult(out, seed, {"sampling": 0.01}, index, params.result_strength(index), mask)
                )
                if on_result is not None:
                    on_result(results[-1])
            return results
        finally:
            call.finished.set()

    def strength_map(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        params: Any,
        *,
        selection: np.ndarray | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """The mask (times the selection) times the strength; held like a job by `hold`."""
        call = Call(image.shape, params, "")
        with self.lock:
            self.calls.append(call)
        try:
            assert mask.dtype == np.float64 and mask.shape == image.shape[:2]
            on_progress("encoding", 0, 1)
            self.running.set()
            while self.hold is not None and not self.hold.wait(0.005):
                if should_cancel():
                    call.cancelled_at = 0
                    raise JobCancelled("cancelled")
            return (mask if selection is None else mask * selection) * params.strength
        finally:
            call.finished.set()


@dataclass
class FakeResult:
    image: np.ndarray
    seed: int
    timings: dict[str, float]
    index: int = 0
    strength: float = 1.0
    mask: np.ndarray | None = None  # the map the result was made with: its zeros are kept


def catalog_for(engine: Any) -> ModelCatalog:
    models = tuple(p.ModelInfo(m.name, m.family) for m in engine.list_models())
    return ModelCatalog(models, models[0].name)


class InProcessDaemon:
    """The real DaemonServer on a background event loop; `url` to connect to."""

    def __init__(self, engine: Any, config: ServerConfig, **runner_options: Any) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="daemon-loop", daemon=True)
        self.thread.start()
        self.server = DaemonServer(engine, catalog_for(engine), config, **runner_options)
        self.port = self.call(self.server.start())
        self.url = f"ws://127.0.0.1:{self.port}"

    def call(self, coroutine: Any, timeout: float = TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., InProcessDaemon]]:
    """Factory: make_daemon(engine, **ServerConfig fields) -> a running InProcessDaemon."""
    started: list[InProcessDaemon] = []

    def make(engine: Any, **config: Any) -> InProcessDaemon:
        config.setdefault("preview_interval", 0.0)
        config.setdefault("shutdown_grace", 5.0)
        daemon = InProcessDaemon(engine, ServerConfig(host="127.0.0.1", port=0, **config))
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.engine is not None and getattr(daemon.engine, "hold", None) is not None:
            daemon.engine.hold.set()
        daemon.stop()


@pytest.fixture
def daemon(engine: FakeEngine, make_daemon: Callable[..., InProcessDaemon]) -> InProcessDaemon:
    return make_daemon(engine)


# --- building jobs --------------------------------------------------------------


def gradient_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 4), dtype=np.uint8)


def make_submit(
    job_id: str = "job-1",
    width: int = 32,
    height: int = 24,
    *,
    seed: int = 0,
    mask: np.ndarray | None = None,
    **params: Any,
) -> p.Submit:
    pixels = gradient_image(width, height, seed)
    if mask is None:
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    params.setdefault("steps", 3)
    return p.Submit(
        job_id=job_id,
        image=p.Image(width, height, p.PixelFormat.RGBA8, pixels.tobytes()),
        mask=p.Mask(width, height, mask.tobytes()),
        params=p.JobParams(**params),
        x=10,
        y=20,
    )


# --- raw clients -----------------------------------------------------------------


DEFAULT_HELLO = p.Hello(client="test-client", client_version="1")


class RawClient:
    """A blocking websocket client speaking the protocol message by message."""

    def __init__(
        self,
        url: str,
        *,
        hello: p.Hello | None = DEFAULT_HELLO,
        **connect_options: Any,
    ) -> None:
        connect_options.setdefault("compression", None)
        connect_options.setdefault("max_size", None)
        connect_options.setdefault("open_timeout", TIMEOUT)
        self.ws: ClientConnection = connect(url, **connect_options)
        self.seen: list[Any] = []
        self.welcome: p.Welcome | None = None
        if hello is not None:
            self.send(hello)
            welcome = self.recv()
            assert isinstance(welcome, p.Welcome), welcome
            self.welcome = welcome

    def send(self, message: Any) -> None:
        self.ws.send(p.encode(message))

    def send_raw(self, data: bytes | str) -> None:
        self.ws.send(data)

    def recv(self, timeout: float = TIMEOUT) -> Any:
        message = p.decode(self.ws.recv(timeout=timeout), p.DEFAULT_LIMITS, p.SERVER_MESSAGES)
        self.seen.append(message)
        return message

    def until(self, predicate: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        """Receive until a message matches; returns it (everything is kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message within {timeout} s; seen: {self.seen[-20:]}")
            message = self.recv(left)
            if predicate(message):
                return message

    def until_type(self, kind: type, job_id: str | None = None, timeout: float = TIMEOUT) -> Any:
        return self.until(
            lambda m: isinstance(m, kind) and (job_id is None or getattr(m, "job_id", None) == job_id),
            timeout,
        )

    def final(self, job_id: str, timeout: float = TIMEOUT) -> Any:
        """The job's last word: its last result (a strength map's `map`), cancelled or error."""
        return self.until(
            lambda m: (
                (
                    isinstance(m, (p.Cancelled, p.Error, p.StrengthMap))
                    or (isinstance(m, p.Result) and m.is_last)
                )
                and m.job_id == job_id
            ),
            timeout,
        )

    def run(self, submit: p.Submit, timeout: float = TIMEOUT) -> Any:
        self.send(submit)
        return self.final(submit.job_id, timeout)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_good_job(url: str, job_id: str = "after") -> p.Result:
    """A fresh connection runs a job to its result: the daemon is still serving."""
    with RawClient(url) as client:
        result = client.run(make_submit(job_id))
        assert isinstance(result, p.Result), result
        return result


def raw_handshake(port: int, headers: dict[str, str] | list[tuple[str, str]]) -> tuple[int, str]:
    """Send an opening handshake with exactly these headers; (HTTP status, body)."""
    items = headers.items() if isinstance(headers, dict) else headers
    lines = ["GET / HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in items]
    lines += [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        return status, body.decode("utf-8", "replace")
