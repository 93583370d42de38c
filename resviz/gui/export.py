"""Save what the user sees: the scene through Qt's own SVG, raster and PDF renderers.

Files are written to a temporary name next to the target and moved into place, so an interrupted
export never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from PySide6.QtCore import QMarginsF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPageSize, QPainter, QPdfWriter
from PySide6.QtWidgets import QGraphicsItem

from ..core.errors import ResvizError
from ..core.files import atomic_write

FORMATS = (".svg", ".png", ".pdf")
MAX_PIXELS = 16000 * 16000  # QImage limit is ~2 GB; very deep nets are scaled down to fit


def export_scene(scene, path: str | os.PathLike, scale: float = 2.0) -> Path:
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ResvizError(f"cannot export to '{path.name}': use one of {', '.join(FORMATS)} or .dot")
    rect = scene.itemsBoundingRect().adjusted(-10, -10, 10, 10)
    rect = rect.united(scene.sceneRect())
    bg = scene.backgroundBrush().color() if scene.backgroundBrush().style() else QColor("white")

    def write_png(tmp: str) -> None:
        s = scale
        while rect.width() * s * rect.height() * s > MAX_PIXELS and s > 0.05:
            s *= 0.8
        image = QImage(QSize(int(rect.width() * s), int(rect.height() * s)), QImage.Format_ARGB32)
        image.fill(bg)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setRenderHint(QPainter.TextAntialiasing)
        scene.render(painter, QRectF(0, 0, image.width(), image.height()), rect)
        painter.end()
        if not image.save(tmp, "PNG"):
            raise ResvizError(f"could not write {path}")

    def write_svg(tmp: str) -> None:
        from PySide6.QtSvg import QSvgGenerator

        gen = QSvgGenerator()
        gen.setFileName(tmp)
        gen.setSize(QSize(int(rect.width()), int(rect.height())))
        gen.setViewBox(QRectF(0, 0, rect.width(), rect.height()))
        gen.setTitle("resviz block graph")
        painter = QPainter(gen)
        painter.fillRect(QRectF(0, 0, rect.width(), rect.height()), bg)
        scene.render(painter, QRectF(0, 0, rect.width(), rect.height()), rect)
        painter.end()

    def write_pdf(tmp: str) -> None:
        writer = QPdfWriter(tmp)
        writer.setResolution(72)
        writer.setPageSize(QPageSize(QSizeF(rect.width(), rect.height()), QPageSize.Point))
        writer.setPageMargins(QMarginsF(0, 0, 0, 0))
        painter = QPainter(writer)
        scene.render(painter, QRectF(0, 0, rect.width(), rect.height()), rect,
                     Qt.KeepAspectRatio)  # fmt: skip
        painter.end()

    writer = {".png": write_png, ".svg": write_svg, ".pdf": write_pdf}[ext]
    with _uncached(scene):
        return atomic_write(path, writer)


@contextmanager
def _uncached(scene):
    """Paint every item directly for the length of an export.

    On screen, nodes cache themselves as device pixmaps (fast repaints); rendered into an SVG or
    PDF that cache would be embedded as raster images, and labels could not be searched,
    selected or scaled.
    """
    cached = [(item, item.cacheMode()) for item in scene.items()
              if item.cacheMode() != QGraphicsItem.NoCache]  # fmt: skip
    for item, _ in cached:
        item.setCacheMode(QGraphicsItem.NoCache)
    try:
        yield
    finally:
        for item, mode in cached:
            item.setCacheMode(mode)


def ensure_app():
    """A QApplication for offscreen rendering from the command line."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(["resviz"])


def render_report(report, path, *, depth: int | None = None, engine: str = "auto") -> Path:
    """Draw a report the way the app shows it by default and save it (svg, png, pdf)."""
    from ..render.view import ViewState, build_view
    from .qt_graph_scene import QtGraphScene

    ensure_app()
    scene = QtGraphScene()
    state = ViewState(depth=depth) if depth is not None else ViewState()
    if depth is not None:
        state.collapsed = set()
    graph = build_view(report, state)
    scene.show_graph(graph, scene.layout_graph(graph, engine=engine))
    return export_scene(scene, path)
