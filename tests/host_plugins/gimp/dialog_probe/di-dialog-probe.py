#!/usr/bin/env python3
"""Test-only GIMP plug-in: runs the real plug-in's `run` in INTERACTIVE mode
and answers its GimpUi.ProcedureDialog like a user would (installed into the
test chroot only, beside the real plug-in, whose package it imports).

Procedures `python-fu-di-dialog-probe` and `python-fu-di-dialog-probe-strength-map`
(which the plug-in's `run` takes for its strength-map procedure, by the name's end):
the real plug-in's arguments plus
`answer` ("ok" or "cancel"), `typed-prompt` (entered while the dialog is
open), `picked-model` (chosen in the model choice, when there is one),
`picked-map` (a drawable set on the first drawable chooser, the map's, as
GIMP's chooser popup sets it when a painter clicks a layer or channel there),
`clear-map` (click the map's Clear button), `click` (a button's label: clicked,
then the dialog's status line is awaited and recorded with the image's layers),
`picked-control` (a drawable set on the control layer's chooser, as its popup
would), `screenshot` (a PNG of the dialog, and beside it one per fold opened
in turn: `-conditioning` and `-advanced`, when not empty) and `verdict` (a
JSON file for what the dialog showed).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(os.path.dirname(HERE), "differential-inpaint")
sys.path[:0] = [os.path.join(PLUGIN, "differential_inpaint_gimp", "_vendor"), PLUGIN]

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
from differential_inpaint_gimp import plugin  # noqa: E402
from gi.repository import Gdk, Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

NAME = "python-fu-di-dialog-probe"


def _hidden_entries(widget: Gtk.Widget) -> int:
    """How many text entries show dots instead of their text."""
    count = int(isinstance(widget, Gtk.Entry) and not widget.get_visibility())
    if isinstance(widget, Gtk.Container):
        count += sum(_hidden_entries(child) for child in widget.get_children())
    return count


def _texts(widget: Gtk.Widget, found: list[str]) -> list[str]:
    if isinstance(widget, Gtk.Label) and widget.get_text():
        found.append(widget.get_text())
    if type(widget).__name__ == "SpinScale" and widget.get_label():  # its label is drawn, not a Gtk.Label
        found.append(widget.get_label().replace("_", ""))  # without its mnemonic mark
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            _texts(child, found)
    return found


def _combos(widget: Gtk.Widget, found: list[list[list[str]]]) -> list[list[list[str]]]:
    """The text columns of each row of every combo box (a Gimp.Choice shows as one)."""
    if isinstance(widget, Gtk.ComboBox):
        model = widget.get_model()
        columns = model.get_n_columns() if model is not None else 0
        found.append([[row[c] for c in range(columns) if isinstance(row[c], str)] for row in model or []])
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            _combos(child, found)
    return found


def _insensitive(widget: Gtk.Widget, found: list[str]) -> list[str]:
    """The tooltips of the widgets made insensitive (outermost only): why a setting is off."""
    if not widget.get_sensitive() and widget.get_tooltip_text():
        found.append(widget.get_tooltip_text())
        return found
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            _insensitive(child, found)
    return found


def _all(widget: Gtk.Widget, kind: type) -> list[Any]:
    found = [widget] if isinstance(widget, kind) else []
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            found += _all(child, kind)
    return found


def _screenshot(dialog: Gtk.Dialog, path: str) -> list[int]:
    """The dialog's window as a PNG; its size."""
    window = dialog.get_window()
    width, height = window.get_width(), window.get_height()
    Gdk.pixbuf_get_from_window(window, 0, 0, width, height).savev(path, "png", [], [])
    return [width, height]


