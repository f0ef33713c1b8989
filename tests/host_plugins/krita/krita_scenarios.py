"""Scenarios that run inside real Krita, started by test_in_krita.py:

    QT_QPA_PLATFORM=offscreen PYTHONPATH=<this folder>:<pykrita> \
        kritarunner -s krita_scenarios -f main CONFIG.json

kritarunner always exits 0 and may crash on its way out, so every scenario's
checks go to a JSON verdict file, rewritten after each scenario; pytest reads
it. CONFIG.json names the verdict file, the daemon addresses and the scenarios.

The plugin is imported from the pykrita folder the installer wrote, so what is
tested is what ships, vendored msgpack and websockets included. This module
runs on Krita's own Python: standard library and Krita only, Python 3.10 syntax.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import struct
import sys
import time
import traceback
from array import array
from collections.abc import Callable
from typing import Any

FEATHER = 16
SEL = (80, 72, 96, 96)  # x, y, w, h of the selection before feathering
BPP = {"U8": 4, "U16": 8, "F16": 8, "F32": 16}


class Verdict:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"scenarios": {}, "done": False}

    def write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


class Checks:
    """Named checks of one scenario: each is recorded, none stops the others."""

    def __init__(self) -> None:
        self.results: dict[str, list[Any]] = {}
        self.info: dict[str, Any] = {}

    def __call__(self, name: str, ok: bool, detail: object = "") -> bool:
        self.results[name] = [bool(ok), str(detail)[:2000]]
        return bool(ok)


# --- pixels -----------------------------------------------------------------------


def pattern(w: int, h: int, depth: str, opaque: bool = True) -> bytes:
    """A smooth, position-dependent picture in Krita's native layout for `depth`."""
    values: list[float] = []
    for y in range(h):
        for x in range(w):
            r, g, b = (x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 3) % 256
            values.extend((b, g, r, 255 if opaque else 128) if depth in ("U8", "U16") else (r, g, b, 255))
    if depth == "U8":
        return bytes(int(v) for v in values)
    if depth == "U16":
        return array("H", [int(v) * 257 for v in values]).tobytes()
    floats = [v / 255 for v in values]
    return struct.pack(f"<{len(floats)}{'e' if depth == 'F16' else 'f'}", *floats)


def alpha_values(data: bytes, depth: str) -> list[float]:
    if depth == "U8":
        return list(data[3::4])
    if depth == "U16":
        return list(array("H", data)[3::4])
    code = "e" if depth == "F16" else "f"
    return list(struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data))[3::4]


def alpha_from_mask(data: bytes, mask: bytes, depth: str) -> bytes:
    """The fake daemon's answer: the pixels sent, alpha replaced by the mask."""
    if depth == "U8":
        out = bytearray(data)
        out[3::4] = mask
        return bytes(out)
    if depth == "U16":
        values = array("H", data)
        values[3::4] = array("H", [m * 257 for m in mask])
        return values.tobytes()
    code = "e" if depth == "F16" else "f"
    floats = list(struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data))
    floats[3::4] = [m / 255 for m in mask]
    return struct.pack(f"<{len(floats)}{code}", *floats)


# --- the scenarios' world -------------------------------------------------------------


class World:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        from krita import Krita

        self.krita = Krita.instance()
        import differential_inpaint

        self.plugin = differential_inpaint
        self.p = differential_inpaint.protocol
        self.window: Any = None

    def open_window(self) -> Any:
        """A main window makes Krita's own undo/redo actions and our menu action exist."""
        if self.window is None:
            from differential_inpaint.qt import QtWidgets

            # kritarunner's offscreen clipboard starts empty and Krita's clipboard code
            # dereferences its data on window creation: give it some.
            QtWidgets.QApplication.clipboard().setText("differential-inpaint")
            self.window = self.krita.openWindow()
        return self.window

    def show(self, doc: Any) -> Any:
        view = self.open_window().addView(doc)
        self.pump(0.2)
        return view

    def pump(self, seconds: float) -> None:
        from differential_inpaint.qt import QtCore

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.005)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        from differential_inpaint.qt import QtCore

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.005)
        return condition()

    def document(self, w: int, h: int, depth: str = "U8", model: str = "RGBA") -> tuple[Any, Any]:
        doc = self.krita.createDocument(w, h, f"di-{depth}", model, depth, "", 72.0)
        layer = doc.createNode("Painted", "paintlayer")
        doc.rootNode().addChildNode(layer, None)
        doc.waitForDone()
        return doc, layer

    def select_feathered(self, doc: Any, box: tuple[int, int, int, int] = SEL, feather: int = FEATHER) -> Any:
        from krita import Selection

        selection = Selection()
        selection.select(box[0], box[1], box[2], box[3], 255)
        selection.feather(feather)
        doc.setSelection(selection)
        doc.waitForDone()
        return doc.selection()

    def region_for(self, doc: Any, padding: int = 64) -> Any:
        p = self.p
        sel = doc.selection()
        canvas = p.Rect(0, 0, doc.width(), doc.height())
        return p.context_region(p.Rect(sel.x(), sel.y(), sel.width(), sel.height()), canvas, padding=padding)

    def names(self, doc: Any) -> list[str]:
        return [n.name() for n in doc.rootNode().childNodes()]

    def server(self, which: str) -> str:
        return self.config[which]


def rect_of(node: Any) -> tuple[int, int, int, int]:
    b = node.bounds()
    return (b.x(), b.y(), b.width(), b.height())


def named(node: Any, prompt: str) -> bool:
    """A result layer's name: "prompt · seed"."""
    name = node.name() if node is not None else ""
    return name.startswith(prompt + " \u00b7 ") and name.rsplit(" ", 1)[-1].isdigit()


def check_new_layer(
    c: Checks, w: World, doc: Any, layer: Any, new: Any, region: Any, mask: bytes, depth: str, prompt: str
) -> bytes:
    """The checks every inserted result must pass; returns the new layer's region bytes."""
    p = w.p
    c("returned a paint layer", new is not None and new.type() == "paintlayer", new)
    c("named after the prompt and the seed", named(new, prompt), new.name())
    c("same depth as the layer", new.colorDepth() == depth, new.colorDepth())
    names = w.names(doc)
    c(
        "right above the layer",
        layer.name() in names and names.index(new.name()) == names.index(layer.name()) + 1,
        names,
    )
    bounds = p.Rect(*rect_of(new))
    c("inside the region", region.contains(bounds), (bounds, region))
    data = bytes(new.pixelData(region.x, region.y, region.width, region.height))
    alpha = alpha_values(data, depth)
    leaks = sum(1 for a, m in zip(alpha, mask, strict=True) if m == 0 and a != 0)
    c("zero alpha where the selection was 0", leaks == 0, f"{leaks} pixels")
    changed = sum(1 for a, m in zip(alpha, mask, strict=True) if m > 0 and a > 0)
    c("something where the selection was > 0", changed > 0, f"{changed} pixels")
    ring = region.padded(8)
    around = bytes(new.pixelData(ring.x, ring.y, ring.width, ring.height))
    outside = sum(alpha_values(around, depth)) - sum(alpha)
    c("nothing outside the region", outside == 0, outside)
    return data


def inpaint_with_undo(c: Checks, w: World, server: str, prompt: str, exact: bool) -> None:
    """Painted layer + feathered selection, active layer from the view, one undo step."""
    doc, layer = w.document(256, 256)
    layer.setPixelData(pattern(256, 256, "U8"), 0, 0, 256, 256)
    w.show(doc)
    marker = doc.createNode("Marker", "paintlayer")  # an earlier undo step that must survive
    doc.rootNode().addChildNode(marker, None)
    w.select_feathered(doc)
    doc.waitForDone()
    # Selecting can make the global selection mask active for a moment: choose the layer after.
    doc.setActiveNode(layer)
    w.wait_until(lambda: doc.activeNode() is not None and doc.activeNode().name() == "Painted", 5.0)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    c("the selection is soft", len(set(mask)) > 8, len(set(mask)))
    before = bytes(layer.pixelData(0, 0, 256, 256))
    names_before = w.names(doc)
    c("the view made the layer active", doc.activeNode() is not None and doc.activeNode().name() == "Painted")
    started = time.monotonic()
    new = w.plugin.inpaint_layer(doc, prompt=prompt, steps=3, seed=7, server=server)
    c("the painting stays the active layer", doc.activeNode() == layer, doc.activeNode().name())
    c.info["seconds"] = round(time.monotonic() - started, 2)
    data = check_new_layer(c, w, doc, layer, new, region, mask, "U8", prompt)
    if exact:
        sent = bytes(layer.pixelData(region.x, region.y, region.width, region.height))
        c("exactly the sent pixels with alpha = mask", data == alpha_from_mask(sent, mask, "U8"))
    c("original layer unchanged", bytes(layer.pixelData(0, 0, 256, 256)) == before)
    c("one layer more", len(w.names(doc)) == len(names_before) + 1, w.names(doc))

    undo, redo = w.krita.action("edit_undo"), w.krita.action("edit_redo")
    if not c("Krita's undo action exists", undo is not None and redo is not None):
        return
    undo.trigger()
    doc.waitForDone()
    w.pump(0.1)
    c("one undo removes the new layer, nothing else", w.names(doc) == names_before, w.names(doc))
    c("the original is unchanged after undo", bytes(layer.pixelData(0, 0, 256, 256)) == before)
    redo.trigger()
    doc.waitForDone()
    w.pump(0.1)
    again = doc.nodeByName(f"{prompt} \u00b7 7")
    c(
        "redo brings it back with its pixels (they were part of the step)",
        again is not None and bytes(again.pixelData(region.x, region.y, region.width, region.height)) == data,
    )


def depth_scenario(c: Checks, w: World, depth: str, server: str, exact: bool) -> None:
    doc, layer = w.document(192, 160, depth)
    c("the document has the depth", layer.colorDepth() == depth, layer.colorDepth())
    layer.setPixelData(pattern(192, 160, depth), 0, 0, 192, 160)
    w.select_feathered(doc, (50, 40, 64, 56), 12)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    before = bytes(layer.pixelData(0, 0, 192, 160))
    prompt = f"{depth} test"
    new = w.plugin.inpaint_layer(doc, layer, prompt=prompt, steps=3, seed=3, server=server)
    data = check_new_layer(c, w, doc, layer, new, region, mask, depth, prompt)
    if exact:
        sent = bytes(layer.pixelData(region.x, region.y, region.width, region.height))
        c(f"{depth} bytes round trip exactly", data == alpha_from_mask(sent, mask, depth))
    c("original layer unchanged", bytes(layer.pixelData(0, 0, 192, 160)) == before)


def no_selection(c: Checks, w: World, server: str, exact: bool) -> None:
    doc, layer = w.document(200, 150)
    layer.setPixelData(pattern(90, 70, "U8"), 40, 30, 90, 70)  # painted only here
    c("no selection", doc.selection() is None)
    before = bytes(layer.pixelData(0, 0, 200, 150))
    new = w.plugin.inpaint_layer(doc, layer, prompt="whole layer", steps=3, seed=5, server=server)
    p = w.p
    extent = p.Rect(40, 30, 90, 70)
    region = p.context_region(extent, p.Rect(0, 0, 200, 150), padding=0)
    mask = w.plugin.client.flow.full_mask(region, extent)
    data = check_new_layer(c, w, doc, layer, new, region, mask, "U8", "whole layer")
    alpha = alpha_values(data, "U8")
    c(
        "the whole painted area is in the result",
        all(a > 0 for a, m in zip(alpha, mask, strict=True) if m == 255),
    )
    if exact:
        sent = bytes(layer.pixelData(region.x, region.y, region.width, region.height))
        c("exactly the sent pixels with alpha = mask", data == alpha_from_mask(sent, mask, "U8"))
    c("original layer unchanged", bytes(layer.pixelData(0, 0, 200, 150)) == before)


def offset_layer(c: Checks, w: World, server: str, exact: bool) -> None:
    doc, layer = w.document(256, 200)
    layer.setPixelData(pattern(80, 80, "U8"), 0, 0, 80, 80)
    layer.move(130, 90)  # the painted square now covers 130..210 x 90..170
    doc.waitForDone()
    c("the layer moved", rect_of(layer) == (130, 90, 80, 80), rect_of(layer))
    w.select_feathered(doc, (140, 100, 48, 48), 8)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    sent = bytes(layer.pixelData(region.x, region.y, region.width, region.height))
    corner = ((90 - region.y) * region.width + (130 - region.x)) * 4
    c(
        "the moved layer's first pixel is read at its new place",
        region.contains(w.p.Rect(130, 90, 1, 1)) and sent[corner : corner + 4] == pattern(80, 80, "U8")[:4],
        region,
    )
    before = bytes(layer.pixelData(0, 0, 256, 200))
    new = w.plugin.inpaint_layer(doc, layer, prompt="offset", steps=3, seed=9, server=server)
    data = check_new_layer(c, w, doc, layer, new, region, mask, "U8", "offset")
    if exact:
        c("exactly the moved pixels with alpha = mask", data == alpha_from_mask(sent, mask, "U8"))
    c("original layer unchanged", bytes(layer.pixelData(0, 0, 256, 200)) == before)
    c("original layer still where it was moved", rect_of(layer) == (130, 90, 80, 80), rect_of(layer))


