"""Widgets: the settings form (dialog and docker), the progress dialog, and the
controller that runs one job from the GUI without ever blocking it.

The network work happens in `jobs.JobThread`; its callbacks only emit Qt
signals, which Qt queues to the GUI thread, where Krita is touched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

from . import history, jobs, settings
from . import protocol as p
from .client import DEFAULT_SERVER, InpaintError, JobCancelled, Settings, as_inpaint_error, flow, server_info
from .conditioning import CONTROL_KINDS, Conditioning, ControlLayer, ReferenceLayer
from .krita_io import KritaDocument, node_list
from .protocol.spec import applies_to, family_label
from .qt import QtCore, QtGui, QtWidgets, Signal, exec_dialog

TITLE = "Differential Inpaint"


def show_error(parent: QtWidgets.QWidget | None, message: str) -> None:
    QtWidgets.QMessageBox.warning(parent, TITLE, message)


def main_window() -> QtWidgets.QWidget | None:
    from krita import Krita

    window = Krita.instance().activeWindow()
    return None if window is None else window.qwindow()


class ModelFetcher(QtCore.QObject):
    """Asks the daemon for its models in a worker thread (never on the GUI thread)."""

    loaded = Signal(
        object, object, object, object
    )  # [(name, family)], default model, {add-on list: [(name, family)]}, the welcome (parts)
    failed = Signal(str)

    def fetch(self, server: str, token: str = "") -> None:
        threading.Thread(
            target=self._work, args=(server, token), name="differential-inpaint-models", daemon=True
        ).start()

    def _work(self, server: str, token: str) -> None:
        try:
            welcome = server_info(server or DEFAULT_SERVER, token=token or None)
        except InpaintError as exc:
            outcome: tuple[Any, ...] = ("failed", exc.message)
        except Exception as exc:  # a bug: still a sentence, never a silent combo
            outcome = ("failed", as_inpaint_error(exc).message)
        else:
            addons = {key: [(m.name, m.family) for m in getattr(welcome, key)] for key in ADDON_LISTS}
            models = [(m.name, m.family) for m in welcome.models]
            outcome = ("loaded", models, welcome.default_model, addons, welcome)
        with contextlib.suppress(RuntimeError):  # the form was closed meanwhile
            getattr(self, outcome[0]).emit(*outcome[1:])


class SettingsStore(QtCore.QObject):
    """The one live copy of the painter's settings in this Krita session, kept in
    kritarc: the dialog and the docker both show it, so a change in one is in the
    other at once."""

    changed = Signal(object, object)  # the settings, the form that changed them (or None)
    conditioning_changed = Signal(object, object)  # the control and reference layers, the form
    seed_used = Signal(object)  # the seed of the last result, for every form to show
    _instance: SettingsStore | None = None

    def __init__(self) -> None:
        super().__init__()
        self.settings = settings.load()
        # The model family the settings' family defaults were last set for (kept in kritarc
        # with them): a form that learns its model's family compares with this one, so a
        # value the painter chose for a family is never taken for that family's default.
        self.family = settings.load_family()
        # Control and reference layers are the plugin's own (no job setting holds layers).
        self.conditioning = settings.load_conditioning()

    def update_conditioning(self, chosen: Conditioning, source: object = None) -> None:
        if chosen == self.conditioning:
            return
        self.conditioning = chosen
        settings.save_conditioning(chosen)
        self.conditioning_changed.emit(chosen, source)

    def set_family(self, family: str) -> None:
        if family != self.family:
            self.family = family
            settings.save_family(family)

    @classmethod
    def instance(cls) -> SettingsStore:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def update(self, chosen: Settings, source: object = None) -> None:
        if chosen == self.settings:
            return
        self.settings = chosen
        settings.save(chosen)
        self.changed.emit(chosen, source)


class Field:
    """One setting's widget: `widget` goes in the form; `value()`/`set_value()` speak
    the setting's own type (None where it is optional); `edited` is a Qt signal."""

    def __init__(self, param: p.Param, widget: QtWidgets.QWidget, edited: Any) -> None:
        self.param = param
        self.widget = widget
        self.edited = edited
        widget.setToolTip(param.help)

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


class PromptEdit(QtWidgets.QPlainTextEdit):
    """A prompt box: Ctrl+Enter runs, Tab moves on (a prompt has no tabs or newlines)."""

    submitted = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setTabChangesFocus(True)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if event.key() in (QtCore.Qt.Key.Key_Return, QtCore.Qt.Key.Key_Enter):
            if event.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier:
                self.submitted.emit()
            return  # a newline would only be folded into a space
        super().keyPressEvent(event)


class TextField(Field):
    def __init__(self, param: p.Param) -> None:
        if param.multiline:
            self.edit: Any = PromptEdit()
            self.edit.setMaximumHeight(64)
            edited = self.edit.textChanged
        else:
            self.edit = QtWidgets.QLineEdit()
            self.edit.setMaxLength(param.max_chars())
            if param.secret:
                self.edit.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
            edited = self.edit.editingFinished
        self.edit.setPlaceholderText(param.help)
        super().__init__(param, self.edit, edited)

    def value(self) -> Any:
        text = (self.edit.toPlainText() if self.param.multiline else self.edit.text()).strip()
        return None if self.param.optional and not text else text

    def set_value(self, value: Any) -> None:
        if self.value() == (value or ("" if not self.param.optional else None)):
            return  # keep the cursor where the painter is typing
        if self.param.multiline:
            self.edit.setPlainText(value or "")
        else:
            self.edit.setText(value or "")


class NumberField(Field):
    """A spin box over the setting's bounds (an open bound is one step inside)."""

    def __init__(self, param: p.Param) -> None:
        lo, hi = param.bounds()
        if param.kind is int:
            box: Any = QtWidgets.QSpinBox()
            box.setRange(int(lo) + param.lo_open, int(hi) - param.hi_open)
        else:
            box = QtWidgets.QDoubleSpinBox()
            box.setDecimals(2)
            box.setRange(lo + 0.01 * param.lo_open, hi - 0.01 * param.hi_open)
            box.setSingleStep(param.step or 1.0)
        if param.unit:
            box.setSuffix(f" {param.unit}")
        self.box = box
        super().__init__(param, box, box.valueChanged)

    def value(self) -> Any:
        return self.box.value()

    def set_value(self, value: Any) -> None:
        self.box.setValue(value)


class PercentField(Field):
    """A fraction as a slider in whole percent (an open bound is one percent inside)."""

    def __init__(self, param: p.Param) -> None:
        lo, hi = param.bounds()
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(round(lo * 100) + param.lo_open, round(hi * 100) - param.hi_open)
        self.slider.setPageStep(round((param.step or 0.1) * 100))
        self.label = QtWidgets.QLabel()
        self.label.setMinimumWidth(self.label.fontMetrics().horizontalAdvance("100 %"))
        self.slider.valueChanged.connect(lambda v: self.label.setText(f"{v} %"))
        row = QtWidgets.QWidget()
        layout = QtWidgets.QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        super().__init__(param, row, self.slider.valueChanged)

    def value(self) -> Any:
        return self.slider.value() / 100

    def set_value(self, value: Any) -> None:
        self.slider.setValue(round(value * 100))
        self.label.setText(f"{self.slider.value()} %")


