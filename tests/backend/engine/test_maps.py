"""The change map's pipeline: sources (8/16-bit, float layers, depth), invert, levels, the
selection, the blend map, and the strength map the sampler is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from differential_inpaint.backend.engine import Engine, InvalidRequest, job
from differential_inpaint.backend.engine.maps import change_map, combine, depth_map, levels
from differential_inpaint.backend.engine.masks import process_mask
from differential_inpaint.protocol import JobParams

from .conftest import random_region

TINY = "builtin:tiny-sd15"
TINY_DEPTH = "builtin:tiny-depth"
H, W = 32, 48


def _params(**kwargs: Any) -> JobParams:
    options: dict[str, Any] = {"prompt": "a red door", "steps": 4, "seed": 7}
    options.update(kwargs)
    return JobParams(**options)


def _ramp() -> np.ndarray:
    """0 at the left edge to 1 at the right, float64."""
    return np.tile(np.linspace(0.0, 1.0, W), (H, 1))


def _assert_kept_where_the_map_is_zero(image: np.ndarray, result: Any) -> None:
    kept = result.mask == 0
    assert kept.any() and (~kept).any()  # both kinds of pixels, or the test says nothing
    assert result.image[kept, :3].tobytes() == image[kept, :3].tobytes()
    assert (result.image[kept, 3] == 0).all()


# --- the pipeline's steps -----------------------------------------------------------------


def test_defaults_leave_the_map_itself_so_old_jobs_stay_bit_for_bit() -> None:
    mask = np.random.default_rng(0).integers(0, 256, (H, W), dtype=np.uint8) / 255.0
    assert change_map(mask, JobParams()) is mask
    assert np.array_equal(process_mask(mask), process_mask((mask * 255).round().astype(np.uint8)))


def test_levels_stretch_clip_and_bend() -> None:
    ramp = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(levels(ramp, 0.5, 1.0), np.clip((ramp - 0.5) / 0.5, 0, 1))
    assert (levels(ramp, 0.5, 1.0)[:6] == 0.0).all()  # at or below the black point: nothing
    assert (levels(ramp, 0.0, 0.6)[6:] == 1.0).all()  # at or above the white point: fully
    np.testing.assert_allclose(levels(ramp, gamma=2.0), np.sqrt(ramp))  # above 1: grays change more
    with pytest.raises(InvalidRequest, match="gamma must be above 0"):
        levels(ramp, gamma=0.0)
    with pytest.raises(InvalidRequest, match="black point"):
        levels(ramp, 0.7, 0.3)


def test_invert_then_levels_then_selection_in_the_protocols_order() -> None:
    selection = np.zeros((H, W))
    selection[:, : W // 2] = 1.0
    out = change_map(_ramp(), JobParams(invert_mask=True, mask_black=0.5), selection=selection)
    # Inverted, the left is high; black point 0.5 zeroes the right half; the selection its right.
    expected = np.clip((1.0 - _ramp() - 0.5) / 0.5, 0.0, 1.0) * selection
    np.testing.assert_array_equal(out, expected)


def test_depth_is_the_source_and_the_sent_map_combines_with_it() -> None:
    estimate = _ramp()  # larger = nearer: the right is near
    far = depth_map(estimate, "far")
    np.testing.assert_allclose(far, 1.0 - _ramp())
    np.testing.assert_allclose(depth_map(estimate, "near"), _ramp())
    assert not depth_map(np.full((H, W), 3.0), "near").any()  # flat: no map at all
    sent = np.zeros((H, W))
    sent[:, :8] = 0.5
    for how, expected in [
        ("multiply", far * sent),
        ("min", np.minimum(far, sent)),
        ("max", np.maximum(far, sent)),
    ]:
        np.testing.assert_array_equal(
            change_map(sent, JobParams(depth="far", depth_combine=how), depth=far), expected
        )
        np.testing.assert_array_equal(combine(far, sent, how), expected)


# --- the engine: kept pixels for every source ---------------------------------------------


def _sources() -> dict[str, dict[str, Any]]:
    """One job per source of the change map; each keeps some pixels and changes others."""
    box = np.zeros((H, W), np.uint8)
    box[6:26, 10:40] = 255
    gray16 = np.zeros((H, W), np.uint16)
    gray16[6:26, 10:40] = 40000
    gray16[6:26, 10:12] = 1  # 1/65535: not 0, so not kept (8 bits would have lost it)
    layer = np.zeros((H, W), np.float32)
    layer[4:28, 8:44] = 0.75
    selection = np.zeros((H, W), np.uint8)
    selection[:, : W // 2] = 255
    return {
        "gray8": {"mask": box},
        "gray16": {"mask": gray16, "params": {"snap": 0.0}},
        "layer": {"mask": layer},
        "selection-limited": {"mask": layer, "selection": selection},
        "levels": {"mask": _ramp(), "params": {"mask_black": 0.3, "mask_gamma": 2.0}},
        "depth": {
            "mask": np.full((H, W), 255, np.uint8),
            "params": {"depth": "far", "depth_model": TINY_DEPTH, "mask_black": 0.4},
        },
    }


@pytest.mark.parametrize("source", list(_sources()))
def test_pixels_where_the_effective_map_is_zero_come_back_bit_for_bit(engine: Engine, source: str) -> None:
    job_ = _sources()[source]
    image = random_region(H, W, seed=4)
    image[0, 0, :3] = np.float32(0.1234567)  # not representable in 8 bits
    params = _params(**job_.get("params", {}))
    result = engine.inpaint(image, job_["mask"], params, model=TINY, selection=job_.get("selection"))
    _assert_kept_where_the_map_is_zero(image, result)
    changed = result.mask > 0.5
    assert np.abs(result.image[changed, :3] - image[changed, :3]).mean() > 0.01


def test_gray16_keeps_what_8_bits_would_round_to_zero(engine: Engine) -> None:
    gray16 = np.zeros((H, W), np.uint16)
    gray16[:, W // 2 :] = 100  # 100/65535: 0 in 8 bits
    m = engine.strength_map(random_region(H, W), gray16, _params(snap=0.0))
    assert (m[:, W // 2 :] == 100 / 65535).all() and (m[:, : W // 2] == 0).all()


def test_a_ramp_with_black_point_one_half_leaves_its_left_half_unchanged(engine: Engine) -> None:
    image = random_region(H, W, seed=5)
    result = engine.inpaint(image, _ramp(), _params(mask_black=0.5), model=TINY)
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True  # the ramp is below 0.5 there
    assert (result.mask[left] == 0).all()
    assert result.image[left, :3].tobytes() == image[left, :3].tobytes()
    assert (result.image[left, 3] == 0).all()
    right = result.image[:, -8:, :3] - image[:, -8:, :3]
    assert np.abs(right).mean() > 0.01


def test_invert_swaps_kept_and_changed(engine: Engine) -> None:
    image = random_region(H, W, seed=6)
    mask = np.zeros((H, W), np.uint8)
    mask[:, : W // 2] = 255
    plain = engine.inpaint(image, mask, _params(), model=TINY)
    inverted = engine.inpaint(image, mask, _params(invert_mask=True), model=TINY)
    left, right = (slice(None), slice(0, W // 2)), (slice(None), slice(W // 2, W))
    assert plain.image[right][..., :3].tobytes() == image[right][..., :3].tobytes()
    assert inverted.image[left][..., :3].tobytes() == image[left][..., :3].tobytes()
    assert np.abs(plain.image[left][..., :3] - image[left][..., :3]).mean() > 0.01
    assert np.abs(inverted.image[right][..., :3] - image[right][..., :3]).mean() > 0.01
    assert (inverted.image[left][..., 3] == 0).all() and (inverted.image[right][..., 3] == 1).all()


def test_a_blend_map_is_the_alpha_while_the_change_map_drives_the_sampler(engine: Engine) -> None:
    image = random_region(H, W, seed=7)
    mask = np.full((H, W), 255, np.uint8)
    blend = np.ones((H, W), np.float32)
    blend[:, : W // 2] = 0.0
    blend[:, -4:] = 0.5
    plain = engine.inpaint(image, mask, _params(), model=TINY)
    result = engine.inpaint(image, mask, _params(), model=TINY, blend=blend)
    assert (result.image[:, : W // 2, 3] == 0).all()  # transparent where the blend map is 0
    assert (result.image[:, -4:, 3] == 0.5).all()
    # ... while the sampler still changed those pixels, exactly as without a blend map.
    assert np.abs(result.image[:, : W // 2, :3] - image[:, : W // 2, :3]).mean() > 0.01
    assert result.image[..., :3].tobytes() == plain.image[..., :3].tobytes()


# --- the strength map ---------------------------------------------------------------------


def test_the_strength_map_is_the_map_the_sampler_was_given(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compared with the sampler's own map at pixel resolution: the one `pixel_strength`
    hands it while it samples (recorded), not a copy of its computation."""
    given: list[np.ndarray] = []
    pixel_strength = job.pixel_strength

    def recording(processed: np.ndarray, strength: float) -> np.ndarray:
        given.append(pixel_strength(processed, strength))
        return given[-1]

    image = random_region(H, W, seed=8)
    selection = np.zeros((H, W), np.uint8)
    selection[2:30, 4:44] = 200
    params = _params(strength=0.6, mask_black=0.1, mask_white=0.9, mask_gamma=1.5, grow=2, feather=3)
    shown = engine.strength_map(image, _ramp(), params, selection=selection)
    monkeypatch.setattr(job, "pixel_strength", recording)
    engine.inpaint(image, _ramp(), params, model=TINY, selection=selection)
    assert len(given) >= 1
    assert given[0].shape == (H, W)
    assert given[0].tobytes() == shown.tobytes()
    assert 0.4 < shown.max() <= 0.6 * 200 / 255 and (shown == 0).any()  # x strength, x selection


