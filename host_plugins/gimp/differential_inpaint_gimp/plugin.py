"""The GIMP procedures `python-fu-differential-inpaint` and
`python-fu-differential-inpaint-strength-map`: arguments, dialog, run.

`run` reads the region around the selection (or the map picked as
`mask-drawable`), sends it to the daemon through the shared job client and
inserts the result as a new layer; the strength-map procedure, with the same
arguments, inserts the daemon's effective map instead, without sampling. Every
failure becomes EXECUTION_ERROR with a message that says what to do, and leaves
the image untouched.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject  # noqa: E402

PROCEDURE = "python-fu-differential-inpaint"
STRENGTH_MAP = "-strength-map"
MAP_PROCEDURE = PROCEDURE + STRENGTH_MAP  # the same arguments; adds the map
_LABELS = {PROCEDURE: "Differential Inpaint…", MAP_PROCEDURE: "Differential Inpaint: Show Strength Map…"}
_MENU = "<Image>/Filters/Generic"
_RW = GObject.ParamFlags.READWRITE
_GIMP_INT_MAX = 2**31 - 1  # GIMP's int arguments are 32-bit
CLIENT_NAME = "differential-inpaint-gimp"
JOB_TIMEOUT = 30 * 60.0  # seconds; a stuck daemon must not hang GIMP forever

# GIMP queries the plug-in at startup and drops it silently if that fails, so a
# damaged install (no protocol copy, no msgpack) must still show its menu entry
# and explain itself when run.
try:
    from .client.settings import HOST_PARAMS, SETTINGS_PARAMS
    from .protocol import CONTROL_PARAMS, REFERENCE_PARAMS, Param, shown_on
    from .protocol.spec import GIMP

    _INCOMPLETE: ImportError | None = None
except ImportError as exc:  # reported by run()
    _INCOMPLETE = exc

# GIMP takes the maps as drawables (picked in the dialog, passed by scripts), not as the
# layer names Krita's settings hold: those declarations, under GIMP's argument names.
DRAWABLE_MAPS = {"mask_layer": "mask-drawable", "blend_layer": "blend-drawable"}


def gimp_arguments(declared: tuple[Param, ...]) -> tuple[Param, ...]:
    """Every argument of both procedures, in order: the settings GIMP shows, with the
    drawable maps just before the first setting that acts on a map (invert-mask)."""
    maps = tuple(
        dataclasses.replace(q, gimp_name=DRAWABLE_MAPS[q.name], hosts=q.hosts | {GIMP})
        for q in declared
        if q.name in DRAWABLE_MAPS
    )
    shown = shown_on(GIMP, declared)
    at = next((i for i, q in enumerate(shown) if q.name == "invert_mask"), len(shown))
    return (*shown[:at], *maps, *shown[at:])


SHOWN: tuple[Param, ...] = gimp_arguments(SETTINGS_PARAMS) if _INCOMPLETE is None else ()
# The dialog's groups. The map's settings stay together: the map, invert and depth on one
# row, its levels, depth model and the blend map in one column of Advanced; the area's
# (grow, feather, the selection's part, context) beside the daemon's in another.
MAP_SETTINGS = frozenset(
    {
        "mask_layer",
        "invert_mask",
        "depth",
        "mask_black",
        "mask_white",
        "mask_gamma",
        "depth_model",
        "depth_combine",
        "blend_layer",
    }
)
AREA_SETTINGS = frozenset({"grow", "feather"}) | (
    frozenset(q.name for q in HOST_PARAMS if q.name not in MAP_SETTINGS)
    if _INCOMPLETE is None
    else frozenset()
)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One conditioning input of the procedures. GIMP 3.0 has no list arguments, so each
    input is a fixed slot a script fills by name: the drawable `<prefix>-drawable` (none:
    the slot is unused) and one argument per declared parameter, `<prefix>-<option>`
    (control-kind, control-2-strength, reference-weight)."""

    prefix: str  # "control", "control-2", "reference"
    what: str  # in the dialog and in messages: "control layer 2"
    declared: tuple[Param, ...]  # the protocol's CONTROL_PARAMS or REFERENCE_PARAMS
    reference: bool = False  # an IP-Adapter's reference image, else a ControlNet's control image

    @property
    def drawable(self) -> Param:
        """The drawable argument, declared as the maps are (a text setting GIMP takes as a drawable)."""
        text = (
            "A layer whose whole picture steers the job as a reference image (IP-Adapter); none: off"
            if self.reference
            else "A layer (or channel) whose pixels over the job's region are a ControlNet's control "
            "image; none: off"
        )
        return Param(
            name=f"{self.prefix.replace('-', '_')}_layer",
            kind=str,
            default="",
            label=self.what.capitalize(),
            help=text,
            hosts=frozenset({GIMP}),
            gimp_name=f"{self.prefix}-drawable",
        )

    @property
    def params(self) -> tuple[Param, ...]:
        """The declared parameters under this slot's argument names, their help saying whose."""
        return tuple(
            dataclasses.replace(
                q,
                name=f"{self.prefix.replace('-', '_')}_{q.name}",
                gimp_name=f"{self.prefix}-{q.option}",
                help=f"{q.help} ({self.what})",
                advanced=False,
            )
            for q in self.declared
        )

    def values(self, config: Gimp.ProcedureConfig) -> dict[str, Any]:
        """The slot's parameters by their protocol names, as the config holds them (empty
        optional text: None, the daemon's choice)."""
        values = {}
        for q, mine in zip(self.declared, self.params, strict=True):
            value = config.get_property(mine.gimp_argument)
            if q.kind is str:
                value = (value or "").strip() or (None if q.optional else "")
            values[q.name] = value
        return values