class OptionalIntField(Field):
    """An optional whole number too big for a spin box (the seed): "Random" or a value."""

    def __init__(self, param: p.Param) -> None:
        self.random = QtWidgets.QCheckBox("Random")
        self.edit = QtWidgets.QLineEdit()
        digits = len(str(param.bounds()[1]))
        self.edit.setValidator(
            QtGui.QRegularExpressionValidator(QtCore.QRegularExpression(rf"\d{{1,{digits}}}"))
        )
        self.random.toggled.connect(lambda on: self.edit.setEnabled(not on))
        row = QtWidgets.QWidget()
        layout = QtWidgets.QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.random)
        layout.addWidget(self.edit, 1)
        super().__init__(param, row, self.random.toggled)
        self.edit.editingFinished.connect(lambda: self.random.toggled.emit(self.random.isChecked()))

    def value(self) -> Any:
        text = self.edit.text().strip()
        if self.random.isChecked() or not text:
            return None
        lo, hi = self.param.bounds()
        return max(lo, min(int(text), hi))

    def set_value(self, value: Any) -> None:
        self.random.setChecked(value is None)
        self.edit.setEnabled(value is not None)
        if value is not None:
            self.edit.setText(str(value))


class BoolField(Field):
    """A yes/no setting: a check box whose text is the setting's help."""

    def __init__(self, param: p.Param) -> None:
        self.check = QtWidgets.QCheckBox()
        super().__init__(param, self.check, self.check.toggled)

    def value(self) -> Any:
        return self.check.isChecked()

    def set_value(self, value: Any) -> None:
        self.check.setChecked(bool(value))


class ListField(Field):
    """A list of numbers ("30%, 60%, 90%") or of the daemon's names typed as text, shown the
    spec's way (`Param.format_text`); what is wrong with the text shows under it as it is typed."""

    def __init__(self, param: p.Param) -> None:
        self.edit = QtWidgets.QLineEdit()
        self.names = param.choices is not None  # the daemon's files, or none: its own match
        example = param.format_text((0.3, 0.6, 0.9)) if param.percent else "1, 2, 3"
        self.edit.setPlaceholderText("Automatic" if self.names else f"off (e.g. {example})")
        self.error = QtWidgets.QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e0604f;")
        self.error.hide()
        box = QtWidgets.QWidget()
        rows = QtWidgets.QVBoxLayout(box)
        rows.setContentsMargins(0, 0, 0, 0)
        rows.addWidget(self.edit)
        rows.addWidget(self.error)
        self._last: tuple[Any, ...] = tuple(param.default)
        super().__init__(param, box, self.edit.editingFinished)
        self.edit.textChanged.connect(lambda _text: self._check())

    def parsed(self) -> tuple[tuple[Any, ...] | None, str]:
        """The values typed and what is wrong with them ("" when nothing)."""
        try:
            values = self.param.parse_text(self.edit.text())
        except ValueError as exc:
            what = "names" if self.names else "numbers"
            return None, f"{self.param.label}: {exc}; type {what} separated by commas."
        from .client.settings import problem

        try:
            self.param.read({self.param.name: list(values)}, "form")
        except p.ProtocolError:
            text = problem(self.param, values)
            return values, text[:1].upper() + text[1:] + "."
        return values, ""

    def problem(self) -> str:
        return self.parsed()[1]

    def _check(self) -> None:
        values, problem = self.parsed()
        if values is not None:
            self._last = values
        self.error.setText(problem)
        self.error.setVisible(bool(problem))

    def value(self) -> Any:
        values, _problem = self.parsed()
        return self._last if values is None else values

    def set_value(self, value: Any) -> None:
        value = tuple(value or ())
        if self.parsed()[0] == value:
            return  # keep the text as the painter typed it ("0.5" stays, not "50%")
        self.edit.setText(self.param.format_text(value))
        self._check()


TEST_MODEL_PREFIX = "builtin:"


class ModelField(Field):
    """The daemon's models with their family, asked for in a worker thread; a warning
    when the choice is one of the built-in test models, which paint noise."""

    def __init__(self, param: p.Param) -> None:
        self.combo = QtWidgets.QComboBox()
        self.combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.combo.setMinimumContentsLength(12)
        self.refresh = QtWidgets.QPushButton("Refresh")
        self.refresh.setToolTip("Ask the daemon for its models")
        self.warning = QtWidgets.QLabel(
            "A built-in test model: it paints noise. Give the daemon a real checkpoint (see its README)."
        )
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #d9822b;")
        self.warning.hide()
        # The chosen model's family, and the settings it does not take (`family_note`).
        self.note = QtWidgets.QLabel()
        self.note.setWordWrap(True)
        self.note.hide()
        self.default: str | None = None
        box = QtWidgets.QWidget()
        rows = QtWidgets.QVBoxLayout(box)
        rows.setContentsMargins(0, 0, 0, 0)
        line = QtWidgets.QHBoxLayout()
        line.addWidget(self.combo, 1)
        line.addWidget(self.refresh)
        rows.addLayout(line)
        rows.addWidget(self.note)
        rows.addWidget(self.warning)
        super().__init__(param, box, self.combo.currentIndexChanged)
        self.combo.currentIndexChanged.connect(self._warn)
        self.set_models([], None, keep=None)

    def listed(self) -> list[tuple[str, str]]:
        return [
            (self.combo.itemData(i), self.combo.itemData(i, FAMILY_ROLE))
            for i in range(1, self.combo.count())
        ]

    def set_models(self, models: list[tuple[str, str]], default: str | None, keep: str | None) -> None:
        self.default = default if default is not None else self.default
        blocked = self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem("Daemon's default" + (f" ({self.default})" if self.default else ""), "")
        if keep and keep not in [name for name, _ in models]:
            models = [*models, (keep, "")]  # keep a remembered choice even before the daemon answers
        for name, family in models:
            self.combo.addItem(f"{name} \u2014 {family_label(family)}" if family else name, name)
            self.combo.setItemData(self.combo.count() - 1, family, FAMILY_ROLE)
        index = self.combo.findData(keep) if keep else 0
        self.combo.setCurrentIndex(max(index, 0))
        self.combo.blockSignals(blocked)
        self._warn()

    def _warn(self) -> None:
        chosen = self.value() or self.default or ""
        self.warning.setVisible(chosen.startswith(TEST_MODEL_PREFIX))

    def value(self) -> Any:
        return self.combo.currentData() or None

    def family(self) -> str:
        """The chosen model's family as the daemon listed it ("" when not known); for
        "Daemon's default", the default model's."""
        chosen = self.value() or self.default
        return next((family or "" for name, family in self.listed() if name == chosen), "")

    def set_value(self, value: Any) -> None:
        if value != self.value():
            self.set_models(self.listed(), None, keep=value)


FAMILY_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1


def _combo(kind: type[QtWidgets.QComboBox] = QtWidgets.QComboBox) -> Any:
    combo = kind()
    # Long layer names must not widen the docker: the list shows them in full.
    combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(12)
    return combo


class ChoiceField(Field):
    """An Enum setting (depth: off/near/far) as a combo of its members."""

    WORDS = {"none": "Off"}

    def __init__(self, param: p.Param) -> None:
        self.combo = _combo()
        for member in param.kind:
            self.combo.addItem(self.WORDS.get(member.value, member.value.capitalize()), member.value)
        super().__init__(param, self.combo, self.combo.currentIndexChanged)

    def value(self) -> Any:
        return self.param.kind(self.combo.currentData())

    def set_value(self, value: Any) -> None:
        index = self.combo.findData(getattr(value, "value", value))
        self.combo.setCurrentIndex(max(index, 0))


class PopupCombo(QtWidgets.QComboBox):
    """A combo that says when its list is about to open, so the list can be made fresh."""

    about_to_show = Signal()

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self.about_to_show.emit()
        super().showPopup()


NodeList = list[tuple[str, int, str]]  # (name, depth, type), as krita_io.node_list gives