def test_bad_maps_and_levels_are_clear_errors(engine: Engine) -> None:
    image, mask = random_region(H, W), np.full((H, W), 255, np.uint8)
    with pytest.raises(InvalidRequest, match=f"selection is {W}x{H - 1} pixels but the image is {W}x{H}"):
        engine.strength_map(image, mask, _params(), selection=np.ones((H - 1, W)))
    with pytest.raises(InvalidRequest, match=f"blend mask is {W - 2}x{H} pixels"):
        engine.inpaint(image, mask, _params(), model=TINY, blend=np.ones((H, W - 2)))
    with pytest.raises(InvalidRequest, match="mask_gamma"):
        engine.strength_map(image, mask, _params(mask_gamma=0.0))
    with pytest.raises(InvalidRequest, match="mask_black"):
        engine.strength_map(image, mask, _params(mask_black=0.8, mask_white=0.2))


# --- depth --------------------------------------------------------------------------------


def test_tiny_depth_is_deterministic_and_near_and_far_are_each_others_inverse(engine: Engine) -> None:
    image = random_region(H, W, seed=9)
    full = np.full((H, W), 255, np.uint8)
    near = engine.strength_map(image, full, _params(depth="near", depth_model=TINY_DEPTH, snap=0.0))
    far = engine.strength_map(image, full, _params(depth="far", depth_model=TINY_DEPTH, snap=0.0))
    assert near.min() == 0.0 and near.max() == 1.0 and near.std() > 0.05
    np.testing.assert_allclose(far, 1.0 - near, atol=1e-12)
    fresh = Engine(device="cpu", scan_default_locations=False)  # another load, the same model
    again = fresh.strength_map(image, full, _params(depth="near", depth_model=TINY_DEPTH, snap=0.0))
    assert again.tobytes() == near.tobytes()


