"""Region maths both plugins share: which rectangle of the document to send.

Plugins send only the area around the selection plus some context, never the
whole canvas; the daemon resizes that region to the model's working size, so a
small selection on a huge canvas costs what it costs on a small one.

All rectangles are in document pixels, half-open: x <= px < x + width.
Per-row work uses bytes methods (C speed); nothing loops over pixels in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

# The context rule both plugins share: 64 px around the selection, and at least
# 512 px a side where the canvas allows, so a small selection is seen in its
# surroundings at about the size SD1.5 works at instead of being blown up.
DEFAULT_PADDING = 64
DEFAULT_MIN_SIZE = 512
DEFAULT_MULTIPLE = 8


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    @classmethod
    def from_edges(cls, left: int, top: int, right: int, bottom: int) -> Rect:
        return cls(left, top, right - left, bottom - top)

    def intersect(self, other: Rect) -> Rect:
        left, top = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect.from_edges(left, top, max(left, right), max(top, bottom))

    def contains(self, other: Rect) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def translated(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height)

    def padded(self, padding: int) -> Rect:
        return Rect(self.x - padding, self.y - padding, self.width + 2 * padding, self.height + 2 * padding)


def mask_bounds(data: bytes, width: int, height: int) -> Rect | None:
    """Bounding box of the non-zero bytes of an 8-bit mask; None when all are zero."""
    if len(data) != width * height:
        raise ValueError(f"a {width}x{height} mask needs {width * height} bytes, got {len(data)}")
    if width == 0 or height == 0 or not data.strip(b"\x00"):
        return None
    mv = memoryview(data)
    empty_row = bytes(width)
    rows = [y for y in range(height) if mv[y * width : (y + 1) * width] != empty_row]
    top, bottom = rows[0], rows[-1] + 1
    left, right = width, 0
    for y in rows:
        row = data[y * width : (y + 1) * width]
        left = min(left, width - len(row.lstrip(b"\x00")))
        right = max(right, len(row.rstrip(b"\x00")))
    return Rect.from_edges(left, top, right, bottom)


def _fit_span(start: int, length: int, lo: int, hi: int, min_length: int, multiple: int) -> tuple[int, int]:
    """Widen [start, start+length), which lies inside [lo, hi), to at least `min_length`
    and a multiple of `multiple`, around its centre, shifted to stay inside [lo, hi).
    Where [lo, hi) is too small for that, it takes as much of it as it can."""
    room = hi - lo
    target = -(-max(length, min_length) // multiple) * multiple
    if target > room:
        target = max(room // multiple * multiple, min(max(length, min_length), room))
    new_start = start - (target - length) // 2
    return max(lo, min(new_start, hi - target)), target


def context_region(
    selection: Rect,
    canvas: Rect,
    *,
    padding: int = DEFAULT_PADDING,
    multiple: int = DEFAULT_MULTIPLE,
    min_size: int = DEFAULT_MIN_SIZE,
) -> Rect:
    """The rectangle to send for a selection: bounds + `padding` of context on each
    side, at least `min_size` on each side when the canvas allows, widened to a
    multiple of `multiple`, and always inside the canvas.

    It always contains selection ∩ canvas, so no selected pixel is left out.
    """
    if padding < 0 or multiple < 1 or min_size < 0:
        raise ValueError("padding and min_size must be >= 0 and multiple >= 1")
    core = selection.intersect(canvas)
    if core.is_empty:
        raise ValueError("the selection does not overlap the canvas")
    want = core.padded(padding).intersect(canvas)
    x, width = _fit_span(want.x, want.width, canvas.x, canvas.right, min_size, multiple)
    y, height = _fit_span(want.y, want.height, canvas.y, canvas.bottom, min_size, multiple)
    return Rect(x, y, width, height)


def to_region(rect: Rect, region: Rect) -> Rect:
    """Document coordinates -> coordinates inside `region`."""
    return rect.translated(-region.x, -region.y)


def to_document(rect: Rect, region: Rect) -> Rect:
    """Coordinates inside `region` -> document coordinates."""
    return rect.translated(region.x, region.y)


def crop(data: bytes, width: int, height: int, bytes_per_pixel: int, rect: Rect) -> bytes:
    """The bytes of `rect` (in the buffer's own coordinates) out of a row-major buffer."""
    if len(data) != width * height * bytes_per_pixel:
        raise ValueError("buffer size does not match width x height x bytes_per_pixel")
    if not Rect(0, 0, width, height).contains(rect):
        raise ValueError(f"{rect} is not inside the {width}x{height} buffer")
    stride, row_len, offset = (
        width * bytes_per_pixel,
        rect.width * bytes_per_pixel,
        rect.x * bytes_per_pixel,
    )
    if rect.x == 0 and rect.width == width:
        return bytes(data[rect.y * stride : rect.bottom * stride])
    mv = memoryview(data)
    return b"".join(
        mv[row * stride + offset : row * stride + offset + row_len] for row in range(rect.y, rect.bottom)
    )
