"""A stand-in daemon whose results are known to the byte (for the fast tests and,
beside the real daemon, for the real-Krita tests of exact pixel handling).

It answers every job with the submitted pixels unchanged and the alpha replaced
by the mask, in the submitted format, so a test can predict the new layer
exactly in every depth. The prompt's prefix picks a failure instead:
    "fail:"   an `error` for the job
    "drop:"   one progress message, then the connection closes mid-job
    "slow:"   progress every 50 ms until the client cancels, then `cancelled`
    "shift:"  a result placed 8 px off the submitted region (a broken daemon)
A `hello` whose token is WRONG_TOKEN is refused as unauthorized; the tokens of
the jobs' hellos are kept in `tokens`, beside `submits`.
Run it as a script to serve on a given port: `python fake_daemon.py PORT`.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from differential_inpaint import protocol as p

FAIL_MESSAGE = "The fake daemon failed this job on purpose"
WRONG_TOKEN = "wrong-token"


def alpha_from_mask(image: p.Image, mask: bytes) -> bytes:
    """`image` with its alpha channel replaced by `mask`, in the image's own format."""
    fmt = p.PixelFormat(image.format)
    if fmt in (p.PixelFormat.BGRA8, p.PixelFormat.RGBA8):
        out = bytearray(image.data)
        out[3::4] = mask
        return bytes(out)
    if fmt in (p.PixelFormat.BGRA16, p.PixelFormat.RGBA16):
        values = array("H", image.data)
        values[3::4] = array("H", [m * 257 for m in mask])
        return values.tobytes()
    code = "e" if fmt is p.PixelFormat.RGBAF16 else "f"
    count = len(image.data) // struct.calcsize(code)
    floats = list(struct.unpack(f"<{count}{code}", image.data))
    floats[3::4] = [m / 255 for m in mask]
    return struct.pack(f"<{count}{code}", *floats)


class FakeDaemon:
    def __init__(self) -> None:
        self.submits: list[p.Submit] = []
        self.tokens: list[str | None] = []  # hello.token of each submit's connection
        self.url = ""
        self._lock = threading.Lock()

    def _handle(self, ws: ServerConnection) -> None:
        with suppress(ConnectionClosed):
            self._serve(ws)

    def _serve(self, ws: ServerConnection) -> None:
        hello = p.decode(ws.recv(), accept=p.CLIENT_MESSAGES)
        assert isinstance(hello, p.Hello)
        if hello.token == WRONG_TOKEN:
            ws.send(p.encode(p.Error(p.ErrorCode.UNAUTHORIZED, "wrong token")))
            return
        welcome = p.Welcome(
            server="fake",
            server_version="0",
            models=[p.ModelInfo("fake", "sd15"), p.ModelInfo("fake-xl", "sdxl")],
            default_model="fake",
            capabilities=["cancel", "preview"],
        )
        ws.send(p.encode(welcome))
        try:
            submit = p.decode(ws.recv(), accept=p.CLIENT_MESSAGES)
        except ConnectionClosed:
            return  # a models query: hello, welcome, close
        assert isinstance(submit, p.Submit)
        with self._lock:
            self.submits.append(submit)
            self.tokens.append(hello.token)
        job, prompt, steps = submit.job_id, submit.params.prompt, submit.params.steps
        if prompt.startswith("fail:"):
            ws.send(p.encode(p.Error(p.ErrorCode.JOB_FAILED, FAIL_MESSAGE, job)))
            return
        ws.send(p.encode(p.Progress(job, p.Stage.SAMPLING, 1, steps)))
        if prompt.startswith("drop:"):
            return  # returning closes the connection mid-job
        if prompt.startswith("slow:"):
            while True:
                try:
                    message = p.decode(ws.recv(timeout=0.05), accept=p.CLIENT_MESSAGES)
                except TimeoutError:
                    ws.send(p.encode(p.Progress(job, p.Stage.SAMPLING, 1, steps)))
                    continue
                if isinstance(message, p.Cancel):
                    ws.send(p.encode(p.Cancelled(job)))
                    return
        preview = p.Image(2, 2, p.PixelFormat.RGBA8, bytes([255, 0, 0, 255]) * 4)
        ws.send(p.encode(p.Preview(job, 1, preview)))
        for step in range(2, steps + 1):
            ws.send(p.encode(p.Progress(job, p.Stage.SAMPLING, step, steps)))
        image = submit.image
        fmt = submit.params.output_format or image.format
        assert fmt == image.format, "this fake only answers in the submitted format"
        data = alpha_from_mask(image, submit.mask.data)
        shift = 8 if prompt.startswith("shift:") else 0
        result = p.Result(
            job,
            p.Image(image.width, image.height, image.format, data, image.color),
            submit.x + shift,
            submit.y,
            seed=submit.params.seed if submit.params.seed is not None else 4242,
            model=submit.params.model or "fake",
            timings={"total": 0.01},
        )
        ws.send(p.encode(result))
        with suppress(TimeoutError):
            ws.recv(timeout=10)  # until the client closes


@contextmanager
def fake_daemon(port: int = 0) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon()
    with serve(daemon._handle, "127.0.0.1", port, compression=None, max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, bound = server.socket.getsockname()[:2]
        daemon.url = f"ws://{host}:{bound}"
        try:
            yield daemon
        finally:
            server.shutdown()
            thread.join(5)


if __name__ == "__main__":
    with fake_daemon(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as running:
        print(f"listening on {running.url}", flush=True)
        while True:
            time.sleep(3600)
