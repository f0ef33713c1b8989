"""Widgets: the settings form (dialog and docker), the progress dialog, and the
controller that runs one job from the GUI without ever blocking it.

The network work happens in `jobs.JobThread`; its callbacks only emit Qt
signals, which Qt queues to the GUI thread, where Krita is touched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from . import jobs, settings
from . import protocol as p
from .client import DEFAULT_SERVER, InpaintError, JobCancelled, Settings, as_inpaint_error, flow, server_info
from .krita_io import KritaDocument
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

    loaded = Signal(object, object)  # list of model names, default model name or None
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
        except Exception as exc:  # e.g. a malformed address
            outcome = ("failed", f"{exc.__class__.__name__}: {exc}")
        else:
            outcome = ("loaded", [m.name for m in welcome.models], welcome.default_model)
        with contextlib.suppress(RuntimeError):  # the form was closed meanwhile
            getattr(self, outcome[0]).emit(*outcome[1:])


class Field:
    """One setting's widget: `widget` goes in the form; `value()`/`set_value()` speak
    the setting's own type (None where it is optional)."""

    def __init__(self, param: p.Param, widget: QtWidgets.QWidget) -> None:
        self.param = param
        self.widget = widget
        widget.setToolTip(param.help)

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


class TextField(Field):
    def __init__(self, param: p.Param) -> None:
        if param.multiline:
            self.edit: Any = QtWidgets.QPlainTextEdit()
            self.edit.setMaximumHeight(72)
        else:
            self.edit = QtWidgets.QLineEdit()
            self.edit.setMaxLength(param.max_chars())
            if param.secret:
                self.edit.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.edit.setPlaceholderText(param.help)
        super().__init__(param, self.edit)

    def value(self) -> Any:
        text = (self.edit.toPlainText() if self.param.multiline else self.edit.text()).strip()
        return None if self.param.optional and not text else text

    def set_value(self, value: Any) -> None:
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
        super().__init__(param, box)

    def value(self) -> Any:
        return self.box.value()

    def set_value(self, value: Any) -> None:
        self.box.setValue(value)


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
        super().__init__(param, row)

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


class ModelField(Field):
    """The daemon's models, asked for in a worker thread, plus its default."""

    def __init__(self, param: p.Param, form: SettingsForm) -> None:
        self.combo = QtWidgets.QComboBox()
        self.refresh = QtWidgets.QPushButton("Refresh")
        self.refresh.setToolTip("Ask the daemon for its models")
        row = QtWidgets.QWidget()
        layout = QtWidgets.QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.refresh)
        super().__init__(param, row)
        self.set_models([], None, keep=None)

    def listed(self) -> list[str]:
        return [self.combo.itemData(i) for i in range(1, self.combo.count())]

    def set_models(self, names: list[str], default: str | None, keep: str | None) -> None:
        self.combo.clear()
        self.combo.addItem("Daemon's default" + (f" ({default})" if default else ""), "")
        if keep and keep not in names:
            names = [*names, keep]  # keep a remembered choice even before the daemon answers
        for name in names:
            self.combo.addItem(name, name)
        index = self.combo.findData(keep) if keep else 0
        self.combo.setCurrentIndex(max(index, 0))

    def value(self) -> Any:
        return self.combo.currentData() or None

    def set_value(self, value: Any) -> None:
        self.set_models(self.listed(), None, keep=value)


def make_field(param: p.Param, form: SettingsForm) -> Field:
    if param.choices == "models":
        return ModelField(param, form)
    if param.kind is str:
        return TextField(param)
    if param.optional and param.kind is int:
        return OptionalIntField(param)
    return NumberField(param)


