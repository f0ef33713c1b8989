"""The step-index threshold schedule, exactly: free at step i <=> e >= 1 - i/N."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from differential_inpaint.backend.engine.pipeline import first_free_step, start_step


def test_start_step_is_img2img_in_double_precision() -> None:
    assert start_step(0.7, 10) == 3  # 7 steps run, as StableDiffusionImg2ImgPipeline(strength=0.7)
    assert int(10 * float(np.float32(0.7))) == 6  # what a float32 mask value would have given
    assert start_step(1.0, 20) == 0
    assert start_step(0.5, 20) == 10
    assert start_step(0.04, 20) == 20  # below 1/N: nothing ever runs


@given(
    st.lists(st.integers(0, 255), min_size=1, max_size=64),
    st.integers(1, 50),
    st.sampled_from([1.0, 0.9, 0.75, 0.7, 0.5, 0.3]),
)
def test_free_sets_follow_the_rule_exactly_and_are_nested(
    values: list[int], steps: int, strength: float
) -> None:
    mask = np.array(values, dtype=np.float64) / 255.0
    e = torch.from_numpy(mask * strength)
    max_e = float(e.max())
    first = first_free_step(e, steps, max_e)
    t_start = start_step(max_e, steps)
    exact_strength = Fraction(strength).limit_denominator(100)
    previous = torch.zeros_like(first, dtype=torch.bool)
    for i in range(t_start, steps):
        free = first <= i
        expected = [Fraction(v, 255) * exact_strength >= 1 - Fraction(i, steps) for v in values]
        assert free.tolist() == expected
        assert bool((free | ~previous).all())  # free at i-1 implies free at i
        previous = free
    # Whoever is strongest is free from the first step that runs.
    assert bool((first[e == e.max()] <= t_start).all()) or max_e < 1 / steps


def test_resampled_maps_cannot_start_before_the_pixel_mask_allows() -> None:
    # 0.7 - 4e-16 is what an antialiased resize of a uniform 0.7 can return.
    e = torch.tensor([0.7 - 4e-16, 0.7, 0.7 + 4e-16], dtype=torch.float64)
    assert first_free_step(e, 10, 0.7).tolist() == [3, 3, 3]
