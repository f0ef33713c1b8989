"""A stand-in daemon whose answers are known to the byte, for the real-GIMP tests.

It records every `submit` and answers by the prompt's prefix:
    "fail: ..."  an `error` for the job (the plug-in must show its message)
    "drop: ..."  one progress message, then the connection closes
    "kill: ..."  one progress message, then the plug-in's process is killed with
                 SIGKILL, as GIMP's Cancel button does to a running plug-in
    anything else: progress for each step, then a `result` whose colours are
    the submitted ones inverted and whose alpha is the mask — so the test can
    check the new layer byte for byte, in the image's own precision.
A `hello` whose token is WRONG_TOKEN is refused as unauthorized; the tokens
that came are recorded by the prompt of their job.
"""

from __future__ import annotations

import os
import signal
import struct
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
PLUGIN_FILE = "differential-inpaint/differential-inpaint.py"


def _tcp_inode(local_port: int, remote_port: int) -> str | None:
    """The socket inode of the loopback TCP connection local_port -> remote_port."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == local_port and int(
                remote.split(":")[1], 16
            ) == remote_port:
                return inode
    return None


def peer_plugin_pid(ws: ServerConnection) -> int | None:
    """The pid of the GIMP plug-in at the other end of `ws` (the chroot shares the
    host's process and network namespaces), or None when it is not our plug-in."""
    inode = _tcp_inode(ws.remote_address[1], ws.local_address[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with suppress(OSError):
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
                return int(pid) if PLUGIN_FILE in cmdline else None
    return None


def _expand_mask(mask: bytes, fmt: p.PixelFormat) -> list[float] | list[int] | bytes:
    if fmt is p.PixelFormat.RGBA8:
        return mask
    if fmt is p.PixelFormat.RGBA16:
        return [m * 257 for m in mask]
    return [m / 255 for m in mask]


def expected_result(image: p.Image, mask: bytes) -> bytes:
    """What the fake returns for `image`: RGB inverted, alpha = mask (in the image's format)."""
    fmt = p.PixelFormat(image.format)
    if fmt is p.PixelFormat.RGBA8:
        out = bytearray(image.data)
        invert = bytes(range(255, -1, -1))
        for c in range(3):
            out[c::4] = out[c::4].translate(invert)
        out[3::4] = mask
        return bytes(out)
    if fmt is p.PixelFormat.RGBA16:
        values = array("H", image.data)
        for c in range(3):
            values[c::4] = array("H", (65535 - v for v in values[c::4]))
        values[3::4] = array("H", _expand_mask(mask, fmt))
        return values.tobytes()
    code = {p.PixelFormat.RGBAF16: "e", p.PixelFormat.RGBAF32: "f"}[fmt]
    count = len(image.data) // struct.calcsize(code)
    floats = list(struct.unpack(f"<{count}{code}", image.data))
    for c in range(3):
        floats[c::4] = [1.0 - v for v in floats[c::4]]
    floats[3::4] = _expand_mask(mask, fmt)
    return struct.pack(f"<{count}{code}", *floats)


class FakeDaemon:
    def __init__(self) -> None:
        self.submits: dict[str, p.Submit] = {}  # by prompt
        self.tokens: dict[str, str | None] = {}  # hello.token, by the prompt of its job
        self.endings: dict[str, str] = {}  # how "kill:" jobs ended, by prompt
        self.url = ""
        self._lock = threading.Lock()

    def _handle(self, ws: ServerConnection) -> None:
        hello = p.decode(ws.recv(), accept=p.CLIENT_MESSAGES)
        assert isinstance(hello, p.Hello)
        if hello.token == WRONG_TOKEN:
            ws.send(p.encode(p.Error(p.ErrorCode.UNAUTHORIZED, "wrong token")))
            return
        ws.send(p.encode(p.Welcome(
            server="fake", server_version="0", models=[p.ModelInfo("fake", "sd15")],
            default_model="fake", capabilities=["cancel"],
        )))
        submit = p.decode(ws.recv(), accept=p.CLIENT_MESSAGES)
        assert isinstance(submit, p.Submit)
        with self._lock:
            self.submits[submit.params.prompt] = submit
            self.tokens[submit.params.prompt] = hello.token
        prompt = submit.params.prompt
        if prompt.startswith("fail:"):
            ws.send(p.encode(p.Error(p.ErrorCode.JOB_FAILED, FAIL_MESSAGE, submit.job_id)))
            return
        steps = submit.params.steps
        ws.send(p.encode(p.Progress(submit.job_id, p.Stage.SAMPLING, 1, steps)))
        if prompt.startswith("drop:"):
            return  # the handler returning closes the connection mid-job
        if prompt.startswith("kill:"):
            self.endings[prompt] = self._kill_peer(ws, submit)
            return
        for step in range(2, steps + 1):
            ws.send(p.encode(p.Progress(submit.job_id, p.Stage.SAMPLING, step, steps)))
        image = submit.image
        data = expected_result(image, submit.mask.data)
        result = p.Result(
            submit.job_id, p.Image(image.width, image.height, image.format, data),
            submit.x, submit.y, seed=submit.params.seed or 1234, model="fake",
        )
        ws.send(p.encode(result))
        with suppress(ConnectionClosed, TimeoutError):
            ws.recv(timeout=10)  # until the client closes


    def _kill_peer(self, ws: ServerConnection, submit: p.Submit) -> str:
        """Kill the plug-in mid-job as GIMP's Cancel does; how the job then ended."""
        pid = peer_plugin_pid(ws)
        if pid is None:
            return "the peer is not the plug-in"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        step = 1
        try:
            while time.monotonic() < deadline:  # a job still running: more progress
                step += 1
                ws.send(p.encode(p.Progress(submit.job_id, p.Stage.SAMPLING, step, 1000)))
                with suppress(TimeoutError):
                    message = p.decode(ws.recv(timeout=0.05), accept=p.CLIENT_MESSAGES)
                    if isinstance(message, p.Cancel):
                        return "cancel message"
        except ConnectionClosed:
            return "client gone"
        return "still connected"


@contextmanager
def fake_daemon() -> Iterator[FakeDaemon]:
    daemon = FakeDaemon()
    with serve(daemon._handle, "127.0.0.1", 0, compression=None, max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        daemon.url = f"ws://{host}:{port}"
        try:
            yield daemon
        finally:
            server.shutdown()
            thread.join(5)