class NodeChoiceField(Field):
    """A setting that names a node of the image (or a fixed choice): a combo of the fixed
    choices, then the active image's layers and masks by name, indented as in the Layers
    docker. A name not in the image (another image's, or deleted) stays chosen, marked."""

    def __init__(self, param: p.Param, fixed: list[tuple[str, str]]) -> None:
        self.combo = _combo(PopupCombo)
        self.fixed = fixed
        self.nodes: NodeList = []
        super().__init__(param, self.combo, self.combo.currentIndexChanged)
        self._fill(self.param.default)

    def item(self, name: str, depth: int, kind: str) -> tuple[str, str]:
        """(text, value) of a node's entry."""
        raise NotImplementedError

    def missing(self, value: str) -> str:
        """The text of a chosen value the image does not have."""
        return f"{value} (not in this image)"

    def set_nodes(self, nodes: NodeList) -> None:
        if nodes != self.nodes:
            self.nodes = list(nodes)
            self._fill(self.value())

    def _fill(self, keep: str) -> None:
        blocked = self.combo.blockSignals(True)
        self.combo.clear()
        for text, value in self.fixed:
            self.combo.addItem(text, value)
        seen = {value for _, value in self.fixed}
        for name, depth, kind in self.nodes:
            text, value = self.item(name, depth, kind)
            if value not in seen:  # two layers of one name: the first is the one used
                seen.add(value)
                self.combo.addItem(text, value)
        if keep not in seen:
            self.combo.addItem(self.missing(keep), keep)
        self.combo.setCurrentIndex(max(self.combo.findData(keep), 0))
        self.combo.blockSignals(blocked)

    def value(self) -> Any:
        data = self.combo.currentData()
        return self.param.default if data is None else data

    def set_value(self, value: Any) -> None:
        value = value or ""
        if value != self.value() or self.combo.findData(value) < 0:
            self._fill(value)


def _kind_word(kind: str) -> str:
    """ "transparencymask" -> "transparency mask", for a mask's entry."""
    return kind[: -len("mask")] + " mask" if kind.endswith("mask") and kind != "mask" else kind


class LayerField(NodeChoiceField):
    """The map or blend layer: the selection (or the alpha made from the map), or a node."""

    FIXED = {
        "mask_layer": "Selection",
        "blend_layer": "From the change map",
        "control_layer": "(pick a layer)",
        "reference_layer": "None",
    }

    def __init__(self, param: p.Param) -> None:
        super().__init__(param, [(self.FIXED.get(param.name, "None"), "")])

    def item(self, name: str, depth: int, kind: str) -> tuple[str, str]:
        suffix = f" ({_kind_word(kind)})" if kind.endswith("mask") else ""
        return "    " * depth + name + suffix, name


class ContextField(NodeChoiceField):
    """What the model sees: auto, the whole image, the area's bounds, a rectangle kept from
    a script or kritarc, or the bounds of a layer."""

    def __init__(self, param: p.Param) -> None:
        fixed = [("Auto", "auto"), ("Whole image", "image"), ("Selection bounds", "mask")]
        super().__init__(param, fixed)

    def item(self, name: str, depth: int, kind: str) -> tuple[str, str]:
        return "    " * depth + f"Bounds of {name}", f"layer:{name}"

    def missing(self, value: str) -> str:
        if value.startswith("layer:"):
            return f"Bounds of {value[len('layer:') :]} (not in this image)"
        return f"Rectangle {value}"  # "X,Y,W,H" in image pixels


# The settings that name a node of the image (host settings; GIMP takes drawables instead).
NODE_FIELDS: dict[str, type[NodeChoiceField]] = {
    "mask_layer": LayerField,
    "blend_layer": LayerField,
    "context": ContextField,
}


# --- conditioning: LoRAs, control layers, the reference layer --------------------------

# The welcome's add-on lists, each offered where a setting's `choices` names it.
ADDON_LISTS = ("loras", "controlnets", "ip_adapters")
AddonList = list[tuple[str, str]]  # (name, family) as the daemon lists them


def base_family(family: str) -> str:
    """ "sd15", "sdxl", "flux" or "sd3": an add-on made for a family fits its inpaint, fill
    and schnell variants too (the engine's `configs.base_family`)."""
    return family.removesuffix("-inpaint").removesuffix("-fill").removesuffix("-schnell")


def fits(addon_family: str, model_family: str) -> bool:
    """Whether an add-on of `addon_family` is offered for a model of `model_family`; either
    unknown: offered (the daemon says no in words)."""
    return not addon_family or not model_family or base_family(addon_family) == base_family(model_family)


class AddonCombo(QtWidgets.QComboBox):
    """The daemon's add-ons of one kind (LoRAs, ControlNets, IP-Adapters) that fit the
    model's family, after a first entry for none (`empty`); a remembered name the list
    lacks stays chosen, marked."""

    def __init__(self, empty: str) -> None:
        super().__init__()
        self.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        self.empty = empty
        self.listed: AddonList = []
        self.family = ""
        self.fill("")

    def name(self) -> str:
        return str(self.currentData() or "")

    def offer(self, listed: AddonList | None = None, family: str | None = None) -> None:
        self.listed = self.listed if listed is None else list(listed)
        self.family = self.family if family is None else family
        self.fill(self.name())

    def fill(self, keep: str) -> None:
        blocked = self.blockSignals(True)
        self.clear()
        self.addItem(self.empty, "")
        for name, family in self.listed:
            if fits(family, self.family):
                self.addItem(name, name)
        if keep and self.findData(keep) < 0:
            self.addItem(f"{keep} (not listed)", keep)
        self.setCurrentIndex(max(self.findData(keep), 0))
        self.blockSignals(blocked)


class AddonField(Field):
    """A ControlNet or IP-Adapter setting (`choices` "controlnets", "ip_adapters"): the
    daemon's list for the model's family; "Automatic" is None, the daemon's pick."""

    def __init__(self, param: p.Param) -> None:
        self.combo = AddonCombo("Automatic")
        super().__init__(param, self.combo, self.combo.currentIndexChanged)

    def value(self) -> Any:
        return self.combo.name() or None

    def set_value(self, value: Any) -> None:
        if (value or "") != self.combo.name():
            self.combo.fill(value or "")


class KindField(Field):
    """A control image's type: the usual ones offered, any other typed (a Union model's)."""

    def __init__(self, param: p.Param) -> None:
        self.combo = QtWidgets.QComboBox()
        self.combo.setEditable(True)
        self.combo.addItems(list(CONTROL_KINDS))
        self.combo.setMinimumContentsLength(7)
        self.combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        super().__init__(param, self.combo, self.combo.currentTextChanged)

    def value(self) -> Any:
        return self.combo.currentText().strip().lower() or self.param.default

    def set_value(self, value: Any) -> None:
        if value != self.value():
            self.combo.setCurrentText(value or self.param.default)


class PercentSpinField(Field):
    """A fraction as a whole-percent spin box: the compact form of `PercentField`."""

    def __init__(self, param: p.Param) -> None:
        lo, hi = param.bounds()
        self.box = QtWidgets.QSpinBox()
        self.box.setRange(round(lo * 100) + param.lo_open, round(hi * 100) - param.hi_open)
        self.box.setSuffix(" %")
        self.box.setSingleStep(5)
        super().__init__(param, self.box, self.box.valueChanged)

    def value(self) -> Any:
        return self.box.value() / 100

    def set_value(self, value: Any) -> None:
        self.box.setValue(round(value * 100))