def test_no_depth_model_says_where_to_put_one(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="No depth model was found: put a Depth Anything V2 model"):
        engine.strength_map(random_region(H, W), np.full((H, W), 255, np.uint8), _params(depth="far"))


def test_a_depth_model_file_that_is_not_one_is_named(engine: Engine, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    image, full = random_region(H, W), np.full((H, W), 255, np.uint8)
    text = tmp_path / "depth_anything_v2_vits.pth"
    text.write_text("not weights")
    other = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(other))
    with pytest.raises(InvalidRequest, match="Cannot use 'depth_anything_v2_vits.pth' as a depth model"):
        engine.strength_map(image, full, _params(depth="far", depth_model=str(text)))
    with pytest.raises(InvalidRequest, match="Cannot use 'other.safetensors' as a depth model: its tensors"):
        engine.strength_map(image, full, _params(depth="far", depth_model=str(other)))
    with pytest.raises(InvalidRequest, match="Unknown depth model 'nowhere'"):
        engine.strength_map(image, full, _params(depth="far", depth_model="nowhere"))


def test_a_context_window_is_all_the_model_sees_and_all_that_changes(engine: Engine) -> None:
    image = random_region(H, W, seed=10)
    full = np.full((H, W), 255, np.uint8)
    whole = engine.strength_map(image, full, _params(feather=2))
    windowed = engine.strength_map(image, full, _params(feather=2), context=(10, 4, 20, 16))
    inside = np.zeros((H, W), bool)
    inside[4:20, 10:30] = True
    assert (windowed[~inside] == 0).all() and np.array_equal(windowed[inside], whole[inside])
    result = engine.inpaint(image, full, _params(), model=TINY, context=(10, 4, 20, 16))
    assert result.image.shape == (H, W, 4) and np.array_equal(result.mask == 0, ~inside)
    _assert_kept_where_the_map_is_zero(image, result)
    assert np.abs(result.image[inside, :3] - image[inside, :3]).mean() > 0.01
    with pytest.raises(InvalidRequest, match="lies outside the 48x32 image"):
        engine.strength_map(image, full, _params(), context=(60, 0, 5, 5))
