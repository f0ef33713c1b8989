"""Region maths, held to its properties with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from differential_inpaint.protocol import (
    Rect,
    context_region,
    crop,
    mask_bounds,
    to_document,
    to_region,
)


def _mask(width: int, height: int, points: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(width * height)
    for x, y, value in points:
        data[y * width + x] = value
    return bytes(data)


def _bounds_by_brute_force(data: bytes, width: int, height: int) -> Rect | None:
    xs = [i % width for i, v in enumerate(data) if v]
    ys = [i // width for i, v in enumerate(data) if v]
    if not xs:
        return None
    return Rect.from_edges(min(xs), min(ys), max(xs) + 1, max(ys) + 1)


@st.composite
def masks(draw: st.DrawFn) -> tuple[bytes, int, int]:
    width = draw(st.integers(1, 40))
    height = draw(st.integers(1, 40))
    points = draw(
        st.lists(
            st.tuples(st.integers(0, width - 1), st.integers(0, height - 1), st.integers(1, 255)),
            max_size=8,
        )
    )
    return _mask(width, height, points), width, height


@given(masks())
def test_mask_bounds_matches_brute_force(case: tuple[bytes, int, int]) -> None:
    data, width, height = case
    assert mask_bounds(data, width, height) == _bounds_by_brute_force(data, width, height)


def test_mask_bounds_examples() -> None:
    assert mask_bounds(bytes(12), 4, 3) is None
    assert mask_bounds(_mask(4, 3, [(2, 1, 9)]), 4, 3) == Rect(2, 1, 1, 1)
    assert mask_bounds(b"\xff" * 12, 4, 3) == Rect(0, 0, 4, 3)
    with pytest.raises(ValueError):
        mask_bounds(bytes(11), 4, 3)


rects = st.builds(
    Rect, st.integers(-50, 300), st.integers(-50, 300), st.integers(1, 200), st.integers(1, 200)
)
canvases = st.builds(
    Rect, st.integers(-20, 20), st.integers(-20, 20), st.integers(1, 400), st.integers(1, 400)
)


@given(rects, canvases, st.integers(0, 100), st.sampled_from([1, 8, 64]), st.integers(0, 300))
def test_context_region_properties(
    selection: Rect, canvas: Rect, padding: int, multiple: int, min_size: int
) -> None:
    core = selection.intersect(canvas)
    if core.is_empty:
        with pytest.raises(ValueError):
            context_region(selection, canvas, padding=padding, multiple=multiple, min_size=min_size)
        return
    region = context_region(selection, canvas, padding=padding, multiple=multiple, min_size=min_size)
    assert canvas.contains(region), "never outside the canvas"
    assert region.contains(core), "every selected pixel is sent"
    # Padding is honoured where the canvas allows.
    assert region.x <= max(canvas.x, core.x - padding)
    assert region.y <= max(canvas.y, core.y - padding)
    assert region.right >= min(canvas.right, core.right + padding)
    assert region.bottom >= min(canvas.bottom, core.bottom + padding)
    assert region.width >= min(min_size, canvas.width)
    assert region.height >= min(min_size, canvas.height)
    # Aligned unless the aligned size would not fit in the canvas.
    for size, room in ((region.width, canvas.width), (region.height, canvas.height)):
        assert size % multiple == 0 or -(-size // multiple) * multiple > room


def test_context_region_aligns_and_centres() -> None:
    region = context_region(
        Rect(100, 100, 10, 10), Rect(0, 0, 1000, 1000), padding=16, multiple=8, min_size=0
    )
    assert region == Rect(81, 81, 48, 48)  # 10 + 2 x 16 = 42 -> 48 wide, the 6 extra split 3/3


def test_context_region_clamps_at_the_canvas_edge() -> None:
    region = context_region(Rect(0, 0, 10, 10), Rect(0, 0, 1000, 1000), padding=64, multiple=8, min_size=0)
    assert region == Rect(0, 0, 80, 80)


def test_context_region_small_canvas_is_taken_whole() -> None:
    assert context_region(Rect(2, 2, 3, 3), Rect(0, 0, 13, 7), padding=64, multiple=8) == Rect(0, 0, 13, 7)


def test_min_size_gives_small_selections_context() -> None:
    region = context_region(Rect(500, 500, 4, 4), Rect(0, 0, 8192, 8192), padding=0, multiple=8, min_size=256)
    assert region.width == region.height == 256
    assert region.contains(Rect(500, 500, 4, 4))


@given(rects, rects)
def test_coordinate_mapping_round_trips(rect: Rect, region: Rect) -> None:
    assert to_document(to_region(rect, region), region) == rect
    assert to_region(region, region).x == 0


@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 4), st.data())
def test_crop_matches_row_slicing(width: int, height: int, bpp: int, data: st.DataObject) -> None:
    buffer = bytes(i % 256 for i in range(width * height * bpp))
    x = data.draw(st.integers(0, width - 1))
    y = data.draw(st.integers(0, height - 1))
    rect = Rect(x, y, data.draw(st.integers(1, width - x)), data.draw(st.integers(1, height - y)))
    expected = b"".join(
        buffer[(row * width + rect.x) * bpp : (row * width + rect.right) * bpp]
        for row in range(rect.y, rect.bottom)
    )
    assert crop(buffer, width, height, bpp, rect) == expected


def test_crop_refuses_outside() -> None:
    with pytest.raises(ValueError):
        crop(bytes(16), 2, 2, 4, Rect(1, 1, 2, 1))


def test_the_shared_default_gives_small_selections_512_px_of_surroundings() -> None:
    region = context_region(Rect(4000, 4000, 20, 20), Rect(0, 0, 8192, 8192))
    assert (region.width, region.height) == (512, 512)
    assert region.contains(Rect(4000 - 64, 4000 - 64, 20 + 128, 20 + 128))
    big = context_region(Rect(100, 100, 1000, 600), Rect(0, 0, 8192, 8192))
    assert big == Rect(36, 36, 1128, 728)  # 64 px each side, already a multiple of 8