class Rows(QtWidgets.QWidget):
    """A list of rows with a remove button each and an add button under them; `changed`
    fires on any edit, addition or removal."""

    changed = Signal()

    def __init__(self, add_text: str, add_tip: str, most: int) -> None:
        super().__init__()
        self.most = most
        self.rows: list[QtWidgets.QWidget] = []
        self.box = QtWidgets.QVBoxLayout(self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.setSpacing(2)
        self.add_button = QtWidgets.QPushButton(add_text)
        self.add_button.setToolTip(add_tip)
        self.add_button.clicked.connect(lambda _checked=False: self.add())
        self.box.addWidget(self.add_button)

    def make_row(self) -> QtWidgets.QWidget:
        raise NotImplementedError

    def add(self, emit: bool = True) -> QtWidgets.QWidget:
        row = self.make_row()
        remove = QtWidgets.QToolButton()
        remove.setText("\u2715")
        remove.setAutoRaise(True)
        remove.setToolTip("Remove this row")
        remove.clicked.connect(lambda _checked=False, r=row: self.remove(r))
        row.first_line.addWidget(remove)  # type: ignore[attr-defined]  # every row type has one
        self.rows.append(row)
        self.box.insertWidget(len(self.rows) - 1, row)
        self.add_button.setEnabled(len(self.rows) < self.most)
        if emit:
            self.changed.emit()
        return row

    def remove(self, row: QtWidgets.QWidget) -> None:
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self.add_button.setEnabled(len(self.rows) < self.most)
        self.changed.emit()

    def resize_to(self, count: int) -> None:
        while len(self.rows) > count:
            row = self.rows.pop()
            row.setParent(None)
            row.deleteLater()
        while len(self.rows) < count:
            self.add(emit=False)
        self.add_button.setEnabled(len(self.rows) < self.most)


class LoraRows(Rows):
    def __init__(self, param: p.Param) -> None:
        self.param = param
        super().__init__("Add LoRA", "Add a LoRA the daemon lists, with its weight", param.max_chars())
        self.listed: AddonList = []
        self.family = ""

    def make_row(self) -> QtWidgets.QWidget:
        row = LoraRow(self.param)
        row.combo.offer(self.listed, self.family)
        row.combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        row.weight.valueChanged.connect(lambda _v: self.changed.emit())
        return row

    def loras(self) -> list[LoraRow]:
        return [row for row in self.rows if isinstance(row, LoraRow)]


class LoraRow(QtWidgets.QWidget):
    """One LoRA: the daemon's LoRAs for the model's family, and its weight."""

    def __init__(self, param: p.Param) -> None:
        super().__init__()
        self.combo = AddonCombo("(pick a LoRA)")
        self.weight = QtWidgets.QDoubleSpinBox()
        lo, hi = param.bounds()
        self.weight.setRange(lo, hi)
        self.weight.setSingleStep(0.1)
        self.weight.setDecimals(2)
        self.weight.setValue(1.0)
        self.weight.setToolTip("The LoRA's weight: 0 off, 1 as made, negative against it")
        self.first_line = QtWidgets.QHBoxLayout(self)
        self.first_line.setContentsMargins(0, 0, 0, 0)
        self.first_line.addWidget(self.combo, 1)
        self.first_line.addWidget(self.weight)


class LoraListField(Field):
    """The LoRAs (`loras`, a list of name:weight): one row each, a combo of the daemon's
    LoRAs for the model's family and a weight; rows with no LoRA picked are left out."""

    def __init__(self, param: p.Param) -> None:
        self.rows = LoraRows(param)
        super().__init__(param, self.rows, self.rows.changed)

    def offer(self, listed: AddonList | None = None, family: str | None = None) -> None:
        self.rows.listed = self.rows.listed if listed is None else list(listed)
        self.rows.family = self.rows.family if family is None else family
        for row in self.rows.loras():
            row.combo.offer(self.rows.listed, self.rows.family)

    def value(self) -> Any:
        return tuple(
            p.Lora(row.combo.name(), round(row.weight.value(), 2))
            for row in self.rows.loras()
            if row.combo.name()
        )

    def set_value(self, value: Any) -> None:
        value = tuple(value or ())
        if value == self.value() and len(self.rows.rows) == len(value):
            return
        blocked = self.rows.blockSignals(True)
        self.rows.resize_to(len(value))
        for row, lora in zip(self.rows.loras(), value, strict=True):
            row.combo.fill(lora.name)
            row.weight.setValue(lora.weight)
        self.rows.blockSignals(blocked)


def _pair(*widgets: QtWidgets.QWidget) -> QtWidgets.QWidget:
    box = QtWidgets.QWidget()
    line = QtWidgets.QHBoxLayout(box)
    line.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        line.addWidget(widget, 1 if isinstance(widget, QtWidgets.QComboBox) else 0)
    return box


CONTROL_LAYER = p.Param(
    "control_layer", str, "", "Layer", "The layer whose pixels over the job's region steer it"
)
REFERENCE_LAYER = p.Param(
    "reference_layer", str, "", "Reference", "A layer whose whole picture steers the style (IP-Adapter)"
)


class ConditioningFields(QtWidgets.QWidget):
    """One control or reference layer: a layer picker and the fields its spec declares."""

    changed = Signal()

    def __init__(self, layer: p.Param, declared: tuple[p.Param, ...], cls: type) -> None:
        super().__init__()
        self.layer = LayerField(layer)
        self.fields = {q.name: make_field(q, compact=True) for q in declared}
        self.show_params(cls())  # a new row starts at the spec's defaults
        for field in (self.layer, *self.fields.values()):
            field.edited.connect(lambda *_args: self.changed.emit())

    def params(self, cls: type) -> Any:
        return cls(**{name: field.value() for name, field in self.fields.items()})

    def show_params(self, params: Any) -> None:
        for name, field in self.fields.items():
            field.set_value(getattr(params, name))


class ControlRow(ConditioningFields):
    """Layer [x] / Type, ControlNet / Strength, Steps start-end / From a photo."""

    def __init__(self) -> None:
        super().__init__(CONTROL_LAYER, p.CONTROL_PARAMS, p.ControlParams)
        f = self.fields
        strength = f["strength"]
        if isinstance(strength, NumberField):
            strength.box.setSingleStep(0.05)
        form = QtWidgets.QFormLayout(self)
        form.setContentsMargins(0, 4, 0, 4)
        self.first_line = QtWidgets.QHBoxLayout()
        self.first_line.addWidget(self.layer.widget, 1)
        form.addRow(QtWidgets.QLabel("Layer"), self.first_line)
        form.addRow(QtWidgets.QLabel(f["kind"].param.label), _pair(f["kind"].widget, f["model"].widget))
        dash = QtWidgets.QLabel("\u2013")
        steps = _pair(
            f["strength"].widget, QtWidgets.QLabel(" Steps"), f["start"].widget, dash, f["end"].widget
        )
        steps.layout().addStretch(1)
        form.addRow(QtWidgets.QLabel("Strength"), steps)
        f["preprocess"].check.setText(f["preprocess"].param.label)  # type: ignore[attr-defined]
        form.addRow(QtWidgets.QLabel(""), f["preprocess"].widget)

    def value(self) -> ControlLayer:
        return ControlLayer(self.layer.value(), self.params(p.ControlParams))

    def set_value(self, control: ControlLayer) -> None:
        self.layer.set_value(control.layer)
        self.show_params(control.params)


class ControlRows(Rows):
    wants_layers = Signal()  # a row's layer list is about to open

    def __init__(self) -> None:
        super().__init__(
            "Add control layer",
            "Steer the job with a layer (line art, depth, pose...) through a ControlNet",
            p.DEFAULT_LIMITS.max_controls,
        )

    def make_row(self) -> QtWidgets.QWidget:
        row = ControlRow()
        row.changed.connect(self.changed.emit)
        row.layer.combo.about_to_show.connect(self.wants_layers.emit)
        return row


class ReferenceRow(ConditioningFields):
    """Reference layer (none, or a layer) / weight, IP-Adapter."""

    def __init__(self) -> None:
        super().__init__(REFERENCE_LAYER, p.REFERENCE_PARAMS, p.ReferenceParams)
        f = self.fields
        weight = f["weight"]
        if isinstance(weight, NumberField):
            weight.box.setSingleStep(0.05)
        form = QtWidgets.QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow(QtWidgets.QLabel("Reference"), self.layer.widget)
        form.addRow(QtWidgets.QLabel("Weight"), _pair(f["weight"].widget, f["model"].widget))

    def value(self) -> tuple[ReferenceLayer, ...]:
        name = self.layer.value()
        return (ReferenceLayer(name, self.params(p.ReferenceParams)),) if name else ()

    def set_value(self, references: tuple[ReferenceLayer, ...]) -> None:
        chosen = references[0] if references else ReferenceLayer("")
        self.layer.set_value(chosen.layer)
        self.show_params(chosen.params)


class ConditioningPanel(QtWidgets.QWidget):
    """Under the form's "Conditioning" fold: the LoRAs (the job setting `loras`, a field of
    the form), the control layers and the reference layer (the store's `conditioning`)."""

    changed = Signal()

    def __init__(self, loras: QtWidgets.QWidget) -> None:
        super().__init__()
        self.controls = ControlRows()
        self.reference = ReferenceRow()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        parts = (("LoRAs", loras), ("Control layers", self.controls), ("Image prompt", self.reference))
        for title, widget in parts:
            heading = QtWidgets.QLabel(f"<b>{title}</b>")
            layout.addWidget(heading)
            layout.addWidget(widget)
        self.controls.changed.connect(self.changed.emit)
        self.reference.changed.connect(self.changed.emit)

    def rows(self) -> list[ControlRow]:
        return [row for row in self.controls.rows if isinstance(row, ControlRow)]

    def node_fields(self) -> list[NodeChoiceField]:
        return [self.reference.layer, *(row.layer for row in self.rows())]

    def addon_fields(self) -> list[AddonField]:
        found = [row.fields["model"] for row in self.rows()] + [self.reference.fields["model"]]
        return [f for f in found if isinstance(f, AddonField)]

    def value(self) -> Conditioning:
        return Conditioning(tuple(row.value() for row in self.rows()), self.reference.value())

    def set_value(self, chosen: Conditioning) -> None:
        if chosen == self.value():
            return
        blocked = self.controls.blockSignals(True)
        self.controls.resize_to(len(chosen.controls))
        for row, control in zip(self.rows(), chosen.controls, strict=True):
            row.set_value(control)
        self.controls.blockSignals(blocked)
        self.reference.set_value(chosen.references)

    def problem(self) -> str:
        missing = [str(i) for i, row in enumerate(self.rows(), 1) if not row.layer.value()]
        if not missing:
            return ""
        return f"Pick a layer for control layer {', '.join(missing)}, or remove the row."


# The fields a setting's own name picks (a control image's type).
NAMED_FIELDS: dict[str, type[Field]] = {"kind": KindField}


def make_field(param: p.Param, compact: bool = False) -> Field:
    """The widget for `param`; `compact`: percentages as spin boxes, not sliders."""
    if param.choices == "models":
        return ModelField(param)
    if param.choices in (*ADDON_LISTS, "vaes"):  # the VAE: one name, as a slot's ControlNet
        return AddonField(param)
    if param.item is p.Lora:
        return LoraListField(param)
    if param.name in NAMED_FIELDS:
        return NAMED_FIELDS[param.name](param)
    if param.name in NODE_FIELDS:
        return NODE_FIELDS[param.name](param)
    if isinstance(param.kind, type) and issubclass(param.kind, Enum):
        return ChoiceField(param)
    if param.kind is str:
        return TextField(param)
    if param.kind is tuple:
        return ListField(param)
    if param.kind is bool:
        return BoolField(param)
    if param.optional and param.kind is int:
        return OptionalIntField(param)
    if param.percent:
        return PercentSpinField(param) if compact else PercentField(param)
    return NumberField(param)


# The map's settings sit together, after the others of their part (basic or advanced),
# the picker first: the spec declares the job's settings before the host's.
MAP_ROWS = (
    "mask_layer",
    "invert_mask",
    "depth",
    "blend_layer",
    "limit_to_selection",
    "mask_black",
    "mask_white",
    "mask_gamma",
    "depth_combine",
    "depth_model",
    "context",
)


def _row_order(param: p.Param) -> int:
    return 1 + MAP_ROWS.index(param.name) if param.name in MAP_ROWS else 0


# Settings shown under the Conditioning fold rather than with the others.
CONDITIONING_ROWS = ("loras",)


def fold_button(text: str, tip: str) -> QtWidgets.QToolButton:
    """A flat arrow button that opens and closes a part of the form."""
    button = QtWidgets.QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.setCheckable(True)
    button.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    button.setArrowType(QtCore.Qt.ArrowType.RightArrow)
    button.setAutoRaise(True)
    return button


class SettingsForm(QtWidgets.QWidget):
    """One widget per setting Krita shows (`settings.SHOWN`), built from the spec and
    bound to the live `SettingsStore`; used by the dialog and the docker.
    With `fold_advanced`, the settings declared advanced sit under an "Advanced" fold."""

    submitted = Signal()  # Ctrl+Enter in the prompt

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, fold_advanced: bool = False) -> None:
        super().__init__(parent)
        self.fields: dict[str, Field] = {}
        self.labels: dict[str, QtWidgets.QLabel] = {}
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        basic = QtWidgets.QFormLayout()
        outer.addLayout(basic)
        advanced = basic
        if fold_advanced:
            self.advanced_toggle = fold_button("Advanced", "Sampling, the map's levels, context, the daemon")
            self.advanced_box = QtWidgets.QWidget()
            advanced = QtWidgets.QFormLayout(self.advanced_box)
            advanced.setContentsMargins(0, 0, 0, 0)
            self.advanced_box.hide()
            self.advanced_toggle.toggled.connect(self._fold)
        for param in settings.SHOWN:
            field = self.fields[param.name] = make_field(param)
            label = self.labels[param.name] = QtWidgets.QLabel(param.label)
            label.setBuddy(field.widget)
            field.edited.connect(self._edited)
        for param in sorted(settings.SHOWN, key=_row_order):
            if param.name not in CONDITIONING_ROWS:
                (advanced if param.advanced else basic).addRow(
                    self.labels[param.name], self.fields[param.name].widget
                )
        # LoRAs, control layers and the reference: folded, closed until the painter opens it.
        self.conditioning = ConditioningPanel(self.fields["loras"].widget)
        self.conditioning_toggle = fold_button(
            "Conditioning", "LoRAs, control layers (ControlNet) and an image prompt"
        )
        self.conditioning.hide()
        self.conditioning_toggle.toggled.connect(self._fold_conditioning)
        toggles = QtWidgets.QHBoxLayout()  # one line for both folds: compact on a 768 px screen
        toggles.addWidget(self.conditioning_toggle)
        if fold_advanced:
            toggles.addWidget(self.advanced_toggle)
        toggles.addStretch(1)
        outer.addLayout(toggles)
        outer.addWidget(self.conditioning)
        if fold_advanced:
            outer.addWidget(self.advanced_box)
        self.addons: dict[str, AddonList] = {}
        self.listing: p.Welcome | p.Models | None = None  # the daemon's last list (text encoders, VAEs)
        self.conditioning.changed.connect(self._conditioning_edited)
        self.conditioning.controls.wants_layers.connect(self.refresh_layers)
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        self.model = self.fields["model"]
        assert isinstance(self.model, ModelField)
        prompt = self.fields["prompt"]
        if isinstance(prompt, TextField) and isinstance(prompt.edit, PromptEdit):
            prompt.edit.submitted.connect(self.submitted.emit)
        self._fetcher = ModelFetcher(self)
        self._fetcher.loaded.connect(self._models_loaded)
        self._fetcher.failed.connect(self._models_failed)
        self.model.refresh.clicked.connect(self.refresh_models)
        self.model.combo.currentIndexChanged.connect(lambda _index: self._follow_family())
        for field in self.fields.values():
            if isinstance(field, NodeChoiceField):
                field.combo.about_to_show.connect(self.refresh_layers)
        self._store = SettingsStore.instance()
        self._showing = False
        self.family = ""  # the family the form is shown for ("" when not known)
        self.refresh_layers()
        self.set_values(self._store.settings)
        self.conditioning.set_value(self._store.conditioning)
        self._offer_addons()
        self._title_conditioning()
        self._store.changed.connect(self._store_changed)
        self._store.conditioning_changed.connect(self._store_conditioning_changed)
        self._store.seed_used.connect(self._seed_used)

    def refresh_layers(self, document: Any = None) -> None:
        """Offer the layers and masks of `document` (default: the active image) in the map,
        blend and context pickers; the chosen names stay chosen."""
        if document is None:
            with contextlib.suppress(ImportError):
                from krita import Krita

                document = Krita.instance().activeDocument()
        try:
            nodes = node_list(document)
        except Exception:  # an image closing under us: keep the lists as they are
            return
        for field in [*self.fields.values(), *self.conditioning.node_fields()]:
            if isinstance(field, NodeChoiceField):
                field.set_nodes(nodes)

    def _fold(self, unfolded: bool) -> None:
        self.advanced_box.setVisible(unfolded)
        arrow = QtCore.Qt.ArrowType.DownArrow if unfolded else QtCore.Qt.ArrowType.RightArrow
        self.advanced_toggle.setArrowType(arrow)

    def _fold_conditioning(self, unfolded: bool) -> None:
        self.conditioning.setVisible(unfolded)
        arrow = QtCore.Qt.ArrowType.DownArrow if unfolded else QtCore.Qt.ArrowType.RightArrow
        self.conditioning_toggle.setArrowType(arrow)

    def _offer_addons(self) -> None:
        """Offer the daemon's LoRAs, ControlNets and IP-Adapters that fit the model's family."""
        loras = self.fields["loras"]
        if isinstance(loras, LoraListField):
            loras.offer(self.addons.get("loras"), self.family)
        for field in self.conditioning.addon_fields():
            field.combo.offer(self.addons.get(field.param.choices or ""), self.family)

    def _offer_parts(self) -> None:
        """Show the text encoders and the VAE only where the painter has a choice (a FLUX.1 /
        SD3 transformer kept alone: `flow.part_choices`), naming the daemon's files; a part
        already chosen stays shown, so that it can be cleared."""
        listing = self.listing
        chosen = self.model.value() or (listing.default_model if listing is not None else None)
        model = next((m for m in listing.models if m.name == chosen), None) if listing is not None else None
        choices = flow.part_choices(model, listing.text_encoders, listing.vaes) if listing is not None else {}
        for name in flow.PART_PARAMS:
            field = self.fields.get(name)
            if field is None:
                continue
            offered = flow.offered_parts(choices, name)
            if isinstance(field, AddonField):
                field.combo.offer([(n, "") for n in choices.get("vae", ())], "")
            elif isinstance(field, ListField):  # the first offered file of each role, to copy
                example = ", ".join(choices[role][0] for role in flow.PART_PARAMS[name] if role in choices)
                field.edit.setPlaceholderText(f"Automatic (e.g. {example})" if example else "Automatic")
            shown = bool(offered) or bool(field.value())
            for widget in (field.widget, self.labels[name]):
                widget.setVisible(shown)
                widget.setToolTip(
                    f"{field.param.help}. The daemon offers {offered}" if offered else field.param.help
                )

    def _conditioning_edited(self) -> None:
        self.refresh_layers()  # a new row's layer list
        self._offer_addons()  # and its ControlNets
        self._title_conditioning()
        if not self._showing:
            self._store.update_conditioning(self.conditioning.value(), self)

    def _title_conditioning(self) -> None:
        """The fold says how many LoRAs, control and reference layers are on: closed, they
        still steer every run."""
        panel = self.conditioning
        count = len(self.fields["loras"].value()) + len(panel.rows()) + len(panel.reference.value())
        self.conditioning_toggle.setText(f"Conditioning ({count})" if count else "Conditioning")

    def _store_conditioning_changed(self, chosen: Conditioning, source: object) -> None:
        if source is not self:
            with contextlib.suppress(RuntimeError):  # this form's widgets are gone
                self._showing = True
                try:
                    self.conditioning.set_value(chosen)
                    self.refresh_layers()
                    self._offer_addons()
                    self._title_conditioning()
                finally:
                    self._showing = False

    # -- values ---------------------------------------------------------------

    def set_values(self, chosen: Settings) -> None:
        """Show `chosen` as the settings, as they are (no family default follows)."""
        self._show(chosen)
        self._store.update(self.values(), self)
        if self.family:
            self._store.set_family(self.family)

    def _follow_family(self, *, defaults: bool = True) -> None:
        """Offer only the settings the chosen model's family takes: the others are greyed
        out with a tooltip saying why (the daemon ignores them). With `defaults`, a setting
        whose default depends on the family (guidance: 3.5 for FLUX dev) follows the new
        family's default while it still holds the old family's (the painter has not
        changed it), the old family being the store's, for which the values were last
        set; without, the values shown stay as they are (another form's)."""
        assert isinstance(self.model, ModelField)
        family, before = self.model.family(), self._store.family
        self.family = family
        label = family_label(family)
        left_out = []
        for name, field in self.fields.items():
            param = field.param
            takes = applies_to(param, family)
            if not takes and name not in flow.PART_PARAMS:  # those show only for a choice
                left_out.append(param.label)
            why = param.help if takes else f"{label} models do not take this setting (the daemon ignores it)"
            for widget in (field.widget, self.labels[name]):
                widget.setEnabled(takes)
                widget.setToolTip(why)
            untouched = field.value() == param.default_for(before)
            if defaults and family and family != before and takes and param.family_defaults and untouched:
                field.set_value(param.default_for(family))
        self._offer_addons()
        self._offer_parts()
        note = f"Family: {label}" if family else ""
        if left_out:
            note += f"; it takes no {' or '.join(left_out).lower()}"
        self.model.note.setText(note)
        self.model.note.setVisible(bool(note))
        if defaults and family and family != before:
            self._store.update(self.values(), self)
            self._store.set_family(family)

    def _show(self, chosen: Settings) -> None:
        """Put `chosen` in the widgets without reporting it as the painter's edit."""
        self._showing = True
        try:
            values = chosen.values()
            for name, field in self.fields.items():
                field.set_value(values[name])
            self._follow_family(defaults=False)  # the values are the store's, already followed
            self._title_conditioning()
        finally:
            self._showing = False

    def values(self) -> Settings:
        """The settings shown; those the form does not show keep their defaults."""
        return Settings.from_values({name: field.value() for name, field in self.fields.items()})

    def problem(self) -> str:
        """What is wrong with what was typed (a list that does not parse), "" when nothing."""
        problems = [f.problem() for f in self.fields.values() if isinstance(f, ListField) and f.problem()]
        return " ".join([*problems, self.conditioning.problem()]).strip()

    def _edited(self, *_args: object) -> None:
        self._title_conditioning()  # a LoRA added or removed
        if not self._showing:
            self._store.update(self.values(), self)

    def _store_changed(self, chosen: Settings, source: object) -> None:
        if source is not self:
            with contextlib.suppress(RuntimeError):  # this form's widgets are gone
                self._show(chosen)

    def _seed_used(self, seed: int) -> None:
        """After a job: the seed it used, so a good result can be repeated."""
        with contextlib.suppress(RuntimeError):  # this form's widgets are gone
            seed_field = self.fields["seed"]
            if isinstance(seed_field, OptionalIntField):
                seed_field.edit.setText(str(seed))  # "Random" stays as the painter set it
            self.status.setText(f"Last seed: {seed}")

    # -- models -----------------------------------------------------------------

    def refresh_models(self) -> None:
        assert isinstance(self.model, ModelField)
        self.model.refresh.setEnabled(False)
        self.status.setText("Asking the daemon for its models...")
        host = self.values().host
        self._fetcher.fetch(host.server, host.token)

    def _models_loaded(
        self,
        models: list[tuple[str, str]],
        default: str | None,
        addons: dict[str, AddonList] | None = None,
        listing: p.Welcome | p.Models | None = None,
    ) -> None:
        assert isinstance(self.model, ModelField)
        self.model.refresh.setEnabled(True)
        self.addons = dict(addons or {})
        self.listing = listing
        self.model.set_models(models, default, keep=self.model.value())
        self._follow_family()
        count = "one model" if len(models) == 1 else f"{len(models)} models"
        self.status.setText(f"The daemon offers {count}.")

    def _models_failed(self, message: str) -> None:
        assert isinstance(self.model, ModelField)
        self.model.refresh.setEnabled(True)
        self.status.setText(message)


