"""Dialogs for opening models: which model in a Python file, and the model zoo."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...render.view import shape_label


class QtPythonPicker(QDialog):
    """A Python file defines several models: pick one, and give constructor kwargs as JSON."""

    def __init__(self, path: str, candidates: list, parent: QWidget | None = None, kwargs_text: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Choose a model")
        self.path = path
        self.candidates = list(candidates)
        self.list = QListWidget()
        from ...core.sources.pyfile import preferred_candidate

        preselect = preferred_candidate(self.candidates)  # the network, not one of its blocks
        preselect = 0 if preselect is None else preselect
        for c in self.candidates:
            note = "" if c.builds_without_args else "  — needs arguments"
            item = QListWidgetItem(f"{c.name}{c.signature}   ({c.kind}, line {c.line}){note}")
            item.setToolTip(f"{c.kind} {c.name}{c.signature}, line {c.line}")
            self.list.addItem(item)
        self.list.setCurrentRow(preselect)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        self.kwargs = QLineEdit(kwargs_text)
        self.kwargs.setPlaceholderText('constructor arguments as JSON, e.g. {"num_classes": 10}')
        self.error = QLabel()
        self.error.setStyleSheet("color: #dc2626")
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"<b>{path}</b> defines several models. Which one should be built?"))
        lay.addWidget(self.list, 1)
        lay.addWidget(QLabel("Constructor arguments (JSON):"))
        lay.addWidget(self.kwargs)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        self.resize(560, 380)

    def chosen(self) -> str | None:
        row = self.list.currentRow()
        return self.candidates[row].name if 0 <= row < len(self.candidates) else None

    def source(self) -> str | None:
        name = self.chosen()
        return f"{self.path}:{name}" if name else None

    def kwargs_text(self) -> str | None:
        return self.kwargs.text().strip() or None

    def accept(self) -> None:
        from ...core.errors import ResvizError
        from ...core.sources.loading import parse_kwargs

        try:
            parse_kwargs(self.kwargs_text())
        except ResvizError as exc:
            self.error.setText(str(exc).replace("--kwargs", "the arguments"))
            self.error.show()
            self.kwargs.setStyleSheet("border: 1px solid #dc2626")
            return
        super().accept()


class QtZooPicker(QDialog):
    """The built-in models: type to search, double-click (or Enter) to open."""

    def __init__(self, entries: list, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Open from the model zoo")
        self.entries = list(entries)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search: resnet50, cifar, preact, plain…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.table = QTableWidget(len(self.entries), 4)
        self.table.setHorizontalHeaderLabels(["name", "input", "params", "description"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        for row, e in enumerate(self.entries):
            cells = [e.name, shape_label(e.input_shape), "…", e.description]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 2:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(row, col, item)
        header = self.table.horizontalHeader()
        for c in range(3):
            header.setSectionResizeMode(c, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.Stretch)
        self.table.doubleClicked.connect(lambda _i: self.accept())
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.search)
        lay.addWidget(self.table, 1)
        lay.addWidget(buttons)
        self.resize(900, 560)
        self.search.setFocus()
        if self.entries:
            self.table.selectRow(0)

    def set_param_counts(self, counts: dict[str, int]) -> None:
        from ...render.text import human

        for row, e in enumerate(self.entries):
            if e.name in counts:
                self.table.item(row, 2).setText(human(counts[e.name]))

    def chosen(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.entries[rows[0].row()].name

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        first = None
        for row, e in enumerate(self.entries):
            hay = f"{e.name} {e.family} {e.kind} {e.description}".lower()
            show = all(w in hay for w in words)
            self.table.setRowHidden(row, not show)
            if show and first is None:
                first = row
        if first is not None:
            self.table.selectRow(first)
        else:
            self.table.clearSelection()
