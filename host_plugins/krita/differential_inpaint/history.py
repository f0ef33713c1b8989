"""This Krita session's results, by document: what the docker's History shows.

Plain data and Krita calls, no Qt (the panel is `history_panel.py`). A job's
results are kept with what made them (the settings, the seed and strength of
each, the model, the time) and the layer they were made from, so that one can
be previewed on the canvas, applied as its own layer, its seed reused, or the
job run again on the painting.

No Krita object is kept: a document is known by its root node's uniqueId and a
layer by its own, and both are looked up when needed. (Krita 5.1 crashes at
exit when a Python reference still holds one of its documents or nodes.)

The preview is a real, locked paint layer ("Differential Inpaint preview")
above the job's layer (above the results the job inserted, while they exist).
Krita records adding and removing a layer on its undo stack whatever a plugin
does (Node.addChildNode and Node.remove; seen in Krita 5.1.5), so the preview is
made once per preview session and changed in place (setPixelData on a layer is
not an undo step): Apply turns that layer into the kept one (renamed, unlocked),
so previewing then applying is one undo step; Discard, another job or closing
the preview removes it, leaving an add/remove pair that undoes to the same image.
"""

from __future__ import annotations

import itertools
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from . import protocol as p
from .client import InpaintError, Settings, flow
from .conditioning import Conditioning

PREVIEW_NAME = "Differential Inpaint preview"
MAX_RESULTS = 32  # per document; the oldest jobs go first
THUMBNAIL = 64  # px, the longer side

_ids = itertools.count(1)


@dataclass(eq=False)
class Entry:
    """One result."""

    result: p.Result = field(repr=False)
    name: str  # the layer it becomes: "prompt · seed" or "prompt · 40%"
    seed: int
    strength: float
    id: int = field(default_factory=lambda: next(_ids))
    thumbnail: tuple[int, int, bytes] | None = field(default=None, repr=False)  # w, h, BGRA8


@dataclass(eq=False)
class JobRecord:
    """One job: its results, newest job first in a document's list."""

    document: str  # the document's key (its root node's uniqueId)
    source: str  # the layer's key the job was made from
    source_name: str
    inserted: str | None  # the layer or group the job inserted
    settings: Settings = field(repr=False)
    base_name: str  # what its layers are named after (the prompt)
    fan: bool
    model: str
    created: float
    source_image: p.Image = field(repr=False)  # the pixels sent, for thumbnails
    entries: list[Entry] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # keys of the layers Apply made
    conditioning: Conditioning | None = None  # its control and reference layers, by name
    id: int = field(default_factory=lambda: next(_ids))

    def title(self) -> str:
        """One line: what, how many, which model, when."""
        if self.fan:
            what = "strength fan " + ", ".join(flow.percent(e.strength) for e in self.entries)
        elif len(self.entries) > 1:
            what = (
                f"{len(self.entries)} variations, seeds {self.entries[0].seed}\u2013{self.entries[-1].seed}"
            )
        else:
            what = f"seed {self.entries[0].seed}, {flow.percent(self.entries[0].strength)}"
        when = time.strftime("%H:%M", time.localtime(self.created))
        return f"{self.base_name} \u00b7 {what} \u00b7 {self.model or 'default model'} \u00b7 {when}"


@dataclass
class Preview:
    document: str
    node: str  # the preview layer's key
    entry: int
    rect: tuple[int, int, int, int]  # what it covers, to clear when another result replaces it