class InpaintDialog(QtWidgets.QDialog):
    """Tools > Scripts > Differential Inpaint."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.form = SettingsForm(self)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Inpaint")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        # Every setting unfolded is taller than a 768 px screen (the map's settings added a
        # dozen rows): the form scrolls, the buttons stay in view.
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.form)
        hint = self.form.sizeHint()
        scroll.setMinimumWidth(hint.width() + scroll.verticalScrollBar().sizeHint().width())
        screen = QtGui.QGuiApplication.primaryScreen()
        room = screen.availableGeometry().height() if screen is not None else 768
        scroll.setMinimumHeight(min(hint.height(), room * 3 // 4 - buttons.sizeHint().height(), 560))
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(scroll)
        layout.addWidget(buttons)


class ProgressPanel(QtWidgets.QWidget):
    """Stage, step count, the latest preview, and Cancel: in the docker, or in a
    dialog for the menu's path."""

    cancel_requested = Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None, preview_size: int = 256) -> None:
        super().__init__(parent)
        self.label = QtWidgets.QLabel()
        self.label.setWordWrap(True)
        self.bar = QtWidgets.QProgressBar()
        self.preview = QtWidgets.QLabel()
        self.preview.setMinimumSize(preview_size // 2, preview_size // 2)
        self.preview.setMaximumHeight(preview_size)
        self.preview.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.cancel_button)
        self.reset()

    def reset(self) -> None:
        """Ready for a new job."""
        self.label.setText("Connecting to the daemon...")
        self.bar.setRange(0, 0)  # busy until the first step count arrives
        self.preview.clear()
        self.cancel_button.setEnabled(True)
        self.steps_seen = 0
        self.done, self.total = 0, 1  # results of a job of several

    def show_progress(self, progress: p.Progress) -> None:
        text, fraction = flow.progress_text(progress, self.done, self.total)
        self.label.setText(text)
        if fraction is None:
            self.bar.setRange(0, 0)  # busy
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(round(fraction * 1000))
        if progress.stage == p.Stage.SAMPLING:
            self.steps_seen = max(self.steps_seen, progress.step)

    def show_preview(self, preview: p.Preview) -> None:
        image = preview.image
        if image.format is not p.PixelFormat.RGBA8 or len(image.data) != image.expected_bytes:
            return  # previews are a courtesy; never fail a job over one
        qimage = QtGui.QImage(
            image.data, image.width, image.height, image.width * 4, QtGui.QImage.Format.Format_RGBA8888
        ).copy()  # own the bytes: `image.data` goes away with the message
        pixmap = QtGui.QPixmap.fromImage(qimage)
        self.preview.setPixmap(
            pixmap.scaled(
                self.preview.size(),
                QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                QtCore.Qt.TransformationMode.SmoothTransformation,
            )
        )

    def _cancel(self) -> None:
        self.cancel_button.setEnabled(False)
        self.label.setText("Cancelling...")
        self.cancel_requested.emit()