class SettingsForm(QtWidgets.QWidget):
    """One widget per setting Krita shows (`settings.SHOWN`), built from the spec;
    used by the dialog and the docker."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.fields: dict[str, Field] = {}
        form = QtWidgets.QFormLayout(self)
        for param in settings.SHOWN:
            field = self.fields[param.name] = make_field(param, self)
            form.addRow(param.label, field.widget)
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        form.addRow(self.status)
        self.model = self.fields["model"]
        assert isinstance(self.model, ModelField)
        self._fetcher = ModelFetcher(self)
        self._fetcher.loaded.connect(self._models_loaded)
        self._fetcher.failed.connect(self._models_failed)
        self.model.refresh.clicked.connect(self.refresh_models)

    # -- values ---------------------------------------------------------------

    def set_values(self, chosen: Settings) -> None:
        values = chosen.values()
        for name, field in self.fields.items():
            field.set_value(values[name])

    def values(self) -> Settings:
        """The settings shown; those the form does not show keep their defaults."""
        return Settings.from_values({name: field.value() for name, field in self.fields.items()})

    def show_used_seed(self, seed: int) -> None:
        """After a job: the seed it used, so a good result can be repeated."""
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

    def _models_loaded(self, names: list[str], default: str | None) -> None:
        assert isinstance(self.model, ModelField)
        self.model.refresh.setEnabled(True)
        self.model.set_models(names, default, keep=self.model.value())
        self.status.setText(f"The daemon offers {len(names)} model(s).")

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
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(buttons)


class ProgressDialog(QtWidgets.QDialog):
    """Stage, step count, the latest preview, and Cancel."""

    cancel_requested = Signal()

    def __init__(self, parent: QtWidgets.QWidget | None, title: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{TITLE}: {title}")
        self.label = QtWidgets.QLabel("Connecting to the daemon...")
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 0)  # busy until the first step count arrives
        self.preview = QtWidgets.QLabel()
        self.preview.setMinimumSize(256, 256)
        self.preview.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.cancel_button)
        self.steps_seen = 0

    def show_progress(self, progress: p.Progress) -> None:
        text, fraction = flow.progress_text(progress)
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

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self.cancel_button.isEnabled():
            self._cancel()
        super().closeEvent(event)


class JobController(QtCore.QObject):
    """Runs one job: read (GUI thread) -> worker thread -> insert (GUI thread).

    `finished` carries the new layer, or None when nothing was inserted.
    """

    progressed = Signal(object)
    previewed = Signal(object)
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
    ) -> None:
        super().__init__()
        self.parent_widget = parent_widget
        self.report_error = report_error
        self.show_progress = show_progress
        self.progress: ProgressDialog | None = None
        self.job: flow.PreparedJob | None = None
        self.worker: jobs.JobThread | None = None
        self.result: p.Result | None = None
        self.error: InpaintError | None = None
        self.progressed.connect(self._on_progress)
        self.previewed.connect(self._on_preview)
        self.succeeded.connect(self._on_result)
        self.failed.connect(self._on_error)

    def start(self, document: Any, node: Any, job_settings: Settings, timeout: float | None = None) -> bool:
        """Read the layer and start the job; False (after telling the painter) if it cannot start."""
        try:
            self.job = flow.prepare(KritaDocument(document, node), job_settings)
        except Exception as exc:
            self._fail(as_inpaint_error(exc).with_traceback(None))
            return False
        if self.show_progress:
            self.progress = ProgressDialog(self.parent_widget, self.job.layer_name)
            self.progress.cancel_requested.connect(self.cancel)
            self.progress.show()
        self.worker = jobs.JobThread(
            self.job,
            job_settings,
            timeout=timeout,
            on_result=self.succeeded.emit,
            on_error=self.failed.emit,
            on_progress=self.progressed.emit,
            on_preview=self.previewed.emit,
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

    def _on_result(self, result: p.Result) -> None:
        assert self.job is not None
        self.result = result
        try:
            layer = flow.finish(self.job, result)
        except Exception as exc:
            self._fail(as_inpaint_error(exc).with_traceback(None))
            return
        self._close()
        self.finished.emit(layer)

    def _on_error(self, error: InpaintError) -> None:
        self._fail(error)

    def _fail(self, error: InpaintError) -> None:
        self.error = error
        self._close()
        if not isinstance(error, JobCancelled):  # the painter asked for it: no message box
            self.report_error(self.parent_widget, error.message)
        self.finished.emit(None)

    def _close(self) -> None:
        if self.progress is not None:
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


def run_from_form(
    form: SettingsForm, document: Any, parent: QtWidgets.QWidget | None
) -> JobController | None:
    """Save the form's values and start a job on the document's active layer."""
    values = form.values()
    settings.save(values)
    if document is None:
        show_error(parent, "Open an image first.")
        return None
    controller = JobController(parent)

    def done(layer: Any) -> None:
        if controller.result is not None:
            with contextlib.suppress(RuntimeError):  # the dialog's form is gone; the docker's stays
                form.show_used_seed(controller.result.seed)

    controller.finished.connect(done)
    controller.start(document, None, values)
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
    dialog.form.set_values(settings.load())
    dialog.form.refresh_models()
    if not exec_dialog(dialog):  # 0 = rejected in both bindings
        settings.save(dialog.form.values())  # remember the prompt even when cancelled
        return
    run_from_form(dialog.form, document, parent)
