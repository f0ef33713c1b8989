"""The GIMP procedure `python-fu-differential-inpaint`: arguments, dialog, run.

`run` reads the region around the selection, sends it to the daemon through
the shared job client and inserts the result as a new layer; every failure
becomes EXECUTION_ERROR with a message that says what to do, and leaves the
image untouched.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject  # noqa: E402

# Only gi at import time: GIMP queries the plug-in at startup and drops it
# silently if that fails, so a damaged install must still show its menu entry
# and explain itself when run.
PROCEDURE = "python-fu-differential-inpaint"
_LABEL = "Differential Inpaint…"
_MENU = "<Image>/Filters/Generic"
_DEFAULT_SERVER = "ws://127.0.0.1:7865"  # client.DEFAULT_SERVER; no client import at query time
_RW = GObject.ParamFlags.READWRITE


def _add_arguments(procedure: Gimp.Procedure) -> None:
    procedure.add_string_argument("prompt", "_Prompt", "What to paint into the selection", "", _RW)
    procedure.add_string_argument("negative-prompt", "_Negative prompt", "What to keep out of it", "", _RW)
    procedure.add_double_argument(
        "strength",
        "S_trength",
        "How much may change where the selection is fully white (gray changes partly)",
        0.01,
        1.0,
        1.0,
        _RW,  # 0 would change nothing, and the daemon refuses it
    )
    procedure.add_int_argument("steps", "St_eps", "Sampling steps", 1, 200, 20, _RW)
    procedure.add_double_argument(
        "guidance", "_Guidance", "How closely to follow the prompt (CFG scale)", 0.0, 30.0, 7.0, _RW
    )
    procedure.add_int_argument(
        "seed", "See_d", "Random seed; -1 picks a new one each time", -1, 2**31 - 1, -1, _RW
    )
    procedure.add_string_argument(
        "model", "_Model", "Model name as the daemon lists it; empty for its default", "", _RW
    )
    procedure.add_double_argument(
        "grow", "Gro_w", "Pixels to grow the selection by before painting", 0.0, 256.0, 0.0, _RW
    )
    procedure.add_double_argument(
        "feather", "_Feather", "Pixels of extra softness on the selection edge", 0.0, 256.0, 0.0, _RW
    )
    procedure.add_string_argument(
        "server-url",
        "Daemon _address",
        "Where `differential-inpaint serve` listens",
        _DEFAULT_SERVER,
        _RW,
    )
    procedure.add_string_argument(
        "token",
        "_Token",
        "The token the daemon printed, when it asks for one (a daemon on another machine)",
        "",
        _RW,
    )


def settings_from_config(config: Gimp.ProcedureConfig) -> Any:
    from .core import Settings

    def get(name: str) -> Any:
        return config.get_property(name)

    return Settings(
        prompt=get("prompt") or "",
        negative_prompt=get("negative-prompt") or "",
        strength=float(get("strength")),
        steps=int(get("steps")),
        guidance=float(get("guidance")),
        seed=int(get("seed")),
        model=get("model") or "",
        grow=float(get("grow")),
        feather=float(get("feather")),
        server_url=(get("server-url") or "").strip() or _DEFAULT_SERVER,
        token=(get("token") or "").strip(),
    )


def _fail(procedure: Gimp.Procedure, message: str) -> Gimp.ValueArray:
    error = GLib.Error.new_literal(GLib.quark_from_string(PROCEDURE), message, 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def _show_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig) -> bool:
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PROCEDURE)
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title="Differential Inpaint")
    token = dialog.get_widget("token", GimpUi.LabelEntry.__gtype__)
    entry = token.get_entry() if isinstance(token, GimpUi.LabelEntry) else None
    if isinstance(entry, Gtk.Entry):
        entry.set_visibility(False)  # a secret: dots on screen, like a password
    dialog.fill(None)
    try:
        return bool(dialog.run())
    finally:
        dialog.destroy()


def run(
    procedure: Gimp.Procedure,
    run_mode: Gimp.RunMode,
    image: Gimp.Image,
    drawables: list[Gimp.Drawable],
    config: Gimp.ProcedureConfig,
    run_data: Any,
) -> Gimp.ValueArray:
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
        return _fail(procedure, "Select exactly one layer (not a mask or channel) and try again.")
    if run_mode == Gimp.RunMode.INTERACTIVE and not _show_dialog(procedure, config):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
    try:
        from . import job  # the client and websockets load only when the filter runs
    except ImportError as exc:
        return _fail(
            procedure,
            f"The Differential Inpaint plug-in is incomplete ({exc}). Reinstall it with "
            "`differential-inpaint install-plugin gimp` and restart GIMP.",
        )
    try:
        job.inpaint(image, drawables[0], settings_from_config(config))
    except job.JobFailed as exc:
        return _fail(procedure, str(exc))
    except Exception as exc:  # a bug: say so instead of GIMP's bare "plug-in crashed"
        traceback.print_exc(file=sys.stderr)
        return _fail(
            procedure,
            f"Differential Inpaint failed unexpectedly ({exc.__class__.__name__}: {exc}); the image "
            "was not changed. Please report this with the text GIMP printed to its error console.",
        )
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


class DifferentialInpaint(Gimp.PlugIn):
    def do_query_procedures(self) -> list[str]:
        return [PROCEDURE]

    def do_set_i18n(self, name: str) -> bool:
        return False  # no translations shipped

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label(_LABEL)
        procedure.add_menu_path(_MENU)
        procedure.set_documentation(
            "Repaint the selection with Differential Diffusion",
            "Sends the active layer around the selection to the local Differential Inpaint "
            "daemon. White selection changes fully, gray partly, black not at all. The result "
            "is a new layer above; the original layer is never modified.",
            name,
        )
        procedure.set_attribution("Differential Inpaint", "Differential Inpaint", "2025")
        _add_arguments(procedure)
        return procedure


def main() -> None:
    Gimp.main(DifferentialInpaint.__gtype__, sys.argv)