def nested_layer(c: Checks, w: World, server: str, exact: bool) -> None:
    """A hidden, locked paint layer inside a group, moved to negative offsets, under a
    sibling; the selection runs off the layer's edge: the result goes into the group,
    right above the layer, and only the layer's own pixels travel."""
    doc, _ = w.document(200, 160)
    group = doc.createGroupLayer("Group")
    doc.rootNode().addChildNode(group, None)
    child = doc.createNode("Child", "paintlayer")
    group.addChildNode(child, None)
    sibling = doc.createNode("Sibling", "paintlayer")
    group.addChildNode(sibling, child)
    child.setPixelData(pattern(120, 100, "U8"), 0, 0, 120, 100)
    child.move(-40, -30)  # now covers -40..80 x -30..70
    child.setVisible(False)
    child.setLocked(True)
    doc.waitForDone()
    c("the layer moved off the canvas", rect_of(child) == (-40, -30, 120, 100), rect_of(child))
    w.select_feathered(doc, (50, 40, 60, 50), 8)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    sent = bytes(child.pixelData(region.x, region.y, region.width, region.height))
    whole_before = bytes(child.pixelData(-40, -30, 120, 100))
    root_before = w.names(doc)
    prompt = "nested"
    new = w.plugin.inpaint_layer(doc, child, prompt=prompt, steps=3, seed=2, server=server)
    names = [n.name() for n in group.childNodes()]
    c("inserted into the layer's group", new.parentNode() is not None and new.parentNode().name() == "Group")
    c("right above the layer, below the sibling", names == ["Child", f"{prompt} \u00b7 2", "Sibling"], names)
    c("the root is unchanged", w.names(doc) == root_before, (root_before, w.names(doc)))
    c("the new layer is visible", new.visible())
    bounds = w.p.Rect(*rect_of(new))
    c("inside the region", region.contains(bounds), (bounds, region))
    data = bytes(new.pixelData(region.x, region.y, region.width, region.height))
    alpha = alpha_values(data, "U8")
    leaks = sum(1 for a, m in zip(alpha, mask, strict=True) if m == 0 and a != 0)
    c("zero alpha where the selection was 0", leaks == 0, f"{leaks} pixels")
    if exact:
        c("exactly the layer's pixels with alpha = mask", data == alpha_from_mask(sent, mask, "U8"))
    c("original layer unchanged", bytes(child.pixelData(-40, -30, 120, 100)) == whole_before)
    c("still hidden and locked", not child.visible() and child.locked())


def tiny_selection_unicode(c: Checks, w: World, server: str) -> None:
    """A 3x2 px hard selection and a prompt that is not ASCII."""
    from krita import Selection

    doc, layer = w.document(160, 120)
    layer.setPixelData(pattern(160, 120, "U8"), 0, 0, 160, 120)
    selection = Selection()
    selection.select(70, 50, 3, 2, 255)
    doc.setSelection(selection)
    doc.waitForDone()
    prompt = "Zürich 東京 🌸 straße"
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    c("six pixels selected", mask.count(255) == 6 and mask.count(0) == len(mask) - 6, len(set(mask)))
    new = w.plugin.inpaint_layer(doc, layer, prompt=prompt, steps=2, server=server)
    check_new_layer(c, w, doc, layer, new, region, mask, "U8", prompt)
    c("context around the few pixels", region.width >= 64 and region.height >= 64, region)


def too_large_without_selection(c: Checks, w: World) -> None:
    """No selection on a layer larger than the daemon takes: refused at once, nothing read."""
    doc, layer = w.document(4200, 4100)  # an empty layer: its extent is the whole canvas
    names = w.names(doc)
    started = time.monotonic()
    try:
        w.plugin.inpaint_layer(doc, layer, prompt="too big", server=w.server("dead_server"))
    except w.plugin.InpaintError as exc:
        c("refused as too large", exc.code == "too_large", f"{exc.code}: {exc.message}")
        c("says what to do", "Select a smaller area" in exc.message, exc.message)
    else:
        c("refused as too large", False, "no exception")
    c("at once", time.monotonic() - started < 1.0, time.monotonic() - started)
    c("no layer added", w.names(doc) == names)


def settings_unicode(c: Checks, w: World) -> None:
    """The dialog's remembered values survive kritarc with any text in them."""
    from differential_inpaint import settings

    values = w.plugin.Settings.from_values(
        {
            "prompt": 'Zürich 東京 🌸\nsecond line = "quoted"; [group]',
            "negative_prompt": "ß, é, ø",
            "server": "ws://127.0.0.1:7865/",
            "token": "s3cret",
            "seed": 2**63 - 1,
        }
    )
    settings.save(values)
    c("round trip through kritarc", settings.load() == values, settings.load())


def group_projection(c: Checks, w: World, server: str) -> None:
    doc, _ = w.document(128, 128)
    group = doc.createGroupLayer("Group")
    doc.rootNode().addChildNode(group, None)
    child = doc.createNode("Child", "paintlayer")
    group.addChildNode(child, None)
    child.setPixelData(pattern(128, 128, "U8"), 0, 0, 128, 128)
    doc.refreshProjection()
    doc.waitForDone()
    w.select_feathered(doc, (30, 30, 40, 40), 8)
    region = w.region_for(doc, padding=16)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    shown = bytes(group.projectionPixelData(region.x, region.y, region.width, region.height))
    new = w.plugin.inpaint_layer(doc, group, prompt="group", steps=2, server=server, padding=16)
    data = check_new_layer(c, w, doc, group, new, region, mask, "U8", "group")
    c("the group's projection was sent", data == alpha_from_mask(shown, mask, "U8"))


def daemon_not_running(c: Checks, w: World) -> None:
    doc, layer = w.document(128, 128)
    layer.setPixelData(pattern(128, 128, "U8"), 0, 0, 128, 128)
    w.select_feathered(doc, (20, 20, 50, 50), 8)
    names, before = w.names(doc), bytes(layer.pixelData(0, 0, 128, 128))
    try:
        w.plugin.inpaint_layer(doc, layer, prompt="never", server=w.server("dead_server"))
    except w.plugin.InpaintError as exc:
        c("raises DaemonUnavailable", isinstance(exc, w.plugin.DaemonUnavailable), type(exc).__name__)
        c("says how to start the daemon", "differential-inpaint serve" in exc.message, exc.message)
        c.info["message"] = exc.message
    else:
        c("raises DaemonUnavailable", False, "no exception")
    c("no layer added", w.names(doc) == names, w.names(doc))
    c("layer unchanged", bytes(layer.pixelData(0, 0, 128, 128)) == before)


def refuses_other_models(c: Checks, w: World) -> None:
    doc, layer = w.document(64, 64, "U8", "GRAYA")
    names = w.names(doc)
    try:
        w.plugin.inpaint_layer(doc, layer, prompt="gray", server=w.server("dead_server"))
    except w.plugin.InpaintError as exc:
        c("refused as unsupported", exc.code == "unsupported_color_model", exc.code)
        c("says what to do", "Convert Image Color Space" in exc.message, exc.message)
    else:
        c("refused as unsupported", False, "no exception")
    c("no layer added", w.names(doc) == names)


def job_errors(c: Checks, w: World) -> None:
    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    w.select_feathered(doc, (20, 20, 40, 40), 8)
    names = w.names(doc)
    for prompt, code in (("fail: on purpose", "job_failed"), ("drop: mid-job", "connection_lost")):
        try:
            w.plugin.inpaint_layer(doc, layer, prompt=prompt, server=w.server("fake_daemon"))
        except w.plugin.InpaintError as exc:
            c(f"{code}: the right error", exc.code == code, f"{exc.code}: {exc.message}")
        else:
            c(f"{code}: the right error", False, "no exception")
        c(f"{code}: no layer added", w.names(doc) == names)


# --- the GUI path -----------------------------------------------------------------


def controller_run(c: Checks, w: World, server: str, prompt: str, cancel: bool = False) -> None:
    """The dialog's path: JobController, worker thread, Qt signals, progress dialog."""
    from differential_inpaint import ui

    doc, layer = w.document(160, 160)
    layer.setPixelData(pattern(160, 160, "U8"), 0, 0, 160, 160)
    w.select_feathered(doc, (40, 40, 64, 64), 12)
    names = w.names(doc)
    errors: list[str] = []
    progress: list[Any] = []
    previews: list[Any] = []
    controller = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
    controller.progressed.connect(progress.append)
    controller.previewed.connect(previews.append)
    shown: list[bool] = []  # after the controller's own slot: is the preview on screen?

    def preview_shown(_preview: Any) -> None:
        pixmap = None if controller.progress is None else controller.progress.preview.pixmap()
        shown.append(pixmap is not None and not pixmap.isNull())

    controller.previewed.connect(preview_shown)
    finished: list[Any] = []
    controller.finished.connect(finished.append)
    settings = w.plugin.Settings.from_values(dict(prompt=prompt, steps=4, seed=1, server=server))
    gui_blocked = 0.0
    started = time.monotonic()
    c("started", controller.start(doc, layer, settings))
    c("the start returns at once (reading only)", time.monotonic() - started < 2.0)
    c("a progress dialog is shown", controller.progress is not None and controller.progress.isVisible())
    last = time.monotonic()
    while not finished and time.monotonic() - started < 120:
        if (
            cancel
            and progress
            and controller.progress is not None
            and controller.progress.cancel_button.isEnabled()
        ):
            controller.progress.cancel_button.click()
        w.pump(0.01)
        now = time.monotonic()
        gui_blocked, last = max(gui_blocked, now - last), now
    c("finished", bool(finished))
    c.info["longest GUI stall (s)"] = round(gui_blocked, 3)
    c("the GUI thread never waited on the network", gui_blocked < 1.0, gui_blocked)
    c("progress arrived through the signals", len(progress) > 0, len(progress))
    if cancel:
        c("cancelled: no layer", finished == [None] and w.names(doc) == names, w.names(doc))
        c("cancelled: no message box", errors == [], errors)
        c("cancelled: JobCancelled", isinstance(controller.error, w.plugin.JobCancelled), controller.error)
        return
    c("progress counts steps", any(getattr(m, "steps", 0) == 4 for m in progress), progress[-1:])
    c.info["previews"] = len(previews)
    if server == w.config.get("fake_daemon"):  # the stand-in always sends one preview
        c("the preview was shown in the progress dialog", shown == [True], shown)
    else:
        c("every preview that came was shown", all(shown), shown)
    c("no error", errors == [], errors)
    c("the layer was inserted", finished and finished[0] is not None and named(finished[0], prompt))
    c("one layer more", len(w.names(doc)) == len(names) + 1, w.names(doc))


# The FLUX built-ins the real daemon offers: (name, family label, guidance the form offers
# (None: none), what the note says the family takes no more of than SD).
REAL_FLUX = {
    "flux": ("builtin:tiny-flux", "FLUX dev", 3.5, "negative prompt"),
    "flux-schnell": ("builtin:tiny-flux-schnell", "FLUX schnell", None, "negative prompt or guidance"),
    "flux-fill": ("builtin:tiny-flux-fill", "FLUX Fill", 30.0, "negative prompt"),
}
REAL_FLUX_MODELS = tuple(model for model, *_ in REAL_FLUX.values())


