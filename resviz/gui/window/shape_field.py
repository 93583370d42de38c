"""The toolbar's input-shape field: Enter re-analyses; bad text turns red and explains why."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLineEdit, QWidget

from ...core.errors import ResvizError
from ...core.shapes import format_shape, parse_shape

HELP = "Input shape, e.g. 1x3x224x224 or 3x32x32 (batch 1). Press Enter to analyse again."


class QtShapeField(QLineEdit):
    shapeEntered = Signal(str)  # valid text, after Enter

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setPlaceholderText("1x3x224x224")
        self.setToolTip(HELP)
        self.setMinimumWidth(130)
        self.setMaximumWidth(170)
        self.error = ""
        self.returnPressed.connect(self._on_enter)
        self.textEdited.connect(lambda _t: self.set_error(""))

    def set_shape(self, shape) -> None:
        """Show the shape in use (after a load or a re-analysis)."""
        self.setText(format_shape(shape) if shape else "")
        self.set_error("")

    def set_error(self, message: str) -> None:
        self.error = message
        self.setStyleSheet("QLineEdit { border: 2px solid #dc2626; border-radius: 3px; }" if message else "")
        self.setToolTip(message if message else HELP)

    def _on_enter(self) -> None:
        text = self.text()
        try:
            parse_shape(text)
        except ResvizError as exc:
            self.set_error(str(exc))
            return
        self.set_error("")
        self.shapeEntered.emit(text.strip())
