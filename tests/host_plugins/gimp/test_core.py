"""The plug-in's pure decisions (`core`, as installed), without GIMP."""

from __future__ import annotations

from types import ModuleType

import pytest


def test_depths(plugin_core: ModuleType) -> None:
    depth = plugin_core.depth_for_precision
    P = plugin_core.PixelFormat
    cases = {
        "U8_NON_LINEAR": ("R'G'B'A u8", P.RGBA8),
        "u8_linear": ("R'G'B'A u8", P.RGBA8),
        "U8_PERCEPTUAL": ("R'G'B'A u8", P.RGBA8),
        "U16_LINEAR": ("R'G'B'A u16", P.RGBA16),
        "U16_NON_LINEAR": ("R'G'B'A u16", P.RGBA16),
        "HALF_LINEAR": ("R'G'B'A half", P.RGBAF16),
        "FLOAT_NON_LINEAR": ("R'G'B'A float", P.RGBAF32),
        "U32_LINEAR": ("R'G'B'A float", P.RGBAF32),  # no 32-bit integer wire format
        "DOUBLE_PERCEPTUAL": ("R'G'B'A float", P.RGBAF32),
    }
    for name, (babl, wire) in cases.items():
        assert (depth(name).babl, depth(name).wire) == (babl, wire), name


def test_region_without_selection_is_the_whole_drawable(plugin_core: ModuleType) -> None:
    assert plugin_core.plan_region(None, (300, 200)) == plugin_core.Rect(0, 0, 300, 200)


def test_region_around_a_selection(plugin_core: ModuleType) -> None:
    Rect = plugin_core.Rect
    selection = Rect(1000, 900, 40, 30)
    region = plugin_core.plan_region(selection, (4000, 3000))
    assert region.contains(selection)
    assert Rect(0, 0, 4000, 3000).contains(region)
    assert region.width % 8 == 0 and region.height % 8 == 0
    assert region.width >= 512 and region.height >= 512  # the shared context rule
    assert region.width < 1000  # not the whole canvas


def test_region_is_clamped_to_the_drawable(plugin_core: ModuleType) -> None:
    Rect = plugin_core.Rect
    region = plugin_core.plan_region(Rect(-50, -20, 200, 100), (300, 200))
    assert Rect(0, 0, 300, 200).contains(region)
    assert region.contains(Rect(0, 0, 150, 80))


def test_selection_off_the_drawable(plugin_core: ModuleType) -> None:
    with pytest.raises(ValueError, match="does not touch the active layer"):
        plugin_core.plan_region(plugin_core.Rect(400, 0, 10, 10), (300, 200))


def test_settings_to_params(plugin_core: ModuleType) -> None:
    P = plugin_core.PixelFormat
    params = plugin_core.Settings(prompt="cat", seed=-1, model="  ").params(P.RGBA16)
    assert (params.seed, params.model, params.output_format, params.preview) == (None, None, P.RGBA16, False)
    params = plugin_core.Settings(seed=7, model="sd15", steps=9, strength=0.5).params(P.RGBA8)
    assert (params.seed, params.model, params.steps, params.strength) == (7, "sd15", 9, 0.5)


def test_submit_is_in_image_coordinates(plugin_core: ModuleType) -> None:
    core = plugin_core
    region = core.Rect(8, 16, 4, 2)
    submit = core.build_submit(
        "job1", core.Settings(prompt="x"), core.DEPTHS["u8"], region, bytes(32), b"\xff" * 8, (-10, 100)
    )
    assert (submit.x, submit.y) == (-2, 116)
    assert submit.image.format == core.PixelFormat.RGBA8
    assert submit.params.output_format == core.PixelFormat.RGBA8
    assert core.check_result(submit.image, submit.x, submit.y, submit) == "R'G'B'A u8"
    with pytest.raises(ValueError, match="returned a 4x2 image at"):
        core.check_result(submit.image, 0, 0, submit)
    bgra = core.Image(4, 2, core.PixelFormat.BGRA8, bytes(32))
    with pytest.raises(ValueError, match="bgra8"):
        core.check_result(bgra, submit.x, submit.y, submit)


def test_progress_text(plugin_core: ModuleType) -> None:
    core = plugin_core
    Progress, Stage = core.Progress, core.Stage
    text, fraction = core.progress_report(Progress("j", Stage.SAMPLING, 3, 20))
    assert text == "Differential Inpaint: sampling: step 3 of 20" and fraction == 0.15
    text, fraction = core.progress_report(Progress("j", Stage.QUEUED, position=2))
    assert "2 jobs ahead" in text and fraction is None
    assert core.progress_report(Progress("j", Stage.LOADING))[1] is None
    assert core.progress_report(Progress("j", Stage.DECODING))[1] == 1.0


def test_a_region_too_big_for_the_daemon_is_refused_before_reading(plugin_core: ModuleType) -> None:
    """A huge layer with no selection would be read whole (gigabytes) only to be refused."""
    Rect, limits = plugin_core.Rect, plugin_core.DEFAULT_LIMITS
    with pytest.raises(ValueError, match="The whole layer is 5000x4000 pixels.*smaller area"):
        plugin_core.plan_region(None, (5000, 4000))
    with pytest.raises(ValueError, match="around the selection is 9000x568"):
        plugin_core.plan_region(Rect(0, 0, 9000, 500), (9000, 1000))  # wider than max_side
    assert limits.max_pixels < 5000 * 4000 and limits.max_side < 9000
    # Within the limits, a big layer is fine, and a small selection on it too.
    assert plugin_core.plan_region(None, (4096, 4096)) == Rect(0, 0, 4096, 4096)
    assert plugin_core.plan_region(Rect(5000, 5000, 10, 10), (20000, 20000)).width == 512
