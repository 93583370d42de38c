"""Field widgets of the builder: each edits one spec field (a dotted path) and shows its error.

A text field sends every keystroke (``edited``), so the net redraws while the user types; the
builder merges the keystrokes of one field into one undo step, and Ctrl+Z / Ctrl+Shift+Z in a field
undo the builder (the whole form), not just the characters of that field. An invalid value draws a
red border and puts the reason in the tooltip.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QComboBox, QLineEdit, QWidget

INVALID_STYLE = "border: 2px solid #dc2626; border-radius: 3px;"


class QtFieldEdit(QLineEdit):
    """A text field for ``path``; ``edited(path, text)`` on every keystroke."""

    edited = Signal(str, str)
    left = Signal(str)  # focus left or Enter: the next keystroke starts a new undo step
    undoRequested = Signal()
    redoRequested = Signal()

    def __init__(self, path: str, help_text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.help_text = help_text
        self.reason = ""
        self.setToolTip(help_text)
        self.textEdited.connect(lambda text: self.edited.emit(self.path, text))
        self.editingFinished.connect(lambda: self.left.emit(self.path))

    def show_value(self, value) -> None:
        text = "" if value is None else str(value)
        if text != self.text():
            self.setText(text)

    def set_reason(self, reason: str) -> None:
        if reason == self.reason:
            return
        self.reason = reason
        self.setProperty("invalid", bool(reason))
        self.setStyleSheet(f"QLineEdit {{ {INVALID_STYLE} }}" if reason else "")
        self.setToolTip(reason or self.help_text)

    def keyPressEvent(self, event) -> None:
        # the form's undo, not the line edit's own: one history for every field
        if event.matches(QKeySequence.Undo):
            self.undoRequested.emit()
            return
        if event.matches(QKeySequence.Redo):
            self.redoRequested.emit()
            return
        super().keyPressEvent(event)


class QtFieldCombo(QComboBox):
    """A choice for ``path``: items are (label, value); value None removes the field."""

    edited = Signal(str, object)

    def __init__(self, path: str, choices: list[tuple[str, object]], help_text: str = "",
                 parent: QWidget | None = None):  # fmt: skip
        super().__init__(parent)
        self.path = path
        self.help_text = help_text
        self.reason = ""
        self.warning = ""
        for label, value in choices:
            self.addItem(label, value)
        self.setToolTip(help_text)
        self.activated.connect(lambda i: self.edited.emit(self.path, self.itemData(i)))

    def show_value(self, value) -> None:
        i = next((k for k in range(self.count()) if self.itemData(k) == value), -1)
        if i >= 0 and i != self.currentIndex():
            self.blockSignals(True)
            self.setCurrentIndex(i)
            self.blockSignals(False)

    def value(self):
        return self.currentData()

    def set_reason(self, reason: str, warning: str = "") -> None:
        """An invalid value (red) or a field the analysis blames for a mismatch (amber)."""
        if (reason, warning) == (self.reason, self.warning):
            return
        self.reason, self.warning = reason, warning
        self.setProperty("invalid", bool(reason))
        color = "#dc2626" if reason else "#d97706" if warning else ""
        self.setStyleSheet(f"QComboBox {{ border: 2px solid {color}; border-radius: 3px; }}" if color else "")
        self.setToolTip(reason or warning or self.help_text)
