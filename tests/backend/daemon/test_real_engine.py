"""The daemon with the real engine on `builtin:tiny-sd15` (random weights, CPU): a full job in
Krita's and a linear-float format, cancel while sampling, a GPU out-of-memory that fails one
job only. One model load for the module; few steps on a 64x64 region to stay fast."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon.models import build_catalog
from differential_inpaint.backend.daemon.server import DaemonServer, ServerConfig
from differential_inpaint.backend.engine import Engine
from differential_inpaint.backend.engine import job as job_module
from differential_inpaint.client import InpaintError, run_job

from .conftest import InProcessDaemon, RawClient

pytestmark = pytest.mark.slow  # real model: seconds each (deselect with -m "not slow")

JOB_TIMEOUT = 180.0  # a loaded 2-core machine runs the tiny model at ~1-3 s a step
SIZE = 64


class RealDaemon(InProcessDaemon):
    def __init__(self, engine: Any) -> None:  # the real engine and catalog
        import asyncio
        import threading

        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        catalog = build_catalog(engine, ["builtin:tiny-sd15"])
        config = ServerConfig(host="127.0.0.1", port=0, preview_interval=0.0, shutdown_grace=JOB_TIMEOUT)
        self.server = DaemonServer(engine, catalog, config)
        self.port = self.call(self.server.start())
        self.url = f"ws://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def real() -> Iterator[RealDaemon]:
    engine = Engine(device="cpu", scan_default_locations=False)
    daemon = RealDaemon(engine)
    try:
        yield daemon
    finally:
        daemon.stop()


def _region(fmt: p.PixelFormat, color: p.ColorEncoding = p.ColorEncoding.SRGB) -> tuple[np.ndarray, p.Image]:
    rng = np.random.default_rng(7)
    if fmt is p.PixelFormat.BGRA8:
        wire = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    else:
        wire = rng.random((SIZE, SIZE, 4), dtype=np.float32).astype("<f4")
        wire[0, 0, 0] = 2.5  # HDR value in a kept pixel
    return wire, p.Image(SIZE, SIZE, fmt, wire.tobytes(), color)


def _mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    mask[20:44, 8:16] = 128  # a gray band: partial strength
    return mask


@pytest.mark.parametrize(
    ("fmt", "color", "dtype"),
    [
        (p.PixelFormat.BGRA8, p.ColorEncoding.SRGB, np.uint8),
        (p.PixelFormat.RGBAF32, p.ColorEncoding.LINEAR, np.dtype("<f4")),
    ],
    ids=["bgra8", "rgbaf32-linear"],
)
def test_full_job_on_the_tiny_model(
    real: RealDaemon, fmt: p.PixelFormat, color: p.ColorEncoding, dtype: Any
) -> None:
    wire, image = _region(fmt, color)
    mask = _mask()
    submit = p.Submit(
        "tiny",
        image,
        p.Mask(SIZE, SIZE, mask.tobytes()),
        p.JobParams(prompt="a red door", steps=2, seed=5, scheduler="euler"),
        x=100,
        y=-3,
    )
    stages: list[str] = []
    result = run_job(
        submit, server=real.url, on_progress=lambda m: stages.append(m.stage), timeout=JOB_TIMEOUT
    )
    assert (result.x, result.y, result.seed, result.model) == (100, -3, 5, "builtin:tiny-sd15")
    assert result.image.format is fmt and result.image.color is color
    assert (result.image.width, result.image.height) == (SIZE, SIZE)
    for stage in ("queued", "loading", "encoding", "sampling", "decoding"):
        assert stage in stages
    out = np.frombuffer(result.image.data, dtype).reshape(SIZE, SIZE, 4)
    keep = mask == 0
    assert out[keep, :3].tobytes() == wire[keep, :3].tobytes()  # kept pixels, bit for bit
    assert (out[keep, 3] == 0).all()
    assert (out[16:48, 16:48, 3] > 0).all()
    assert not np.array_equal(out[16:48, 16:48, :3], wire[16:48, 16:48, :3])  # something was painted
    assert {"load", "sample", "queued", "daemon"} <= set(result.timings)


def test_cancel_while_sampling_on_the_tiny_model(real: RealDaemon) -> None:
    _, image = _region(p.PixelFormat.BGRA8)
    submit = p.Submit("long", image, p.Mask(SIZE, SIZE, _mask().tobytes()), p.JobParams(steps=100))
    with RawClient(real.url) as client:
        client.send(submit)
        client.until(
            lambda m: isinstance(m, p.Progress) and m.stage == "sampling" and m.step >= 1, JOB_TIMEOUT
        )
        client.send(p.Cancel("long"))
        assert isinstance(client.final("long", JOB_TIMEOUT), p.Cancelled)
        steps = [m.step for m in client.seen if isinstance(m, p.Progress) and m.stage == "sampling"]
        assert max(steps) < 100 - 1  # stopped long before the end (one step after the cancel)
        client.send(p.GetStatus())
        status = client.until_type(p.Status)
        assert not status.running and status.loaded_model == "builtin:tiny-sd15"


def test_cuda_out_of_memory_fails_that_job_only(real: RealDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = job_module._BatchRun.sample

    def run_out_of_memory(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(job_module._BatchRun, "sample", run_out_of_memory)
    _, image = _region(p.PixelFormat.BGRA8)
    mask = p.Mask(SIZE, SIZE, _mask().tobytes())
    with pytest.raises(InpaintError) as failed:
        run_job(p.Submit("oom", image, mask, p.JobParams(steps=2)), server=real.url, timeout=JOB_TIMEOUT)
    assert failed.value.code == "out_of_memory"
    result = run_job(
        p.Submit("after-oom", image, mask, p.JobParams(steps=2)), server=real.url, timeout=JOB_TIMEOUT
    )
    assert result.image.width == SIZE and len(calls) == 2


def test_status_says_how_the_loaded_models_weights_are_placed_and_why(real: RealDaemon) -> None:
    _, image = _region(p.PixelFormat.BGRA8)
    submit = p.Submit("placed", image, p.Mask(SIZE, SIZE, _mask().tobytes()), p.JobParams(steps=2))
    run_job(submit, server=real.url, timeout=JOB_TIMEOUT)
    with RawClient(real.url) as client:
        client.send(p.GetStatus())
        worker = client.until_type(p.Status).workers[0]
    assert worker.model == "builtin:tiny-sd15" and worker.offload == "none"  # the CPU never offloads
    assert worker.offload_reason.startswith("sd15 model 'builtin:tiny-sd15' (")
    assert "on the CPU: no offload" in worker.offload_reason