SLOTS: tuple[Slot, ...] = (
    (
        Slot("control", "control layer", CONTROL_PARAMS),
        Slot("control-2", "control layer 2", CONTROL_PARAMS),
        Slot("reference", "reference layer", REFERENCE_PARAMS, reference=True),
    )
    if _INCOMPLETE is None
    else ()
)
# Every drawable argument by its setting's name: the maps, then each slot's.
DRAWABLES: dict[str, str] = {
    **DRAWABLE_MAPS,
    **{slot.drawable.name: slot.drawable.gimp_argument for slot in SLOTS},
}
# The settings shown with the conditioning rather than with the prompt.
CONDITIONING_SETTINGS = frozenset({"loras"})
# Every argument after run-mode, image and drawables: the settings, then the slots'.
ARGUMENTS: tuple[Param, ...] = SHOWN + tuple(q for slot in SLOTS for q in (slot.drawable, *slot.params))


def _nicks(params: tuple[Param, ...]) -> dict[str, str]:
    """Each label with a mnemonic: its first letter no earlier label took."""
    taken: set[str] = set()
    nicks = {}
    for param in params:
        label = param.label
        index = next((i for i, c in enumerate(label) if c.isalpha() and c.lower() not in taken), None)
        if index is not None:
            taken.add(label[index].lower())
            label = label[:index] + "_" + label[index:]
        nicks[param.name] = label
    return nicks


def add_arguments(procedure: Gimp.Procedure) -> None:
    """The procedure's arguments; when the plug-in runs (not when GIMP queries it), the
    daemon's models first, for the dialog's model choice."""
    if "-run" in sys.argv and MODELS.choice is None and _INCOMPLETE is None:
        try:
            MODELS.load()
        except Exception:  # no daemon (or no answer within a second): the model is free text
            MODELS.choice = None
    _add_arguments(procedure)


def _add_arguments(procedure: Gimp.Procedure) -> None:
    """One procedure argument per setting GIMP shows, named as the setting (dashes for
    underscores). An optional number is -1 for "none"; optional text is empty; a list
    (the strength fan) is text such as "30%, 50%, 70%"; a choice (depth) is a Gimp.Choice
    of its values; a map is a drawable (none: the selection); so is each conditioning slot's
    input, its parameters following it."""
    nicks = _nicks(ARGUMENTS)
    for param in ARGUMENTS:
        name, nick, blurb = param.gimp_argument, nicks[param.name], param.help
        lo, hi = param.bounds()
        if param.unit:  # the dialog shows the nick: the unit goes beside the label
            nick, blurb = f"{nick} ({param.unit})", f"{blurb} ({param.unit})"
        if param.name in DRAWABLES:
            procedure.add_drawable_argument(name, nick, blurb, True, _RW)
        elif isinstance(param.kind, type) and issubclass(param.kind, Enum):
            procedure.add_choice_argument(name, nick, blurb, choice_of(param.kind), param.default.value, _RW)
        elif param.kind is str:
            procedure.add_string_argument(name, nick, blurb, param.default or "", _RW)
        elif param.kind is tuple:  # GIMP 3.0's dialog has no widget for a list: text
            default = param.format_text(param.default)
            if param.item is float:  # other lists (LoRAs) give their example in their help
                blurb = f"{blurb}; e.g. {param.format_text((0.3, 0.5, 0.7))}"
            procedure.add_string_argument(name, nick, blurb, default, _RW)
        elif param.kind is bool:
            procedure.add_boolean_argument(name, nick, blurb, param.default, _RW)
        elif param.kind is int:
            low = -1 if param.optional else int(lo) + param.lo_open
            default = -1 if param.default is None else param.default
            procedure.add_int_argument(name, nick, blurb, low, min(int(hi), _GIMP_INT_MAX), default, _RW)
        elif param.kind is float:
            # An open bound is refused by the daemon: the slider stops one hundredth inside.
            low, high = lo + 0.01 * param.lo_open, hi - 0.01 * param.hi_open
            procedure.add_double_argument(name, nick, blurb, low, high, param.default, _RW)
        else:  # a declaration GIMP cannot show: a bug caught by the tests
            raise TypeError(f"no GIMP argument for the setting {param.name}")
        if param.choices == "models" and MODELS.choice is not None:
            # Beside the free-text argument (which scripts use, with any name): the daemon's
            # list for the dialog, as an auxiliary argument (not part of the PDB call).
            procedure.add_choice_aux_argument(
                MODEL_CHOICE, nick, f"{blurb} (the models the daemon lists)", MODELS.choice, "", _RW
            )
        elif param.choices in MODELS.addons:  # a slot's ControlNet or IP-Adapter, the same way
            choice = MODELS.addons[param.choices][0]
            procedure.add_choice_aux_argument(
                choice_argument(param), nick, f"{blurb} (as the daemon lists them)", choice, "", _RW
            )


_CHOICES: dict[type, Gimp.Choice] = {}


def choice_of(kind: type[Enum]) -> Gimp.Choice:
    """The Gimp.Choice of an Enum setting: its values as nicks (what scripts pass), each
    shown capitalised. Kept for the plug-in's life, like the models' choice (below)."""
    if kind not in _CHOICES:
        choice = Gimp.Choice.new()
        for index, member in enumerate(kind):
            choice.add(member.value, index, member.value.capitalize(), "")
        _CHOICES[kind] = choice
    return _CHOICES[kind]


