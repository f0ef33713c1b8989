"""Jobs of several results: variations (`count`) and a strength fan (`fan`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from differential_inpaint.backend.engine import Engine, InvalidRequest, JobCancelled
from differential_inpaint.backend.engine.job import InpaintResult
from differential_inpaint.protocol import MAX_SEED, JobParams

from .conftest import random_region

TINY = "builtin:tiny-sd15"
MASK = np.zeros((32, 48), np.uint8)
MASK[4:28, 8:40] = 255
MASK[4:28, 36:40] = 120  # a gray band: partial strength


def _params(**kwargs: Any) -> JobParams:
    options: dict[str, Any] = {"prompt": "a red door", "steps": 6, "seed": 11}
    options.update(kwargs)
    return JobParams(**options)


def _batch(engine: Engine, params: JobParams, **options: Any) -> list[InpaintResult]:
    return engine.inpaint_batch(random_region(32, 48, seed=3), MASK, params, model=TINY, **options)


def test_variation_k_is_a_job_of_its_own_with_seed_plus_k_bit_for_bit(engine: Engine) -> None:
    delivered: list[InpaintResult] = []
    results = _batch(engine, _params(count=3, strength=0.8), on_result=delivered.append)
    assert results == delivered, "each result is handed over as it is done, in order"
    assert [r.index for r in results] == [0, 1, 2]
    assert [r.seed for r in results] == [11, 12, 13]
    assert [r.strength for r in results] == [0.8] * 3
    for r in results:
        alone = engine.inpaint(
            random_region(32, 48, seed=3), MASK, _params(seed=r.seed, strength=0.8), model=TINY
        )
        assert r.image.tobytes() == alone.image.tobytes(), f"variation {r.index}"
    assert results[0].image.tobytes() != results[1].image.tobytes()


def test_a_random_seed_gives_consecutive_seeds_and_they_wrap_at_the_top(engine: Engine) -> None:
    results = _batch(engine, _params(count=2, seed=None, steps=2))
    assert results[1].seed == results[0].seed + 1
    results = _batch(engine, _params(count=2, seed=MAX_SEED, steps=2))
    assert [r.seed for r in results] == [MAX_SEED, 0]


def test_a_fan_keeps_kept_pixels_and_changes_more_as_strength_grows(engine: Engine) -> None:
    image = random_region(32, 48, seed=3)
    fan = (0.3, 0.6, 0.9)
    results = _batch(engine, _params(fan=fan))
    assert [r.strength for r in results] == list(fan)
    assert {r.seed for r in results} == {11}, "one seed, one noise for the whole fan"
    keep = MASK == 0
    change = []
    for r, strength in zip(results, fan, strict=True):
        assert r.image[keep, :3].tobytes() == image[keep, :3].tobytes()
        assert (r.image[keep, 3] == 0).all()
        change.append(float(np.abs(r.image[~keep, :3] - image[~keep, :3]).mean()))
        alone = engine.inpaint(image, MASK, _params(strength=strength), model=TINY)
        assert r.image.tobytes() == alone.image.tobytes(), f"fan strength {strength}"
    assert change[0] < change[1] < change[2], change


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a - b).max() < 2e-3)


def test_a_batched_run_equals_separate_jobs_up_to_rounding() -> None:
    # What a GPU does with memory to spare: every sample in one run of the model.
    batched = Engine(device="cpu", scan_default_locations=False, max_batch=4)
    single = Engine(device="cpu", scan_default_locations=False, max_batch=1)
    for params in (_params(count=3), _params(fan=(0.25, 0.5, 1.0)), _params(count=2, scheduler="euler_a")):
        together = _batch(batched, params)
        apart = _batch(single, params)
        for a, b in zip(together, apart, strict=True):
            assert (a.seed, a.strength) == (b.seed, b.strength)
            assert _close(a.image, b.image), (params, a.index, float(np.abs(a.image - b.image).max()))


def test_a_chunk_that_runs_out_of_memory_is_split_and_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(device="cpu", scan_default_locations=False, max_batch=4)
    loaded = engine.models.load(engine.models.resolve(TINY))
    real_call = type(loaded.sampler).__call__
    sizes: list[int] = []

    def short_of_memory(self: Any, image: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        sizes.append(image.shape[0])
        if image.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, image, *args, **kwargs)

    monkeypatch.setattr(type(loaded.sampler), "__call__", short_of_memory)
    results = _batch(engine, _params(count=4, steps=2))
    assert [r.seed for r in results] == [11, 12, 13, 14]
    assert sizes == [4, 2, 1, 1, 2, 1, 1]


def test_a_cancel_mid_batch_keeps_what_was_handed_over(engine: Engine) -> None:
    delivered: list[InpaintResult] = []
    with pytest.raises(JobCancelled):
        _batch(
            engine,
            _params(count=4, steps=2),
            on_result=delivered.append,
            should_cancel=lambda: bool(delivered),
        )
    assert [r.seed for r in delivered] == [11]


def test_a_fan_strength_too_low_to_change_anything_is_the_input(engine: Engine) -> None:
    # 0.1 of 6 steps frees no step: that result is the input, the others are sampled.
    image = random_region(32, 48, seed=3)
    results = _batch(engine, _params(fan=(0.1, 0.9)))
    assert results[0].image[..., :3].tobytes() == image[..., :3].tobytes()
    assert (results[0].image[..., 3] == 0).all()
    assert (results[1].image[..., 3] > 0).any()


def test_progress_counts_the_steps_of_the_whole_job(engine: Engine) -> None:
    events: list[tuple[str, int, int]] = []
    previews: list[int] = []
    _batch(
        engine,
        _params(count=2, steps=3),
        on_progress=lambda *event: events.append(event),
        on_preview=lambda index, _step, _make: previews.append(index),
    )
    sampling = [(step, total) for stage, step, total in events if stage == "sampling"]
    assert sampling[-1] == (6, 6) and sampling == sorted(sampling)
    assert sorted(set(previews)) == [0, 1]


def test_inpaint_is_for_one_result(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="2 results"):
        engine.inpaint(random_region(8, 8), np.full((8, 8), 255, np.uint8), _params(count=2), model=TINY)
    with pytest.raises(InvalidRequest, match="'count' and 'fan'"):
        _batch(engine, _params(count=2, fan=(0.5,)))


def test_serve_max_batch_reaches_the_engine() -> None:
    import argparse

    from differential_inpaint.backend.daemon import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    engine = cli._load_engine(parser.parse_args(["--device", "cpu", "--max-batch", "3"]))
    assert engine.max_batch == 3 and engine.batch_size(512 * 512) == 3
    default = cli._load_engine(parser.parse_args(["--device", "cpu"]))
    assert default.max_batch is None and default.batch_size(512 * 512) == 1  # the CPU: one at a time
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-batch", "0"])
