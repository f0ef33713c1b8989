"""The docker's History: this document's results as thumbnails, grouped by job.

Choosing a result previews it on the canvas (`history.History.show_preview`);
Apply keeps it as a layer, Discard forgets it, Use seed puts its seed in the
settings, Run again runs its job's settings on the layer the job was made from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import history
from .client import InpaintError, as_inpaint_error
from .qt import QtCore, QtGui, QtWidgets, Signal

ROLE = QtCore.Qt.ItemDataRole.UserRole
ICON = 56


class HistoryPanel(QtWidgets.QWidget):
    run_again_requested = Signal(object)  # a history.JobRecord

    def __init__(self, parent: QtWidgets.QWidget | None = None, model: history.History | None = None) -> None:
        super().__init__(parent)
        self.model = model or history.HISTORY
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QtCore.QSize(ICON, ICON))
        self.tree.setIndentation(8)
        self.tree.setUniformRowHeights(False)
        self.tree.setWordWrap(True)
        self.tree.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.tree.setMinimumHeight(3 * ICON)
        self.tree.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.tree.currentItemChanged.connect(self._chosen)
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.setToolTip("Keep this result as a layer named with its seed (one undo step)")
        self.discard_button = QtWidgets.QPushButton("Discard")
        self.discard_button.setToolTip("Remove this result (a job: all of its results) from the history")
        self.seed_button = QtWidgets.QPushButton("Use seed")
        self.seed_button.setToolTip("Put this result's seed in the settings, to make it again or vary it")
        self.again_button = QtWidgets.QPushButton("Run again")
        self.again_button.setToolTip("Run this job's settings again on the layer it was made from")
        self.apply_button.clicked.connect(self.apply_selected)
        self.discard_button.clicked.connect(self.discard_selected)
        self.seed_button.clicked.connect(self.use_seed)
        self.again_button.clicked.connect(self.run_again)
        buttons = QtWidgets.QGridLayout()
        buttons.addWidget(self.apply_button, 0, 0)
        buttons.addWidget(self.discard_button, 0, 1)
        buttons.addWidget(self.seed_button, 1, 0)
        buttons.addWidget(self.again_button, 1, 1)
        self.note = QtWidgets.QLabel()
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        # The buttons first: opening the History in a short docker shows them at once.
        layout.addLayout(buttons)
        layout.addWidget(self.note)
        layout.addWidget(self.tree, 1)
        self.document = ""
        self._version = -1
        self._update_buttons()

    # -- what is shown --------------------------------------------------------

    def refresh(self, document: str, force: bool = False) -> None:
        """Show `document`'s results (cheap when nothing changed)."""
        if not force and document == self.document and self.model.version == self._version:
            return
        self.document, self._version = document, self.model.version
        chosen = self.selected_ids()
        blocked = self.tree.blockSignals(True)
        try:
            self.tree.clear()
            previewed = self.model.preview.entry if self.model.preview else None
            for record in self.model.of(document):
                top = QtWidgets.QTreeWidgetItem([job_text(record)])
                top.setData(0, ROLE, ("job", record.id))
                top.setToolTip(0, record.title() + f"\nMade from the layer '{record.source_name}'")
                self.tree.addTopLevelItem(top)
                for entry in record.entries:
                    item = QtWidgets.QTreeWidgetItem([entry_text(record, entry, entry.id == previewed)])
                    item.setData(0, ROLE, ("entry", entry.id))
                    item.setToolTip(0, f"{entry.name}\nClick to preview it on the canvas; Apply keeps it.")
                    item.setIcon(0, _icon(record, entry))
                    top.addChild(item)
                    if chosen == ("entry", entry.id):
                        self.tree.setCurrentItem(item)
                if chosen == ("job", record.id):
                    self.tree.setCurrentItem(top)
            self.tree.expandAll()
        finally:
            self.tree.blockSignals(blocked)
        self._update_buttons()

    def count(self) -> int:
        return sum(len(r.entries) for r in self.model.of(self.document))

    def selected_ids(self) -> tuple[str, int] | None:
        item = self.tree.currentItem()
        return None if item is None else tuple(item.data(0, ROLE))

    def selected(self) -> tuple[history.JobRecord | None, history.Entry | None]:
        chosen = self.selected_ids()
        if chosen is None:
            return None, None
        kind, key = chosen
        for record in self.model.of(self.document):
            if kind == "job" and record.id == key:
                return record, None
            for entry in record.entries:
                if entry.id == key:
                    return record, entry
        return None, None

    def select_entry(self, entry_id: int) -> None:
        """Choose a result as a click would (and so preview it)."""
        items = self.tree.findItems(
            "", QtCore.Qt.MatchFlag.MatchContains | QtCore.Qt.MatchFlag.MatchRecursive
        )
        for item in items:
            if tuple(item.data(0, ROLE)) == ("entry", entry_id):
                self.tree.setCurrentItem(item)
                return

    def _update_buttons(self) -> None:
        record, entry = self.selected()
        self.apply_button.setEnabled(entry is not None)
        self.seed_button.setEnabled(entry is not None)
        self.discard_button.setEnabled(record is not None)
        self.again_button.setEnabled(record is not None)

    def say(self, text: str, error: bool = False) -> None:
        self.note.setText(text)
        self.note.setStyleSheet("color: #e0604f;" if error else "")

    # -- what the painter does ----------------------------------------------------

    def _chosen(self, *_items: object) -> None:
        self._update_buttons()
        _record, entry = self.selected()
        if entry is None:
            return
        done = f"Previewing '{entry.name}': Apply keeps it."
        self._do(lambda: self.model.show_preview(entry.id), done, rebuild=False)

    def apply_selected(self) -> None:
        _record, entry = self.selected()
        if entry is None:
            self.say("Choose a result first.", error=True)
            return
        self._do(lambda: self.model.apply(entry.id), f"Applied as the layer '{entry.name}'.")

    def discard_selected(self) -> None:
        record, entry = self.selected()
        if record is None:
            self.say("Choose a result first.", error=True)
            return
        for gone in [entry] if entry is not None else list(record.entries):
            self._do(lambda gone=gone: self.model.discard(gone.id), "Removed from the history.")

    def use_seed(self) -> None:
        _record, entry = self.selected()
        if entry is None:
            self.say("Choose a result first.", error=True)
            return
        from .ui import SettingsStore

        store = SettingsStore.instance()
        chosen = store.settings
        store.update(dataclasses.replace(chosen, job=chosen.job.replace(seed=entry.seed)))
        self.say(f"The seed is now {entry.seed}.")

    def run_again(self) -> None:
        record, _entry = self.selected()
        if record is None:
            self.say("Choose a job first.", error=True)
            return
        self.run_again_requested.emit(record)

    def _do(self, work: Any, done: str, rebuild: bool = True) -> None:
        document = history.find_document(self.document)
        active = None if document is None else document.activeNode()
        try:
            work()
        except InpaintError as exc:
            self.say(exc.message, error=True)
        except Exception as exc:  # a bug: still a sentence, never a dead panel
            self.say(as_inpaint_error(exc).message, error=True)
        else:
            self.say(done)
        if active is not None and active.parentNode() is not None:
            from .ui import keep_active

            keep_active(document, active)  # the painting, not the preview or a result
        del document, active  # no Krita object outlives this call
        if rebuild:
            self.refresh(self.document, force=True)
        else:  # called from the tree's own signal: relabel, never delete its items here
            self._relabel()

    def _relabel(self) -> None:
        previewed = self.model.preview.entry if self.model.preview else None
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            for record in self.model.of(self.document):
                if ("job", record.id) != tuple(top.data(0, ROLE)):
                    continue
                for j, entry in enumerate(record.entries[: top.childCount()]):
                    top.child(j).setText(0, entry_text(record, entry, entry.id == previewed))
        self._version = self.model.version


def job_text(record: history.JobRecord) -> str:
    title = record.title()
    head, _, rest = title.partition(" \u00b7 ")
    return f"{head}\n{rest}"


def entry_text(record: history.JobRecord, entry: history.Entry, previewed: bool) -> str:
    text = (
        f"{history.flow.percent(entry.strength)}, seed {entry.seed}" if record.fan else f"seed {entry.seed}"
    )
    return text + ("\non the canvas" if previewed else "")


def _icon(record: history.JobRecord, entry: history.Entry) -> QtGui.QIcon:
    width, height, data = history.thumbnail(record, entry, ICON)
    image = QtGui.QImage(data, width, height, width * 4, QtGui.QImage.Format.Format_ARGB32).copy()
    return QtGui.QIcon(QtGui.QPixmap.fromImage(image))