class ProgressDialog(QtWidgets.QDialog):
    """A `ProgressPanel` in a window of its own (the menu's dialog path)."""

    def __init__(self, parent: QtWidgets.QWidget | None, title: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{TITLE}: {title}")
        self.panel = ProgressPanel(self)
        self.panel.preview.setMinimumSize(256, 256)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.panel)
        # The panel's parts, as the controller and tests address them.
        self.label, self.bar, self.preview = self.panel.label, self.panel.bar, self.panel.preview
        self.cancel_button, self.cancel_requested = self.panel.cancel_button, self.panel.cancel_requested
        self.show_progress, self.show_preview = self.panel.show_progress, self.panel.show_preview

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self.cancel_button.isEnabled():
            self.panel._cancel()
        super().closeEvent(event)


class JobController(QtCore.QObject):
    """Runs one job: read (GUI thread) -> worker thread -> insert (GUI thread).

    `finished` carries the new layer (a group for a job of several), or None when nothing
    was inserted. A job of several cancelled part-way inserts the results that were done.
    Every inserted result is also recorded in `history` (this document's results).
    """

    progressed = Signal(object)
    previewed = Signal(object)
    resulted = Signal(object)  # one result of the job, as it arrives
    statused = Signal(str)  # a daemon started for this job: its lines
    succeeded = Signal(object)
    failed = Signal(object)
    finished = Signal(object)

    _running: set[JobController] = set()  # keeps controllers alive until they finish

    def __init__(
        self,
        parent_widget: QtWidgets.QWidget | None = None,
        *,
        report_error: Callable[[QtWidgets.QWidget | None, str], None] = show_error,
        show_progress: bool = True,
        panel: ProgressPanel | None = None,
    ) -> None:
        """`panel`: show the progress there (the docker's) instead of in a dialog of its own."""
        super().__init__()
        self.parent_widget = parent_widget
        self.report_error = report_error
        self.show_progress = show_progress
        self.panel = panel
        self.progress: Any = None  # where progress shows: the panel, or a ProgressDialog
        self.job: flow.PreparedJob | None = None
        self.worker: jobs.JobThread | None = None
        self.results: list[p.Result] = []
        self.settings: Settings | None = None
        self.conditioning: Conditioning | None = None  # by layer name, for the History
        self.error: InpaintError | None = None
        self.progressed.connect(self._on_progress)
        self.previewed.connect(self._on_preview)
        self.statused.connect(self._on_status)
        self.resulted.connect(self._on_one_result)
        self.succeeded.connect(self._on_results)
        self.failed.connect(self._on_error)

    def start(
        self,
        document: Any,
        node: Any,
        job_settings: Settings,
        timeout: float | None = None,
        request: type[p.Submit] = p.Submit,
        conditioning: Conditioning | None = None,
    ) -> bool:
        """Read the layer and start the job (`request` StrengthMapRequest: ask for its strength
        map only; `conditioning`: its control and reference layers, which a map ignores); False
        (after telling the painter) if it cannot start."""
        try:
            host = KritaDocument(document, node)
            maps = flow.Maps()
            if conditioning is not None and not issubclass(request, p.StrengthMapRequest):
                maps = conditioning.inputs(document)
            self.job = flow.prepare(host, job_settings, maps=maps, request=request)
            self.settings = job_settings
            self.conditioning = conditioning
        except Exception as exc:
            self._fail(jobs.detached(as_inpaint_error(exc)))
            return False
        if self.panel is not None:
            self.progress = self.panel
            self.panel.reset()
            self.panel.cancel_requested.connect(self.cancel)
            self.panel.show()
        elif self.show_progress:
            self.progress = ProgressDialog(self.parent_widget, self.job.layer_name)
            self.progress.cancel_requested.connect(self.cancel)
            self.progress.show()
        if self.progress is not None:
            target = getattr(self.progress, "panel", self.progress)
            target.total = self.job.submit.params.results
        self.worker = jobs.JobThread(
            self.job,
            job_settings,
            timeout=timeout,
            on_done=self.succeeded.emit,
            on_error=self.failed.emit,
            on_result=self.resulted.emit,
            on_progress=self.progressed.emit,
            on_preview=self.previewed.emit,
            on_status=self.statused.emit,
        )
        JobController._running.add(self)
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _on_progress(self, progress: p.Progress) -> None:
        if self.progress is not None:
            self.progress.show_progress(progress)

    def _on_preview(self, preview: p.Preview) -> None:
        if self.progress is not None:
            self.progress.show_preview(preview)

    def _on_status(self, line: str) -> None:
        if self.progress is not None:
            self.progress.label.setText(line)

    def _on_one_result(self, _result: p.Result) -> None:
        if self.progress is not None:
            target = getattr(self.progress, "panel", self.progress)
            target.done += 1

    def _on_results(self, results: list[p.Result]) -> None:
        layer = self._insert(results)
        if layer is None:
            return
        self._close()
        self.finished.emit(layer)

    def _insert(self, results: list[p.Result]) -> Any:
        """Insert the results and record them in the history; None (reported) on failure."""
        assert self.job is not None and self.settings is not None
        self.results = list(results)
        try:
            layer = flow.finish(self.job, results)
        except Exception as exc:
            self._fail(jobs.detached(as_inpaint_error(exc)))
            return None
        if not isinstance(self.job.submit, p.StrengthMapRequest):  # a map is no result to repeat
            with contextlib.suppress(Exception):  # the layer is in; a history hiccup must not undo that
                history.HISTORY.record(self.job, self.settings, results, layer, self.conditioning)
        host = self.job.host
        if isinstance(host, KritaDocument) and host.node.parentNode() is not None:
            keep_active(host.document, host.node)
        return layer

    def _on_error(self, error: InpaintError) -> None:
        if isinstance(error, JobCancelled) and error.kept and self.job is not None:
            kept, error.kept = error.kept, []  # the results go into the image, not the error
            layer = self._insert(kept)
            if layer is None:
                return
            self.error = error
            self._close()
            self.finished.emit(layer)
            return
        self._fail(error)

    def _fail(self, error: InpaintError) -> None:
        self.error = error
        self._close()
        if not isinstance(error, JobCancelled):  # the painter asked for it: no message box
            self.report_error(self.parent_widget, error.message)
        self.finished.emit(None)

    def _close(self) -> None:
        if self.progress is self.panel and self.panel is not None:
            self.panel.cancel_requested.disconnect(self.cancel)
            self.panel.hide()
            self.progress = None
        elif self.progress is not None:
            self.progress.cancel_button.setEnabled(False)  # closing is not a cancel now
            self.progress.close()
            self.progress.deleteLater()
            self.progress = None
        JobController._running.discard(self)
        # Krita's objects only as long as the job runs: a controller may outlive it in a
        # reference cycle (signal slots that close over it), and Krita crashes at exit
        # on document wrappers that such cycles free after Krita's own objects.
        self.job = None
        if self.worker is not None:
            self.worker.job = None


