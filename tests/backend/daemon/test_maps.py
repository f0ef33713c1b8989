"""The maps of a submit through the daemon and the real engine (tiny models, CPU): a layer's
pixels as the change map, limited by a selection, a separate blend map, 16-bit maps with
levels, the `strength_map` request, and depth in a real `differential-inpaint serve`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from differential_inpaint import protocol as p
from differential_inpaint.backend.daemon import pixels
from differential_inpaint.backend.engine import Engine
from differential_inpaint.client import InpaintError, run_job
from tests.support.daemon import daemon_command, running_daemon

from .test_real_engine import JOB_TIMEOUT, RealDaemon

pytestmark = pytest.mark.slow  # real models: seconds each

SIZE = 64
TINY_DEPTH = "builtin:tiny-depth"


@pytest.fixture(scope="module")
def real() -> Iterator[RealDaemon]:
    daemon = RealDaemon(Engine(device="cpu", scan_default_locations=False, depth_model_paths=False))
    try:
        yield daemon
    finally:
        daemon.stop()


def _image() -> tuple[np.ndarray, p.Image]:
    wire = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    return wire, p.Image(SIZE, SIZE, p.PixelFormat.BGRA8, wire.tobytes())


def _gray8(values: np.ndarray) -> p.Mask:
    return p.Mask(SIZE, SIZE, values.astype(np.uint8).tobytes())


def _params(**kwargs: object) -> p.JobParams:
    return p.JobParams(prompt="a red door", steps=2, seed=5, scheduler="euler", **kwargs)  # type: ignore[arg-type]


def _effective(real: RealDaemon, submit: p.Submit) -> np.ndarray:
    """The engine's own strength map for this submit's inputs, as the daemon decodes them."""
    return real.engine.strength_map(
        pixels.decode_image(submit.image),
        pixels.decode_mask(submit.mask),
        submit.params,
        selection=pixels.decode_maps(submit).get("selection"),
    )


def test_a_layer_map_limited_by_a_selection_with_a_blend_map(real: RealDaemon) -> None:
    wire, image = _image()
    layer = np.zeros((SIZE, SIZE, 4), np.uint8)
    layer[:, :40] = (255, 255, 255, 255)  # a painted strength layer: white on its left
    layer[:, 40:48] = (255, 255, 255, 128)  # half transparent: half strength
    selection = np.zeros((SIZE, SIZE))
    selection[: SIZE // 2] = 255  # the selection limits it to the top half
    blend = np.full((SIZE, SIZE), 255)
    blend[:, :16] = 0  # the result is transparent on the left
    submit = p.Submit(
        "layer",
        image,
        p.Mask(SIZE, SIZE, layer.tobytes(), p.PixelFormat.RGBA8),
        _params(),
        selection=_gray8(selection),
        blend_mask=_gray8(blend),
    )
    result = run_job(submit, server=real.url, timeout=JOB_TIMEOUT)
    out = np.frombuffer(result.image.data, np.uint8).reshape(SIZE, SIZE, 4)
    kept = _effective(real, submit) == 0
    assert kept[SIZE // 2 :].all() and kept[:, 48:].all() and not kept[:8, :40].any()
    assert out[kept, :3].tobytes() == wire[kept, :3].tobytes()  # the effective map's zeros
    assert (out[:, :16, 3] == 0).all()  # the blend map is the alpha ...
    assert (out[:8, 16:40, 3] == 255).all()
    changed = out[:8, :16, :3].astype(int) - wire[:8, :16, :3]
    assert np.abs(changed).mean() > 2  # ... while the change map changed the pixels under it


def test_a_16_bit_ramp_with_black_point_one_half_keeps_its_left_half(real: RealDaemon) -> None:
    wire, image = _image()
    ramp = np.tile(np.linspace(0, 65535, SIZE).round().astype("<u2"), (SIZE, 1))
    mask = p.Mask(SIZE, SIZE, ramp.tobytes(), p.MaskFormat.GRAY16)
    result = run_job(
        p.Submit("ramp", image, mask, _params(mask_black=0.5)), server=real.url, timeout=JOB_TIMEOUT
    )
    out = np.frombuffer(result.image.data, np.uint8).reshape(SIZE, SIZE, 4)
    left = slice(0, SIZE // 2)
    assert out[:, left, :3].tobytes() == wire[:, left, :3].tobytes()
    assert (out[:, left, 3] == 0).all()
    assert np.abs(out[:, -8:, :3].astype(int) - wire[:, -8:, :3]).mean() > 2


def test_grown_pixels_are_the_samplers_not_the_wire_masks_zeros(real: RealDaemon) -> None:
    wire, image = _image()
    mask = np.zeros((SIZE, SIZE))
    mask[24:40, 24:40] = 255
    submit = p.Submit("grow", image, _gray8(mask), _params(grow=6))
    result = run_job(submit, server=real.url, timeout=JOB_TIMEOUT)
    out = np.frombuffer(result.image.data, np.uint8).reshape(SIZE, SIZE, 4)
    ring = (_effective(real, submit) > 0.5) & (mask == 0)
    assert ring.any() and (out[ring, 3] == 255).all()
    assert out[ring, :3].tobytes() != wire[ring, :3].tobytes()


@pytest.mark.parametrize(
    ("output", "color"),
    [(None, p.ColorEncoding.SRGB), (p.PixelFormat.RGBAF32, p.ColorEncoding.LINEAR)],
    ids=["bgra8", "rgbaf32-linear"],
)
def test_a_strength_map_request_is_answered_with_the_engines_map(
    real: RealDaemon, output: p.PixelFormat | None, color: p.ColorEncoding
) -> None:
    _, image = _image()
    image = p.Image(SIZE, SIZE, image.format, image.data, color)
    ramp = np.tile(np.linspace(0, 255, SIZE), (SIZE, 1))
    params = _params(strength=0.8, mask_black=0.2, mask_gamma=2.0, feather=4, output_format=output)
    request = p.StrengthMapRequest("map", image, _gray8(ramp), params, x=7, y=-2)
    progress: list[str] = []
    answer = run_job(
        request, server=real.url, on_progress=lambda m: progress.append(m.stage), timeout=JOB_TIMEOUT
    )
    assert isinstance(answer, p.StrengthMap)
    assert (answer.job_id, answer.x, answer.y) == ("map", 7, -2)
    assert answer.image.format is (output or p.PixelFormat.BGRA8) and answer.image.color is color
    assert "queued" in progress and "sampling" not in progress
    shown = pixels.decode_mask(p.Mask(SIZE, SIZE, answer.image.data, answer.image.format, color))
    expected = _effective(real, request)
    tolerance = 0.5 / 255 + 1e-6 if output is None else 1e-6
    assert np.abs(shown - expected).max() <= tolerance
    assert (shown[expected == 0] == 0).all() and expected.max() <= 0.8


def test_a_depth_model_path_from_a_client_is_refused(real: RealDaemon) -> None:
    _, image = _image()
    full = _gray8(np.full((SIZE, SIZE), 255))
    request = p.StrengthMapRequest("path", image, full, _params(depth="far", depth_model="/etc/passwd"))
    with pytest.raises(InpaintError, match="Unknown depth model"):
        run_job(request, server=real.url, timeout=JOB_TIMEOUT)


def test_depth_end_to_end_in_a_real_daemon() -> None:
    """`serve --depth-model builtin:tiny-depth`: a submit with depth far and one strength
    map, through the real command; the map's zeros come back bit for bit."""
    wire, image = _image()
    full = _gray8(np.full((SIZE, SIZE), 255))
    params = _params(depth="far", mask_black=0.5)
    with running_daemon("--depth-model", TINY_DEPTH) as daemon:
        shown = run_job(
            p.StrengthMapRequest("map", image, full, params), server=daemon.url, timeout=JOB_TIMEOUT
        )
        result = run_job(p.Submit("depth", image, full, params), server=daemon.url, timeout=JOB_TIMEOUT)
    strength = pixels.decode_mask(p.Mask(SIZE, SIZE, shown.image.data, shown.image.format))
    kept = strength == 0
    assert kept.any() and (strength > 0.5).any()  # the far half of the levels changes, the near is kept
    out = np.frombuffer(result.image.data, np.uint8).reshape(SIZE, SIZE, 4)
    assert out[kept, :3].tobytes() == wire[kept, :3].tobytes()
    assert (out[kept, 3] == 0).all()
    assert np.abs(out[~kept, :3].astype(int) - wire[~kept, :3]).mean() > 1


def test_serve_refuses_a_depth_model_that_is_not_one(tmp_path: Path) -> None:
    fake = tmp_path / "depth_anything_v2_vits.pth"
    fake.write_text("not weights")
    bad = subprocess.run(
        daemon_command("--depth-model", str(fake)), capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert bad.returncode == 2
    assert "Cannot use 'depth_anything_v2_vits.pth' as a depth model" in bad.stdout
