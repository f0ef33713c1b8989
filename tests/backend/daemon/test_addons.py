"""LoRAs and IP-Adapter references through a real `differential-inpaint serve` on the built-in
tiny models: the welcome lists the tiny ones with their families, a job's LoRA and reference
steer only what the map frees, weight 0 is none, and an unknown LoRA is that job's clear error."""

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


def _submit(
    job_id: str, loras: tuple[p.Lora, ...] = (), references: tuple[p.Reference, ...] = ()
) -> tuple[p.Submit, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    wire = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    wire[..., 3] = 255
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2 :] = 255
    image = p.Image(SIZE, SIZE, p.PixelFormat.RGBA8, wire.tobytes())
    params = p.JobParams(prompt="a red door", steps=3, seed=9, scheduler="euler", loras=loras)
    submit = p.Submit(job_id, image, p.Mask(SIZE, SIZE, mask.tobytes()), params, ip_adapters=references)
    return submit, wire, mask


def _reference(weight: float) -> p.Reference:
    pixels = np.random.default_rng(8).integers(0, 256, (24, 40, 4), dtype=np.uint8)  # any size
    image = p.Image(40, 24, p.PixelFormat.RGBA8, pixels.tobytes())
    return p.Reference(image, p.ReferenceParams(weight=weight, model="builtin:tiny-ip-adapter-sd15"))


def _pixels(result: p.Result) -> np.ndarray:
    return np.frombuffer(result.image.data, np.uint8).reshape(SIZE, SIZE, 4)


def test_the_welcome_lists_the_tiny_loras_and_ip_adapters(daemon: DaemonProcess) -> None:
    welcome = server_info(daemon.url)
    assert {(a.name, a.family) for a in welcome.loras} >= {
        ("builtin:tiny-lora-sd15", "sd15"),
        ("builtin:tiny-lora-sdxl", "sdxl"),
    }
    assert {(a.name, a.family) for a in welcome.ip_adapters} >= {
        ("builtin:tiny-ip-adapter-sd15", "sd15"),
        ("builtin:tiny-ip-adapter-sdxl", "sdxl"),
    }


def test_a_lora_and_a_reference_change_only_free_pixels_and_weight_0_is_none(daemon: DaemonProcess) -> None:
    plain_submit, wire, mask = _submit("plain")
    plain = _pixels(run_job(plain_submit, server=daemon.url, timeout=JOB_TIMEOUT))
    keep = mask == 0
    lora = (p.Lora("builtin:tiny-lora-sd15", 1.0),)
    for job_id, loras, references in (
        ("lora", lora, ()),
        ("reference", (), (_reference(1.0),)),
    ):
        submit, _, _ = _submit(job_id, loras, references)
        steered = _pixels(run_job(submit, server=daemon.url, timeout=JOB_TIMEOUT))
        assert steered[keep, :3].tobytes() == wire[keep, :3].tobytes()
        assert not np.array_equal(steered[~keep], plain[~keep]), job_id
    zero_submit, _, _ = _submit("zero", (p.Lora("builtin:tiny-lora-sd15", 0.0),), (_reference(0.0),))
    assert _pixels(run_job(zero_submit, server=daemon.url, timeout=JOB_TIMEOUT)).tobytes() == plain.tobytes()


def test_unknown_and_wrong_family_loras_are_the_jobs_error(daemon: DaemonProcess) -> None:
    submit, _, _ = _submit("unknown", (p.Lora("no-such-lora", 1.0),))
    with pytest.raises(InpaintError, match="Unknown LoRA 'no-such-lora'"):
        run_job(submit, server=daemon.url, timeout=JOB_TIMEOUT)
    submit, _, _ = _submit("wrong-family", (p.Lora("builtin:tiny-lora-sdxl", 1.0),))
    with pytest.raises(InpaintError, match="made for sdxl"):
        run_job(submit, server=daemon.url, timeout=JOB_TIMEOUT)
