"""The Differential Inpaint docker: the plugin's main interface.

Compact enough for a 768 px high screen: the prompt (Ctrl+Enter runs), strength
in percent, the model, a big Run button that says what it will do (inpaint the
selection, or repaint the whole layer when nothing is selected), the rest of
the settings under an "Advanced" fold, progress and preview in the docker
itself, never in a window over the canvas, and errors in full below; the
History of this document's results under its own fold. Everything sits in a
scroll area, so nothing is ever cut off. The settings are the live
`SettingsStore` that the menu's dialog shows too.

A run adds its result(s) to the image at once (a layer, or a group for several),
as the menu and `inpaint_layer` do, and records them in the History, where any
one can be previewed, applied again as its own layer, its seed reused, or its
job run again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from krita import DockWidget, Krita

from . import history, ui
from . import protocol as p
from .client import InpaintError, as_inpaint_error, launcher
from .history_panel import HistoryPanel
from .qt import QtCore, QtWidgets, Signal

RUN_SELECTION = "Inpaint selection"
RUN_WHOLE_LAYER = "Repaint whole layer"
RUN_MAP = "Inpaint by map"
RUN_DEPTH = "Inpaint by depth"
SHOW_MAP = "Show strength map"
_SELECTION_POLL_MS = 400  # how often the Run button checks whether something is selected
_DAEMON_POLL_MS = 5000  # how often the docker asks whether the daemon runs (off the GUI thread)


def has_selection(document: Any) -> bool:
    selection = None if document is None else document.selection()
    return selection is not None and selection.width() > 0 and selection.height() > 0


class DaemonRow(QtWidgets.QWidget):
    """The daemon's state (not running / starting / ready, its model and device), with
    Start and Stop for a daemon this installation can start. Every question to the
    daemon runs in a worker thread; the answers come back through a signal."""

    answered = Signal(object, str)  # DaemonState or None, a sentence

    def __init__(self, server: Callable[[], str], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._server = server
        self.label = QtWidgets.QLabel()
        self.label.setWordWrap(True)
        self.start_button = QtWidgets.QPushButton("Start")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.start_button.setToolTip("Start the daemon this plugin was installed with")
        self.stop_button.setToolTip("Stop the daemon the plugin started (frees the GPU)")
        self.start_button.clicked.connect(lambda: self._ask(self._start))
        self.stop_button.clicked.connect(lambda: self._ask(self._stop))
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.start_button)
        layout.addWidget(self.stop_button)
        self.answered.connect(self._show)
        self._busy = False
        self.state: Any = None

    def refresh(self) -> None:
        self._ask(self._state)

    def _ask(self, work: Callable[[str], tuple[Any, str]]) -> None:
        if self._busy:
            return
        self._busy = True
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(False)
        server = self._server()

        def run() -> None:
            try:
                outcome = work(server)
            except InpaintError as exc:
                outcome = (None, exc.message)
            except Exception as exc:  # a bug: still a sentence, never a dead row
                outcome = (None, as_inpaint_error(exc).message)
            with contextlib.suppress(RuntimeError):  # the docker is gone
                self.answered.emit(*outcome)

        threading.Thread(target=run, name="differential-inpaint-daemon-state", daemon=True).start()

    @staticmethod
    def _state(server: str) -> tuple[Any, str]:
        current = launcher.state(server)
        return current, launcher.status_line(server, current)

    def _start(self, server: str) -> tuple[Any, str]:
        with contextlib.suppress(RuntimeError):
            self.answered.emit(None, "Starting the daemon...")
        current = launcher.start(server, on_status=lambda line: self._relay(line))
        return current, launcher.status_line(server, current)

    def _relay(self, line: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.answered.emit(None, line)

    def _stop(self, server: str) -> tuple[Any, str]:
        launcher.stop(server)
        return self._state(server)

    def _show(self, current: Any, text: str) -> None:
        self.label.setText(f"Daemon: {text}")
        if current is None and text.endswith("..."):
            return  # a line while starting: the work goes on
        self._busy = False
        self.state = current
        startable = launcher.can_start(self._server())
        ready = current is not None and current.state == launcher.READY
        self.start_button.setEnabled(startable and not ready)
        self.stop_button.setEnabled(ready and launcher.started_pid(self._server()) is not None)


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
        self.run_button.clicked.connect(lambda _checked=False: self.run())
        self.form.submitted.connect(self.run)
        self.map_button = QtWidgets.QPushButton(SHOW_MAP)
        self.map_button.setToolTip(
            'Add the layer "Strength map": how much each pixel would change (white fully, black not '
            "at all), after the map's levels, depth, grow, feather and strength; nothing is sampled"
        )
        self.map_button.clicked.connect(lambda _checked=False: self.show_map())
        self.panel = ui.ProgressPanel(inner, preview_size=160)
        self.panel.hide()
        self.message = QtWidgets.QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        self.daemon = DaemonRow(lambda: self.form.values().host.server, inner)
        self.history_toggle = QtWidgets.QToolButton()
        self.history_toggle.setText("History")
        self.history_toggle.setCheckable(True)
        self.history_toggle.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.history_toggle.setArrowType(QtCore.Qt.ArrowType.RightArrow)
        self.history_toggle.setAutoRaise(True)
        self.history_toggle.setToolTip("This image's results: preview, apply, reuse a seed, run again")
        self.history = HistoryPanel(inner)
        self.history.hide()
        self.history.run_again_requested.connect(self.run_again)
        self.history_toggle.toggled.connect(self._fold_history)
        layout = QtWidgets.QVBoxLayout(inner)
        layout.addWidget(self.daemon)
        layout.addWidget(self.form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.map_button)
        layout.addWidget(self.panel)
        layout.addWidget(self.message)
        layout.addWidget(self.history_toggle)
        layout.addWidget(self.history)
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
        self._daemon_timer = QtCore.QTimer(self)
        self._daemon_timer.timeout.connect(self._poll_daemon)
        self._daemon_timer.start(_DAEMON_POLL_MS)
        self.update_run_button()
        self.daemon.refresh()

    def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's name
        self.form.refresh_layers()
        self.update_run_button()

    def _poll(self) -> None:
        if self.isVisible():
            self.form.refresh_layers()  # layers added, renamed or removed; another image
            self.update_run_button()
            self.update_history()

    def _fold_history(self, unfolded: bool) -> None:
        self.history.setVisible(unfolded)
        arrow = QtCore.Qt.ArrowType.DownArrow if unfolded else QtCore.Qt.ArrowType.RightArrow
        self.history_toggle.setArrowType(arrow)
        self.update_history()

    def update_history(self) -> None:
        """Forget closed images (a preview goes with its image) and show the active one's."""
        documents = history.open_documents()
        history.HISTORY.prune({history.document_key(d) for d in documents})
        active = Krita.instance().activeDocument()
        self.history.refresh(history.document_key(active))
        count = self.history.count()
        self.history_toggle.setText(f"History ({count})" if count else "History")

    def _poll_daemon(self) -> None:
        if self.isVisible() and self.controller is None:
            self.daemon.refresh()

    def update_run_button(self) -> None:
        """Say what Run will do: with nothing selected the whole layer is repainted; with a
        map layer or depth chosen, the map says where."""
        selected = has_selection(Krita.instance().activeDocument())
        chosen = self.form.values()
        if chosen.job.depth != p.Depth.NONE:
            text, tip = RUN_DEPTH, "The daemon's depth estimate of the region is the map"
        elif chosen.host.mask_layer:
            text, tip = RUN_MAP, f"'{chosen.host.mask_layer}' is the map: white changes fully, gray partly"
        elif selected:
            text, tip = (
                RUN_SELECTION,
                "Repaint the selection: white changes fully, gray partly, black not at all.",
            )
        else:
            text, tip = (
                RUN_WHOLE_LAYER,
                "Nothing is selected: the whole active layer is repainted at the chosen strength.",
            )
        if text in (RUN_DEPTH, RUN_MAP):
            tip += "; the selection limits it" if selected and chosen.host.limit_to_selection else ""
            tip += "."
        self.run_button.setText(text)
        self.run_button.setToolTip(tip)
        self.run_button.setEnabled(self.controller is None)
        self.map_button.setEnabled(self.controller is None)

    def run(self) -> None:
        self._run(p.Submit)

    def show_map(self) -> None:
        """The strength map the settings give, as the layer "Strength map", without sampling."""
        self._run(p.StrengthMapRequest)

    def _run(self, request: type[p.Submit]) -> None:
        if self.controller is not None:
            return  # one job at a time from the docker; its panel shows it
        self.message.hide()
        history.HISTORY.end_preview()  # the new results must not sit under a preview
        controller = ui.run_from_form(
            self.form,
            Krita.instance().activeDocument(),
            ui.main_window(),
            self.panel,
            self.show_message,
            request=request,
        )
        self._started(controller)

    def run_again(self, record: history.JobRecord) -> None:
        """A job from the History again, with its settings and control and reference layers,
        on the layer it was made from (never on a result layer, whichever layer is active now)."""
        if self.controller is not None:
            return
        self.message.hide()
        try:
            document, node = history.HISTORY.source_of(record)
        except InpaintError as exc:
            self.show_message(None, exc.message)
            return
        history.HISTORY.end_preview()
        controller = ui.start_job(
            document,
            node,
            record.settings,
            ui.main_window(),
            self.panel,
            self.show_message,
            conditioning=record.conditioning,  # the same control and reference layers, by name
        )
        self._started(controller)

    def _started(self, controller: ui.JobController | None) -> None:
        if controller is None or controller.job is None:
            return  # refused before it started; the message says why
        self.controller = controller
        controller.finished.connect(self._finished)
        self.update_run_button()

    def apply(self) -> None:
        self.history.apply_selected()

    def discard(self) -> None:
        self.history.discard_selected()

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
        self.update_history()
        self.daemon.refresh()  # a run may have started it
