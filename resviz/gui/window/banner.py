"""A message bar above the graph: load errors in red, notes in amber; closable, with an
optional action button (a file that needs trust offers "Trust this file…")."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

STYLES = {
    "error": ("#fee2e2", "#7f1d1d", "#dc2626"),
    "note": ("#fef3c7", "#78350f", "#d97706"),
}


class QtBanner(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.kind = ""
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.PlainText)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Hide this message")
        close.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        self.action = QPushButton()
        self.action.hide()
        self._on_action: Callable[[], None] | None = None
        self.action.clicked.connect(lambda: self._on_action() if self._on_action else None)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.action, 0, Qt.AlignTop)
        lay.addWidget(close, 0, Qt.AlignTop)
        self.hide()

    def set_action(self, label: str | None, on_click: Callable[[], None] | None = None) -> None:
        """A button beside the message (None: no button); a new message drops it."""
        self._on_action = on_click if label else None
        self.action.setText(label or "")
        self.action.setVisible(bool(label))

    def show_message(self, kind: str, text: str) -> None:
        bg, fg, border = STYLES.get(kind, STYLES["note"])
        self.kind = kind
        self.setStyleSheet(
            f"QtBanner {{ background: {bg}; border-bottom: 2px solid {border}; }}"
            f" QLabel {{ color: {fg}; }} QToolButton {{ color: {fg}; }}"
        )
        self.label.setText(text)
        self.set_action(None)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def clear(self) -> None:
        self.kind = ""
        self.label.setText("")
        self.set_action(None)
        self.hide()