def keep_active(document: Any, node: Any) -> None:
    """Make `node` the active layer again once Krita has handled what was just added:
    its Layers docker makes an added node active when the event loop next runs, after
    any setActiveNode of ours (seen in Krita 5.1.5), and the next run must work on the
    painting, not on a result. Only the keys wait in the timers, no Krita object."""
    document_key, key = history.document_key(document), history.node_key(node)

    def again() -> None:
        found = history.find_document(document_key)
        target = None if found is None else history.find_node(found, key)
        if target is not None and found.activeNode() != target:
            found.setActiveNode(target)

    for delay in (0, 150):
        QtCore.QTimer.singleShot(delay, again)


def run_from_form(
    form: SettingsForm,
    document: Any,
    parent: QtWidgets.QWidget | None,
    panel: ProgressPanel | None = None,
    report_error: Callable[[QtWidgets.QWidget | None, str], None] | None = None,
    request: type[p.Submit] = p.Submit,
) -> JobController | None:
    """Start a job with the form's settings on the document's active layer (`request`
    StrengthMapRequest: its strength map only, as the layer "Strength map")."""
    report_error = report_error or show_error
    store = SettingsStore.instance()
    chosen = form.values()
    store.update(chosen, form)
    if form.problem():
        report_error(parent, form.problem())
        return None
    if document is None:
        report_error(parent, "Open an image first.")
        return None
    return start_job(document, None, chosen, parent, panel, report_error, request, store.conditioning)


