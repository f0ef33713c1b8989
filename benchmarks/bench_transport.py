"""Transport benchmark: one 4096x4096 RGBA8 region + its 8-bit mask, to `accepted`, on loopback.

Two ways over the same kind of websocket connection (binary/text messages in 2 MiB
fragments, no compression, a fresh server process on 127.0.0.1, handshake untimed):

- ours: the project's own client (`DaemonConnection.send`) sends a protocol `submit`
  (msgpack, raw pixel bytes, the pixels sliced into fragments without a copy, see
  `protocol.encode_parts`) to the real daemon (`differential-inpaint serve`), which
  decodes and validates it and answers `accepted`;
- A1111-style: the image and the mask as base64 PNGs in a JSON body (what Automatic1111
  plugins send) to a small comparison server that decodes them the way such a server
  must before it can queue anything: JSON -> base64 -> PNG -> numpy, then answers.

Timed from the moment the client starts turning the pixels it holds into a message
(msgpack, or PNG + base64 + JSON) to the moment `accepted` arrives. The transfer and
server side alone (message prepared beforehand) is printed too, and so is the way the
client sent before zero-copy encoding (`protocol.encode` into one bytes object, then
fragments of it). After each daemon run the job is cancelled (untimed) so nothing
runs in the background.

    .venv/bin/python benchmarks/bench_transport.py [--runs 3] [--size 4096]

Goal (issue 4): ours at least 8x faster.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support.daemon, the shared daemon launcher

from differential_inpaint import protocol as p  # noqa: E402
from differential_inpaint.client import DaemonConnection  # noqa: E402
from tests.support.daemon import running_daemon  # noqa: E402

FRAGMENT = 2 * 1024 * 1024
MiB = 1024 * 1024

# The comparison server, run as its own process like the daemon.
A1111_SERVER = r"""
import asyncio, base64, io, json, sys
import numpy as np
from PIL import Image
from websockets.asyncio.server import serve

def decode_png(b64):
    if b64.startswith("data:"):
        b64 = b64.split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im)

async def handler(ws):
    async for message in ws:
        body = json.loads(message)
        image = decode_png(body["init_images"][0])
        mask = decode_png(body["mask"])
        assert image.shape[:2] == mask.shape[:2]
        await ws.send(json.dumps({"type": "accepted", "width": image.shape[1], "height": image.shape[0]}))

async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


