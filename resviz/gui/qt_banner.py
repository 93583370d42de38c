"""A message bar above the graph: load errors in red, notes in amber; closable."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

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
        lay.addWidget(self.label, 1)
        lay.addWidget(close, 0, Qt.AlignTop)
        self.hide()

    def show_message(self, kind: str, text: str) -> None:
        bg, fg, border = STYLES.get(kind, STYLES["note"])
        self.kind = kind
        self.setStyleSheet(
            f"QtBanner {{ background: {bg}; border-bottom: 2px solid {border}; }}"
            f" QLabel {{ color: {fg}; }} QToolButton {{ color: {fg}; }}"
        )
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def clear(self) -> None:
        self.kind = ""
        self.label.setText("")
        self.hide()
