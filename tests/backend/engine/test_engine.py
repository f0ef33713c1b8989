"""The Engine as the daemon calls it: regions, masks, seeds, callbacks, errors."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint.backend.engine import (
    SCHEDULERS,
    Engine,
    InvalidRequest,
    JobCancelled,
    OutOfMemory,
    UnknownModel,
    UnknownScheduler,
)
from differential_inpaint.backend.engine.pipeline import DifferentialDiffusionPipeline
from differential_inpaint.backend.engine.regions import working_size
from differential_inpaint.backend.engine.registry import ModelRegistry
from differential_inpaint.backend.engine.tiny import TINY_WORKING_AREA
from differential_inpaint.protocol import DEFAULT_LIMITS, JobParams

from .conftest import random_region

TINY = "builtin:tiny-sd15"


def _params(**kwargs: Any) -> JobParams:
    options: dict[str, Any] = {"prompt": "a red door", "steps": 4, "seed": 7}
    options.update(kwargs)
    return JobParams(**options)


def test_mask_all_zero_returns_the_input_bit_for_bit(engine: Engine) -> None:
    image = random_region(40, 56)
    image[0, 0, :3] = np.float32(0.1234567)  # not representable in 8 bits
    result = engine.inpaint(image, np.zeros((40, 56), np.uint8), _params(), model=TINY)
    assert result.image.dtype == np.float32 and result.image.shape == (40, 56, 4)
    assert result.image[..., :3].tobytes() == image[..., :3].tobytes()
    assert (result.image[..., 3] == 0).all()


def test_kept_pixels_are_bit_for_bit_and_alpha_marks_the_change(engine: Engine) -> None:
    image = random_region(48, 80, seed=1)
    mask = np.zeros((48, 80), np.uint8)
    mask[10:40, 20:60] = 255
    mask[10:40, 60:70] = 90
    result = engine.inpaint(image, mask, _params(), model=TINY)
    keep = mask == 0
    assert result.image[keep, :3].tobytes() == image[keep, :3].tobytes()
    assert (result.image[keep, 3] == 0).all()
    assert (result.image[~keep, 3] == 1).all()  # full opacity as soon as the mask is clearly > 0
    assert np.abs(result.image[12:38, 25:55, :3] - image[12:38, 25:55, :3]).mean() > 0.02


def test_gray_bands_change_monotonically_more_under_the_papers_rule(engine: Engine) -> None:
    image = random_region(64, 256, seed=2)
    mask = np.zeros((64, 256), np.uint8)
    levels = [0, 85, 170, 255]
    for band, level in enumerate(levels):
        mask[:, band * 64 : (band + 1) * 64] = level
    result = engine.inpaint(image, mask, _params(steps=8, snap=0.0, smooth=False), model=TINY)
    change = [
        np.abs(
            result.image[:, b * 64 + 12 : (b + 1) * 64 - 12, :3]
            - image[:, b * 64 + 12 : (b + 1) * 64 - 12, :3]
        ).mean()
        for b in range(4)
    ]
    assert change[0] == 0.0
    assert change[0] < change[1] < change[2] < change[3], change


def test_regions_are_sampled_at_the_working_resolution(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[int, int]] = []
    original = DifferentialDiffusionPipeline.__call__

    def spy(self: Any, image: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        sizes.append(tuple(image.shape[-2:]))
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(DifferentialDiffusionPipeline, "__call__", spy)
    for height, width in [(24, 40), (900, 1500), (37, 101)]:
        image = random_region(height, width)
        mask = np.full((height, width), 255, np.uint8)
        result = engine.inpaint(image, mask, _params(steps=1), model=TINY)
        assert result.image.shape == (height, width, 4)
    for (h, w), (height, width) in zip(sizes, [(24, 40), (900, 1500), (37, 101)], strict=True):
        assert h % 16 == 0 and w % 16 == 0  # the tiny UNet's multiple
        assert 0.75 * TINY_WORKING_AREA <= h * w <= 1.3 * TINY_WORKING_AREA  # same cost for any size
        assert abs(w / h - width / height) / (width / height) < 0.2  # aspect kept


def test_thin_strips_cost_the_working_area_too(engine: Engine) -> None:
    for height, width, area, multiple in [(4, 4000, 128 * 128, 16), (1, 8192 * 8192, 1024 * 1024, 64)]:
        for h, w in [
            working_size(height, width, area, multiple),
            working_size(width, height, area, multiple),
        ]:
            assert h % multiple == 0 and w % multiple == 0
            assert h * w <= 1.05 * area  # not the strip's length times the multiple
    image = random_region(3, 2000)
    result = engine.inpaint(image, np.full((3, 2000), 255, np.uint8), _params(steps=1), model=TINY)
    assert result.image.shape == (3, 2000, 4)


def test_same_seed_same_pixels_and_random_seeds_are_reported(engine: Engine) -> None:
    image = random_region(32, 32, seed=3)
    mask = np.full((32, 32), 200, np.uint8)
    first = engine.inpaint(image, mask, _params(seed=11, scheduler="euler_a"), model=TINY)
    again = engine.inpaint(image, mask, _params(seed=11, scheduler="euler_a"), model=TINY)
    assert first.seed == 11 and np.array_equal(first.image, again.image)
    drawn = engine.inpaint(image, mask, _params(seed=None, scheduler="euler_a"), model=TINY)
    replay = engine.inpaint(image, mask, _params(seed=drawn.seed, scheduler="euler_a"), model=TINY)
    assert np.array_equal(drawn.image, replay.image)
    assert {"load", "encode", "sample", "decode", "total"} <= set(first.timings)


def test_progress_and_lazy_previews(engine: Engine) -> None:
    events: list[tuple[str, int, int]] = []
    previews: list[tuple[int, np.ndarray]] = []

    def on_preview(index: int, step: int, make: Any) -> None:
        if step % 2 == 0:  # only some are asked for
            previews.append((step, make()))

    engine.inpaint(
        random_region(32, 48),
        np.full((32, 48), 255, np.uint8),
        _params(steps=6, strength=0.5),
        model=TINY,
        on_progress=lambda *event: events.append(event),
        on_preview=on_preview,
    )
    stages = [e[0] for e in events]
    assert stages[0] == "loading" and stages[-1] == "decoding"
    assert stages.index("encoding") < stages.index("sampling") < stages.index("decoding")
    sampling = [(step, total) for stage, step, total in events if stage == "sampling"]
    assert sampling == [(i, 3) for i in range(4)]  # strength 0.5 of 6 steps runs 3
    assert [step for step, _ in previews] == [2]
    preview = previews[0][1]
    assert preview.dtype == np.uint8 and preview.ndim == 3 and preview.shape[2] == 4
    assert preview.shape[0] <= 32 and preview.shape[1] <= 32  # latent resolution


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_offered_scheduler_runs(engine: Engine, scheduler: str) -> None:
    image = random_region(32, 32)
    mask = np.full((32, 32), 255, np.uint8)
    mask[:, :8] = 0
    result = engine.inpaint(image, mask, _params(steps=3, scheduler=scheduler), model=TINY)
    assert np.isfinite(result.image).all()
    assert result.image[:, :8, :3].tobytes() == image[:, :8, :3].tobytes()


@pytest.mark.parametrize("name", ["heun", "kdpm2", "pndm", "lms", "dpmpp_sde", "no-such-scheduler"])
def test_other_schedulers_are_refused_with_a_clear_error(engine: Engine, name: str) -> None:
    with pytest.raises(UnknownScheduler, match="(?i)scheduler") as refused:
        engine.inpaint(
            random_region(8, 8), np.full((8, 8), 255, np.uint8), _params(scheduler=name), model=TINY
        )
    assert "euler" in str(refused.value)  # says what to choose instead


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"strength": float("nan")}, "finite"),
        ({"strength": 0.0}, "'strength'"),
        ({"strength": 1.5}, "'strength'"),
        ({"steps": 0}, "'steps'"),
        ({"steps": DEFAULT_LIMITS.max_steps + 1}, "'steps'"),
        ({"guidance": float("inf")}, "finite"),
        ({"grow": -1.0}, "'grow'"),
        ({"snap": 0.5}, "'snap'"),
        ({"seed": -3}, "'seed'"),
    ],
)
def test_bad_parameters_are_clear_errors(engine: Engine, params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        engine.inpaint(random_region(8, 8), np.full((8, 8), 255, np.uint8), _params(**params), model=TINY)


def test_bad_pixels_are_clear_errors(engine: Engine) -> None:
    image = random_region(16, 24)
    with pytest.raises(InvalidRequest, match="mask is 24x15 pixels but the image is 24x16"):
        engine.inpaint(image, np.zeros((15, 24), np.uint8), _params(), model=TINY)
    with pytest.raises(InvalidRequest, match="8-bit, 16-bit or float"):
        engine.inpaint(image, np.zeros((16, 24), np.int32), _params(), model=TINY)
    with pytest.raises(InvalidRequest, match="values from 2 to 2; a map is 0 to 1"):
        engine.inpaint(image, np.full((16, 24), 2.0), _params(), model=TINY)
    with pytest.raises(InvalidRequest, match="float32"):
        engine.inpaint(image.astype(np.float64), np.zeros((16, 24), np.uint8), _params(), model=TINY)
    broken = image.copy()
    broken[3, 3, 1] = np.nan
    with pytest.raises(InvalidRequest, match="NaN"):
        engine.inpaint(broken, np.full((16, 24), 255, np.uint8), _params(), model=TINY)
    wide = np.zeros((1, DEFAULT_LIMITS.max_side + 1, 4), np.float32)  # the protocol's limits
    with pytest.raises(InvalidRequest, match=f"{DEFAULT_LIMITS.max_side + 1}x1 pixels"):
        engine.inpaint(wide, np.full(wide.shape[:2], 255, np.uint8), _params(), model=TINY)


def test_unknown_models_are_clear_errors(engine: Engine) -> None:
    with pytest.raises(UnknownModel, match="builtin:tiny-sd15"):  # lists the real built-ins
        engine.resolve_model("builtin:tiny-sd2")
    with pytest.raises(UnknownModel, match="no-such-model"):
        engine.inpaint(random_region(8, 8), np.full((8, 8), 255, np.uint8), _params(), model="no-such-model")
    with pytest.raises(UnknownModel, match="No model was chosen"):
        engine.resolve_model(None)


def test_cancel_stops_within_one_step_and_the_engine_goes_on(engine: Engine) -> None:
    steps: list[int] = []
    checks = {"n": 0}

    def should_cancel() -> bool:
        checks["n"] += 1
        return len(steps) >= 2  # cancel once two steps were reported

    with pytest.raises(JobCancelled):
        engine.inpaint(
            random_region(32, 32),
            np.full((32, 32), 255, np.uint8),
            _params(steps=50),
            model=TINY,
            on_progress=lambda stage, step, _n: steps.append(step) if stage == "sampling" and step else None,
            should_cancel=should_cancel,
        )
    assert steps == [1, 2]
    result = engine.inpaint(
        random_region(16, 16), np.full((16, 16), 255, np.uint8), _params(steps=2), model=TINY
    )
    assert result.image.shape == (16, 16, 4)


@pytest.mark.parametrize(
    ("cancel_after", "not_reached"),
    [
        (("encoding", 0), "sampling"),  # during the text encoding: no VAE encode, no step
        (("sampling", 3), "decoding"),  # during the last step: no VAE decode
    ],
    ids=["while-encoding", "at-the-last-step"],
)
def test_cancel_is_honoured_between_the_stages(
    engine: Engine, cancel_after: tuple[str, int], not_reached: str
) -> None:
    seen: list[tuple[str, int]] = []
    with pytest.raises(JobCancelled):
        engine.inpaint(
            random_region(32, 32),
            np.full((32, 32), 255, np.uint8),
            _params(steps=3),
            model=TINY,
            on_progress=lambda stage, step, _n: seen.append((stage, step)),
            should_cancel=lambda: cancel_after in seen,
        )
    assert cancel_after in seen and not_reached not in {stage for stage, _ in seen}


def test_out_of_memory_fails_one_job_and_frees_memory_before_the_next(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DifferentialDiffusionPipeline.__call__
    freed_before_call: list[int] = []
    freed: list[int] = []

    def out_of_memory_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        freed_before_call.append(len(freed))
        if len(freed_before_call) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    engine.free_memory()  # what earlier tests' jobs left
    monkeypatch.setattr(DifferentialDiffusionPipeline, "__call__", out_of_memory_once)
    monkeypatch.setattr(ModelRegistry, "free_memory", lambda self: freed.append(1))
    image, mask = random_region(16, 16), np.full((16, 16), 255, np.uint8)
    with pytest.raises(OutOfMemory, match="ran out of memory"):
        engine.inpaint(image, mask, _params(steps=2), model=TINY)
    assert not freed  # not yet: the caller answers its client first
    assert engine.inpaint(image, mask, _params(steps=2), model=TINY).image.shape == (16, 16, 4)
    assert freed_before_call == [0, 1]  # the next job freed it first, once
    engine.inpaint(image, mask, _params(steps=2), model=TINY)
    assert freed_before_call == [0, 1, 1]  # a job after a good one frees nothing


def test_free_memory_after_a_stopped_job_spares_the_next_job_the_work(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[int] = []
    engine.free_memory()  # what earlier tests' jobs left
    monkeypatch.setattr(ModelRegistry, "free_memory", lambda self: freed.append(1))
    image, mask = random_region(16, 16), np.full((16, 16), 255, np.uint8)
    with pytest.raises(JobCancelled):
        engine.inpaint(image, mask, _params(steps=2), model=TINY, should_cancel=lambda: True)
    engine.free_memory()  # what the daemon does once its client has `cancelled`
    assert freed == [1]
    engine.inpaint(image, mask, _params(steps=2), model=TINY)
    assert freed == [1]


def test_jobs_from_several_threads_run_one_at_a_time(engine: Engine) -> None:
    image, mask = random_region(24, 24), np.full((24, 24), 255, np.uint8)
    expected = engine.inpaint(image, mask, _params(steps=2), model=TINY).image
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def job() -> None:
        try:
            results.append(engine.inpaint(image, mask, _params(steps=2), model=TINY).image)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert all(np.array_equal(r, expected) for r in results)


def test_grow_and_feather_reach_the_result(engine: Engine) -> None:
    image = random_region(48, 48)
    mask = np.zeros((48, 48), np.uint8)
    mask[16:32, 16:32] = 255
    plain = engine.inpaint(image, mask, _params(steps=2), model=TINY)
    grown = engine.inpaint(image, mask, _params(steps=2, grow=6), model=TINY)
    feathered = engine.inpaint(image, mask, _params(steps=4, feather=8, snap=0.0), model=TINY)
    assert (grown.image[..., 3] > 0).sum() > (plain.image[..., 3] > 0).sum()
    assert grown.image[24, 12, 3] == 1.0 and plain.image[24, 12, 3] == 0.0
    alpha = feathered.image[24, :, 3]
    assert (alpha > 0).sum() > 0 and (alpha[alpha > 0] < 1).any()  # a soft edge