def start_job(
    document: Any,
    node: Any,
    chosen: Settings,
    parent: QtWidgets.QWidget | None,
    panel: ProgressPanel | None = None,
    report_error: Callable[[QtWidgets.QWidget | None, str], None] | None = None,
    request: type[p.Submit] = p.Submit,
    conditioning: Conditioning | None = None,
) -> JobController:
    """Start a job on `node` (None: the active layer), with `conditioning`'s control and
    reference layers; the seed it used goes to every form."""
    controller = JobController(parent, panel=panel, report_error=report_error or show_error)
    store = SettingsStore.instance()

    def done(layer: Any) -> None:
        if controller.results and isinstance(controller.results[0], p.Result):  # a map has no seed
            store.seed_used.emit(controller.results[0].seed)

    controller.finished.connect(done)
    controller.start(document, node, chosen, request=request, conditioning=conditioning)
    return controller


def open_dialog() -> None:
    """The menu action: ask for the settings, then run the job in the background."""
    from krita import Krita

    parent = main_window()
    document = Krita.instance().activeDocument()
    if document is None:
        show_error(parent, "Open an image first, select the area to change, then run Differential Inpaint.")
        return
    dialog = InpaintDialog(parent)
    dialog.form.refresh_models()
    if exec_dialog(dialog):  # 0 = rejected in both bindings; the settings are kept either way
        run_from_form(dialog.form, document, parent)


def show_map_without_docker() -> None:
    """The Show strength map action with no docker: the kept settings, a progress window."""
    from krita import Krita

    parent = main_window()
    document = Krita.instance().activeDocument()
    if document is None:
        show_error(parent, "Open an image first, pick the map, then show the strength map.")
        return
    start_job(document, None, SettingsStore.instance().settings, parent, request=p.StrengthMapRequest)
