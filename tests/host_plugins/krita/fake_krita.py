"""A stand-in `krita` module: just enough of Krita's Python API for the plugin's core.

Documents hold layers as byte buffers in Krita's conventions (document
coordinates, B,G,R,A for integer depths, R,G,B,A for float, transparent black
outside a layer). Every read and write is logged so tests can check that only
the region was read, that the original layer was never written to, and that
the new layer got its pixels before it was added (Krita's one undo step).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

_uids = itertools.count(1)

BYTES_PER_PIXEL = {"U8": 4, "U16": 8, "F16": 8, "F32": 16}
DEFAULT_PROFILE = {
    "U8": "sRGB-elle-V2-srgbtrc.icc",
    "U16": "sRGB-elle-V2-g10.icc",
    "F16": "sRGB-elle-V2-g10.icc",
    "F32": "sRGB-elle-V2-g10.icc",
}


@dataclass(frozen=True)
class FakeRect:
    _x: int
    _y: int
    _w: int
    _h: int

    def x(self) -> int:
        return self._x

    def y(self) -> int:
        return self._y

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h


def _copy_rect(
    src: bytes, sx: int, sy: int, sw: int, sh: int, bpp: int, x: int, y: int, w: int, h: int
) -> bytes:
    """Read rect (x, y, w, h) out of a buffer placed at (sx, sy) of size sw x sh; zeros outside."""
    out = bytearray(w * h * bpp)
    left, right = max(x, sx), min(x + w, sx + sw)
    if right <= left:
        return bytes(out)
    for row in range(max(y, sy), min(y + h, sy + sh)):
        s = ((row - sy) * sw + (left - sx)) * bpp
        d = ((row - y) * w + (left - x)) * bpp
        out[d : d + (right - left) * bpp] = src[s : s + (right - left) * bpp]
    return bytes(out)


@dataclass
class Event:
    kind: str  # "setPixelData" | "addChildNode" | "read" | "projection" | "selection"
    node: str
    attached: bool = False
    rect: tuple[int, int, int, int] = (0, 0, 0, 0)


class Node:
    def __init__(self, doc: Document, name: str, node_type: str = "paintlayer") -> None:
        self.doc = doc
        self._name = name
        self._type = node_type
        self._parent: Node | None = None
        self.children: list[Node] = []
        self.depth = doc.depth
        self.model = doc.model
        self.profile = doc.profile
        # The painted buffer: its position and size in document coordinates.
        self.px, self.py, self.pw, self.ph = 0, 0, 0, 0
        self.data = b""
        self.projection: bytes | None = None  # groups: what they show (whole canvas)
        self._visible = True
        self._locked = False
        self._uid = f"{{{next(_uids):08d}-fake}}"

    # -- Krita's API -----------------------------------------------------------
    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return self._type

    def colorModel(self) -> str:  # noqa: N802 - Krita's names
        return self.model

    def colorDepth(self) -> str:  # noqa: N802
        return self.depth

    def colorProfile(self) -> str:  # noqa: N802
        return self.profile

    def parentNode(self) -> Node | None:  # noqa: N802
        return self._parent

    def childNodes(self) -> list[Node]:  # noqa: N802
        return list(self.children)

    def bounds(self) -> FakeRect:
        if self.pw == 0 or not self.data.strip(b"\x00"):
            return FakeRect(0, 0, 0, 0)
        return FakeRect(self.px, self.py, self.pw, self.ph)

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        self.doc.events.append(Event("read", self._name, self.attached, (x, y, w, h)))
        if self._type == "grouplayer":
            return b""  # as in Krita: a group has no pixels of its own
        return _copy_rect(self.data, self.px, self.py, self.pw, self.ph, self.bpp, x, y, w, h)

    def projectionPixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        self.doc.events.append(Event("projection", self._name, self.attached, (x, y, w, h)))
        if self.projection is not None:
            d = self.doc
            return _copy_rect(self.projection, 0, 0, d.w, d.h, self.bpp, x, y, w, h)
        return _copy_rect(self.data, self.px, self.py, self.pw, self.ph, self.bpp, x, y, w, h)

    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> None:  # noqa: N802
        self.doc.events.append(Event("setPixelData", self._name, self.attached, (x, y, w, h)))
        assert len(data) == w * h * self.bpp, "setPixelData: wrong byte count"
        self.px, self.py, self.pw, self.ph, self.data = x, y, w, h, bytes(data)

    def addChildNode(self, child: Node, above: Node | None) -> bool:  # noqa: N802
        self.doc.events.append(Event("addChildNode", child._name, self.attached))
        index = self.children.index(above) + 1 if above is not None else len(self.children)
        self.children.insert(index, child)
        child._parent = self
        return True

    def setChildNodes(self, nodes: list[Node]) -> None:  # noqa: N802
        """As Krita: no undo step; bottom to top (only used on a group outside the image)."""
        self.doc.events.append(Event("setChildNodes", self._name, self.attached))
        for node in self.children:
            node._parent = None
        self.children = list(nodes)
        for node in nodes:
            node._parent = self

    def remove(self) -> bool:
        if self._parent is None:
            return False
        self.doc.events.append(Event("remove", self._name, self.attached))
        self._parent.children.remove(self)
        self._parent = None
        return True

    def move(self, x: int, y: int) -> None:
        self.px, self.py = x, y

    def uniqueId(self) -> str:  # noqa: N802 - a QUuid in Krita; its text here
        return self._uid

    def visible(self) -> bool:
        return self._visible

    def setVisible(self, visible: bool) -> None:  # noqa: N802
        self._visible = visible

    def locked(self) -> bool:
        return self._locked

    def setLocked(self, locked: bool) -> None:  # noqa: N802
        self._locked = locked

    def setName(self, name: str) -> None:  # noqa: N802
        self._name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other._uid == self._uid

    def __hash__(self) -> int:
        return hash(self._uid)

    # -- helpers for tests -----------------------------------------------------
    @property
    def bpp(self) -> int:
        if self._type.endswith("mask"):
            return 1  # a mask's pixels are its selection: one byte a pixel
        if self.model == "GRAYA":
            return BYTES_PER_PIXEL[self.depth] // 2
        return BYTES_PER_PIXEL[self.depth]

    @property
    def attached(self) -> bool:
        node: Node | None = self
        while node is not None:
            if node is self.doc.root:
                return True
            node = node._parent
        return False

    def paint(self, data: bytes, x: int, y: int, w: int, h: int) -> None:
        """Set pixels without logging (test setup)."""
        self.px, self.py, self.pw, self.ph, self.data = x, y, w, h, bytes(data)


class Selection:
    """One byte a pixel over the whole canvas."""

    def __init__(self, doc_w: int = 0, doc_h: int = 0, data: bytes | None = None) -> None:
        self.w, self.h = doc_w, doc_h
        self.data = data if data is not None else bytes(doc_w * doc_h)
        self.reads: list[tuple[int, int, int, int]] = []

    def _bounds(self) -> tuple[int, int, int, int]:
        rows = [r for r in range(self.h) if self.data[r * self.w : (r + 1) * self.w].strip(b"\x00")]
        if not rows:
            return (0, 0, 0, 0)
        cols = [
            c for c in range(self.w) if any(self.data[r * self.w + c] for r in range(rows[0], rows[-1] + 1))
        ]
        return (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)

    def x(self) -> int:
        return self._bounds()[0]

    def y(self) -> int:
        return self._bounds()[1]

    def width(self) -> int:
        return self._bounds()[2]

    def height(self) -> int:
        return self._bounds()[3]

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        self.reads.append((x, y, w, h))
        return _copy_rect(self.data, 0, 0, self.w, self.h, 1, x, y, w, h)


class Document:
    def __init__(self, w: int, h: int, model: str = "RGBA", depth: str = "U8", profile: str = "") -> None:
        self.w, self.h = w, h
        self.model, self.depth = model, depth
        self.profile = profile or DEFAULT_PROFILE.get(depth, "")
        self.events: list[Event] = []
        self.root = Node(self, "root", "grouplayer")
        self._selection: Selection | None = None
        self._active: Node | None = None
        self.closed = False

    def width(self) -> int:
        return self.w

    def height(self) -> int:
        return self.h

    def colorModel(self) -> str:  # noqa: N802
        return self.model

    def colorDepth(self) -> str:  # noqa: N802
        return self.depth

    def colorProfile(self) -> str:  # noqa: N802
        return self.profile

    def rootNode(self) -> Node:  # noqa: N802
        return self.root

    def topLevelNodes(self) -> list[Node]:  # noqa: N802
        return self.root.childNodes()

    def createNode(self, name: str, node_type: str) -> Node:  # noqa: N802
        return Node(self, name, node_type)

    def createGroupLayer(self, name: str) -> Node:  # noqa: N802
        return Node(self, name, "grouplayer")

    def selection(self) -> Selection | None:
        return self._selection

    def setSelection(self, selection: Selection | None) -> None:  # noqa: N802
        self._selection = selection

    def activeNode(self) -> Node | None:  # noqa: N802
        return self._active

    def setActiveNode(self, node: Node) -> None:  # noqa: N802
        self._active = node

    def waitForDone(self) -> None:  # noqa: N802
        pass

    def refreshProjection(self) -> None:  # noqa: N802
        self.events.append(Event("refreshProjection", "root"))

    # -- helpers for tests -----------------------------------------------------
    def add_layer(self, name: str, node_type: str = "paintlayer", parent: Node | None = None) -> Node:
        node = self.createNode(name, node_type)
        (parent or self.root).addChildNode(node, None)
        self.events.clear()  # setup is not what the tests look at
        return node

    @property
    def undo_steps(self) -> list[Event]:
        """What Krita records on its undo stack: every addChildNode (even into a group
        outside the image, as Krita 5.1 does) and removing a node from the image."""
        return [e for e in self.events if e.kind == "addChildNode" or (e.kind == "remove" and e.attached)]

    @property
    def writes_to_image(self) -> list[Event]:
        """setPixelData on a node that is part of the image: an un-undoable change."""
        return [e for e in self.events if e.kind == "setPixelData" and e.attached]


@dataclass
class Krita:
    settings: dict[tuple[str, str], str] = field(default_factory=dict)
    docs: list[Document] = field(default_factory=list)
    _instance = None

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def readSetting(self, group: str, name: str, default: str) -> str:  # noqa: N802
        return self.settings.get((group, name), default)

    def writeSetting(self, group: str, name: str, value: str) -> None:  # noqa: N802
        self.settings[(group, name)] = value

    def documents(self) -> list[Any]:
        return list(self.docs)

    def activeDocument(self) -> Any:  # noqa: N802
        return self.docs[-1] if self.docs else None

    def createDocument(  # noqa: N802
        self, w: int, h: int, name: str, model: str, depth: str, profile: str, res: float
    ) -> Document:
        doc = Document(w, h, model, depth, profile)
        doc.add_layer("Background")
        self.docs.append(doc)
        return doc
