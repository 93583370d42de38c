"""A tab that builds its contents the first time it is shown or asked for, so the app opens fast."""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget


class LazyTab(QWidget):
    """A light shell around a panel made by :meth:`make_panel` on first use (first show, or the
    first time :attr:`panel` is read)."""

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self._panel = None
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)

    def make_panel(self) -> QWidget:  # pragma: no cover - each tab says what it holds
        raise NotImplementedError

    @property
    def panel(self):
        """The tab's panel (built now if it was not yet)."""
        if self._panel is None:
            self._panel = self.make_panel()
            self.layout().addWidget(self._panel)
        return self._panel

    @property
    def built(self) -> bool:
        return self._panel is not None

    def showEvent(self, event) -> None:
        self.panel  # noqa: B018 - build on first show
        super().showEvent(event)