def real_flux_form(c: Checks, w: World, family: str) -> None:
    """The docker's form with the real daemon's models: choosing a FLUX built-in greys out
    the negative prompt; guidance follows the family (FLUX dev's 3.5, Fill's 30, greyed out
    for schnell); the family's name shows beside the model; a job with the form's settings
    runs on that model, and where the selection is 0 the image stays as it was."""
    from differential_inpaint import ui

    model, label, guidance_offered, left_out = REAL_FLUX[family]
    server = w.server("real_daemon")
    form = ui.SettingsForm(fold_advanced=True)
    prompt = f"a {family} meadow"
    form.set_values(
        w.plugin.Settings.from_values(
            {"prompt": prompt, "negative_prompt": "fog", "steps": 2, "seed": 4, "server": server}
        )
    )
    form.refresh_models()
    combo = form.model.combo
    listed = w.wait_until(lambda: combo.findData(model) >= 0, 60)
    if not c(f"the daemon lists {model}", listed, [combo.itemText(i) for i in range(combo.count())]):
        return
    text = combo.itemText(combo.findData(model))
    c("shown with its family", text == f"{model} \u2014 {label}", text)
    c("guidance starts at the SD default", form.values().job.guidance == 7.0, form.values().job.guidance)
    combo.setCurrentIndex(combo.findData(model))
    negative, guidance = form.fields["negative_prompt"], form.fields["guidance"]
    c("the form follows the family", form.family == family, form.family)
    c("no negative prompt for FLUX", not negative.widget.isEnabled(), negative.widget.toolTip())
    why = negative.widget.toolTip()
    c("the tooltip says why", f"{label} models do not take" in why, why)
    if guidance_offered is None:
        c("no guidance", not guidance.widget.isEnabled() and not form.labels["guidance"].isEnabled())
        c("its tooltip says why", f"{label} models do not take" in guidance.widget.toolTip())
    else:
        c(
            f"guidance offered at {guidance_offered}",
            guidance.widget.isEnabled() and guidance.value() == guidance_offered,
            guidance.value(),
        )
    note = form.model.note.text()
    c("the family beside the model", note == f"Family: {label}; it takes no {left_out}", note)
    chosen = form.values()
    c("the settings carry the model", chosen.job.model == model, chosen.job.model)

    doc, layer = w.document(128, 128)
    layer.setPixelData(pattern(128, 128, "U8"), 0, 0, 128, 128)
    w.select_feathered(doc, (32, 32, 48, 48), 8)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    source = read(layer, region)
    errors: list[str] = []
    finished: list[Any] = []
    controller = ui.JobController(
        None, report_error=lambda _parent, message: errors.append(message), show_progress=False
    )
    controller.finished.connect(finished.append)
    started = time.monotonic()
    c("started", controller.start(doc, layer, chosen))
    w.wait_until(lambda: bool(finished), 120)
    c.info["seconds"] = round(time.monotonic() - started, 2)
    c("no error", errors == [], errors)
    if not c("finished with a layer", finished != [] and finished[0] is not None, finished):
        return
    models = [r.model for r in controller.results]
    c(f"made by {model}", models == [model], models)
    result = check_new_layer(c, w, doc, layer, finished[0], region, mask, "U8", prompt)
    kept = [i for i, m in enumerate(mask) if m == 0]
    same = all(result[4 * i : 4 * i + 3] == source[4 * i : 4 * i + 3] for i in kept)
    c("where the selection was 0 the painting comes back bit for bit", len(kept) > 100 and same, len(kept))
    c("the painting itself is unchanged", read(layer, region) == source)


def changed_mid_job(c: Checks, w: World) -> None:
    """The painter keeps working while a job runs: the layer deleted meanwhile puts the
    result on top of the image; the image closed meanwhile gets nothing, with a message."""
    from differential_inpaint import ui

    for change in ("remove the layer", "close the document"):
        doc, layer = w.document(96, 96)
        layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
        w.select_feathered(doc, (20, 20, 40, 40), 8)
        errors: list[str] = []
        finished: list[Any] = []
        controller = ui.JobController(
            None, report_error=lambda _parent, message, errors=errors: errors.append(message)
        )
        controller.finished.connect(finished.append)
        prompt = f"after: {change}"
        settings = w.plugin.Settings.from_values(dict(prompt=prompt, steps=2, server=w.server("fake_daemon")))
        c(f"{change}: started", controller.start(doc, layer, settings))
        # The result reaches the GUI thread only through the event loop, so this comes first.
        if change == "remove the layer":
            layer.remove()
        else:
            doc.close()
        c(f"{change}: finished", w.wait_until(lambda finished=finished: bool(finished), 30))
        if change == "remove the layer":
            c(f"{change}: no error", errors == [], errors)
            top = doc.rootNode().childNodes()[-1].name() if doc.rootNode().childNodes() else None
            c(f"{change}: the result is on top", (top or "").startswith(prompt + " \u00b7 "), w.names(doc))
            c(f"{change}: the layer is gone", "Painted" not in w.names(doc), w.names(doc))
        else:
            c(f"{change}: nothing inserted", finished == [None], finished)
            c(f"{change}: one message about it", len(errors) == 1 and "closed" in errors[0], errors)


def controller_error(c: Checks, w: World) -> None:
    from differential_inpaint import ui

    doc, layer = w.document(64, 64)
    layer.setPixelData(pattern(64, 64, "U8"), 0, 0, 64, 64)
    names = w.names(doc)
    errors: list[str] = []
    controller = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
    finished: list[Any] = []
    controller.finished.connect(finished.append)
    controller.start(
        doc, layer, w.plugin.Settings.from_values(dict(prompt="x", server=w.server("dead_server")))
    )
    w.wait_until(lambda: bool(finished), 30)
    c("finished without a layer", finished == [None], finished)
    c("one message that says how to start the daemon", len(errors) == 1 and "serve" in errors[0], errors)
    c("no layer added", w.names(doc) == names)
    # A document the plugin refuses: the message comes before any thread starts.
    gray, gray_layer = w.document(32, 32, "U8", "GRAYA")
    errors.clear()
    refused = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
    c(
        "a gray image does not start",
        not refused.start(gray, gray_layer, w.plugin.Settings.from_values(dict(prompt="x"))),
    )
    c("and says why", len(errors) == 1 and "RGB/Alpha" in errors[0], errors)


def menu_and_dialog(c: Checks, w: World) -> None:
    """Tools > Scripts > Differential Inpaint: the action, the dialog, the job, the layer."""
    from differential_inpaint import settings, ui
    from differential_inpaint.qt import QtCore, QtWidgets

    w.open_window()
    action = w.krita.action("differential_inpaint")
    if not c("the menu action exists", action is not None):
        return
    c("its text", action.text().replace("&", "") == "Differential Inpaint", action.text())
    dockers = [d.windowTitle() for d in w.krita.dockers()]
    c("the docker exists", "Differential Inpaint" in dockers, dockers)
    doc, layer = w.document(128, 128)
    layer.setPixelData(pattern(128, 128, "U8"), 0, 0, 128, 128)
    w.show(doc)
    doc.setActiveNode(layer)
    w.select_feathered(doc, (30, 30, 50, 50), 8)
    names = w.names(doc)
    # The live settings the dialog and the docker share (and kritarc with them).
    ui.SettingsStore.instance().update(
        w.plugin.Settings.from_values(
            {"prompt": "from the menu", "steps": 3, "server": w.server("fake_daemon")}
        )
    )
    # A message box would wait forever for a click here: collect the messages instead.
    messages: list[str] = []
    ui.show_error = lambda _parent, message: messages.append(message)
    seen: dict[str, Any] = {}

    def drive() -> None:
        dialogs = [x for x in QtWidgets.QApplication.topLevelWidgets() if isinstance(x, ui.InpaintDialog)]
        dialog = next((d for d in dialogs if d.isVisible()), None)
        if dialog is None:
            seen["tries"] = seen.get("tries", 0) + 1
            if seen["tries"] < 100:
                QtCore.QTimer.singleShot(50, drive)
            return
        form = dialog.form
        if form.model.combo.count() < 3 and seen.get("waits", 0) < 100:  # default + the fake's two models
            seen["waits"] = seen.get("waits", 0) + 1
            QtCore.QTimer.singleShot(50, drive)
            return
        seen["prompt"] = form.fields["prompt"].value()
        combo = form.model.combo
        seen["models"] = [combo.itemData(i) for i in range(combo.count())]
        seen["model_texts"] = [combo.itemText(i) for i in range(combo.count())]
        combo.setCurrentIndex(combo.findData("fake-xl"))
        dialog.accept()

    QtCore.QTimer.singleShot(50, drive)
    action.trigger()  # runs the modal dialog; drive() fills and accepts it
    c("the dialog showed the remembered prompt", seen.get("prompt") == "from the menu", seen)
    c("no error message", messages == [], messages)
    c("the dialog listed the daemon's models", "fake-xl" in seen.get("models", []), seen.get("models"))
    c("with their family", "fake-xl \u2014 SDXL" in seen.get("model_texts", []), seen.get("model_texts"))
    done = w.wait_until(lambda: not ui.JobController._running, 60)
    c("the job finished", done)
    w.pump(0.2)
    added = [n for n in w.names(doc) if n not in names]
    c(
        "the menu's job added one layer named after the prompt",
        len(added) == 1 and added[0].startswith("from the menu \u00b7 "),
        w.names(doc),
    )
    c("the chosen model is remembered", settings.load().job.model == "fake-xl", settings.load())

    # The docker: same form, its own Inpaint button, the same job path.
    from differential_inpaint.docker import DifferentialInpaintDocker

    docker = next((d for d in w.krita.dockers() if isinstance(d, DifferentialInpaintDocker)), None)
    if not c("the docker is ours", docker is not None, dockers):
        return
    c(
        "the dialog's choice is the docker's too",
        docker.form.values().job.model == "fake-xl",
        docker.form.values(),
    )
    # Compact: with "Advanced" folded it fits a 768 px high screen with room to spare.
    inner = docker.widget().widget()
    c.info["docker size hint"] = [inner.sizeHint().width(), inner.sizeHint().height()]
    c("the docker fits 768 px", inner.sizeHint().height() <= 520, inner.sizeHint())
    docker.update_run_button()
    sel = doc.selection()
    where = (
        docker.run_button.text(),
        w.krita.activeDocument() == doc,
        None if sel is None else (sel.x(), sel.y(), sel.width(), sel.height()),
    )
    c("it says it works on the selection", docker.run_button.text() == "Inpaint selection", where)
    values = {**docker.form.values().values(), "prompt": "from the docker", "steps": 2}
    docker.form.set_values(w.plugin.Settings.from_values({**values, "server": w.server("fake_daemon")}))
    windows_before = {id(x) for x in QtWidgets.QApplication.topLevelWidgets() if x.isVisible()}
    docker.run_button.click()
    c("the progress shows in the docker", not docker.panel.isHidden() or not ui.JobController._running)
    new_windows = [
        x for x in QtWidgets.QApplication.topLevelWidgets() if x.isVisible() and id(x) not in windows_before
    ]
    c("no window over the canvas", new_windows == [], [type(x).__name__ for x in new_windows])
    c("the docker's job finished", w.wait_until(lambda: not ui.JobController._running, 60))
    w.pump(0.2)
    added = [n for n in w.names(doc) if n not in names]
    c(
        "the docker's job added its layer",
        any(n.startswith("from the docker \u00b7 ") for n in added),
        w.names(doc),
    )
    c("the docker shows the seed used", "Last seed" in docker.form.status.text(), docker.form.status.text())
    c("the panel is gone when done", docker.panel.isHidden())
    # The daemon's state, asked off the GUI thread: the stand-in daemon answers, so ready.
    c(
        "the docker shows the daemon ready",
        w.wait_until(lambda: docker.daemon.label.text().startswith("Daemon: Ready at"), 20),
        docker.daemon.label.text(),
    )
    c("a daemon it did not start cannot be stopped from here", not docker.daemon.stop_button.isEnabled())
    w.krita.action("deselect").trigger()
    doc.waitForDone()
    w.pump(0.2)
    docker.update_run_button()
    c("no selection: it says so", docker.run_button.text() == "Repaint whole layer", docker.run_button.text())


