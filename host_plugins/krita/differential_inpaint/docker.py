"""The Differential Inpaint docker: the plugin's main interface.

Compact enough for a 768 px high screen: the prompt (Ctrl+Enter runs), strength
in percent, the model, a big Run button that says what it will do (inpaint the
selection, or repaint the whole layer when nothing is selected), the rest of
the settings under an "Advanced" fold, progress and preview in the docker
itself, never in a window over the canvas, and errors in full below. Everything
sits in a scroll area, so nothing is ever cut off. The settings are the live
`SettingsStore` that the menu's dialog shows too.
"""

from __future__ import annotations

from typing import Any

from krita import DockWidget, Krita

from . import ui
from .qt import QtCore, QtWidgets

RUN_SELECTION = "Inpaint selection"
RUN_WHOLE_LAYER = "Repaint whole layer"
_SELECTION_POLL_MS = 400  # how often the Run button checks whether something is selected


def has_selection(document: Any) -> bool:
    selection = None if document is None else document.selection()
    return selection is not None and selection.width() > 0 and selection.height() > 0


class DifferentialInpaintDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(ui.TITLE)
        inner = QtWidgets.QWidget()
        self.form = ui.SettingsForm(inner, fold_advanced=True)
        self.run_button = QtWidgets.QPushButton(RUN_SELECTION)
        self.run_button.setMinimumHeight(self.run_button.sizeHint().height() * 3 // 2)
        font = self.run_button.font()
        font.setBold(True)
        self.run_button.setFont(font)
        self.run_button.clicked.connect(self.run)
        self.form.submitted.connect(self.run)
        self.panel = ui.ProgressPanel(inner, preview_size=160)
        self.panel.hide()
        self.message = QtWidgets.QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        layout = QtWidgets.QVBoxLayout(inner)
        layout.addWidget(self.form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.panel)
        layout.addWidget(self.message)
        layout.addStretch(1)
        scroll = QtWidgets.QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        self.setWidget(scroll)
        self.controller: ui.JobController | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self._poll)
        self._timer.start(_SELECTION_POLL_MS)
        self.update_run_button()

    def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's name
        self.update_run_button()

    def _poll(self) -> None:
        if self.isVisible():
            self.update_run_button()

    def update_run_button(self) -> None:
        """Say what Run will do: with nothing selected the whole layer is repainted."""
        whole = not has_selection(Krita.instance().activeDocument())
        self.run_button.setText(RUN_WHOLE_LAYER if whole else RUN_SELECTION)
        self.run_button.setToolTip(
            "Nothing is selected: the whole active layer is repainted at the chosen strength."
            if whole
            else "Repaint the selection: white changes fully, gray partly, black not at all."
        )
        self.run_button.setEnabled(self.controller is None)

    def run(self) -> None:
        if self.controller is not None:
            return  # one job at a time from the docker; its panel shows it
        self.message.hide()
        controller = ui.run_from_form(
            self.form, Krita.instance().activeDocument(), ui.main_window(), self.panel, self.show_message
        )
        if controller is None or controller.job is None:
            return  # refused before it started; the message says why
        self.controller = controller
        controller.finished.connect(self._finished)
        self.update_run_button()

    def cancel(self) -> None:
        if self.controller is not None:
            self.controller.cancel()

    def show_message(self, _parent: object, text: str) -> None:
        """Errors in the docker, in full, where the painter is looking."""
        self.message.setText(text)
        self.message.setStyleSheet("color: #e0604f;")
        self.message.show()

    def _finished(self, layer: Any) -> None:
        self.controller = None
        self.update_run_button()
