"""Light or dark: follow the desktop's palette, pick the matching scene theme."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from ...render.theme import DARK, LIGHT, Theme


def is_dark_palette(palette: QPalette | None = None) -> bool:
    if palette is None:
        app = QApplication.instance()
        if app is None:
            return False
        palette = app.palette()
    window = palette.color(QPalette.Window)
    return window.lightness() < 128


def scene_theme(palette: QPalette | None = None) -> Theme:
    """DARK on a dark desktop, LIGHT otherwise (``RESVIZ_THEME=dark|light`` overrides)."""
    import os

    forced = os.environ.get("RESVIZ_THEME", "").lower()
    if forced in ("dark", "light"):
        return DARK if forced == "dark" else LIGHT
    return DARK if is_dark_palette(palette) else LIGHT