class _Models:
    """The daemon's models as a `Gimp.Choice`, read when the plug-in runs (never when GIMP
    queries it at startup: registration must not depend on the daemon, and the list GIMP
    stores then would go stale). `choice` is None when no daemon answered: the model is
    then free text. The address asked is the one the last run used (a global parasite)."""

    def __init__(self) -> None:
        self.choice: Gimp.Choice | None = None
        self.server = ""
        self.names: list[str] = []
        self.families: dict[str, str] = {}  # model name -> family, as the daemon listed them
        self.default = ""  # the daemon's default model
        # "controlnets", "ip_adapters": the choice of a slot's model and the names in it.
        self.addons: dict[str, tuple[Gimp.Choice, list[str]]] = {}
        self.loras: list[tuple[str, str]] = []  # (name, family) of the LoRAs the daemon lists
        self.listing: Any = None  # the welcome: the text encoders and VAEs it lists

    def load(self) -> None:
        from .client import connection

        self.server = connection.normalize_server(remembered_server())
        welcome = connection.server_info(self.server, timeout=1.0)
        choice = Gimp.Choice.new()
        default = self.default = welcome.default_model or ""
        choice.add("", 0, "Daemon's default" + (f" ({default})" if default else ""), "")
        for model in welcome.models:
            self.add(choice, model.name, model.family)
        for key, automatic in ADDON_CHOICES.items():
            addon, names = Gimp.Choice.new(), []
            addon.add("", 0, automatic, "")
            for info in getattr(welcome, key):
                names.append(info.name)
                addon.add(
                    info.name,
                    len(names),
                    f"{info.name} \u2014 {info.family}" if info.family else info.name,
                    "",
                )
            self.addons[key] = (addon, names)
        self.loras = [(info.name, info.family) for info in welcome.loras]
        self.listing = welcome
        # Kept here for the plug-in's life: GIMP 3.0.4's Python bindings let it be freed
        # while the procedure still uses it (a crash when the procedure runs).
        self.choice = choice

    def add(self, choice: Gimp.Choice, name: str, family: str) -> None:
        self.names.append(name)
        self.families[name] = family
        from .protocol.spec import family_label

        label = f"{name} \u2014 {family_label(family)}" if family else name
        if name.startswith(TEST_MODEL_PREFIX):
            label += " (test model: paints noise)"
        choice.add(name, len(self.names), label, "")


# The add-on lists a slot's model is picked from in the dialog, and what empty is called
# there (short: a combo is as wide as its longest item; the tooltip says what it picks).
ADDON_CHOICES = {"controlnets": "Automatic", "ip_adapters": "Automatic"}
MODELS = _Models()
MODEL_CHOICE = "model-choice"  # the auxiliary argument holding the daemon's list
TEST_MODEL_PREFIX = "builtin:"  # the daemon's random-weight test models
SERVER_PARASITE = "differential-inpaint-server"  # global: the address the last run used


def choice_argument(param: Param) -> str:
    """The auxiliary argument holding the daemon's list for a slot's text argument (as
    model-choice does for the model): control-model-choice, reference-model-choice."""
    return f"{param.gimp_argument}-choice"


def remembered_server() -> str:
    """The daemon address the last run used, or the plug-in's default."""
    from .client import DEFAULT_SERVER

    try:
        parasite = Gimp.get_parasite(SERVER_PARASITE)
        if parasite is not None:
            return bytes(parasite.get_data()).decode() or DEFAULT_SERVER
    except Exception:  # no GIMP to ask, a damaged value: the default will do
        pass
    return DEFAULT_SERVER


def remember_server(server: str) -> None:
    try:
        data = server.encode()
        Gimp.attach_parasite(Gimp.Parasite.new(SERVER_PARASITE, Gimp.PARASITE_PERSISTENT, data))
    except Exception:  # a convenience: never a reason to fail a run
        traceback.print_exc(file=sys.stderr)


def settings_from_config(config: Gimp.ProcedureConfig) -> Any:
    """The settings the config holds; InpaintError when a list's text is not numbers."""
    from .client import InpaintError, Settings

    values = {}
    for param in SHOWN:
        if param.name in DRAWABLE_MAPS:  # the drawables themselves: `maps_from_config`
            continue
        value = config.get_property(param.gimp_argument)
        if param.kind is str:
            value = (value or "").strip() or (None if param.optional else "")
        elif param.kind is tuple:
            try:
                value = param.parse_text(value or "")
            except ValueError as exc:
                what = (
                    f"numbers separated by commas, such as {param.format_text((0.3, 0.5, 0.7))}"
                    if param.item is float
                    else "as its help says"
                )
                raise InpaintError(
                    f"Cannot start: {param.label} must be {what} ({exc}); or leave it empty.",
                    "invalid_settings",
                ) from None
        elif param.optional and value is not None and value < 0:
            value = None
        values[param.name] = value
    return Settings.from_values(values)


def maps_from_config(config: Gimp.ProcedureConfig, image: Gimp.Image) -> Any:
    """The drawables picked as the change map and the blend map (None: the selection, and
    the alpha made from the change map), and the slots' control and reference layers with
    their parameters, as `flow.Maps`. InpaintError naming the argument when a drawable is
    not this image's or a slot's parameters do not go together (start after end)."""
    from .client import flow
    from .gimp_io import check_drawable

    picked = {name: config.get_property(argument) for name, argument in DRAWABLES.items()}
    for name, what in (("mask_layer", "map"), ("blend_layer", "blend map")):
        if picked[name] is not None:
            check_drawable(image, picked[name], what)
    controls, references = [], []
    for slot in SLOTS:
        drawable = picked[slot.drawable.name]
        if drawable is None:
            continue
        check_drawable(image, drawable, slot.what)
        if slot.reference:
            references.append(flow.ReferenceInput(drawable, slot_params(slot, slot.values(config))))
        else:
            controls.append(flow.ControlInput(drawable, slot_params(slot, slot.values(config))))
    return flow.Maps(
        mask=picked["mask_layer"],
        blend=picked["blend_layer"],
        controls=tuple(controls),
        references=tuple(references),
    )