def batch(c: Checks, w: World, server: str, kind: str) -> None:
    """`count` or `fan` through inpaint_layer: one group of result layers, named by seed or
    strength, only the first visible, the exact pixels, one undo step for all of it."""
    doc, layer = w.document(160, 128)
    layer.setPixelData(pattern(160, 128, "U8"), 0, 0, 160, 128)
    w.show(doc)
    marker = doc.createNode("Marker", "paintlayer")  # an undo step just before the job's
    doc.rootNode().addChildNode(marker, None)
    w.select_feathered(doc, (40, 30, 60, 50), 8)
    doc.setActiveNode(layer)
    w.wait_until(lambda: doc.activeNode() is not None and doc.activeNode().name() == "Painted", 5.0)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    sent = bytes(layer.pixelData(region.x, region.y, region.width, region.height))
    names_before = w.names(doc)
    if kind == "count":
        values: dict[str, Any] = {"count": 3, "seed": 40}
        group_name, children = (
            "moss \u00b7 3 variations",
            ["moss \u00b7 40", "moss \u00b7 41", "moss \u00b7 42"],
        )
    else:
        values = {"fan": [0.4, 0.8], "seed": 5}
        group_name, children = "moss \u00b7 strength fan", ["moss \u00b7 40%", "moss \u00b7 80%"]
    group = w.plugin.inpaint_layer(doc, layer, prompt="moss", steps=2, server=server, **values)
    c("a layer group", group is not None and group.type() == "grouplayer", group and group.type())
    c("the group's name", group.name() == group_name, group.name())
    top_first = list(reversed(group.childNodes()))
    c("its layers, top to bottom", [n.name() for n in top_first] == children, [n.name() for n in top_first])
    c(
        "only the first visible",
        [n.visible() for n in top_first] == [True] + [False] * (len(children) - 1),
        [n.visible() for n in top_first],
    )
    names = w.names(doc)
    c("right above the layer", names[:4] == ["Background", "Painted", group_name, "Marker"], names)
    c("the painting stays the active layer", doc.activeNode() == layer, doc.activeNode().name())
    want = alpha_from_mask(sent, mask, "U8")
    doc.waitForDone()
    shown = bytes(group.projectionPixelData(region.x, region.y, region.width, region.height))
    off = sum(
        1
        for i in range(0, len(want), 4)
        if (want[i + 3] == 0 and shown[i + 3] != 0)
        or (want[i + 3] > 0 and max(abs(shown[i + k] - want[i + k]) for k in range(4)) > 2)
    )
    c("the group shows its first layer (its projection was redone)", off == 0, f"{off} pixels differ")
    for n in top_first:
        data = bytes(n.pixelData(region.x, region.y, region.width, region.height))
        c(f"{n.name()}: exactly the sent pixels with alpha = mask", data == want)
    undo, redo = w.krita.action("edit_undo"), w.krita.action("edit_redo")
    if not c("Krita's undo action exists", undo is not None and redo is not None):
        return
    undo.trigger()
    doc.waitForDone()
    w.pump(0.1)
    c("one undo removes the whole group", w.names(doc) == names_before, w.names(doc))
    undo.trigger()
    doc.waitForDone()
    w.pump(0.1)
    # Had a child's insertion been a step of its own, this undo would have undone it instead.
    c("the next undo is the step before the job", "Marker" not in w.names(doc), w.names(doc))
    for _ in range(2):
        redo.trigger()
        doc.waitForDone()
        w.pump(0.1)
    again = next((n for n in doc.rootNode().childNodes() if n.name() == group_name), None)
    c(
        "redo brings the group back with its layers",
        again is not None and len(again.childNodes()) == len(children),
        (w.names(doc), again and [n.name() for n in again.childNodes()]),
    )


def batch_cancelled(c: Checks, w: World) -> None:
    """A batch cancelled after its first result: that result goes in (as a group of one),
    no message box, the cancel is said in the error."""
    from differential_inpaint import ui

    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    w.select_feathered(doc, (20, 20, 40, 40), 8)
    names = w.names(doc)
    errors: list[str] = []
    controller = ui.JobController(None, report_error=lambda _parent, message: errors.append(message))
    arrived: list[Any] = []
    finished: list[Any] = []
    controller.resulted.connect(arrived.append)
    controller.finished.connect(finished.append)
    settings = w.plugin.Settings.from_values(
        dict(prompt="slow: batch", count=3, seed=40, steps=4, server=w.server("fake_daemon"))
    )
    c("started", controller.start(doc, layer, settings))
    c("the first result arrived", w.wait_until(lambda: bool(arrived), 30), arrived)
    controller.cancel()
    c("finished", w.wait_until(lambda: bool(finished), 30))
    group = finished[0] if finished else None
    c("the finished result was inserted", group is not None and group.type() == "grouplayer", group)
    if group is not None:
        kids = [n.name() for n in group.childNodes()]
        c("one layer, with its seed", kids == ["slow: batch \u00b7 40"], kids)
        c("in the image", len(w.names(doc)) == len(names) + 1, w.names(doc))
    c("no message box", errors == [], errors)
    error = controller.error
    c("the cancel kept one of three", error is not None and "1 of its 3" in error.message, error)
    c("nothing of Krita's kept", controller.job is None and controller.worker.job is None)


def history_without_window(c: Checks, w: World) -> None:
    """A batch through the GUI's job path, previewed, applied and discarded from the
    History's model, with no window (so Krita can quit normally after it: QUIT_CLEANLY)."""
    from differential_inpaint import history, ui

    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    w.select_feathered(doc, (20, 20, 40, 40), 8)
    controller = ui.JobController(None, report_error=lambda _parent, message: c("no error", False, message))
    finished: list[Any] = []
    controller.finished.connect(finished.append)
    settings = w.plugin.Settings.from_values(
        dict(prompt="quiet", fan=(0.5, 1.0), seed=3, steps=2, server=w.server("fake_daemon"))
    )
    c("started", controller.start(doc, layer, settings))
    c("finished", w.wait_until(lambda: bool(finished), 30))
    group = finished[0] if finished else None
    c("a strength fan group", group is not None and group.name() == "quiet \u00b7 strength fan", group)
    records = history.HISTORY.of(history.document_key(doc))
    c("recorded in the History", len(records) == 1 and len(records[0].entries) == 2, records)
    if not records:
        return
    first, second = records[0].entries
    history.HISTORY.show_preview(first.id)
    history.HISTORY.show_preview(second.id)
    c("one preview layer", w.names(doc).count(history.PREVIEW_NAME) == 1, w.names(doc))
    history.HISTORY.apply(second.id)
    c("applied, named with its strength", "quiet \u00b7 100%" in w.names(doc), w.names(doc))
    history.HISTORY.show_preview(first.id)
    history.HISTORY.discard(first.id)
    c("discarded: no preview left", history.PREVIEW_NAME not in w.names(doc), w.names(doc))
    c("nothing of Krita's kept", controller.job is None and controller.worker.job is None)


def docker_history(c: Checks, w: World) -> None:
    """The docker's History in real Krita: a run of two variations recorded; previewing
    two results then Apply is one undo step; Discard takes the preview away; Run again
    works on the painting although a result layer is active; the dialog shows what the
    docker changed."""
    from differential_inpaint import history, ui
    from differential_inpaint.docker import DifferentialInpaintDocker

    w.open_window()
    ui.show_error = lambda _parent, message: c.info.setdefault("messages", []).append(message)
    docker = next((d for d in w.krita.dockers() if isinstance(d, DifferentialInpaintDocker)), None)
    if not c("the docker exists", docker is not None):
        return
    doc, layer = w.document(128, 128)
    layer.setPixelData(pattern(128, 128, "U8"), 0, 0, 128, 128)
    w.show(doc)
    w.select_feathered(doc, (30, 30, 50, 50), 8)
    doc.setActiveNode(layer)
    w.wait_until(lambda: doc.activeNode() is not None and doc.activeNode().name() == "Painted", 5.0)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    painted = alpha_from_mask(
        bytes(layer.pixelData(region.x, region.y, region.width, region.height)), mask, "U8"
    )
    values = {**docker.form.values().values(), "prompt": "history", "steps": 2, "count": 2, "seed": 70}
    docker.form.set_values(
        w.plugin.Settings.from_values({**values, "fan": (), "server": w.server("fake_daemon")})
    )
    dialog = ui.InpaintDialog()
    c("the dialog shows what the docker set", dialog.form.values().job.count == 2, dialog.form.values())
    dialog.deleteLater()
    docker.run_button.click()
    c("the docker's job finished", w.wait_until(lambda: docker.controller is None, 60))
    w.pump(0.5)
    # Krita's Layers docker makes an added node active once events run: the plugin
    # chooses the painting again after that.
    c("the painting stays active after the run", doc.activeNode() == layer, doc.activeNode().name())
    docker.history_toggle.setChecked(True)
    docker.update_history()
    panel = docker.history
    c("the History shows the job", panel.tree.topLevelItemCount() == 1, panel.tree.topLevelItemCount())
    top = panel.tree.topLevelItem(0)
    c("with its two results", top is not None and top.childCount() == 2, top and top.childCount())
    c("the toggle counts them", docker.history_toggle.text() == "History (2)", docker.history_toggle.text())
    before = w.names(doc)
    panel.tree.setCurrentItem(top.child(0))
    w.pump(0.1)
    c("a click previews it", history.PREVIEW_NAME in w.names(doc), w.names(doc))
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0).child(1))
    w.pump(0.1)
    c("one preview layer at a time", w.names(doc).count(history.PREVIEW_NAME) == 1, w.names(doc))
    w.pump(0.5)
    c("the painting stays active while previewing", doc.activeNode() == layer, doc.activeNode().name())
    docker.apply()
    doc.waitForDone()
    w.pump(0.1)
    added = [n for n in w.names(doc) if n not in before]
    c("Apply keeps it as a layer named with its seed", added == ["history \u00b7 71"], w.names(doc))
    applied = doc.nodeByName("history \u00b7 71")
    c(
        "with the result's pixels",
        applied is not None
        and bytes(applied.pixelData(region.x, region.y, region.width, region.height)) == painted,
    )
    undo = w.krita.action("edit_undo")
    undo.trigger()
    doc.waitForDone()
    w.pump(0.1)
    c("one undo takes the preview and the Apply away", w.names(doc) == before, (before, w.names(doc)))
    w.krita.action("edit_redo").trigger()
    doc.waitForDone()
    w.pump(0.1)
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0).child(0))
    w.pump(0.1)
    c("previewed again", history.PREVIEW_NAME in w.names(doc), w.names(doc))
    docker.discard()
    w.pump(0.1)
    c("Discard takes the preview off the canvas", history.PREVIEW_NAME not in w.names(doc), w.names(doc))
    docker.update_history()
    c("and the result out of the History", panel.count() == 1, panel.count())
    # Run again, with a result layer active: the job's own layer is what is read.
    group = next((n for n in doc.rootNode().childNodes() if n.type() == "grouplayer"), None)
    result_layer = group.childNodes()[-1] if group is not None else None
    c("a result layer exists", result_layer is not None, w.names(doc))
    doc.setActiveNode(result_layer)
    w.pump(0.1)
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0))
    keys = {history.node_key(n) for n in doc.rootNode().childNodes()}
    panel.again_button.click()
    c("Run again started", docker.controller is not None, c.info.get("messages"))
    c("and finished", w.wait_until(lambda: docker.controller is None, 60))
    w.pump(0.2)
    new = [n for n in doc.rootNode().childNodes() if history.node_key(n) not in keys]
    c("it inserted one group", len(new) == 1 and new[0].type() == "grouplayer", w.names(doc))
    if new:
        root = w.names(doc)
        c("right above the painting", root.index(new[0].name()) == root.index("Painted") + 1, root)
        first = new[0].childNodes()[-1]
        data = bytes(first.pixelData(region.x, region.y, region.width, region.height))
        c("made from the painting's pixels, not the result's", data == painted)
    c("no error", not c.info.get("messages"), c.info.get("messages"))
    layer.remove()
    doc.waitForDone()
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0))
    panel.again_button.click()
    c(
        "the layer gone: Run again says so",
        "no longer in the image" in docker.message.text(),
        docker.message.text(),
    )
    key = history.document_key(doc)
    c("the image has results", history.HISTORY.of(key) != [])
    doc.setModified(False)  # Krita 5.2 would ask whether to save it, and wait forever
    doc.close()
    w.pump(0.2)
    docker.update_history()
    c("a closed image's results are forgotten", history.HISTORY.of(key) == [], history.HISTORY.of(key))


