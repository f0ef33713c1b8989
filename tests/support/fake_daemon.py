"""A stand-in daemon whose answers are known to the byte, for the Krita and GIMP plugin tests.

    from tests.support.fake_daemon import fake_daemon, expected_result

    with fake_daemon() as daemon:                      # 127.0.0.1, ephemeral port
        ...  # point the plugin at daemon.url
        submit = daemon.submits[-1]
        assert new_pixels == expected_result(submit.image, submit.mask.data)

It answers every job with the submitted pixels, alpha replaced by the mask (its
blend map when it has one; a map of another format as `map_bytes` reads it), in
the submitted format, so a test can predict the new layer exactly in every
depth (`expected_result`). A `strength_map` request gets a `map` of that mask as
opaque gray, in the submitted format (`gray_image`). With `invert_colours=True` (the GIMP tests) the
colours come back inverted too, so a new layer that merely copied the source
could not pass. When the job asks for previews it gets one 2x2 red preview.
The prompt's prefix picks a failure instead:
    "fail:"   an `error` for the job
    "drop:"   one progress message, then the connection closes mid-job
    "slow:"   progress every 50 ms until the client cancels, then `cancelled`; a job
              of several results sends its first result before that
    "shift:"  a result placed 8 px off the submitted region (a broken daemon)
    "kill:"   one progress message, then the GIMP plug-in at the other end is
              killed with SIGKILL, as GIMP's Cancel button does to a running
              plug-in; how the job then ended is kept in `endings`, by prompt
              (a peer that is not the GIMP plug-in is left alone)
A `hello` whose token is WRONG_TOKEN is refused as unauthorized. Every decoded
`submit` is kept in `submits`, and its connection's hello token in `tokens`
(same order); `submit_by_prompt` and `token_by_prompt` look them up by prompt.
A connection that closes after the welcome (a models query) is fine. Its welcome lists
one LoRA, ControlNet and IP-Adapter per family ("fake-lora", "fake-canny",
"fake-ip-adapter"; "-xl" for SDXL); conditioning changes no answer.
Run it as a script to serve on a given port: `python -m tests.support.fake_daemon PORT`.
"""

from __future__ import annotations

import os
import signal
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
GIMP_PLUGIN_FILE = "differential-inpaint/differential-inpaint.py"
_INVERT8 = bytes(range(255, -1, -1))


def expected_result(image: p.Image, mask: bytes, *, invert_colours: bool = False) -> bytes:
    """The fake's answer for `image`: alpha replaced by `mask` (and the colours
    inverted with `invert_colours`), in the image's own format."""
    fmt = p.PixelFormat(image.format)
    if fmt in (p.PixelFormat.BGRA8, p.PixelFormat.RGBA8):
        out = bytearray(image.data)
        if invert_colours:
            for c in range(3):
                out[c::4] = out[c::4].translate(_INVERT8)
        out[3::4] = mask
        return bytes(out)
    if fmt in (p.PixelFormat.BGRA16, p.PixelFormat.RGBA16):
        values = array("H", image.data)
        if invert_colours:
            for c in range(3):
                values[c::4] = array("H", (65535 - v for v in values[c::4]))
        values[3::4] = array("H", [m * 257 for m in mask])
        return values.tobytes()
    code = "e" if fmt is p.PixelFormat.RGBAF16 else "f"
    count = len(image.data) // struct.calcsize(code)
    floats = list(struct.unpack(f"<{count}{code}", image.data))
    if invert_colours:
        for c in range(3):
            floats[c::4] = [1.0 - v for v in floats[c::4]]
    floats[3::4] = [m / 255 for m in mask]
    return struct.pack(f"<{count}{code}", *floats)


def map_bytes(mask: p.Mask) -> bytes:
    """One byte a pixel of a map, as this fake reads it (no levels, no luminance): gray8 as
    it is, gray16's high byte, a layer's green channel (rounded from 16 bits and floats)."""
    fmt = mask.format
    if fmt is p.MaskFormat.GRAY8:
        return mask.data
    if fmt is p.MaskFormat.GRAY16:
        return mask.data[1::2]
    if fmt in (p.PixelFormat.RGBA8, p.PixelFormat.BGRA8):
        return mask.data[1::4]
    if fmt in (p.PixelFormat.RGBA16, p.PixelFormat.BGRA16):
        return bytes(round(v / 257) for v in array("H", mask.data)[1::4])
    code = "e" if fmt is p.PixelFormat.RGBAF16 else "f"
    count = len(mask.data) // struct.calcsize(code)
    greens = struct.unpack(f"<{count}{code}", mask.data)[1::4]
    return bytes(min(255, max(0, round(v * 255))) for v in greens)