def slot_params(slot: Slot, values: dict[str, Any]) -> Any:
    """A slot's `ControlParams` or `ReferenceParams` by the protocol's own check, its words
    made the dialog's (labels for wire names): "Cannot start: control layer: Start (0.6)
    must be below End (0.5)"."""
    from . import protocol as p
    from .client import InpaintError

    if isinstance(values.get("kind"), str):
        values["kind"] = values["kind"].lower()  # "Canny" typed: the daemon's word is "canny"
    read = p.ReferenceParams.from_wire if slot.reference else p.ControlParams.from_wire
    try:
        return read(values, slot.what)
    except p.ProtocolError as exc:
        words = exc.message
        for q in slot.declared:
            words = words.replace(f"field '{q.name}'", q.label).replace(f"'{q.name}'", q.label)
        raise InpaintError(f"Cannot start: {words}.", "invalid_settings") from None


def _fail(procedure: Gimp.Procedure, message: str) -> Gimp.ValueArray:
    error = GLib.Error.new_literal(GLib.quark_from_string(procedure.get_name()), message, 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def _daemon_state(config: Gimp.ProcedureConfig) -> str:
    """One line on the daemon at the configured address (a short handshake)."""
    try:
        from .client import launcher

        server = (config.get_property("server-url") or "").strip() or None
        return "Daemon: " + launcher.status_line(server, launcher.state(server, timeout=1.0))
    except Exception:  # the dialog must open whatever happens here
        return "Daemon: its state is unknown; a run starts it if this plugin can."


def _daemon_buttons(config: Gimp.ProcedureConfig, state: Any) -> Any:  # state: the Gtk.Label
    """Start and Stop for the daemon at the configured address. Each runs in a worker
    thread; the state line is updated on GIMP's main loop (GLib.idle_add)."""
    from gi.repository import Gtk

    def server() -> str | None:
        return (config.get_property("server-url") or "").strip() or None

    def show(text: str) -> bool:
        state.set_text(text)  # a Gtk.Label (ProcedureDialog.get_label)
        return False  # once

    def work(action: str) -> None:
        from .client import InpaintError, launcher

        try:
            if action == "start":
                launcher.start(server(), on_status=lambda line: GLib.idle_add(show, f"Daemon: {line}"))
            else:
                launcher.stop(server())
            text = _daemon_state(config)
        except InpaintError as exc:
            text = f"Daemon: {exc.message}"
        GLib.idle_add(show, text)

    box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    for action, text in (("start", "Start daemon"), ("stop", "Stop daemon")):
        button = Gtk.Button(label=text)
        button.connect(
            "clicked", lambda _b, a=action: threading.Thread(target=work, args=(a,), daemon=True).start()
        )
        box.pack_start(button, False, False, 0)
    box.show_all()
    return box


def _use_model_choice(config: Gimp.ProcedureConfig) -> bool:
    """Whether the dialog shows the daemon's models as a choice: it answered when the
    plug-in started and is the one the settings name. The choice then holds the model
    already chosen, listed by the daemon or not."""
    from .client import connection

    choice = MODELS.choice
    if choice is None or connection.normalize_server(config.get_property("server-url")) != MODELS.server:
        return False
    model = (config.get_property("model") or "").strip()
    if model and model not in MODELS.names:
        MODELS.add(choice, model, "")
    config.set_property(MODEL_CHOICE, model)
    return True


def _use_addon_choices(config: Gimp.ProcedureConfig) -> dict[str, str]:
    """The slots' model arguments the dialog shows as the daemon's lists (ControlNets,
    IP-Adapters), each text argument -> its auxiliary choice, which holds the name already
    there (added to the list when the daemon does not list it); empty when the daemon did
    not answer or is not the one the settings name."""
    from .client import connection

    if not MODELS.addons or connection.normalize_server(config.get_property("server-url")) != MODELS.server:
        return {}
    listed = {}
    for param in ARGUMENTS:
        if param.choices not in MODELS.addons:
            continue
        choice, names = MODELS.addons[param.choices]
        value = (config.get_property(param.gimp_argument) or "").strip()
        if value and value not in names:
            names.append(value)
            choice.add(value, len(names), value, "")
        config.set_property(choice_argument(param), value)
        listed[param.gimp_argument] = choice_argument(param)
    return listed


def loras_listed(family: str) -> str:
    """What the dialog says under LoRAs: the daemon's, those for the model's family first."""
    if not MODELS.loras:
        return "The daemon lists no LoRAs."
    ordered = sorted(MODELS.loras, key=lambda item: item[1] != family)
    return "The daemon's LoRAs: " + ", ".join(f"{name} ({kind})" if kind else name for name, kind in ordered)


def parts_offered(model: str) -> dict[str, tuple[str, ...]]:
    """role -> the text encoders or VAEs the painter may choose among for `model` ("": the
    daemon's default), as both hosts decide it (`flow.part_choices`); empty when none."""
    from .client import flow

    listing = MODELS.listing
    if listing is None:
        return {}
    chosen = model or MODELS.default
    info = next((m for m in listing.models if m.name == chosen), None)
    return flow.part_choices(info, listing.text_encoders, listing.vaes)


def family_of(model: str) -> str:
    """The family of `model` ("": the daemon's default) as the daemon listed it; "" when
    not known."""
    return MODELS.families.get(model or MODELS.default, "")


def _follow_family(dialog: Any, config: Gimp.ProcedureConfig, shown: dict[str, Any]) -> None:
    """While the dialog is open: the settings the chosen model's family does not take are
    insensitive with a tooltip saying why (the daemon ignores them), and a setting whose
    default depends on the family (guidance: 3.5 for FLUX dev) follows the new family's
    default as long as it holds the old family's (the painter has not changed it). The text
    encoders and VAE are sensitive only where the painter has a choice (`parts_offered`),
    their tooltip naming the daemon's files."""
    from .client import flow
    from .protocol.spec import applies_to, family_label

    family = {"now": family_of(config.get_property(MODEL_CHOICE) or "")}
    note = dialog.get_label("model-family", "", False, False)

    def apply(before: str) -> None:
        now = family["now"]
        left_out = []
        parts = parts_offered(config.get_property(MODEL_CHOICE) or "")
        for param in SHOWN:
            takes = applies_to(param, now)
            why = f"{family_label(now)} models do not take this setting (the daemon ignores it)"
            if param.name in flow.PART_PARAMS:  # offered only where the painter has a choice
                offered = flow.offered_parts(parts, param.name)
                takes = bool(offered) or bool(config.get_property(param.gimp_argument))
                why = "The model holds its own, or the daemon matches the one file that fits"
                if offered:
                    why = f"{param.help}. The daemon offers {offered}"
            elif not takes:
                left_out.append(param.label.lower())
            widget = shown.get(param.name)
            if widget is not None:
                widget.set_sensitive(takes)
                widget.set_tooltip_text(why if not takes or param.name in flow.PART_PARAMS else param.help)
            name = param.gimp_argument
            if takes and before != now and config.get_property(name) == param.default_for(before):
                config.set_property(name, param.default_for(now))
        text = f"Model family: {family_label(now)}" if now else ""
        if left_out:
            text += f"; it takes no {' or '.join(left_out)}"
        note.set_text(text)

    def changed(*_args: Any) -> None:
        before, family["now"] = family["now"], family_of(config.get_property(MODEL_CHOICE) or "")
        apply(before)  # a model of the same family may still differ in its parts

    apply("")  # a setting still at the general default takes the chosen family's at once
    config.connect(f"notify::{MODEL_CHOICE}", changed)


def _row(dialog: Any, name: str, widgets: list[str], spacing: int = 18, homogeneous: bool = False) -> Any:
    """A horizontal box (a Gtk.Box) of the dialog's `widgets`, called `name`."""
    from gi.repository import Gtk

    box = dialog.fill_box(name, widgets)
    box.set_orientation(Gtk.Orientation.HORIZONTAL)
    box.set_spacing(spacing)
    box.set_homogeneous(homogeneous)
    return box


_NONE_PICKED = {"mask_layer": "None: the selection", "blend_layer": "None: made from the map"}


def map_name(drawable: Gimp.Drawable | None, param: Param) -> str:
    """What the dialog says beside a drawable's chooser (a map's, a control or reference
    layer's): the drawable picked and its kind."""
    if drawable is None:
        return _NONE_PICKED.get(param.name, "None: not used")
    kind = (
        "layer mask"
        if isinstance(drawable, Gimp.LayerMask)
        else "channel"
        if isinstance(drawable, Gimp.Channel)
        else "layer"
    )
    return f"{drawable.get_name()} ({kind})"


def _name_the_map(dialog: Any, config: Gimp.ProcedureConfig, param: Param, label: Any) -> None:
    """Keep `label` naming the drawable picked for `param`, add Clear to its chooser (whose
    popup cannot pick "none"), and draw the chooser's thumbnail once it has a size (GIMP
    3.0.4 draws it only when a drawable is set, when a preset one has no size yet)."""
    from gi.repository import GLib, Gtk

    name = param.gimp_argument
    chooser = dialog.get_widget(name, GObject.TYPE_NONE)
    clear = Gtk.Button(label="Clear")
    clear.set_tooltip_text(map_name(None, param))
    clear.connect("clicked", lambda _button: config.set_property(name, None))
    chooser.pack_start(clear, False, False, 0)  # the chooser is a horizontal box
    clear.show()

    def show(*_args: Any) -> None:
        drawable = config.get_property(name)
        label.set_text(map_name(drawable, param))
        clear.set_sensitive(drawable is not None)

    def redraw(chooser: Any) -> bool:
        if chooser.get_drawable() is not None:
            chooser.set_drawable(chooser.get_drawable())
        return False  # once

    sized = {"size": (0, 0)}

    def allocated(widget: Any, allocation: Any) -> None:
        # Each new size (shown at last, a fold opened: a chooser in a closed fold has
        # none), once: the chooser draws its thumbnail at the size it has when set.
        size = (allocation.width, allocation.height)
        if size != sized["size"] and min(size) > 1:
            sized["size"] = size
            GLib.idle_add(redraw, widget)

    chooser.connect("size-allocate", allocated)
    config.connect(f"notify::{name}", show)
    show()


def _show_map_button(show_map: Callable[[Callable[[str], None]], None], status: Any) -> Any:
    """Show strength map, in the dialog: the map as the dialog's settings stand is added as a
    layer at once (replacing the one added before), so levels can be tried before painting.
    Its outcome shows on the dialog's status line (`status`, a Gtk.Label)."""
    from gi.repository import Gtk

    button = Gtk.Button(label="Show strength map")
    button.set_valign(Gtk.Align.CENTER)  # the row is as tall as the map's thumbnail
    button.set_tooltip_text(
        "Add the strength map these settings give as a gray layer (white changes fully), "
        "without painting; the dialog stays open"
    )

    def done(text: str) -> None:
        status.set_text(f"Strength map: {text}")
        button.set_sensitive(True)

    def clicked(_button: Any) -> None:
        button.set_sensitive(False)
        status.set_text("Strength map: asking the daemon...")
        show_map(done)

    button.connect("clicked", clicked)
    button.show()
    return button


def conditioning_summary(config: Gimp.ProcedureConfig) -> str:
    """The conditioning fold's title: what steers the job besides the prompt, so that it
    shows with the fold closed ("Conditioning: 1 control layer, 2 LoRAs")."""
    used = [s for s in SLOTS if config.get_property(s.drawable.gimp_argument) is not None]
    controls, references = sum(not s.reference for s in used), sum(s.reference for s in used)
    loras = (config.get_property("loras") or "").replace(";", ",")
    count = sum(bool(part.strip()) for part in loras.split(","))
    parts = [
        f"{n} {word}{'s' if n > 1 else ''}"
        for n, word in ((controls, "control layer"), (references, "reference layer"), (count, "LoRA"))
        if n
    ]
    return "Conditioning: " + (", ".join(parts) if parts else "ControlNet, reference image, LoRAs")


def _one_fold_open(folds: list[Any]) -> None:
    """Opening one of the dialog's folds (Gtk.Expanders) closes the others: each alone fits
    a 768-pixel screen, both together would not."""

    def opened(fold: Any, _spec: Any) -> None:
        if fold.get_expanded():
            for other in folds:
                if other is not fold:
                    other.set_expanded(False)

    for fold in folds:
        fold.connect("notify::expanded", opened)


def _show_dialog(
    procedure: Gimp.Procedure,
    config: Gimp.ProcedureConfig,
    describe: Callable[[], tuple[str, str]],
    title: str,
    show_map: Callable[[Callable[[str], None]], None] | None = None,
) -> bool:
    """The settings dialog; True on OK. `describe()` gives the action ("Repaint whole
    layer", "Inpaint selection", "Inpaint by map", "Show strength map") and what it does:
    they head the dialog, the action labels its OK button (both follow the map picked), so
    nothing selected is no surprise. `show_map`: the Show strength map button's job."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(procedure.get_name())
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=title)
    for param in SHOWN:
        if not param.secret:
            continue
        widget = dialog.get_widget(param.gimp_argument, GimpUi.LabelEntry.__gtype__)
        entry = widget.get_entry() if isinstance(widget, GimpUi.LabelEntry) else None
        if isinstance(entry, Gtk.Entry):
            entry.set_visibility(False)  # a secret: dots on screen, like a password
    choosing = _use_model_choice(config)
    listed = _use_addon_choices(config)

    def widget_name(param: Param) -> str:
        name = MODEL_CHOICE if choosing and param.choices == "models" else param.gimp_argument
        name = listed.get(name, name)  # a slot's ControlNet or IP-Adapter: the daemon's list
        if param.percent and param.kind is float:
            dialog.get_spin_scale(name, 100.0)  # a slider in %, as Krita shows it
        return name

    def with_name(param: Param) -> list[str]:
        """The widget, and for a drawable map the label naming the drawable picked: GIMP
        3.0's chooser shows only a thumbnail, drawn only when a drawable is picked."""
        if param.name not in DRAWABLES:
            return [widget_name(param)]
        label = dialog.get_label(f"{param.gimp_argument}-name", "", False, False)
        _name_the_map(dialog, config, param, label)
        return [param.gimp_argument, f"{param.gimp_argument}-name"]

    # The text encoders and VAE only where the model chosen offers a choice (or one is set):
    # most models hold their parts, and the folds must fit 768 pixels.
    from .client.flow import PART_PARAMS

    model_now = config.get_property(MODEL_CHOICE) if choosing else config.get_property("model")
    with_parts = bool(parts_offered(model_now or "")) or any(
        config.get_property(q.gimp_argument) for q in SHOWN if q.name in PART_PARAMS
    )
    dialog_params = [q for q in SHOWN if with_parts or q.name not in PART_PARAMS]
    basic = [widget_name(q) for q in dialog_params if not q.advanced and q.name not in CONDITIONING_SETTINGS]
    if choosing:  # the chosen model's family under the choice (`_follow_family`)
        basic.insert(basic.index(MODEL_CHOICE) + 1, "model-family")
        # The widgets of the settings some family does not take, made before `fill` uses them.
        family_bound = {
            param.name: dialog.get_widget(widget_name(param), GObject.TYPE_NONE)
            for param in dialog_params
            if param.families is not None
        }
        _follow_family(dialog, config, family_bound)
    action, what = describe()
    header = dialog.get_label("action", f"{action}. {what}", False, False)
    # Where the daemon stands, above the settings (a run starts a local one if needed).
    state = dialog.get_label("daemon-state", _daemon_state(config), False, False)
    # The map, invert and depth side by side on one row where the first was: one glance.
    in_row = [name for q in SHOWN if not q.advanced and q.name in MAP_SETTINGS for name in with_name(q)]
    if in_row:
        map_row = _row(dialog, "map-row", in_row)
        if show_map is not None:  # the map as the settings stand, without leaving the dialog
            map_row.pack_start(_show_map_button(show_map, state), False, False, 0)
        basic[basic.index(in_row[0])] = "map-row"
        basic = [name for name in basic if name not in in_row]
    # The advanced settings folded away in three columns (the sampling; the map's levels,
    # depth and blend; the area and the daemon), so that open the dialog fits 768 pixels.
    advanced = [param for param in dialog_params if param.advanced]
    columns = [
        [q for q in advanced if q.name not in MAP_SETTINGS and q.name not in AREA_SETTINGS],
        [q for q in advanced if q.name in MAP_SETTINGS and q.name not in AREA_SETTINGS],
        [q for q in advanced if q.name in AREA_SETTINGS],
    ]
    names = []
    for index, column in enumerate(columns):
        names.append(f"advanced-{index}")
        dialog.fill_box(names[-1], [name for q in column for name in with_name(q)])
    dialog.get_label("advanced-title", "Advanced", False, False)
    _row(dialog, "advanced-box", names, spacing=12, homogeneous=True)
    folds = [dialog.fill_expander("advanced", "advanced-title", False, "advanced-box")]
    # The conditioning in its own fold, a column per slot (the LoRAs under the reference).
    names = []
    for index, slot in enumerate(SLOTS):
        names.append(f"conditioning-{index}")
        extra = [q for q in SHOWN if q.name in CONDITIONING_SETTINGS] if index == len(SLOTS) - 1 else []
        widgets = [n for q in (slot.drawable, *slot.params, *extra) for n in with_name(q)]
        if extra and listed:  # the daemon answered: which LoRAs it has, to type their names
            family = family_of(
                config.get_property(MODEL_CHOICE) if choosing else config.get_property("model")
            )
            note = dialog.get_label("loras-listed", loras_listed(family), False, False)
            note.set_line_wrap(True)
            note.set_max_width_chars(32)
            note.set_xalign(0.0)
            widgets.append("loras-listed")
        dialog.fill_box(names[-1], widgets)
    fold_title = dialog.get_label("conditioning-title", conditioning_summary(config), False, False)
    _row(dialog, "conditioning-box", names, spacing=12, homogeneous=True)
    folds.insert(0, dialog.fill_expander("conditioning", "conditioning-title", False, "conditioning-box"))
    dialog.fill(["action", "daemon-state", *basic, "conditioning", "advanced"])
    _one_fold_open(folds)
    for name in (*(slot.drawable.gimp_argument for slot in SLOTS), "loras"):
        config.connect(f"notify::{name}", lambda *_a: fold_title.set_text(conditioning_summary(config)))
    # Start and Stop on the daemon's line (a row saved: open, the dialog fits 768 pixels).
    line, row = state.get_parent(), Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
    position = line.child_get_property(state, "position")
    line.remove(state)
    row.pack_start(state, False, False, 0)
    row.pack_start(_daemon_buttons(config, state), False, False, 0)
    line.pack_start(row, False, False, 0)
    line.reorder_child(row, position)
    row.show_all()
    ok = dialog.get_widget_for_response(Gtk.ResponseType.OK)

    def follow_the_map(*_args: Any) -> None:
        action, what = describe()
        header.set_text(f"{action}. {what}")
        if isinstance(ok, Gtk.Button):
            ok.set_label(action)

    follow_the_map()
    config.connect(f"notify::{DRAWABLE_MAPS['mask_layer']}", follow_the_map)
    config.connect("notify::depth", follow_the_map)
    try:
        accepted = bool(dialog.run())
    finally:
        dialog.destroy()
    if choosing:
        if accepted:
            config.set_property("model", config.get_property(MODEL_CHOICE))
        # Saved with the last values: "" is in every later list, a model name may not be.
        config.set_property(MODEL_CHOICE, "")
    for text, aux in listed.items():
        if accepted:
            config.set_property(text, config.get_property(aux))
        config.set_property(aux, "")
    return accepted


def _what(
    image: Gimp.Image,
    strength_map: bool,
    mask: Gimp.LayerMask | None,
    picked: Gimp.Drawable | None,
    depth: str = "none",
) -> tuple[str, str]:
    """(action, what it does) of a run on `image`; `mask`: the layer mask the painter is
    editing; `picked`: the drawable picked as the map (mask-drawable); `depth`: "near" or
    "far" when the daemon's depth estimate is the map."""
    from .client.flow import MAP_LAYER_NAME
    from .gimp_io import action_text, whole_layer

    if strength_map:
        return (
            "Show strength map",
            f"The map a run would use (levels, depth, grow, feather, strength) is added as the layer "
            f"'{MAP_LAYER_NAME}': white changes fully, black not at all. Nothing is painted.",
        )
    within = "" if whole_layer(image) else ", within the selection"
    if depth in ("near", "far"):
        return (
            "Inpaint by depth",
            f"The daemon's depth estimate decides: {depth} things change most{within}",
        )
    if picked is not None:
        return (
            "Inpaint by map",
            f"The map '{picked.get_name()}' decides: white changes fully, gray partly, black not at "
            f"all{within}",
        )
    if mask is not None:
        return (
            "Inpaint by layer mask",
            f"The layer mask being edited is the map: white changes fully, gray partly, black not at "
            f"all{within} (a Map layer picked below decides instead)",
        )
    whole = (
        "Nothing is selected: the whole layer is repainted at the chosen strength"
        if whole_layer(image)
        else "The selection is repainted: white changes fully, gray partly, black not at all"
    )
    return action_text(image), f"{whole}; a Map layer picked below decides instead."


def _failure(exc: Exception) -> str:
    """An exception as one line for the dialog: an InpaintError's message; a bug, said so."""
    from .client import InpaintError

    if isinstance(exc, InpaintError):
        return exc.message
    traceback.print_exc(file=sys.stderr)
    return f"failed unexpectedly ({exc.__class__.__name__}: {exc}); please report this."


def _map_in_dialog(inputs: Callable[[], tuple[Any, Any, Any]]) -> Callable[[Callable[[str], None]], None]:
    """The dialog's Show strength map: read and send on GIMP's thread (PDB calls belong
    there), wait for the daemon in a worker thread, insert back on GIMP's thread (the
    shared flow's prepare / follow / finish); the layer it added before goes. `report`
    gets one line: what was added, or what went wrong."""
    from gi.repository import GLib

    from . import protocol as p
    from .client import flow

    added: list[Any] = []

    def show_map(report: Callable[[str], None]) -> None:
        def on_main(text: str) -> bool:
            report(text)
            return False  # once

        try:
            document, chosen, maps = inputs()
            job = flow.prepare(document, chosen, maps=maps, request=p.StrengthMapRequest)
        except Exception as exc:
            report(_failure(exc))
            return

        def insert(results: list[Any]) -> bool:
            try:
                layer = flow.finish(job, results)
                for old in added:
                    if old.is_valid():
                        old.get_image().remove_layer(old)
            except Exception as exc:
                return on_main(_failure(exc))
            added[:] = [layer]
            return on_main(f"added as the layer '{layer.get_name()}' above '{document.drawable.get_name()}'.")

        def work() -> None:
            try:
                results = flow.follow(job, chosen, client=CLIENT_NAME, timeout=JOB_TIMEOUT)
            except Exception as exc:
                GLib.idle_add(on_main, _failure(exc))
                return
            GLib.idle_add(insert, results)

        threading.Thread(target=work, name="strength-map", daemon=True).start()

    return show_map


def run(
    procedure: Gimp.Procedure,
    run_mode: Gimp.RunMode,
    image: Gimp.Image,
    drawables: list[Gimp.Drawable],
    config: Gimp.ProcedureConfig,
    run_data: Any,
) -> Gimp.ValueArray:
    """Both procedures: the strength-map one asks for the map only and adds it as a layer."""
    # The layer mask being edited (its thumbnail clicked in the Layers dialog): the job
    # works on its layer, the mask is the map unless mask-drawable names another.
    mask = drawables[0] if len(drawables) == 1 and isinstance(drawables[0], Gimp.LayerMask) else None
    layer = Gimp.Layer.from_mask(mask) if mask is not None else drawables[0] if len(drawables) == 1 else None
    if not isinstance(layer, Gimp.Layer):
        return _fail(procedure, "Select exactly one layer (or its layer mask, not a channel) and try again.")
    try:
        if _INCOMPLETE is not None:
            raise _INCOMPLETE
        # The client and websockets load only when the filter runs.
        from . import protocol as p
        from .client import InpaintError, flow
        from .gimp_io import GimpDocument, ProgressBar, source_of
    except ImportError as exc:
        return _fail(
            procedure,
            f"The Differential Inpaint plug-in is incomplete ({exc}). Reinstall it with "
            "`differential-inpaint install-plugin gimp` and restart GIMP.",
        )
    # By the name's end, so that a procedure wrapping `run` (the tests' dialog probe) can
    # stand for either.
    strength_map = procedure.get_name().endswith(STRENGTH_MAP)
    title = "Differential Inpaint: Strength Map" if strength_map else "Differential Inpaint"

    def describe() -> tuple[str, str]:
        picked = config.get_property(DRAWABLE_MAPS["mask_layer"])
        return _what(image, strength_map, mask, picked, config.get_property("depth"))

    def inputs() -> tuple[Any, Any, Any]:
        """The document, settings and maps of a job as the config stands."""
        chosen = settings_from_config(config)
        maps = maps_from_config(config, image)
        if maps.mask is None and mask is not None:
            maps = dataclasses.replace(maps, mask=mask)
        # A result layer (or its group) selected: the job works on the painting it came from.
        return GimpDocument(image, source_of(image, layer)), chosen, maps

    if run_mode == Gimp.RunMode.INTERACTIVE and not _show_dialog(
        procedure, config, describe, title, None if strength_map else _map_in_dialog(inputs)
    ):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
    try:
        action = describe()[0]
        document, chosen, maps = inputs()
        remember_server(chosen.host.server)
        bar = ProgressBar(action, 1 if strength_map else chosen.job.results)
        Gimp.progress_init(f"{action}: connecting to {chosen.host.server}")
        try:
            flow.run(
                document,
                chosen,
                client=CLIENT_NAME,
                maps=maps,
                request=p.StrengthMapRequest if strength_map else p.Submit,
                on_progress=bar.progress,
                on_status=bar.status,
                on_result=bar.result,
                timeout=JOB_TIMEOUT,
            )
        finally:
            Gimp.progress_end()
    except InpaintError as exc:
        return _fail(procedure, exc.message)
    except Exception as exc:  # a bug: say so instead of GIMP's bare "plug-in crashed"
        traceback.print_exc(file=sys.stderr)
        return _fail(
            procedure,
            f"Differential Inpaint failed unexpectedly ({exc.__class__.__name__}: {exc}); the image "
            "was not changed. Please report this with the text GIMP printed to its error console.",
        )
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


_DOCUMENTATION = {
    PROCEDURE: (
        "Repaint the selection with Differential Diffusion",
        "Sends the active layer around the selection (or the map picked as mask-drawable: a "
        "channel, layer mask or layer) to the local Differential Inpaint daemon. White changes "
        "fully, gray partly, black not at all. The result is a new layer above; the original "
        "layer is never modified.",
    ),
    MAP_PROCEDURE: (
        "Show the strength map a Differential Inpaint run would use",
        "With the same arguments as python-fu-differential-inpaint, asks the daemon for the "
        "effective per-pixel strength (after invert, levels, depth, the selection, grow, "
        "feather and strength) and adds it above the layer as a gray layer; nothing is sampled.",
    ),
}


class DifferentialInpaint(Gimp.PlugIn):
    def do_query_procedures(self) -> list[str]:
        return [PROCEDURE, MAP_PROCEDURE]

    def do_set_i18n(self, name: str) -> bool:
        return False  # no translations shipped

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label(_LABELS[name])
        procedure.add_menu_path(_MENU)
        procedure.set_documentation(*_DOCUMENTATION[name], name)
        procedure.set_attribution("Differential Inpaint", "Differential Inpaint", "2025")
        add_arguments(procedure)
        return procedure


def main() -> None:
    Gimp.main(DifferentialInpaint.__gtype__, sys.argv)