def make_region(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like region (smooth gradients plus sensor-like noise) and a feathered mask."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1) * 220
    rgb += rng.normal(0, 6, rgb.shape).astype(np.float32)
    rgba = np.empty((size, size, 4), np.uint8)
    rgba[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
    rgba[..., 3] = 255
    distance = np.hypot(x - 0.5, y - 0.5)
    mask = (np.clip((0.35 - distance) / 0.05, 0.0, 1.0) * 255).astype(np.uint8)  # soft-edged disc
    return rgba, mask


def fragments(data: bytes | str) -> list:
    if isinstance(data, str):
        return [data[i : i + FRAGMENT] for i in range(0, len(data), FRAGMENT)]
    view = memoryview(data)
    return [view[i : i + FRAGMENT] for i in range(0, len(view), FRAGMENT)]


# --- ours ------------------------------------------------------------------------------


def ours_once(url: str, submit: p.Submit, how: str = "client", prepared: list | None = None) -> float:
    """One submit to `accepted`, sent `how`: "client" is `DaemonConnection.send` (zero-copy
    parts in 2 MiB fragments); "copy" encodes into one bytes object first, then fragments
    it (the client before zero-copy); "prepared" sends fragments made beforehand (untimed)."""
    with DaemonConnection(url, client="bench-transport") as conn:
        start = time.perf_counter()
        if how == "client":
            conn.send(submit)
        elif how == "copy":
            conn._ws.send(fragments(p.encode(submit)))
        else:
            assert prepared is not None
            conn._ws.send(prepared)
        while True:
            message = conn.receive(timeout=120)
            if isinstance(message, p.Accepted):
                elapsed = time.perf_counter() - start
                break
            if isinstance(message, p.Error):
                raise RuntimeError(f"the daemon refused the benchmark job: {message.message}")
        conn.send(p.Cancel(submit.job_id))  # untimed: nothing may run during the next measurement
        while not isinstance(conn.receive(timeout=120), (p.Cancelled, p.Error, p.Result)):
            pass
    return elapsed


# --- A1111-style -----------------------------------------------------------------------


def png_base64(array: np.ndarray, level: int | None) -> str:
    buffer = io.BytesIO()
    options = {} if level is None else {"compress_level": level}
    PILImage.fromarray(array).save(buffer, format="PNG", **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def a1111_body(rgba: np.ndarray, mask: np.ndarray, level: int | None) -> str:
    return json.dumps(
        {
            "init_images": ["data:image/png;base64," + png_base64(rgba, level)],
            "mask": png_base64(mask, level),
            "denoising_strength": 0.75,
            "prompt": "",
            "steps": 1,
        }
    )


def a1111_once(
    url: str, rgba: np.ndarray, mask: np.ndarray, level: int | None, prepared: str | None = None
) -> float:
    """One JSON body to its reply; with `prepared` (the body) the PNG/base64/JSON work is untimed."""
    with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
        start = time.perf_counter()
        body = prepared if prepared is not None else a1111_body(rgba, mask, level)
        ws.send(fragments(body))
        reply = json.loads(ws.recv(timeout=300))
        elapsed = time.perf_counter() - start
        assert reply["type"] == "accepted" and reply["width"] == rgba.shape[1]
    return elapsed


def start_a1111_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", A1111_SERVER], stdout=subprocess.PIPE, text=True, cwd=str(ROOT)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"the comparison server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def median(fn: Callable[[], float], runs: int) -> float:
    fn()  # warm-up: first-touch page faults, imports, the daemon's first allocation
    return statistics.median(fn() for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=3, help="timed runs per figure (median), after one warm-up"
    )
    parser.add_argument("--size", type=int, default=4096, help="region side in pixels (default 4096)")
    args = parser.parse_args()

    rgba, mask = make_region(args.size)
    raw_mib = (rgba.nbytes + mask.nbytes) / MiB
    print(f"Region {args.size}x{args.size} RGBA8 + 8-bit mask: {raw_mib:.0f} MiB of pixels")

    submit = p.Submit(
        "bench",
        p.Image(args.size, args.size, p.PixelFormat.RGBA8, rgba.tobytes()),
        p.Mask(args.size, args.size, mask.tobytes()),
        p.JobParams(steps=1),
    )
    encoded = p.encode(submit)
    prepared = fragments(encoded)
    with running_daemon() as daemon:
        ours_total = median(lambda: ours_once(daemon.url, submit), args.runs)
        ours_wire = median(lambda: ours_once(daemon.url, submit, "prepared", prepared), args.runs)
        ours_copy = median(lambda: ours_once(daemon.url, submit, "copy"), args.runs)
    messages = {"ours": len(encoded) / MiB}

    proc, url = start_a1111_server()
    results: dict[str, tuple[float, float]] = {}
    try:
        for label, level in (("PNG level 6 (PIL default)", None), ("PNG level 1 (fastest)", 1)):
            body = a1111_body(rgba, mask, level)
            messages[label] = len(body) / MiB
            total = median(lambda level=level: a1111_once(url, rgba, mask, level), args.runs)
            wire = median(lambda level=level, body=body: a1111_once(url, rgba, mask, level, body), args.runs)
            results[label] = (total, wire)
    finally:
        proc.kill()
        proc.wait()

    print()
    print(f"{'':44} {'encode+send+decode':>18} {'send+decode':>12} {'message':>10}")
    rows = [
        ("ours: msgpack, raw bytes, zero-copy parts", ours_total, ours_wire, messages["ours"]),
        ("ours, encode() copy first (old client)", ours_copy, ours_wire, messages["ours"]),
    ]
    rows += [(f"A1111 JSON+base64, {label}", t, w, messages[label]) for label, (t, w) in results.items()]
    for name, total, wire, mib in rows:
        print(f"{name:44} {total * 1000:15.0f} ms {wire * 1000:9.0f} ms {mib:6.1f} MiB")
    print()
    print(
        f"ours: {raw_mib / ours_total:.0f} MiB/s of pixels end to end, "
        f"{raw_mib / ours_wire:.0f} MiB/s send+decode; zero-copy parts save "
        f"{(ours_copy - ours_total) * 1000:.0f} ms ({1 - ours_total / ours_copy:.0%}) over encode() first"
    )
    for label, (total, wire) in results.items():
        print(
            f"vs {label}: {total / ours_total:.1f}x faster end to end ({raw_mib / total:.0f} MiB/s), "
            f"{wire / ours_wire:.1f}x send+decode ({raw_mib / wire:.0f} MiB/s)"
        )
    worst = min(total / ours_total for total, _ in results.values())
    print(f"\nGoal >= 8x end to end: {'met' if worst >= 8 else 'NOT met'} (worst case {worst:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
