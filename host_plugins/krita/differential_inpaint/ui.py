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

from . import core, jobs, settings
from . import protocol as p
from .client import DEFAULT_SERVER, InpaintError, JobCancelled, server_info
from .qt import QtCore, QtGui, QtWidgets, Signal, exec_dialog

TITLE = "Differential Inpaint"
_MAX_SEED = 2**63 - 1


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


class SettingsForm(QtWidgets.QWidget):
    """Every control of a job; used by the dialog and the docker."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.prompt = QtWidgets.QPlainTextEdit()
        self.prompt.setPlaceholderText("What to paint in the selection")
        self.prompt.setMaximumHeight(72)
        self.negative_prompt = QtWidgets.QLineEdit()
        self.negative_prompt.setPlaceholderText("What to avoid (optional)")
        self.strength = QtWidgets.QDoubleSpinBox()
        self.strength.setRange(0.01, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setToolTip("Scales the whole mask: 1 = white selected pixels change fully")
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, p.DEFAULT_LIMITS.max_steps)
        self.guidance = QtWidgets.QDoubleSpinBox()
        self.guidance.setRange(0.0, 100.0)
        self.guidance.setSingleStep(0.5)
        self.random_seed = QtWidgets.QCheckBox("Random")
        self.seed = QtWidgets.QLineEdit()
        self.seed.setValidator(QtGui.QRegularExpressionValidator(QtCore.QRegularExpression(r"\d{1,19}")))
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        self.model = QtWidgets.QComboBox()
        self.refresh = QtWidgets.QPushButton("Refresh")
        self.refresh.setToolTip("Ask the daemon for its models")
        self.grow = QtWidgets.QDoubleSpinBox()
        self.feather = QtWidgets.QDoubleSpinBox()
        for box in (self.grow, self.feather):
            box.setRange(0.0, 1024.0)
            box.setSuffix(" px")
        self.padding = QtWidgets.QSpinBox()
        self.padding.setRange(0, 2048)
        self.padding.setSuffix(" px")
        self.padding.setToolTip("Context around the selection that the model sees")
        self.server = QtWidgets.QLineEdit()
        self.server.setPlaceholderText(DEFAULT_SERVER)
        self.token = QtWidgets.QLineEdit()
        self.token.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Only if the daemon asks for one")
        self.token.setToolTip("The token a daemon on another machine prints when it starts")
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)

        seed_row = QtWidgets.QHBoxLayout()
        seed_row.addWidget(self.random_seed)
        seed_row.addWidget(self.seed, 1)
        model_row = QtWidgets.QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.refresh)
        form = QtWidgets.QFormLayout(self)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative prompt", self.negative_prompt)
        form.addRow("Strength", self.strength)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Seed", seed_row)
        form.addRow("Model", model_row)
        form.addRow("Mask grow", self.grow)
        form.addRow("Mask feather", self.feather)
        form.addRow("Context padding", self.padding)
        form.addRow("Daemon address", self.server)
        form.addRow("Token", self.token)
        form.addRow(self.status)

        self._fetcher = ModelFetcher(self)
        self._fetcher.loaded.connect(self._models_loaded)
        self._fetcher.failed.connect(self._models_failed)
        self.refresh.clicked.connect(self.refresh_models)
        self._set_models([], None, keep="")

    # -- values ---------------------------------------------------------------

    def set_values(self, values: settings.FormValues) -> None:
        self.prompt.setPlainText(values.prompt)
        self.negative_prompt.setText(values.negative_prompt)
        self.strength.setValue(values.strength)
        self.steps.setValue(values.steps)
        self.guidance.setValue(values.guidance)
        self.random_seed.setChecked(values.random_seed)
        self.seed.setEnabled(not values.random_seed)
        self.seed.setText(str(values.seed))
        self._set_models(self._listed_models(), None, keep=values.model)
        self.grow.setValue(values.grow)
        self.feather.setValue(values.feather)
        self.padding.setValue(values.padding)
        self.server.setText(values.server)
        self.token.setText(values.token)

    def values(self) -> settings.FormValues:
        seed_text = self.seed.text().strip()
        return settings.FormValues(
            prompt=self.prompt.toPlainText().strip(),
            negative_prompt=self.negative_prompt.text().strip(),
            strength=self.strength.value(),
            steps=self.steps.value(),
            guidance=self.guidance.value(),
            random_seed=self.random_seed.isChecked(),
            seed=min(int(seed_text), _MAX_SEED) if seed_text else 0,
            model=self.model.currentData() or "",
            grow=self.grow.value(),
            feather=self.feather.value(),
            padding=self.padding.value(),
            server=self.server.text().strip(),
            token=self.token.text().strip(),
        )

    def show_used_seed(self, seed: int) -> None:
        """After a job: the seed it used, so a good result can be repeated."""
        self.seed.setText(str(seed))
        self.status.setText(f"Last seed: {seed}")

    # -- models -----------------------------------------------------------------

    def _listed_models(self) -> list[str]:
        return [self.model.itemData(i) for i in range(1, self.model.count())]

    def _set_models(self, names: list[str], default: str | None, keep: str) -> None:
        self.model.clear()
        self.model.addItem("Daemon's default" + (f" ({default})" if default else ""), "")
        if keep and keep not in names:
            names = [*names, keep]  # keep a remembered choice even before the daemon answers
        for name in names:
            self.model.addItem(name, name)
        index = self.model.findData(keep) if keep else 0
        self.model.setCurrentIndex(max(index, 0))

    def refresh_models(self) -> None:
        self.refresh.setEnabled(False)
        self.status.setText("Asking the daemon for its models...")
        self._fetcher.fetch(self.server.text().strip(), self.token.text().strip())

    def _models_loaded(self, names: list[str], default: str | None) -> None:
        self.refresh.setEnabled(True)
        self._set_models(names, default, keep=self.model.currentData() or "")
        self.status.setText(f"The daemon offers {len(names)} model(s).")

    def _models_failed(self, message: str) -> None:
        self.refresh.setEnabled(True)
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
        if progress.stage == p.Stage.QUEUED:
            self.label.setText(f"Waiting for the daemon ({progress.position} job(s) ahead)...")
            return
        if progress.steps:
            self.bar.setRange(0, progress.steps)
            self.bar.setValue(progress.step)
            self.steps_seen = max(self.steps_seen, progress.step)
            self.label.setText(f"{progress.stage.capitalize()}: step {progress.step} of {progress.steps}")
        else:
            self.label.setText(f"{progress.stage.capitalize()}...")

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
        self.job: core.PreparedJob | None = None
        self.worker: jobs.JobThread | None = None
        self.result: p.Result | None = None
        self.error: InpaintError | None = None
        self.layer: Any = None
        self.progressed.connect(self._on_progress)
        self.previewed.connect(self._on_preview)
        self.succeeded.connect(self._on_result)
        self.failed.connect(self._on_error)

    def start(
        self, document: Any, node: Any, job_settings: core.InpaintSettings, timeout: float | None = None
    ) -> bool:
        """Read the layer and start the job; False (after telling the painter) if it cannot start."""
        try:
            self.job = core.prepare_job(document, node, job_settings)
        except Exception as exc:
            self._fail(jobs.as_inpaint_error(exc))
            return False
        if self.show_progress:
            self.progress = ProgressDialog(self.parent_widget, self.job.layer_name)
            self.progress.cancel_requested.connect(self.cancel)
            self.progress.show()
        self.worker = jobs.JobThread(
            self.job.submit,
            server=job_settings.server,
            token=job_settings.token or None,
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
            self.layer = core.insert_result(self.job, result)
        except Exception as exc:
            self._fail(jobs.as_inpaint_error(exc))
            return
        self._close()
        self.finished.emit(self.layer)

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
    controller.start(document, None, settings.to_settings(values))
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
