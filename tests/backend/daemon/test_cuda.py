"""On a CUDA machine only: the daemon's job on the GPU, and a real CUDA out-of-memory error
(a 300 GiB allocation inside the job) that fails that job only and gives its memory back.
Skipped where torch sees no CUDA device (CI has none)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint import protocol as p
from differential_inpaint.backend.engine import Engine
from differential_inpaint.backend.engine import pipeline as pipeline_module
from differential_inpaint.client import InpaintError, run_job

from .test_real_engine import RealDaemon

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_daemon() -> Iterator[RealDaemon]:
    daemon = RealDaemon(Engine(device="cuda", scan_default_locations=False))
    try:
        yield daemon
    finally:
        daemon.stop()


def _submit(job_id: str, size: int = 512) -> p.Submit:
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 4), np.uint8)
    return p.Submit(
        job_id,
        p.Image(size, size, p.PixelFormat.BGRA8, pixels.tobytes()),
        p.Mask(size, size, mask.tobytes()),
        p.JobParams(steps=10, seed=1),
    )


def test_real_cuda_oom_fails_one_job_and_frees_its_memory(
    cuda_daemon: RealDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_job(_submit("warm"), server=cuda_daemon.url, timeout=300)
    assert result.image.width == 512 and cuda_daemon.server.device.startswith("cuda")
    torch.cuda.synchronize()
    after_good_job = torch.cuda.memory_allocated()

    def decode_out_of_memory(self: Any, latents: Any) -> Any:
        return torch.empty(300 * 1024**3, dtype=torch.uint8, device="cuda")  # no GPU has 300 GiB

    monkeypatch.setattr(pipeline_module.DifferentialDiffusionPipeline, "decode", decode_out_of_memory)
    with pytest.raises(InpaintError) as failed:
        run_job(_submit("oom"), server=cuda_daemon.url, timeout=300)
    assert failed.value.code == "out_of_memory"
    monkeypatch.undo()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= after_good_job + 2**20  # the job's tensors are gone
    result = run_job(_submit("after-oom"), server=cuda_daemon.url, timeout=300)
    assert result.seed == 1