def probe(
    procedure: Gimp.Procedure,
    run_mode: Gimp.RunMode,
    image: Gimp.Image,
    drawables: list[Gimp.Drawable],
    config: Gimp.ProcedureConfig,
    data: Any,
) -> Gimp.ValueArray:
    seen = {"dialogs": 0}
    folds: dict[str, Any] = {}  # the screenshots' folds: those left to open, the one open

    def answer() -> bool:
        dialogs = [w for w in Gtk.Window.list_toplevels() if isinstance(w, Gtk.Dialog) and w.get_visible()]
        if not dialogs:
            return True  # not shown yet: look again
        dialog = dialogs[0]
        if config.get_property("screenshot") and not seen.get("drawn"):
            seen["drawn"] = True
            # The pointer off the dialog: a tooltip popping up under it would cover the shot.
            pointer = Gdk.Display.get_default().get_default_seat().get_pointer()
            pointer.warp(dialog.get_screen(), 0, 0)
            return True  # one more round of the main loop, so the window is drawn
        seen["dialogs"] = len(dialogs)
        seen["title"] = dialog.get_title()
        seen["labels"] = _texts(dialog, [])
        seen["combos"] = _combos(dialog, [])
        seen["hidden_entries"] = _hidden_entries(dialog)
        seen["has_model_choice"] = plugin.MODEL_CHOICE in [a.name for a in procedure.get_aux_arguments()]
        shot = config.get_property("screenshot")
        if shot and "size" not in seen:
            seen["size"] = _screenshot(dialog, shot)
            folds["left"], folds["open"] = _all(dialog, Gtk.Expander), None
        if shot and folds["open"] is not None and folds["rounds"] < 2:
            folds["rounds"] += 1  # the fold's thumbnails are drawn in idle time after it opens
            return True
        if shot and folds["open"] is not None:  # a PNG per fold, drawn open by now
            fold = folds["open"]
            key = "conditioning" if fold.get_label().startswith("Conditioning") else "advanced"
            seen[f"{key}_size"] = _screenshot(dialog, shot.replace(".png", f"-{key}.png"))
            seen[f"{key}_open"] = [other.get_expanded() for other in _all(dialog, Gtk.Expander)]
            folds["open"] = None
        if shot and folds["left"]:
            folds["open"], folds["rounds"] = folds["left"].pop(0), 0
            folds["open"].set_expanded(True)
            return True  # drawn open on the next round
        config.set_property("prompt", config.get_property("typed-prompt"))  # the widgets follow
        seen["insensitive"] = _insensitive(dialog, [])
        seen["guidance"] = config.get_property("guidance")
        if config.get_property("picked-model"):
            config.set_property(plugin.MODEL_CHOICE, config.get_property("picked-model"))
            # The dialog follows the model's family at once (plugin._follow_family).
            seen["after_pick"] = {
                "labels": _texts(dialog, []),
                "insensitive": _insensitive(dialog, []),
                "guidance": config.get_property("guidance"),
            }
        click = config.get_property("click")
        if click and "clicked" not in seen:
            next(b for b in _all(dialog, Gtk.Button) if b.get_label() == click).clicked()
            seen["clicked"] = 0
            return True
        if click and "after_click" not in seen:
            labels = _texts(dialog, [])
            waiting = any(text.endswith("asking the daemon...") for text in labels)
            seen["clicked"] += 1
            if waiting and seen["clicked"] < 150:
                return True  # the job runs in a thread: look again
            seen["after_click"] = {
                "labels": labels,
                "layers": [item.get_name() for item in image.get_layers()],
            }
        picked = config.get_property("picked-map")
        if picked is not None:  # the popup's pick: the chooser's drawable, bound to the config
            _all(dialog, GimpUi.DrawableChooser)[0].set_drawable(picked)
            seen["after_map_pick"] = {"labels": _texts(dialog, [])}
        control = config.get_property("picked-control")
        if control is not None:  # the control layer chooser's popup pick
            dialog.get_widget("control-drawable", GObject.TYPE_NONE).set_drawable(control)
            seen["after_control_pick"] = {"labels": _texts(dialog, [])}
        if config.get_property("clear-map"):
            next(b for b in _all(dialog, Gtk.Button) if b.get_label() == "Clear").clicked()
            seen["after_map_clear"] = {"labels": _texts(dialog, [])}
        ok = config.get_property("answer") == "ok"
        dialog.response(Gtk.ResponseType.OK if ok else Gtk.ResponseType.CANCEL)
        return False

    GLib.timeout_add(300 if config.get_property("screenshot") else 100, answer)
    result = plugin.run(procedure, Gimp.RunMode.INTERACTIVE, image, drawables, config, data)
    seen["status"] = result.index(0).value_nick
    seen["message"] = result.index(1) if result.length() > 1 else None
    with open(config.get_property("verdict"), "w") as f:
        json.dump(seen, f)
    return result


class Probe(Gimp.PlugIn):
    def do_query_procedures(self) -> list[str]:
        return [NAME, NAME + plugin.STRENGTH_MAP]

    def do_set_i18n(self, name: str) -> bool:
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, probe, None)
        procedure.set_image_types("RGB*")
        plugin.add_arguments(procedure)
        rw = GObject.ParamFlags.READWRITE
        procedure.add_string_argument("answer", "Answer", "ok or cancel", "ok", rw)
        procedure.add_string_argument("typed-prompt", "Typed", "prompt typed", "", rw)
        procedure.add_string_argument("verdict", "Verdict", "JSON file to write", "", rw)
        procedure.add_string_argument("picked-model", "Picked", "model picked in the choice", "", rw)
        procedure.add_string_argument("screenshot", "Screenshot", "PNG of the dialog", "", rw)
        procedure.add_drawable_argument("picked-map", "Picked map", "drawable picked as the map", True, rw)
        procedure.add_drawable_argument(
            "picked-control", "Picked control", "drawable picked as the control layer", True, rw
        )
        procedure.add_boolean_argument("clear-map", "Clear map", "click the map's Clear", False, rw)
        procedure.add_string_argument("click", "Click", "label of a button to click first", "", rw)
        return procedure


Gimp.main(Probe.__gtype__, sys.argv)