class History:
    """The results of every open document; `version` grows with every change."""

    def __init__(self) -> None:
        self.jobs: dict[str, list[JobRecord]] = {}
        self.preview: Preview | None = None
        self.version = 0

    # -- the record -------------------------------------------------------------

    def record(
        self,
        job: flow.PreparedJob,
        chosen: Settings,
        results: list[p.Result],
        inserted: Any,
        conditioning: Conditioning | None = None,
    ) -> JobRecord:
        host = job.host
        document = document_key(getattr(host, "document", None))
        params = job.submit.params
        record = JobRecord(
            document=document,
            source=node_key(getattr(host, "node", None)),
            source_name=_name(getattr(host, "node", None)),
            inserted=None if inserted is None else node_key(inserted),
            settings=chosen,
            base_name=job.layer_name,
            fan=bool(params.fan),
            model=results[0].model if results else "",
            created=time.time(),
            source_image=job.submit.image,
            conditioning=conditioning,
        )
        for result in results:
            record.entries.append(
                Entry(
                    result,
                    flow.result_name(job.layer_name, result, bool(params.fan)),
                    result.seed,
                    result.strength,
                )
            )
        jobs = self.jobs.setdefault(document, [])
        jobs.insert(0, record)
        while len(jobs) > 1 and sum(len(j.entries) for j in jobs) > MAX_RESULTS:
            jobs.pop()
        self.version += 1
        return record

    def of(self, document: str) -> list[JobRecord]:
        return self.jobs.get(document, [])

    def find(self, entry_id: int) -> tuple[JobRecord, Entry] | None:
        for jobs in self.jobs.values():
            for record in jobs:
                for entry in record.entries:
                    if entry.id == entry_id:
                        return record, entry
        return None

    def discard(self, entry_id: int) -> None:
        """Forget the result (and remove its preview from the canvas)."""
        found = self.find(entry_id)
        if found is None:
            return
        record, entry = found
        if self.preview is not None and self.preview.entry == entry_id:
            self.end_preview()
        record.entries.remove(entry)
        if not record.entries:
            self.jobs[record.document].remove(record)
        self.version += 1

    def prune(self, open_documents: set[str]) -> None:
        """Forget closed documents (their preview went with them)."""
        for key in [k for k in self.jobs if k not in open_documents]:
            del self.jobs[key]
            self.version += 1
        if self.preview is not None and self.preview.document not in open_documents:
            self.preview = None
            self.version += 1

    def clear(self) -> None:
        self.jobs.clear()
        self.preview = None
        self.version += 1

    # -- on the canvas ------------------------------------------------------------

    def show_preview(self, entry_id: int) -> Any:
        """Show the result on the canvas in the preview layer; that layer."""
        record, entry = self._found(entry_id)
        document = find_document(record.document)
        if document is None:
            raise InpaintError("That image is closed.", "document_closed")
        result = entry.result
        image = result.image
        rect = (result.x, result.y, image.width, image.height)
        anchor = self._anchor(document, record)
        current = self._preview_node(document)
        preview = self.preview
        if current is not None and preview is not None and _same_place(current, anchor):
            x, y, w, h = preview.rect
            current.setPixelData(bytes(len(image.data) // (image.width * image.height) * w * h), x, y, w, h)
            current.setPixelData(image.data, *rect)
            document.refreshProjection()  # setPixelData on a layer in the image does not redraw it
            preview.entry, preview.rect = entry_id, rect
        else:
            self.end_preview()
            active = document.activeNode()
            current = document.createNode(PREVIEW_NAME, "paintlayer")
            current.setPixelData(image.data, *rect)
            parent = document.rootNode() if anchor is None else anchor.parentNode()
            if parent is None or not parent.addChildNode(current, anchor):
                raise InpaintError(
                    "Krita refused to add the preview layer; nothing was changed.", "insert_failed"
                )
            current.setLocked(True)
            if active is not None:
                document.setActiveNode(active)  # the painting stays active
            self.preview = Preview(record.document, node_key(current), entry_id, rect)
        self.version += 1
        _refresh(document)
        return current

    def end_preview(self) -> None:
        """Take the preview off the canvas."""
        preview, self.preview = self.preview, None
        if preview is None:
            return
        self.version += 1
        document = find_document(preview.document)
        node = None if document is None else find_node(document, preview.node)
        if node is not None:
            node.remove()
            _refresh(document)

    def apply(self, entry_id: int) -> Any:
        """Keep the result as a layer named after it, above the job's layer (above what the
        job inserted while that exists), one undo step; the layer."""
        record, entry = self._found(entry_id)
        document = find_document(record.document)
        if document is None:
            raise InpaintError("That image is closed.", "document_closed")
        node = self._preview_node(document) if self.preview and self.preview.entry == entry_id else None
        if node is not None:  # the preview becomes the layer: its insertion is the one undo step
            node.setLocked(False)
            node.setName(entry.name)
            self.preview = None
            record.applied.append(node_key(node))
        else:
            self.end_preview()
            active = document.activeNode()
            node = document.createNode(entry.name, "paintlayer")
            result = entry.result
            node.setPixelData(result.image.data, result.x, result.y, result.image.width, result.image.height)
            anchor = self._anchor(document, record)
            parent = document.rootNode() if anchor is None else anchor.parentNode()
            if parent is None or not parent.addChildNode(node, anchor):
                raise InpaintError("Krita refused to add the layer; nothing was changed.", "insert_failed")
            record.applied.append(node_key(node))
            if active is not None:
                document.setActiveNode(active)
        self.version += 1
        _refresh(document)
        return node

    def source_of(self, record: JobRecord) -> tuple[Any, Any]:
        """The document and the layer a job was made from, for "Run again"; never a result."""
        document = find_document(record.document)
        if document is None:
            raise InpaintError("That image is closed.", "document_closed")
        node = find_node(document, record.source)
        if node is None:
            raise InpaintError(
                f"The layer '{record.source_name}' this job was made from is no longer in the image; "
                "select a layer and use Run instead.",
                "no_layer",
            )
        return document, node

    def _found(self, entry_id: int) -> tuple[JobRecord, Entry]:
        found = self.find(entry_id)
        if found is None:
            raise InpaintError("That result is no longer in the history.", "not_found")
        return found

    def _anchor(self, document: Any, record: JobRecord) -> Any:
        """What a preview or applied result goes above: the job's results while they are in
        the image, else its layer, else nothing (the top); and above the layers applied
        from the History right over that, so that none of them hides it."""
        ours = {key for r in self.of(record.document) for key in (r.inserted, *r.applied) if key}
        for key in (record.inserted, record.source):
            node = None if key is None else find_node(document, key)
            if node is None or node.name() == PREVIEW_NAME:
                continue
            parent = node.parentNode()
            siblings = [] if parent is None else parent.childNodes()
            keys = [node_key(n) for n in siblings]
            index = keys.index(node_key(node)) if node_key(node) in keys else len(keys)
            while index + 1 < len(keys) and keys[index + 1] in ours:
                index += 1
                node = siblings[index]
            return node
        return None

    def _preview_node(self, document: Any) -> Any:
        if self.preview is None or self.preview.document != document_key(document):
            return None
        return find_node(document, self.preview.node)


def _same_place(preview: Any, anchor: Any) -> bool:
    """Is the preview layer right above `anchor` already?"""
    parent = preview.parentNode()
    if parent is None:
        return False
    siblings = parent.childNodes()
    keys = [node_key(n) for n in siblings]
    index = keys.index(node_key(preview))
    if anchor is None:
        return index == len(siblings) - 1
    return index > 0 and keys[index - 1] == node_key(anchor)


def _refresh(document: Any) -> None:
    wait = getattr(document, "waitForDone", None)
    if wait is not None:
        wait()


def _name(node: Any) -> str:
    return "" if node is None else str(node.name())


# -- finding Krita's objects again -------------------------------------------------


def node_key(node: Any) -> str:
    if node is None:
        return ""
    key = node.uniqueId()
    return str(key.toString()) if hasattr(key, "toString") else str(key)


def document_key(document: Any) -> str:
    return "" if document is None else node_key(document.rootNode())


def open_documents() -> list[Any]:
    from krita import Krita

    return list(Krita.instance().documents())


def find_document(key: str) -> Any:
    return next((d for d in open_documents() if document_key(d) == key), None)


def find_node(document: Any, key: str) -> Any:
    """The node with that uniqueId anywhere in the document (Krita 5.1 has no
    Document.nodeByUniqueId)."""
    stack = list(document.rootNode().childNodes())
    while stack:
        node = stack.pop()
        if node_key(node) == key:
            return node
        stack.extend(node.childNodes())
    return None


# -- thumbnails -------------------------------------------------------------------------


def thumbnail(record: JobRecord, entry: Entry, size: int = THUMBNAIL) -> tuple[int, int, bytes]:
    """The result over the pixels it was made from, at most `size` px a side, as 8-bit
    B,G,R,A (Qt's ARGB32 in memory): what the canvas shows with it applied."""
    if entry.thumbnail is None:
        image, source = entry.result.image, record.source_image
        step = max(1, math.ceil(max(image.width, image.height) / size))
        xs, ys = range(0, image.width, step), range(0, image.height, step)
        top = _sample_bgra8(image, xs, ys)
        under = _sample_bgra8(source, xs, ys) if source.width == image.width else bytes(len(top))
        out = bytearray(len(top))
        for i in range(0, len(top), 4):
            a = top[i + 3]
            for c in range(3):
                out[i + c] = (top[i + c] * a + under[i + c] * (255 - a)) // 255
            out[i + 3] = 255
        entry.thumbnail = (len(xs), len(ys), bytes(out))
    return entry.thumbnail


def _sample_bgra8(image: p.Image, xs: range, ys: range) -> bytes:
    """Pixels at (xs x ys) as B,G,R,A bytes, from any of the formats Krita sends."""
    fmt, width, data = image.format, image.width, image.data
    out = bytearray()
    if fmt is p.PixelFormat.BGRA8:
        for y in ys:
            for x in xs:
                i = (y * width + x) * 4
                out += data[i : i + 4]
        return bytes(out)
    if fmt is p.PixelFormat.BGRA16:  # little-endian: the high byte is the second
        for y in ys:
            for x in xs:
                i = (y * width + x) * 8
                out += bytes((data[i + 1], data[i + 3], data[i + 5], data[i + 7]))
        return bytes(out)
    code, size = ("e", 2) if fmt is p.PixelFormat.RGBAF16 else ("f", 4)
    linear = image.color is p.ColorEncoding.LINEAR
    for y in ys:
        for x in xs:
            i = (y * width + x) * 4 * size
            r, g, b, a = struct.unpack(f"<4{code}", data[i : i + 4 * size])
            rgb = [max(0.0, min(1.0, v)) ** (1 / 2.2 if linear else 1.0) for v in (r, g, b)]
            out += bytes((round(rgb[2] * 255), round(rgb[1] * 255), round(rgb[0] * 255)))
            out.append(round(max(0.0, min(1.0, a)) * 255))
    return bytes(out)


HISTORY = History()
