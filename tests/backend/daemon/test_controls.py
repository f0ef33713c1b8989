"""A job with a control image through a real `differential-inpaint serve` on the built-in tiny
models: the welcome lists the tiny ControlNets, the control steers only what the map frees, and
an unknown ControlNet is that job's clear error."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from differential_inpaint import protocol as p
from differential_inpaint.client import InpaintError, run_job, server_info
from tests.support.daemon import DaemonProcess, running_daemon

pytestmark = pytest.mark.slow  # a real daemon and model: seconds

JOB_TIMEOUT = 180.0
SIZE = 64


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with running_daemon() as process:
        yield process


def _submit(job_id: str, controls: tuple[p.Control, ...] = ()) -> tuple[p.Submit, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    wire = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    wire[..., 3] = 255
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2 :] = 255
    image = p.Image(SIZE, SIZE, p.PixelFormat.RGBA8, wire.tobytes())
    params = p.JobParams(prompt="a red door", steps=3, seed=9, scheduler="euler")
    submit = p.Submit(job_id, image, p.Mask(SIZE, SIZE, mask.tobytes()), params, controls=controls)
    return submit, wire, mask


def _control(model: str, strength: float = 1.0) -> p.Control:
    edges = np.zeros((SIZE, SIZE, 4), np.uint8)
    edges[:, ::8] = 255
    image = p.Image(SIZE, SIZE, p.PixelFormat.RGBA8, edges.tobytes())
    return p.Control(image, p.ControlParams(kind="canny", model=model, strength=strength))


def test_the_welcome_lists_the_tiny_controlnets(daemon: DaemonProcess) -> None:
    welcome = server_info(daemon.url)
    families = {c.name: c.family for c in welcome.controlnets}
    assert families["builtin:tiny-controlnet-sd15"] == "sd15"
    assert families["builtin:tiny-controlnet-sdxl"] == "sdxl"


def test_a_job_with_a_control_image_changes_only_free_pixels(daemon: DaemonProcess) -> None:
    plain_submit, wire, mask = _submit("plain")
    plain = run_job(plain_submit, server=daemon.url, timeout=JOB_TIMEOUT)
    steered_submit, _, _ = _submit("steered", (_control("builtin:tiny-controlnet-sd15"),))
    steered = run_job(steered_submit, server=daemon.url, timeout=JOB_TIMEOUT)
    before = np.frombuffer(plain.image.data, np.uint8).reshape(SIZE, SIZE, 4)
    after = np.frombuffer(steered.image.data, np.uint8).reshape(SIZE, SIZE, 4)
    keep = mask == 0
    assert after[keep, :3].tobytes() == wire[keep, :3].tobytes()
    assert not np.array_equal(after[~keep], before[~keep])


def test_an_unknown_controlnet_is_the_jobs_error(daemon: DaemonProcess) -> None:
    submit, _, _ = _submit("unknown", (_control("no-such-controlnet"),))
    with pytest.raises(InpaintError, match="Unknown ControlNet 'no-such-controlnet'"):
        run_job(submit, server=daemon.url, timeout=JOB_TIMEOUT)
    submit, _, _ = _submit("wrong-family", (_control("builtin:tiny-controlnet-sdxl"),))
    with pytest.raises(InpaintError, match="is for SDXL models"):
        run_job(submit, server=daemon.url, timeout=JOB_TIMEOUT)
