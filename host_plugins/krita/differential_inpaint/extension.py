"""Krita integration: the Tools > Scripts menu action and the docker."""

from __future__ import annotations

from typing import Any

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from . import settings, ui
from .qt import QtWidgets

ACTION_ID = "differential_inpaint"
DOCKER_ID = "differential_inpaint_docker"


class DifferentialInpaintExtension(Extension):
    def __init__(self, parent: Any) -> None:
        super().__init__(parent)

    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's name
        action = window.createAction(ACTION_ID, "Differential Inpaint", "tools/scripts")
        action.setToolTip("Inpaint the selection with Differential Diffusion (soft selections change partly)")
        action.triggered.connect(ui.open_dialog)


class DifferentialInpaintDocker(DockWidget):
    """The dialog's controls, always at hand, with an Inpaint button."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(ui.TITLE)
        body = QtWidgets.QWidget(self)
        self.form = ui.SettingsForm(body)
        self.form.set_values(settings.load())
        self.run_button = QtWidgets.QPushButton("Inpaint selection")
        self.run_button.clicked.connect(self._run)
        layout = QtWidgets.QVBoxLayout(body)
        layout.addWidget(self.form)
        layout.addWidget(self.run_button)
        layout.addStretch(1)
        self.setWidget(body)
        self._controllers: list[ui.JobController] = []

    def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's name
        pass

    def _run(self) -> None:
        controller = ui.run_from_form(self.form, Krita.instance().activeDocument(), ui.main_window())
        if controller is not None:
            self._controllers = [c for c in self._controllers if c.worker and c.worker.is_alive()]
            self._controllers.append(controller)


def register() -> None:
    instance = Krita.instance()
    instance.addExtension(DifferentialInpaintExtension(instance))
    instance.addDockWidgetFactory(
        DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockPosition.DockRight, DifferentialInpaintDocker)
    )