def zip_import(c: Checks, w: World) -> None:
    """Krita's own Import Python Plugin from File unpacks our zip to the installed layout."""
    path = os.path.join(sys.prefix, "share", "krita", "pykrita", "plugin_importer", "plugin_importer.py")
    candidates = [path, "/usr/share/krita/pykrita/plugin_importer/plugin_importer.py"]
    source = next((x for x in candidates if os.path.isfile(x)), None)
    if not c("Krita's plugin importer is present", source is not None, candidates):
        return
    spec = importlib.util.spec_from_file_location("krita_own_plugin_importer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    resources = w.config["zip_resources"]
    os.makedirs(resources, exist_ok=True)  # Krita's resource folder always exists
    imported = module.PluginImporter(w.config["zip"], resources, lambda _plugin: True).import_all()
    c("one plugin imported", [i["name"] for i in imported] == ["differential_inpaint"], imported)
    listing: list[str] = []
    for root, _dirs, files in os.walk(resources):
        listing.extend(os.path.relpath(os.path.join(root, f), resources) for f in files)
    installed = w.config["installed_listing"]
    c(
        "the same files as install-plugin",
        sorted(listing) == sorted(installed),
        sorted(set(listing) ^ set(installed)),
    )


def form_from_spec(c: Checks, w: World) -> None:
    """The dialog's and the docker's form offers exactly the declared settings."""
    from form_check import form_problems

    from differential_inpaint import ui

    form = ui.SettingsForm()
    c("every declared setting, with its label, help, default and bounds", form_problems(w.plugin, form) == [])
    form.deleteLater()


# --- maps: a layer or mask as the change map, a blend map, the context, the strength map ----------


def ramp(w: int, h: int, alpha: int = 255, salt: int = 0) -> bytes:
    """A gray BGRA8 ramp, darker to lighter left to right, a little different each row."""
    rows = []
    for y in range(h):
        rows.append(
            b"".join(
                bytes((g, g, g, alpha))
                for g in ((x * 255 // max(w - 1, 1) + y + salt) % 256 for x in range(w))
            )
        )
    return b"".join(rows)


def green(data: bytes) -> bytes:
    """A BGRA8 map as the stand-in daemon reads it: its green byte."""
    return data[1::4]


def gray_bgra(gray: bytes) -> bytes:
    """The stand-in daemon's strength map of `gray` in BGRA8: opaque gray."""
    out = bytearray(len(gray) * 4)
    for channel in range(3):
        out[channel::4] = gray
    out[3::4] = b"\xff" * len(gray)
    return bytes(out)


def paint_layer(doc: Any, name: str, data: bytes, box: tuple[int, int, int, int], parent: Any = None) -> Any:
    """A hidden paint layer painted at its origin with `data`, then moved to box's x, y."""
    node = doc.createNode(name, "paintlayer")
    (parent or doc.rootNode()).addChildNode(node, None)
    node.setPixelData(data, 0, 0, box[2], box[3])
    if box[:2] != (0, 0):
        node.move(box[0], box[1])
    node.setVisible(False)  # a strength layer is hidden while it is a map
    doc.waitForDone()
    return node


def region_of(w: World, submit: Any) -> Any:
    return w.p.Rect(submit.x, submit.y, submit.image.width, submit.image.height)


def read(node: Any, region: Any) -> bytes:
    return bytes(node.pixelData(region.x, region.y, region.width, region.height))


def map_submit(w: World, doc: Any, layer: Any, maps: dict[str, Any], **values: Any) -> Any:
    """What the plugin would send for these maps (read from Krita; nothing sent)."""
    flow = w.plugin.client.flow
    chosen = w.plugin.Settings.from_values({"prompt": "map", "steps": 2, **values})
    host = w.plugin.krita_io.KritaDocument(doc, layer)
    return flow.prepare(host, chosen, maps=flow.Maps(**maps))


def exact_map_sources(c: Checks, w: World) -> None:
    """Each kind of node as the change map sends its own bytes, placed by document
    coordinates, with the selection beside it; the stand-in daemon's result (alpha = the
    map's green or gray) shows that those bytes went through. A blend map likewise."""
    from krita import Selection

    p = w.p
    doc, layer = w.document(192, 160)
    layer.setPixelData(pattern(192, 160, "U8"), 0, 0, 192, 160)
    strength = paint_layer(doc, "Strength", ramp(60, 50), (100, 70, 60, 50))
    c("the map layer moved", rect_of(strength) == (100, 70, 60, 50), rect_of(strength))
    holder = paint_layer(doc, "Holder", pattern(192, 160, "U8"), (0, 0, 192, 160))
    # A transparency mask as the Layers docker makes it (255 where not painted), painted here.
    w.show(doc)
    doc.setActiveNode(holder)
    w.wait_until(lambda: doc.activeNode() is not None and doc.activeNode().name() == "Holder", 5.0)
    w.krita.action("add_new_transparency_mask").trigger()
    doc.waitForDone()
    w.pump(0.2)
    transparency = next((n for n in holder.childNodes() if n.type() == "transparencymask"), None)
    if not c(
        "a transparency mask was added", transparency is not None, [n.name() for n in holder.childNodes()]
    ):
        return
    transparency.setName("Edge")
    transparency.setPixelData(bytes(range(0, 250, 5)) * 40, 70, 60, 50, 40)
    local = Selection()
    local.select(0, 0, 192, 160, 0)
    local.setPixelData(bytes((x * 3) % 256 for x in range(80)) * 60, 80, 50, 80, 60)
    selection_mask = doc.createSelectionMask("Local")
    holder.addChildNode(selection_mask, None)
    selection_mask.setSelection(local)
    box = Selection()
    box.select(95, 65, 40, 30, 200)
    filter_mask = doc.createFilterMask("Blurred", w.krita.filter("blur"), box)
    holder.addChildNode(filter_mask, None)
    group = doc.createGroupLayer("Group")
    doc.rootNode().addChildNode(group, None)
    paint_layer(doc, "Inside", ramp(192, 160, salt=40), (0, 0, 192, 160), parent=group).setVisible(True)
    blend = paint_layer(doc, "Blend", ramp(192, 160, salt=90), (0, 0, 192, 160))
    doc.refreshProjection()
    doc.waitForDone()
    w.select_feathered(doc, (90, 60, 60, 50), 8)
    doc.setActiveNode(layer)
    w.pump(0.2)
    canvas = p.Rect(0, 0, 192, 160)
    sel = doc.selection()
    selected = p.Rect(sel.x(), sel.y(), sel.width(), sel.height())
    before = bytes(layer.pixelData(0, 0, 192, 160))
    sources = [
        ("paint layer", "Strength", p.PixelFormat.BGRA8, lambda r: read(strength, r), green),
        ("transparency mask", "Edge", p.MaskFormat.GRAY8, lambda r: read(transparency, r), bytes),
        ("selection mask", "Local", p.MaskFormat.GRAY8, lambda r: read(local, r), bytes),
        ("filter mask", "Blurred", p.MaskFormat.GRAY8, lambda r: read(filter_mask, r), bytes),
        (
            "group",
            "Group",
            p.PixelFormat.BGRA8,
            lambda r: bytes(group.projectionPixelData(r.x, r.y, r.width, r.height)),
            green,
        ),
    ]
    for what, name, fmt, expected, alpha_of in sources:
        submit = map_submit(w, doc, layer, {"mask": name}, server=w.server("fake_daemon")).submit
        region = region_of(w, submit)
        node = doc.nodeByName(name)
        bounds = p.Rect(*rect_of(node)) if name != "Local" else canvas
        want = p.context_region(selected.intersect(bounds).intersect(canvas), canvas, padding=64)
        c(f"{what}: the region around selection and map", region == want, (region, want))
        c(f"{what}: sent as {fmt.value}", submit.mask.format is fmt, submit.mask.format)
        sent_map = expected(region)
        c(f"{what}: the map's own bytes", submit.mask.data == sent_map, len(submit.mask.data))
        grays = len(set(alpha_of(sent_map)))
        c(f"{what}: more than one gray in it", grays > (1 if what == "filter mask" else 4), grays)
        c(
            f"{what}: the selection beside it",
            submit.selection is not None and submit.selection.data == read(sel, region),
        )
        new = w.plugin.inpaint_layer(
            doc, layer, prompt=f"map {name}", steps=2, seed=4, mask=name, server=w.server("fake_daemon")
        )
        c(
            f"{what}: the result's alpha is that map",
            read(new, region) == alpha_from_mask(read(layer, region), alpha_of(sent_map), "U8"),
        )
    # The moved map lines up: its own first pixel is read at the document point it moved to.
    submit = map_submit(w, doc, layer, {"mask": strength}).submit
    region = region_of(w, submit)
    at = ((70 - region.y) * region.width + (100 - region.x)) * 4
    c(
        "the map's corner is read where the layer was moved",
        region.contains(p.Rect(100, 70, 1, 1))
        and submit.mask.data[at : at + 4] == ramp(60, 50)[:4]
        and submit.mask.data[at - 4 : at] == bytes(4),
        region,
    )
    # A blend map: its bytes travel, and they are the result's alpha.
    submit = map_submit(w, doc, layer, {"mask": "Strength", "blend": "Blend"}).submit
    region = region_of(w, submit)
    c(
        "blend: the blend layer's bytes",
        submit.blend_mask is not None and submit.blend_mask.data == read(blend, region),
    )
    new = w.plugin.inpaint_layer(
        doc,
        layer,
        prompt="blend",
        steps=2,
        seed=4,
        mask="Strength",
        blend_mask=blend,
        server=w.server("fake_daemon"),
    )
    c(
        "blend: the result's alpha is the blend map",
        read(new, region) == alpha_from_mask(read(layer, region), green(read(blend, region)), "U8"),
    )
    # Not limited: no selection travels, the map alone bounds the area.
    submit = map_submit(w, doc, layer, {"mask": "Strength"}, limit_to_selection=False).submit
    c("unlimited: no selection sent", submit.selection is None)
    c("unlimited: the whole map layer in the region", region_of(w, submit).contains(p.Rect(100, 70, 60, 50)))
    c("the painting unchanged", bytes(layer.pixelData(0, 0, 192, 160)) == before)
    doc.setModified(False)


def map_colour_spaces(c: Checks, w: World) -> None:
    """A map layer needs not be in the image's colour space: a 16-bit RGBA layer goes in its
    own bytes, a Grayscale/Alpha one spread into RGBA, a CMYK one is refused in words."""
    p = w.p
    doc, layer = w.document(64, 64)
    layer.setPixelData(pattern(64, 64, "U8"), 0, 0, 64, 64)
    deep = paint_layer(doc, "Deep", ramp(64, 64), (0, 0, 64, 64))
    gray = paint_layer(doc, "Gray", ramp(64, 64, alpha=200), (0, 0, 64, 64))
    cmyk = paint_layer(doc, "Cmyk", ramp(64, 64), (0, 0, 64, 64))
    converted = (
        deep.setColorSpace("RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc"),
        gray.setColorSpace("GRAYA", "U8", "Gray-D50-elle-V2-srgbtrc.icc"),
        cmyk.setColorSpace("CMYKA", "U8", (w.krita.profiles("CMYKA", "U8") or [""])[0]),
    )
    doc.waitForDone()
    c(
        "the layers were converted",
        converted[:2] == (True, True),
        [converted, deep.colorDepth(), gray.colorModel()],
    )
    region = p.Rect(0, 0, 64, 64)
    submit = map_submit(w, doc, layer, {"mask": "Deep", "context": "image"}).submit
    c(
        "16-bit: its own bytes as bgra16",
        submit.mask.format is p.PixelFormat.BGRA16 and submit.mask.data == read(deep, region),
    )
    submit = map_submit(w, doc, layer, {"mask": "Gray", "context": "image"}).submit
    raw = read(gray, region)
    spread = bytearray(len(raw) * 2)
    for channel in range(3):
        spread[channel::4] = raw[0::2]
    spread[3::4] = raw[1::2]
    c(
        "gray: spread into bgra8",
        submit.mask.format is p.PixelFormat.BGRA8 and submit.mask.data == bytes(spread),
    )
    if cmyk.colorModel() == "CMYKA":
        try:
            map_submit(w, doc, layer, {"mask": "Cmyk"})
        except w.plugin.InpaintError as exc:
            c(
                "CMYK: refused in words",
                exc.code == "unsupported_color_model" and "Cmyk" in exc.message,
                exc.message,
            )
        else:
            c("CMYK: refused in words", False, "no exception")


def exact_map_context(c: Checks, w: World) -> None:
    """The context choices give the region they name."""
    p = w.p
    doc, layer = w.document(256, 200)
    layer.setPixelData(pattern(256, 200, "U8"), 0, 0, 256, 200)
    frame = paint_layer(doc, "Frame", ramp(80, 60), (90, 70, 80, 60))
    w.select_feathered(doc, (100, 80, 40, 30), 4)
    sel = doc.selection()
    selected = p.Rect(sel.x(), sel.y(), sel.width(), sel.height())
    canvas = p.Rect(0, 0, 256, 200)
    cases = [
        ("auto", p.context_region(selected, canvas, padding=64)),
        ("image", canvas),
        ("mask", p.context_region(selected, canvas, padding=0, min_size=0)),  # the bounds, snapped
        ((20, 30, 150, 120), p.Rect(20, 30, 150, 120)),
        ("20,30,150,120", p.Rect(20, 30, 150, 120)),
        ("layer:Frame", p.Rect(90, 70, 80, 60)),
        (frame, p.Rect(90, 70, 80, 60)),
    ]
    for context, want in cases:
        job = map_submit(w, doc, layer, {"context": context})
        label = context if isinstance(context, (str, tuple)) else "the Frame node"
        c(f"context {label}", job.region == want, (job.region, want))
    region = p.Rect(20, 30, 150, 120)
    new = w.plugin.inpaint_layer(
        doc,
        layer,
        prompt="context",
        steps=2,
        seed=1,
        context=(20, 30, 150, 120),
        server=w.server("fake_daemon"),
    )
    c(
        "a rectangle's job: exactly there",
        read(new, region) == alpha_from_mask(read(layer, region), read(sel, region), "U8"),
    )
    c("inside the rectangle", region.contains(p.Rect(*rect_of(new))), rect_of(new))


def exact_strength_map_layer(c: Checks, w: World) -> None:
    """strength_map_layer adds one layer, "Strength map", of the daemon's gray, above the
    painting, one undo step."""
    doc, layer = w.document(128, 112)
    layer.setPixelData(pattern(128, 112, "U8"), 0, 0, 128, 112)
    strength = paint_layer(doc, "Strength", ramp(70, 60), (30, 20, 70, 60))
    doc.setActiveNode(layer)
    names, before = w.names(doc), bytes(layer.pixelData(0, 0, 128, 112))
    new = w.plugin.strength_map_layer(
        doc, layer, mask="Strength", context="image", server=w.server("fake_daemon")
    )
    region = w.p.Rect(0, 0, 128, 112)
    c("one layer more", len(w.names(doc)) == len(names) + 1, w.names(doc))
    c("named Strength map", new is not None and new.name() == "Strength map", new and new.name())
    after = w.names(doc)
    c("right above the painting", after.index("Strength map") == after.index("Painted") + 1, after)
    c("the daemon's gray", read(new, region) == gray_bgra(green(read(strength, region))))
    c("the painting unchanged", bytes(layer.pixelData(0, 0, 128, 112)) == before)
    w.show(doc)
    w.krita.action("edit_undo").trigger()
    doc.waitForDone()
    w.pump(0.1)
    c("one undo removes it", w.names(doc) == names, w.names(doc))
    doc.setModified(False)


def map_bad_input(c: Checks, w: World) -> None:
    """A missing layer name, gamma 0, black above white, a context off the image: a clear
    InpaintError before anything is sent, the image unchanged."""
    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    paint_layer(doc, "Strength", ramp(96, 96), (0, 0, 96, 96))
    w.select_feathered(doc, (20, 20, 40, 40), 4)
    count, before = len(w.names(doc)), bytes(layer.pixelData(0, 0, 96, 96))
    cases = [
        ("missing layer", {"mask": "No such layer"}, "missing_layer", "'No such layer'"),
        ("missing blend layer", {"mask": "Strength", "blend_mask": "Nope"}, "missing_layer", "'Nope'"),
        ("gamma 0", {"mask": "Strength", "mask_gamma": 0.0}, "invalid_settings", "Map gamma"),
        ("black above white", {"mask_black": 0.7, "mask_white": 0.2}, "invalid_settings", "black point"),
        ("context off the image", {"context": (400, 400, 20, 20)}, "invalid_settings", "outside the image"),
    ]
    for what, values, code, words in cases:
        for run in (w.plugin.inpaint_layer, w.plugin.strength_map_layer):
            try:
                run(doc, layer, prompt="bad", server=w.server("dead_server"), **values)
            except w.plugin.InpaintError as exc:
                c(
                    f"{what}, {run.__name__}: {code}",
                    exc.code == code and words in exc.message,
                    f"{exc.code}: {exc.message}",
                )
            else:
                c(f"{what}, {run.__name__}: {code}", False, "no exception")
    c("no layer added", len(w.names(doc)) == count, w.names(doc))
    c("the painting unchanged", bytes(layer.pixelData(0, 0, 96, 96)) == before)


def strength_map_controller(c: Checks, w: World) -> None:
    """The GUI's job path for the strength map: one layer; a map job that fails (a missing
    name before it starts, the daemon's failure after) adds nothing and tells once."""
    from differential_inpaint import ui

    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    paint_layer(doc, "Strength", ramp(50, 40), (20, 20, 50, 40))
    names = w.names(doc)
    errors: list[str] = []
    request = w.p.StrengthMapRequest
    report = lambda _parent, message: errors.append(message)  # noqa: E731
    for prompt, mask, added in (
        ("map", "Strength", 1),
        ("fail: on purpose", "Strength", 0),
        ("map", "Nope", 0),
    ):
        finished: list[Any] = []
        chosen = w.plugin.Settings.from_values(
            dict(prompt=prompt, mask_layer=mask, server=w.server("fake_daemon"))
        )
        controller = ui.start_job(doc, layer, chosen, None, report_error=report, request=request)
        controller.finished.connect(finished.append)
        started = controller.job is not None
        w.wait_until(lambda done=finished, s=started: bool(done) or not s, 30)
        what = f"{prompt} with {mask}"
        c(f"{what}: {added} layer added", len(w.names(doc)) == len(names) + added, w.names(doc))
        names = w.names(doc)
        c(f"{what}: the controller keeps no Krita object", controller.job is None, controller.job)
    c("two messages, each once", len(errors) == 2, errors)
    c("the missing name is said", any("'Nope'" in e for e in errors), errors)
    c("the map layer is named", "Strength map" in names, names)


def docker_show_map(c: Checks, w: World) -> None:
    """The docker: the Map layer picker offers the image's layers and masks; Show strength
    map and the menu action add the layer; a missing map says so in the docker."""
    from differential_inpaint.docker import DifferentialInpaintDocker

    w.open_window()
    docker = next((d for d in w.krita.dockers() if isinstance(d, DifferentialInpaintDocker)), None)
    if not c("the docker exists", docker is not None):
        return
    doc, layer = w.document(112, 96)
    layer.setPixelData(pattern(112, 96, "U8"), 0, 0, 112, 96)
    paint_layer(doc, "Strength", ramp(60, 50), (30, 20, 60, 50))
    w.show(doc)
    doc.setActiveNode(layer)
    w.wait_until(lambda: doc.activeNode() is not None and doc.activeNode().name() == "Painted", 5.0)
    docker.form.refresh_layers()
    picker = docker.form.fields["mask_layer"].combo
    offered = [picker.itemData(i) for i in range(picker.count())]
    c(
        "the picker offers Selection and the image's layers",
        offered[:1] == [""] and "Strength" in offered,
        offered,
    )
    picker.setCurrentIndex(picker.findData("Strength"))
    values = {**docker.form.values().values(), "server": w.server("fake_daemon"), "fan": (), "count": 1}
    docker.form.set_values(w.plugin.Settings.from_values(values))
    docker.update_run_button()
    c(
        "Run says it inpaints by the map",
        docker.run_button.text() == "Inpaint by map",
        docker.run_button.text(),
    )
    names = w.names(doc)
    docker.map_button.click()
    c("the map job finished", w.wait_until(lambda: docker.controller is None, 30))
    w.pump(0.3)
    c(
        "Show strength map added the layer",
        w.names(doc) == [*names[:2], "Strength map", *names[2:]],
        w.names(doc),
    )
    c("the painting stays active", doc.activeNode() == layer, doc.activeNode().name())
    action = w.krita.action("differential_inpaint_show_map")
    if c("the menu action exists", action is not None):
        action.trigger()
        c(
            "the action's job finished",
            w.wait_until(lambda: docker.controller is None and w.names(doc).count("Strength map") == 2, 30),
        )
    names = w.names(doc)
    docker.form.fields["mask_layer"].set_value("Gone")
    docker.form._edited()
    docker.map_button.click()
    w.pump(0.3)
    c("a missing map: nothing added", w.names(doc) == names, w.names(doc))
    c("and the docker says so", "'Gone'" in docker.message.text(), docker.message.text())
    docker.form.set_values(w.plugin.Settings.from_values({**values, "mask_layer": ""}))
    doc.setModified(False)
    doc.close()
    w.pump(0.2)


def real_map_layer(c: Checks, w: World) -> None:
    """The real daemon (builtin:tiny-sd15): a painted strength layer as the map; where the
    effective map (the daemon's own strength map) is 0 the result keeps the painting's
    bytes exactly, transparent; elsewhere it changed."""
    doc, layer = w.document(128, 112)
    layer.setPixelData(pattern(128, 112, "U8"), 0, 0, 128, 112)
    painted = bytes((255, 255, 255, 255)) * 30 + bytes((255, 255, 255, 128)) * 10 + bytes(4) * 40
    paint_layer(doc, "Strength", painted * 60, (20, 30, 80, 60))  # white, half-opaque, unpainted
    server = w.server("real_daemon")
    shown = w.plugin.strength_map_layer(doc, layer, mask="Strength", steps=2, seed=3, server=server)
    new = w.plugin.inpaint_layer(doc, layer, prompt="fog", mask="Strength", steps=2, seed=3, server=server)
    region = w.p.Rect(*rect_of(shown))  # the map is opaque: its bounds are the job's region
    c("the map covers the result", region.contains(w.p.Rect(*rect_of(new))), (rect_of(new), region))
    effective, result, source = read(shown, region)[0::4], read(new, region), read(layer, region)
    kept = [i for i, v in enumerate(effective) if v == 0]
    changed = [i for i, v in enumerate(effective) if v > 100]
    c("some pixels kept, some changed", len(kept) > 100 and len(changed) > 100, (len(kept), len(changed)))
    same = all(
        result[4 * i : 4 * i + 3] == source[4 * i : 4 * i + 3] and result[4 * i + 3] == 0 for i in kept
    )
    c("the effective map's zeros come back bit for bit, transparent", same)
    moved = sum(1 for i in changed if result[4 * i : 4 * i + 3] != source[4 * i : 4 * i + 3])
    c("the map's white changed", moved > len(changed) // 2, (moved, len(changed)))
    c(
        "half-opaque paint is half strength",
        100 < effective[(35 - region.y) * region.width + (55 - region.x)] < 160,
    )


def real_depth(c: Checks, w: World) -> None:
    """Depth with builtin:tiny-depth end to end: the strength map, then the job; the map's
    zeros come back bit for bit."""
    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    server = w.server("real_daemon")
    settings = dict(depth="far", mask_black=0.5, steps=2, seed=5, server=server)
    shown = w.plugin.strength_map_layer(doc, layer, **settings)
    new = w.plugin.inpaint_layer(doc, layer, prompt="far hills", **settings)
    region = w.p.Rect(0, 0, 96, 96)
    effective, result, source = read(shown, region)[0::4], read(new, region), read(layer, region)
    c(
        "the map has kept and changed parts",
        0 in effective and max(effective) > 128,
        sorted(set(effective))[-3:],
    )
    kept = [i for i, v in enumerate(effective) if v == 0]
    same = all(
        result[4 * i : 4 * i + 3] == source[4 * i : 4 * i + 3] and result[4 * i + 3] == 0 for i in kept
    )
    c("the depth map's zeros come back bit for bit", same)
    c("named after the prompt", named(new, "far hills"), new.name())


def _capturing_prepare(w: World) -> tuple[list[Any], Callable[[], None]]:
    """Keep every job `inpaint_layer` prepares (what it sends); the second value undoes it."""
    flow = w.plugin.api.flow
    original, seen = flow.prepare, []

    def prepare(*args: Any, **kwargs: Any) -> Any:
        job = original(*args, **kwargs)
        seen.append(job.submit)
        return job

    flow.prepare = prepare
    return seen, lambda: setattr(flow, "prepare", original)


def exact_conditioning(c: Checks, w: World) -> None:
    """A control layer at another offset than the painting sends its own pixels over the
    job's region, a reference layer its whole picture, the LoRAs their names and weights;
    the stand-in daemon takes the job (its decoder checks them) and the result comes back."""
    p = w.p
    doc, layer = w.document(192, 160)
    layer.setPixelData(pattern(192, 160, "U8"), 0, 0, 192, 160)
    layer.move(4, 6)  # the painting off its origin, the control layer elsewhere
    lines = paint_layer(doc, "Lines", ramp(120, 100, salt=7), (30, 20, 120, 100))
    photo = paint_layer(doc, "Photo", ramp(50, 40, salt=50), (10, 12, 50, 40))
    group = doc.createGroupLayer("Sketch")
    doc.rootNode().addChildNode(group, None)
    paint_layer(doc, "Inside", ramp(192, 160, salt=90), (0, 0, 192, 160), parent=group).setVisible(True)
    doc.refreshProjection()
    doc.waitForDone()
    w.select_feathered(doc, (70, 60, 60, 50), 8)
    names = w.names(doc)
    seen, restore = _capturing_prepare(w)
    try:
        new = w.plugin.inpaint_layer(
            doc,
            layer,
            prompt="controlled",
            server=w.server("fake_daemon"),
            controls=[
                {"layer": "Lines", "kind": "canny", "strength": 0.8, "start": 0, "end": 0.6},
                {"layer": group, "kind": "Depth", "preprocess": True},
            ],
            references=[{"layer": "Photo", "weight": 0.5}],
            loras="fake-lora:0.8, other:-0.5",
        )
    finally:
        restore()
    if not c("one job prepared", len(seen) == 1, len(seen)):
        return
    submit = seen[0]
    region = region_of(w, submit)
    c("the region is not the control layer's bounds", region != p.Rect(30, 20, 120, 100), region)
    controls, references = submit.controls, submit.ip_adapters
    c("two control images", len(controls) == 2, len(controls))
    first = controls[0]
    c(
        "the control image is the layer's pixels over the job's region",
        (first.image.width, first.image.height) == (region.width, region.height)
        and first.image.format is p.PixelFormat.BGRA8
        and first.image.data == read(lines, region),
    )
    if region.x < 30 and region.y < 20:
        c("transparent where the control layer has no pixels", first.image.data[:4] == bytes(4))
    c(
        "its settings",
        first.params == p.ControlParams("canny", None, 0.8, 0.0, 0.6, False),
        first.params,
    )
    second = controls[1]
    projection = bytes(group.projectionPixelData(region.x, region.y, region.width, region.height))
    c("a group as the control: what it shows", second.image.data == projection)
    c(
        "the type in lower case, from a photo",
        (second.params.kind, second.params.preprocess) == ("depth", True),
        second.params,
    )
    c("one reference image", len(references) == 1, len(references))
    if references:
        ref = references[0]
        c(
            "the reference is the whole layer",
            (ref.image.width, ref.image.height) == (50, 40)
            and ref.image.data == read(photo, p.Rect(10, 12, 50, 40)),
            (ref.image.width, ref.image.height),
        )
        c("its weight", ref.params == p.ReferenceParams(0.5, None), ref.params)
    c(
        "the LoRAs",
        submit.params.loras == (p.Lora("fake-lora", 0.8), p.Lora("other", -0.5)),
        submit.params.loras,
    )
    after = w.names(doc)
    c(
        "the result arrived above the painting",
        new is not None and after[after.index("Painted") + 1] == new.name() and len(after) == len(names) + 1,
        after,
    )
    # The same with a list of (name, weight) and the control layer as a node.
    seen, restore = _capturing_prepare(w)
    try:
        w.plugin.inpaint_layer(
            doc,
            layer,
            prompt="again",
            server=w.server("fake_daemon"),
            controls=[lines],
            loras=[("fake-lora", 1.5)],
        )
    finally:
        restore()
    c(
        "a node alone is a control with the defaults",
        seen
        and seen[0].controls[0].params == p.ControlParams()
        and seen[0].controls[0].image.data == read(lines, region_of(w, seen[0])),
    )
    c(
        "LoRAs as pairs",
        seen and seen[0].params.loras == (p.Lora("fake-lora", 1.5),),
        seen and seen[0].params.loras,
    )
    doc.setModified(False)
    doc.close()


def conditioning_bad_input(c: Checks, w: World) -> None:
    """A control layer that is not in the image, a strength out of bounds, an unknown key,
    a LoRA weight out of bounds, start after end: a clear InpaintError before anything is
    sent, the image unchanged; strength_map_layer checks them the same way."""
    doc, layer = w.document(96, 96)
    layer.setPixelData(pattern(96, 96, "U8"), 0, 0, 96, 96)
    paint_layer(doc, "Lines", ramp(96, 96), (0, 0, 96, 96))
    w.select_feathered(doc, (20, 20, 40, 40), 4)
    count, before = len(w.names(doc)), bytes(layer.pixelData(0, 0, 96, 96))
    cases = [
        (
            "missing control layer",
            {"controls": [{"layer": "No such layer"}]},
            "missing_layer",
            "'No such layer'",
        ),
        ("missing reference layer", {"references": [{"layer": "Nope"}]}, "missing_layer", "'Nope'"),
        (
            "strength 5",
            {"controls": [{"layer": "Lines", "strength": 5}]},
            "invalid_settings",
            "Control strength",
        ),
        (
            "start after end",
            {"controls": [{"layer": "Lines", "start": 0.8, "end": 0.2}]},
            "invalid_settings",
            "Start",
        ),
        ("unknown key", {"controls": [{"layer": "Lines", "weight": 1}]}, "invalid_settings", "'weight'"),
        ("LoRA weight 3", {"loras": "fake-lora:3"}, "invalid_settings", "LoRAs"),
        ("LoRA without a name", {"loras": ":0.8"}, "invalid_settings", "needs a name"),
    ]
    for what, values, code, words in cases:
        for run in (w.plugin.inpaint_layer, w.plugin.strength_map_layer):
            try:
                run(doc, layer, prompt="bad", server=w.server("dead_server"), **values)
            except w.plugin.InpaintError as exc:
                c(
                    f"{what}, {run.__name__}: {code}",
                    exc.code == code and words in exc.message,
                    f"{exc.code}: {exc.message}",
                )
            else:
                c(f"{what}, {run.__name__}: {code}", False, "no exception")
    c("no layer added", len(w.names(doc)) == count, w.names(doc))
    c("the painting unchanged", bytes(layer.pixelData(0, 0, 96, 96)) == before)
    doc.setModified(False)
    doc.close()


def docker_conditioning(c: Checks, w: World) -> None:
    """The docker's Conditioning fold: a LoRA and a control layer picked there go with Run
    (the layer's pixels over the job's region), are kept in kritarc, and the History's Run
    again sends them again."""
    from differential_inpaint import history, settings, ui
    from differential_inpaint.docker import DifferentialInpaintDocker

    p = w.p
    w.open_window()
    docker = next((d for d in w.krita.dockers() if isinstance(d, DifferentialInpaintDocker)), None)
    if not c("the docker exists", docker is not None):
        return
    doc, layer = w.document(128, 112)
    layer.setPixelData(pattern(128, 112, "U8"), 0, 0, 128, 112)
    lines = paint_layer(doc, "Lines", ramp(70, 60, salt=21), (40, 30, 70, 60))
    w.show(doc)
    doc.setActiveNode(layer)
    w.wait_until(lambda: doc.activeNode() is not None and doc.activeNode().name() == "Painted", 5.0)
    w.select_feathered(doc, (30, 30, 50, 40), 6)
    form = docker.form
    values = {**form.values().values(), "prompt": "docker lines", "server": w.server("fake_daemon")}
    form.set_values(w.plugin.Settings.from_values({**values, "fan": (), "count": 1, "mask_layer": ""}))
    form.refresh_models()
    c("the daemon's LoRAs arrived", w.wait_until(lambda: bool(form.addons.get("loras")), 10), form.addons)
    form.conditioning_toggle.setChecked(True)
    loras = form.fields["loras"]
    loras.rows.add_button.click()
    row = loras.rows.rows[-1]
    row.combo.setCurrentIndex(row.combo.findData("fake-lora"))
    row.weight.setValue(0.8)
    form.conditioning.controls.add_button.click()
    control = form.conditioning.rows()[-1]
    control.layer.combo.showPopup()  # the list is made fresh as it opens
    control.layer.combo.hidePopup()
    control.layer.combo.setCurrentIndex(control.layer.combo.findData("Lines"))
    control.fields["end"].box.setValue(50)
    c(
        "kept in kritarc",
        settings.load_conditioning().controls[:1] == (ui.ControlLayer("Lines", p.ControlParams(end=0.5)),)
        and settings.load().job.loras == (p.Lora("fake-lora", 0.8),),
        settings.load_conditioning(),
    )
    seen, restore = _capturing_prepare(w)
    try:
        docker.run()
        c("the job finished", w.wait_until(lambda: docker.controller is None, 30))
        w.pump(0.3)
        record = history.HISTORY.of(history.document_key(doc))[0]
        docker.run_again(record)
        c("run again finished", w.wait_until(lambda: docker.controller is None, 30))
        w.pump(0.3)
    finally:
        restore()
    c("two jobs sent", len(seen) == 2, len(seen))
    for what, submit in zip(("run", "run again"), seen, strict=False):
        region = region_of(w, submit)
        c(
            f"{what}: the control layer's pixels over the job's region",
            len(submit.controls) == 1
            and submit.controls[0].image.data == read(lines, region)
            and submit.controls[0].params.end == 0.5,
        )
        c(f"{what}: the LoRA", submit.params.loras == (p.Lora("fake-lora", 0.8),), submit.params.loras)
    c("no message", docker.message.isHidden(), docker.message.text())
    # Back to none, for the scenarios after this one.
    form.conditioning.controls.remove(control)
    loras.set_value(())
    form._edited()
    form.conditioning_toggle.setChecked(False)
    c(
        "none kept",
        ui.SettingsStore.instance().conditioning == ui.Conditioning(),
        settings.load_conditioning(),
    )
    doc.setModified(False)
    doc.close()
    w.pump(0.2)


CONTROLNET, LORA = "builtin:tiny-controlnet-sd15", "builtin:tiny-lora-sd15"
IP_ADAPTER = "builtin:tiny-ip-adapter-sd15"  # the reference goes along where the daemon lists it


def real_conditioning(c: Checks, w: World) -> None:
    """The real daemon (builtin:tiny-sd15) with a control layer (builtin:tiny-controlnet-sd15)
    and a LoRA (builtin:tiny-lora-sd15), and a reference layer (builtin:tiny-ip-adapter-sd15):
    the job runs end to end, and where the strength map is 0 the result keeps
    the painting's bytes exactly; the control layer changes the result."""
    server = w.server("real_daemon")
    welcome = w.plugin.client.server_info(server)
    # The test daemon offers the built-in models: one missing is a failed check, not a skip.
    listed = [m.name for m in (*welcome.controlnets, *welcome.loras, *welcome.ip_adapters)]
    c("the daemon lists the built-in add-ons", {CONTROLNET, LORA, IP_ADAPTER} <= set(listed), listed)
    if not {CONTROLNET, LORA, IP_ADAPTER} <= set(listed):
        return
    conditioning = {
        "controls": [{"layer": "Lines", "kind": "canny", "model": CONTROLNET, "strength": 1.0, "end": 0.8}],
        "loras": [(LORA, 0.8)],
        "references": [{"layer": "Photo", "weight": 0.5, "model": IP_ADAPTER}],
    }
    doc, layer = w.document(128, 112)
    layer.setPixelData(pattern(128, 112, "U8"), 0, 0, 128, 112)
    paint_layer(doc, "Lines", ramp(90, 70, salt=3), (25, 30, 90, 70))
    paint_layer(doc, "Photo", pattern(40, 30, "U8"), (60, 50, 40, 30))
    w.select_feathered(doc, (40, 40, 48, 40), 6)
    settings = dict(steps=2, seed=11, server=server, model="builtin:tiny-sd15")
    shown = w.plugin.strength_map_layer(doc, layer, **settings)
    started = time.monotonic()
    new = w.plugin.inpaint_layer(doc, layer, prompt="ink drawing", **conditioning, **settings)
    c.info["seconds"] = round(time.monotonic() - started, 2)
    region = w.p.Rect(*rect_of(shown))
    c("the map covers the result", region.contains(w.p.Rect(*rect_of(new))), (rect_of(new), region))
    effective, result, source = read(shown, region)[0::4], read(new, region), read(layer, region)
    kept = [i for i, v in enumerate(effective) if v == 0]
    changed = [i for i, v in enumerate(effective) if v > 200]
    c("some pixels kept, some changed", len(kept) > 100 and len(changed) > 100, (len(kept), len(changed)))
    same = all(
        result[4 * i : 4 * i + 3] == source[4 * i : 4 * i + 3] and result[4 * i + 3] == 0 for i in kept
    )
    c("the map's zeros come back bit for bit, transparent", same)
    moved = sum(1 for i in changed if result[4 * i : 4 * i + 3] != source[4 * i : 4 * i + 3])
    c("the selection changed", moved > len(changed) // 2, (moved, len(changed)))
    c("named after the prompt", named(new, "ink drawing"), new.name())
    # The control image steers: the same job without it differs.
    plain = w.plugin.inpaint_layer(doc, layer, prompt="ink drawing", loras=conditioning["loras"], **settings)
    other = read(plain, region)
    differ = sum(1 for i in changed if result[4 * i : 4 * i + 3] != other[4 * i : 4 * i + 3])
    c("the control layer changed the result", differ > len(changed) // 4, (differ, len(changed)))
    doc.setModified(False)
    doc.close()


SCENARIOS: dict[str, Callable[[Checks, World], None]] = {
    # byte-exact, against the fake daemon
    "exact_feathered_undo": lambda c, w: inpaint_with_undo(c, w, w.server("fake_daemon"), "exact door", True),
    "exact_U8": lambda c, w: depth_scenario(c, w, "U8", w.server("fake_daemon"), True),
    "exact_U16": lambda c, w: depth_scenario(c, w, "U16", w.server("fake_daemon"), True),
    "exact_F16": lambda c, w: depth_scenario(c, w, "F16", w.server("fake_daemon"), True),
    "exact_F32": lambda c, w: depth_scenario(c, w, "F32", w.server("fake_daemon"), True),
    "exact_no_selection": lambda c, w: no_selection(c, w, w.server("fake_daemon"), True),
    "exact_offset_layer": lambda c, w: offset_layer(c, w, w.server("fake_daemon"), True),
    "group_projection": lambda c, w: group_projection(c, w, w.server("fake_daemon")),
    "exact_nested_layer": lambda c, w: nested_layer(c, w, w.server("fake_daemon"), True),
    "tiny_selection_unicode": lambda c, w: tiny_selection_unicode(c, w, w.server("fake_daemon")),
    "too_large_without_selection": too_large_without_selection,
    "settings_unicode": settings_unicode,
    "daemon_not_running": daemon_not_running,
    "refuses_other_models": refuses_other_models,
    "job_errors": job_errors,
    "controller_fake": lambda c, w: controller_run(c, w, w.server("fake_daemon"), "gui path"),
    "controller_cancel": lambda c, w: controller_run(c, w, w.server("fake_daemon"), "slow: cancel me", True),
    "controller_error": controller_error,
    "changed_mid_job": changed_mid_job,
    "menu_and_dialog": menu_and_dialog,
    "zip_import": zip_import,
    "exact_batch_count": lambda c, w: batch(c, w, w.server("fake_daemon"), "count"),
    "exact_batch_fan": lambda c, w: batch(c, w, w.server("fake_daemon"), "fan"),
    "batch_cancelled": batch_cancelled,
    "docker_history": docker_history,
    "history_without_window": history_without_window,
    "form_from_spec": form_from_spec,
    "exact_map_sources": exact_map_sources,
    "exact_map_context": exact_map_context,
    "map_colour_spaces": map_colour_spaces,
    "exact_strength_map_layer": exact_strength_map_layer,
    "map_bad_input": map_bad_input,
    "strength_map_controller": strength_map_controller,
    "docker_show_map": docker_show_map,
    "exact_conditioning": exact_conditioning,
    "conditioning_bad_input": conditioning_bad_input,
    "docker_conditioning": docker_conditioning,
    # end to end, against the real daemon serving builtin:tiny-sd15 (and builtin:tiny-flux)
    "real_feathered_undo": lambda c, w: inpaint_with_undo(
        c, w, w.server("real_daemon"), "a brick wall", False
    ),
    "real_U16": lambda c, w: depth_scenario(c, w, "U16", w.server("real_daemon"), False),
    "real_F32": lambda c, w: depth_scenario(c, w, "F32", w.server("real_daemon"), False),
    "real_no_selection": lambda c, w: no_selection(c, w, w.server("real_daemon"), False),
    "real_offset_layer": lambda c, w: offset_layer(c, w, w.server("real_daemon"), False),
    "real_nested_layer": lambda c, w: nested_layer(c, w, w.server("real_daemon"), False),
    "real_controller": lambda c, w: controller_run(c, w, w.server("real_daemon"), "gui real"),
    # builtin:tiny-flux, -schnell and -fill, also offered by the real daemon
    **{f"real_{f.replace('-', '_')}_form": functools.partial(real_flux_form, family=f) for f in REAL_FLUX},
    "real_map_layer": real_map_layer,
    "real_depth": real_depth,  # builtin:tiny-depth, the daemon's --depth-model
    "real_conditioning": real_conditioning,  # builtin:tiny-controlnet-sd15, builtin:tiny-lora-sd15
}


def main(args: list[str]) -> None:
    with open(args[0], encoding="utf-8") as f:
        config = json.load(f)
    verdict = Verdict(config["verdict"])
    try:
        world = World(config)
        verdict.data["krita"] = world.krita.version()
        verdict.data["python"] = sys.version
        verdict.data["plugin"] = world.plugin.__file__
        import msgpack
        import websockets

        verdict.data["vendored"] = [msgpack.__file__, websockets.__file__]
        if config.get("window_first"):
            world.open_window()  # after the plugin's import: createActions runs for this window
    except Exception:
        verdict.data["setup_error"] = traceback.format_exc()
        verdict.write()
        return
    for name in config["scenarios"]:
        checks = Checks()
        started = time.monotonic()
        error = None
        try:
            SCENARIOS[name](checks, world)
        except Exception:
            error = traceback.format_exc()
        verdict.data["scenarios"][name] = {
            "ok": error is None and bool(checks.results) and all(ok for ok, _ in checks.results.values()),
            "checks": checks.results,
            "info": checks.info,
            "error": error,
            "seconds": round(time.monotonic() - started, 2),
        }
        verdict.write()
    verdict.data["done"] = True
    verdict.write()
    if config.get("hard_exit", True):
        # Krita's teardown of an offscreen main window can crash after our work is done;
        # the verdict is written, so leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# --- the daemon started on demand ------------------------------------------------------------
# The plugin installed by `install-plugin krita --serve-args "--model builtin:tiny-sd15 --port P"`
# and no daemon running (test_in_krita.py's autostart launch; config: autostart_port, bad_port,
# bad_record). Run in this order: first run, second run, concurrent first runs, failing start.


def _launcher(w: World) -> Any:
    return w.plugin.client.launcher


def _recorded_server(w: World) -> str:
    return f"ws://127.0.0.1:{w.config['autostart_port']}"


def _starts_logged(w: World, port: int) -> int:
    """How many starts the daemon's log shows (the launcher writes one header line a start)."""
    launcher = _launcher(w)
    try:
        with open(launcher.log_path(port), encoding="utf-8", errors="replace") as f:
            return f.read().count(launcher.HEADER)
    except OSError:
        return 0


def _processes_running(command: list[str]) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
        except OSError:
            continue
        if argv == command:
            found.append(int(name))
    return found


def _selected_document(w: World, size: int = 128) -> tuple[Any, Any, Any, bytes]:
    doc, layer = w.document(size, size)
    layer.setPixelData(pattern(size, size, "U8"), 0, 0, size, size)
    w.select_feathered(doc, (30, 30, 50, 50), 8)
    region = w.region_for(doc)
    mask = bytes(doc.selection().pixelData(region.x, region.y, region.width, region.height))
    return doc, layer, region, mask


def autostart_first_run(c: Checks, w: World) -> None:
    launcher, server = _launcher(w), _recorded_server(w)
    default = w.plugin.client.DEFAULT_SERVER
    c("the default address follows the recorded --port", default == server, default)
    c("no daemon runs yet", launcher.state(server).state == launcher.NOT_RUNNING, launcher.state(server))
    doc, layer, region, mask = _selected_document(w)
    started = time.monotonic()
    new = w.plugin.inpaint_layer(
        doc, layer, prompt="started on demand", steps=2, seed=1
    )  # the default address
    c.info["seconds"] = round(time.monotonic() - started, 2)
    check_new_layer(c, w, doc, layer, new, region, mask, "U8", "started on demand")
    state = launcher.state(server)
    c("the daemon is ready", state.state == launcher.READY and state.model == "builtin:tiny-sd15", state)
    pid = launcher.started_pid(server)
    c("the plugin started it", pid is not None, pid)
    c("detached from Krita: its own session", pid is not None and os.getsid(pid) == pid != os.getsid(0))
    c("started once", _starts_logged(w, w.config["autostart_port"]) == 1)
    w.config["autostart_pid"] = pid
    c.info["pid"] = pid


def autostart_second_run(c: Checks, w: World) -> None:
    launcher, server = _launcher(w), _recorded_server(w)
    doc, layer, region, mask = _selected_document(w)
    new = w.plugin.inpaint_layer(doc, layer, prompt="reused", steps=2, seed=2, server=server)
    check_new_layer(c, w, doc, layer, new, region, mask, "U8", "reused")
    pid = launcher.started_pid(server)
    c("the same daemon", pid is not None and pid == w.config.get("autostart_pid"), pid)
    c("still started once", _starts_logged(w, w.config["autostart_port"]) == 1)


def autostart_concurrent_first_runs(c: Checks, w: World) -> None:
    """Two jobs in their worker threads at once, no daemon running: one daemon for both."""
    from differential_inpaint import jobs
    from differential_inpaint.client import flow
    from differential_inpaint.krita_io import KritaDocument

    launcher, server = _launcher(w), _recorded_server(w)
    c("the running daemon stopped", launcher.stop(server) is True)
    c("not running", launcher.state(server).state == launcher.NOT_RUNNING, launcher.state(server))
    runs = []
    for i in range(2):
        doc, layer, _region, _mask = _selected_document(w)
        chosen = w.plugin.Settings.from_values(dict(prompt=f"concurrent {i}", steps=2, seed=i))
        runs.append((doc, flow.prepare(KritaDocument(doc, layer), chosen), chosen, w.names(doc)))
    outcomes: dict[int, Any] = {}
    threads = [
        jobs.JobThread(
            job,
            chosen,
            on_done=lambda results, i=i: outcomes.__setitem__(i, results),
            on_error=lambda error, i=i: outcomes.__setitem__(i, error),
        )
        for i, (_doc, job, chosen, _names) in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    c("both finished", w.wait_until(lambda: len(outcomes) == 2, 300), outcomes)
    for i, (doc, job, _chosen, names) in enumerate(runs):
        outcome = outcomes.get(i)
        if c(f"run {i} got its result", isinstance(outcome, list) and len(outcome) == 1, outcome):
            new = flow.finish(job, outcome)
            c(
                f"run {i} inserted its layer",
                named(new, f"concurrent {i}") and len(w.names(doc)) == len(names) + 1,
            )
    c("one start for both", _starts_logged(w, w.config["autostart_port"]) == 1)
    record = launcher.read_record()
    running = _processes_running(record.command)
    c("one daemon process", running == [launcher.started_pid(server)], running)


def autostart_failing_start(c: Checks, w: World) -> None:
    """A start command that fails (a bad --model): a clear message, the document unchanged."""
    import shutil

    launcher = _launcher(w)
    record_path = str(launcher.RECORD_FILE)
    with open(record_path, encoding="utf-8") as f:
        good = f.read()
    # What `install-plugin krita --serve-args "--model nope:missing --port Q"` writes.
    shutil.copyfile(w.config["bad_record"], record_path)
    try:
        doc, layer, _region, _mask = _selected_document(w)
        names, before = w.names(doc), bytes(layer.pixelData(0, 0, 128, 128))
        bad = f"ws://127.0.0.1:{w.config['bad_port']}"
        try:
            w.plugin.inpaint_layer(doc, layer, prompt="never", server=bad)
        except w.plugin.InpaintError as exc:
            c("the start failed", exc.code == "daemon_start_failed", f"{exc.code}: {exc.message}")
            c("it quotes the daemon's error", "Unknown model 'nope:missing'" in exc.message, exc.message)
            c("it names the log", f"daemon-{w.config['bad_port']}.log" in exc.message, exc.message)
            c.info["message"] = exc.message
        else:
            c("the start failed", False, "no exception")
        c("no layer added", w.names(doc) == names, w.names(doc))
        c("the layer unchanged", bytes(layer.pixelData(0, 0, 128, 128)) == before)
        c("nothing left running", launcher.started_pid(bad) is None)
    finally:
        with open(record_path, "w", encoding="utf-8") as f:
            f.write(good)


def autostart_remote_only_connects(c: Checks, w: World) -> None:
    launcher = _launcher(w)
    remote = f"ws://192.0.2.1:{w.config['autostart_port']}"  # TEST-NET: never this machine
    runtime = str(launcher.runtime_dir())
    before = sorted(os.listdir(runtime)) if os.path.isdir(runtime) else []
    doc, layer, _region, _mask = _selected_document(w, 64)
    names = w.names(doc)
    try:
        w.plugin.inpaint_layer(doc, layer, prompt="remote", server=remote, timeout=30)
    except w.plugin.InpaintError as exc:
        c("the daemon is unavailable", isinstance(exc, w.plugin.DaemonUnavailable), type(exc).__name__)
        c("it says the plugin only connects there", "only connects" in exc.message, exc.message)
    else:
        c("the daemon is unavailable", False, "no exception")
    after = sorted(os.listdir(runtime)) if os.path.isdir(runtime) else []
    c("nothing was started", after == before, (before, after))
    c("no layer added", w.names(doc) == names)


SCENARIOS.update(
    {
        "autostart_first_run": autostart_first_run,
        "autostart_second_run": autostart_second_run,
        "autostart_concurrent_first_runs": autostart_concurrent_first_runs,
        "autostart_failing_start": autostart_failing_start,
        "autostart_remote_only_connects": autostart_remote_only_connects,
    }
)


# --- Krita 5.2's kritarunner ----------------------------------------------------------------
# The main window's menu layout (:/kxmlgui5/krita5.xmlgui) is built into the krita executable
# only; kritarunner 5.1 opens a window without it, 5.2 crashes. test_in_krita.py lends it the
# krita executable's own, in a Qt resource file named by DI_KRITARUNNER_RESOURCES.
if os.environ.get("DI_KRITARUNNER_RESOURCES"):
    from differential_inpaint.qt import QtCore as _QtCore

    if not _QtCore.QResource.registerResource(os.environ["DI_KRITARUNNER_RESOURCES"]):
        raise RuntimeError(f"Qt refused the resource file {os.environ['DI_KRITARUNNER_RESOURCES']}")