def gray_image(like: p.Image, gray: bytes) -> p.Image:
    """An opaque image of `gray` (one byte a pixel) in `like`'s format and encoding label."""
    rgba8 = bytearray(len(gray) * 4)
    for c in range(3):
        rgba8[c::4] = gray
    rgba8[3::4] = b"\xff" * len(gray)
    eight = p.Image(like.width, like.height, p.PixelFormat.RGBA8, bytes(rgba8))
    data = expected_result(_as_format(eight, like.format), b"\xff" * len(gray))
    return p.Image(like.width, like.height, like.format, data, like.color)


def _as_format(image: p.Image, fmt: p.PixelFormat) -> p.Image:
    """An RGBA8 image's values in `fmt` (channel order and scale), for `gray_image`."""
    values = list(image.data)
    if fmt in (p.PixelFormat.RGBA8, p.PixelFormat.BGRA8):
        data = bytes(values)
    elif fmt in (p.PixelFormat.RGBA16, p.PixelFormat.BGRA16):
        data = array("H", [v * 257 for v in values]).tobytes()
    else:
        code = "e" if fmt is p.PixelFormat.RGBAF16 else "f"
        data = struct.pack(f"<{len(values)}{code}", *[v / 255 for v in values])
    return p.Image(image.width, image.height, fmt, data)  # gray and opaque: channel order is moot


