"""`differential-inpaint run` and `serve` on the built-in FLUX model, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from differential_inpaint import protocol as p
from differential_inpaint.backend.cli import main
from differential_inpaint.client import run_job
from differential_inpaint.client.connection import DaemonConnection

pytestmark = pytest.mark.slow  # a real (tiny) model: seconds each (deselect with -m "not slow")


def _mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    mask[height // 4 : 3 * height // 4, width // 4 : width // 4 + 6] = 120  # a gray edge
    return mask


@pytest.mark.parametrize("model", ["builtin:tiny-flux", "builtin:tiny-flux-schnell", "builtin:tiny-sd3"])
def test_run_paints_with_a_flow_model_and_keeps_mask_zero(tmp_path: Path, model: str) -> None:
    array = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    mask = _mask(40, 56)
    Image.fromarray(array).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    argv = [
        "run", "--model", model, "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
        "--prompt", "a red door", "--steps", "3", "--seed", "4", "--guidance", "3.5",
        "--out", str(tmp_path / "out.png"),
    ]  # fmt: skip
    assert main(argv) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == array.shape
    assert np.array_equal(out[mask == 0], array[mask == 0])  # kept, bit for bit
    assert not np.array_equal(out[mask == 255], array[mask == 255])


def test_serve_offers_the_flow_families_and_runs_a_flux_job(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    env.pop("DIFFERENTIAL_INPAINT_MODEL_DIRS", None)
    command = [sys.executable, "-m", "differential_inpaint.backend.cli", "serve"]
    command += ["--model", "builtin:tiny-flux", "--port", "0", "--device", "cpu"]
    daemon = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert daemon.stdout is not None
        url = None
        for line in daemon.stdout:
            found = re.search(r"ws://[\d.]+:\d+", line)
            if found:
                url = found.group(0)
                break
        assert url is not None, "the daemon printed no address"
        with DaemonConnection(url) as connection:
            families = {m.name: m.family for m in connection.welcome.models}
        assert families["builtin:tiny-flux"] == "flux"
        assert families["builtin:tiny-flux-fill"] == "flux-fill"
        assert families["builtin:tiny-flux-schnell"] == "flux-schnell"
        assert families["builtin:tiny-sd3"] == "sd3"

        size = 64
        wire = np.random.default_rng(7).integers(0, 256, (size, size, 4), dtype=np.uint8)
        mask = _mask(size, size)
        image = p.Image(size, size, p.PixelFormat.BGRA8, wire.tobytes(), p.ColorEncoding.SRGB)
        params = p.JobParams(prompt="a red door", steps=3, seed=5, guidance=3.5)
        result = run_job(
            p.Submit("flux", image, p.Mask(size, size, mask.tobytes()), params), server=url, timeout=300
        )
        assert (result.model, result.seed) == ("builtin:tiny-flux", 5)
        out = np.frombuffer(result.image.data, np.uint8).reshape(size, size, 4)
        keep = mask == 0
        assert out[keep, :3].tobytes() == wire[keep, :3].tobytes()
        assert not np.array_equal(out[~keep, :3], wire[~keep, :3])
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
