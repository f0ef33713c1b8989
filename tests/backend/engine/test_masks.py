"""Mask pre-processing: grow, feather, snap, and the composite alpha."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from differential_inpaint.backend.engine.masks import COMPOSITE_RAMP, composite_alpha, process_mask

masks = arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)))


def test_untouched_mask_is_exact_in_double_precision() -> None:
    mask = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = process_mask(mask)
    assert out.dtype == np.float64
    assert np.array_equal(out, mask.astype(np.float64) / 255.0)


def test_grow_is_a_disk_of_the_given_radius() -> None:
    mask = np.zeros((41, 41), np.uint8)
    mask[20, 20] = 255
    grown = process_mask(mask, grow=8)
    y, x = np.mgrid[-20:21, -20:21]
    distance = np.hypot(x, y)
    assert (grown[distance <= 8] == 1.0).all()  # everything within the radius
    assert (grown[distance > 8 * 1.09] == 0.0).all()  # an octagon: never more than 9% beyond
    assert grown[20, 28] == 1.0 and grown[20, 29] == 0.0  # exactly r along the axes


def test_grow_keeps_gray_levels_and_takes_the_maximum() -> None:
    mask = np.zeros((9, 9), np.uint8)
    mask[4, 2], mask[4, 6] = 100, 200
    grown = process_mask(mask, grow=1)
    assert grown[4, 4] == 0.0
    assert grown[4, 5] == 200 / 255 and grown[4, 3] == 100 / 255 and grown[3, 6] == 200 / 255


def test_feather_makes_a_symmetric_soft_edge_of_the_given_width() -> None:
    mask = np.zeros((8, 100), np.uint8)
    mask[:, 50:] = 255
    soft = process_mask(mask, feather=10)[4]
    assert (np.diff(soft) >= 0).all()  # monotonic across the edge
    assert math.isclose(soft[49] + soft[50], 1.0, abs_tol=1e-12)  # symmetric about the edge
    assert 0.3 < soft[50] < 0.7
    assert soft[35] < 0.01 and soft[64] > 0.99  # the ramp spans about +-feather
    assert soft[45] > 0.05 and soft[54] < 0.95


def test_snap_removes_jpeg_ringing_but_keeps_deliberate_grays() -> None:
    mask = np.array([[0, 3, 7, 8, 128, 247, 250, 255]], np.uint8)
    snapped = process_mask(mask, snap=0.03)
    assert snapped[0, 1] == 0.0 and snapped[0, 2] == 0.0  # 3/255, 7/255 -> keep
    assert snapped[0, 6] == 1.0  # 0.98 -> change fully
    assert snapped[0, 3] == 8 / 255 and snapped[0, 4] == 128 / 255 and snapped[0, 5] == 247 / 255
    assert np.array_equal(process_mask(mask, snap=0.0), mask / 255.0)


def test_composite_alpha_is_zero_only_at_zero_and_full_soon_above() -> None:
    mask = np.linspace(0.0, 1.0, 256)
    alpha = composite_alpha(mask)
    assert alpha.dtype == np.float32
    assert alpha[0] == 0.0 and (alpha[1:] > 0).all()
    assert (alpha[mask >= COMPOSITE_RAMP] == 1.0).all()  # never scaled by the mask again
    assert (np.diff(alpha) >= 0).all()
    snapped = composite_alpha(np.array([0.0, 0.03, 0.031, 0.03 + COMPOSITE_RAMP, 0.5]), snap=0.03)
    assert snapped[0] == 0.0 and snapped[1] == 0.0 and 0 < snapped[2] < 0.1 and snapped[3] == 1.0


@given(st.integers(1, 200), st.floats(0.01, 1.0))
def test_pixels_the_sampler_never_frees_never_cover_the_input(steps: int, strength: float) -> None:
    mask = np.arange(256) / 255.0
    alpha = composite_alpha(mask, steps=steps, strength=strength)
    # The first_free_step rule: a pixel is free at the last step when mask x strength >= 1/steps.
    never_free = mask * strength * steps < 1.0 - 1e-9
    assert (alpha[never_free] < 1.0).all()
    assert alpha[0] == 0.0 and (np.diff(alpha) >= 0).all()
    assert (alpha[mask >= COMPOSITE_RAMP + 1.0 / (steps * strength)] == 1.0).all()


@given(masks, st.floats(0, 6), st.floats(0, 6), st.floats(0, 0.49))
def test_processed_masks_stay_in_range(mask: np.ndarray, grow: float, feather: float, snap: float) -> None:
    out = process_mask(mask, grow=grow, feather=feather, snap=snap)
    assert out.shape == mask.shape and np.isfinite(out).all()
    assert (out >= 0).all() and (out <= 1).all()
    if snap > 0:
        assert not ((out > 0) & (out <= snap)).any() and not ((out < 1) & (out >= 1 - snap)).any()


@given(masks, st.integers(0, 5), st.integers(0, 5))
def test_growing_more_never_shrinks(mask: np.ndarray, small: int, extra: int) -> None:
    a = process_mask(mask, grow=small)
    b = process_mask(mask, grow=small + extra)
    assert (a >= mask / 255.0).all() and (b >= a).all()