def _tcp_inode(local_port: int, remote_port: int) -> str | None:
    """The socket inode of the loopback TCP connection local_port -> remote_port."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
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
                return int(pid) if GIMP_PLUGIN_FILE in cmdline else None
    return None


class FakeDaemon:
    def __init__(self, *, invert_colours: bool = False, split_flux: bool = False) -> None:
        self.invert_colours = invert_colours
        self.split_flux = split_flux
        self.submits: list[p.Submit] = []
        self.tokens: list[str | None] = []  # hello.token of each submit's connection
        self.endings: dict[str, str] = {}  # how "kill:" jobs ended, by prompt
        self.url = ""
        self._lock = threading.Lock()

    @property
    def submit_by_prompt(self) -> dict[str, p.Submit]:
        """The latest submit of each prompt."""
        with self._lock:
            return {submit.params.prompt: submit for submit in self.submits}

    @property
    def token_by_prompt(self) -> dict[str, str | None]:
        """The hello token of the latest submit of each prompt."""
        with self._lock:
            return {s.params.prompt: token for s, token in zip(self.submits, self.tokens, strict=True)}

    def _handle(self, ws: ServerConnection) -> None:
        with suppress(ConnectionClosed):
            self._serve(ws)

    def _serve(self, ws: ServerConnection) -> None:
        hello = p.decode(ws.recv(), accept=p.CLIENT_MESSAGES)
        assert isinstance(hello, p.Hello)
        if hello.token == WRONG_TOKEN:
            ws.send(p.encode(p.Error(p.ErrorCode.UNAUTHORIZED, "wrong token")))
            return
        models = [p.ModelInfo("fake", "sd15"), p.ModelInfo("fake-xl", "sdxl")]
        parts: dict[str, list[p.PartInfo]] = {}
        if self.split_flux:  # a FLUX.1 transformer kept alone, with two T5 files to choose from
            flux = ("flux", "flux-schnell", "flux-fill")
            models.append(p.ModelInfo("flux1-dev-Q8_0.gguf", "flux", lacks=("vae", "clip_l", "t5")))
            parts["text_encoders"] = [
                p.PartInfo("clip_l.safetensors", "clip_l", (*flux, "sd3")),
                p.PartInfo("t5xxl_fp16.safetensors", "t5", (*flux, "sd3")),
                p.PartInfo("t5xxl_fp8_e4m3fn_scaled.safetensors", "t5", (*flux, "sd3")),
            ]
            parts["vaes"] = [p.PartInfo("ae.safetensors", "vae", flux)]
        welcome = p.Welcome(
            server="fake",
            server_version="0",
            models=models,
            default_model="fake",
            capabilities=["cancel", "preview"],
            # Add-ons to pick in a plugin's form; jobs get the same answer whatever they name.
            loras=[p.ModelInfo("fake-lora", "sd15"), p.ModelInfo("fake-lora-xl", "sdxl")],
            controlnets=[p.ModelInfo("fake-canny", "sd15"), p.ModelInfo("fake-canny-xl", "sdxl")],
            ip_adapters=[p.ModelInfo("fake-ip-adapter", "sd15")],
            **parts,
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
        if prompt.startswith("kill:"):
            self.endings[prompt] = self._kill_peer(ws, job)
            return
        if prompt.startswith("slow:"):
            if submit.params.results > 1:  # a batch cancelled part-way: one result was done
                ws.send(p.encode(self._result(submit, 0)))
            while True:
                try:
                    message = p.decode(ws.recv(timeout=0.05), accept=p.CLIENT_MESSAGES)
                except TimeoutError:
                    ws.send(p.encode(p.Progress(job, p.Stage.SAMPLING, 1, steps)))
                    continue
                if isinstance(message, p.Cancel):
                    ws.send(p.encode(p.Cancelled(job)))
                    return
        if submit.params.preview:
            preview = p.Image(2, 2, p.PixelFormat.RGBA8, bytes([255, 0, 0, 255]) * 4)
            ws.send(p.encode(p.Preview(job, 1, preview)))
        for step in range(2, steps + 1):
            ws.send(p.encode(p.Progress(job, p.Stage.SAMPLING, step, steps)))
        if isinstance(submit, p.StrengthMapRequest):
            gray = gray_image(submit.image, map_bytes(submit.mask))
            ws.send(p.encode(p.StrengthMap(job, gray, submit.x, submit.y, {"total": 0.01})))
        else:
            for index in range(submit.params.results):  # a job of several: one result each, in order
                ws.send(p.encode(self._result(submit, index)))
        with suppress(TimeoutError):
            ws.recv(timeout=10)  # until the client closes

    def _result(self, submit: p.Submit, index: int) -> p.Result:
        image, params = submit.image, submit.params
        fmt = params.output_format or image.format
        assert fmt == image.format, "this fake only answers in the submitted format"
        alpha = map_bytes(submit.blend_mask or submit.mask)
        data = expected_result(image, alpha, invert_colours=self.invert_colours)
        shift = 8 if params.prompt.startswith("shift:") else 0
        return p.Result(
            submit.job_id,
            p.Image(image.width, image.height, image.format, data, image.color),
            submit.x + shift,
            submit.y,
            seed=params.result_seed(params.seed if params.seed is not None else 4242, index),
            model=params.model or "fake",
            timings={"total": 0.01},
            index=index,
            total=params.results,
            strength=params.result_strength(index),
        )

    def _kill_peer(self, ws: ServerConnection, job: str) -> str:
        """Kill the GIMP plug-in mid-job as GIMP's Cancel does; how the job then ended."""
        pid = peer_plugin_pid(ws)
        if pid is None:
            return "the peer is not the plug-in"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        step = 1
        try:
            while time.monotonic() < deadline:  # a job still running: more progress
                step += 1
                ws.send(p.encode(p.Progress(job, p.Stage.SAMPLING, step, 1000)))
                with suppress(TimeoutError):
                    message = p.decode(ws.recv(timeout=0.05), accept=p.CLIENT_MESSAGES)
                    if isinstance(message, p.Cancel):
                        return "cancel message"
        except ConnectionClosed:
            return "client gone"
        return "still connected"


@contextmanager
def fake_daemon(
    port: int = 0, *, invert_colours: bool = False, split_flux: bool = False
) -> Iterator[FakeDaemon]:
    """A FakeDaemon listening on 127.0.0.1:`port` (0: an ephemeral one) for the block; with
    `split_flux` it also lists a FLUX.1 transformer kept alone and the parts it may take."""
    daemon = FakeDaemon(invert_colours=invert_colours, split_flux=split_flux)
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
