"""The one place the plugin imports Qt: PyQt6 (Krita 6) or PyQt5 (Krita 5).

Everything else does `from .qt import QtCore, QtGui, QtWidgets, Signal` and uses
fully qualified enums (`QtGui.QImage.Format.Format_RGBA8888`), which both
bindings accept.
"""

from __future__ import annotations

import sys
from types import ModuleType


def _load() -> tuple[ModuleType, ModuleType, ModuleType]:
    # Krita has already imported the binding it was built with; a second one
    # would load another Qt major version into the process and crash it, so
    # follow Krita's choice before trying PyQt6 then PyQt5.
    if "PyQt5.QtCore" in sys.modules and "PyQt6.QtCore" not in sys.modules:
        order = ("PyQt5", "PyQt6")
    else:
        order = ("PyQt6", "PyQt5")
    errors = []
    for name in order:
        try:
            core = __import__(f"{name}.QtCore", fromlist=["QtCore"])
            gui = __import__(f"{name}.QtGui", fromlist=["QtGui"])
            widgets = __import__(f"{name}.QtWidgets", fromlist=["QtWidgets"])
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return core, gui, widgets
    raise ImportError("neither PyQt6 nor PyQt5 can be imported (" + "; ".join(errors) + ")")


QtCore, QtGui, QtWidgets = _load()
Signal = QtCore.pyqtSignal


def exec_dialog(dialog: QtWidgets.QDialog) -> int:
    """Run a modal dialog (`exec` in both bindings; PyQt5 also had `exec_`)."""
    return dialog.exec()


def pump_events(max_ms: int = 20) -> None:
    """Let Qt repaint and deliver queued signals while the caller waits,
    without taking user input (which could start a second job mid-way)."""
    app = QtCore.QCoreApplication.instance()
    if app is None or QtCore.QThread.currentThread() is not app.thread():
        return
    QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, max_ms)
