"""Save what the user sees: the scene through Qt's own SVG, raster and PDF renderers.

Files are written to a temporary name next to the target and moved into place, so an interrupted
export never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from PySide6.QtCore import QMarginsF, QPointF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPageSize, QPainter, QPdfWriter, QPen
from PySide6.QtWidgets import QGraphicsItem

from ...core.errors import ResvizError
from ...core.files import atomic_write
from ...render.layout import Layout
from ...render.pages import COLUMN_GAP, SMALLER, Plan, Sheet, plan_pdf, plan_png

FORMATS = (".svg", ".png", ".pdf")


APP_SMALLER = ("draw less with View → Roll up repeated blocks or Collapse all (double-click a "
               "stage to fold it)")  # fmt: skip


def export_scene(scene, path: str | os.PathLike, scale: float = 2.0,
                 what: str = "the graph as shown", smaller: str = APP_SMALLER) -> Path:  # fmt: skip
    """Save the scene. A PNG or PDF too tall for readers is cut into columns or pages (see
    :mod:`resviz.render.pages`); one that cannot be made readable is refused before writing,
    with ``smaller`` saying how to draw less."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ResvizError(f"cannot export to '{path.name}': use one of {', '.join(FORMATS)} or .dot")
    rect, bg = scene_extent(scene)
    box = (scene.layout or Layout({}, [], {}), rect.x(), rect.y(), rect.width(), rect.height())
    # plan first: a picture no reader would open is refused before anything is written
    if ext == ".png":
        writer = partial(_write_png, scene, plan_png(*box, scale=scale, what=what, smaller=smaller), bg, path)
    elif ext == ".pdf":
        writer = partial(_write_pdf, scene, plan_pdf(*box, smaller=smaller), bg)
    else:
        writer = partial(_write_svg, scene, rect, bg)
    with _uncached(scene):
        return atomic_write(path, writer)


def scene_extent(scene) -> tuple[QRectF, QColor]:
    """What an export shows: every item with a 10-unit margin (at least the scene rect), and
    the background colour (white where the scene has none)."""
    rect = scene.itemsBoundingRect().adjusted(-10, -10, 10, 10)
    rect = rect.united(scene.sceneRect())
    bg = scene.backgroundBrush().color() if scene.backgroundBrush().style() else QColor("white")
    return rect, bg


def _draw_sheet(scene, painter: QPainter, plan: Plan, sheet: Sheet) -> None:
    """One sheet of a plan: its columns side by side, a dashed line between two."""
    s = plan.scale
    gap_pen = QPen(QColor(scene.theme.block_frame), 1, Qt.DashLine)
    for i, (a, b) in enumerate(sheet.spans):
        x = i * (plan.picture_width + COLUMN_GAP)
        scene.render(painter, QRectF(x * s, 0, plan.picture_width * s, (b - a) * s),
                     QRectF(plan.x0, a, plan.picture_width, b - a), Qt.IgnoreAspectRatio)  # fmt: skip
        if i:  # where one column ends and the next begins
            painter.setPen(gap_pen)
            mid = (x - COLUMN_GAP / 2) * s
            painter.drawLine(QPointF(mid, 0), QPointF(mid, sheet.height * s))


def _write_png(scene, plan: Plan, bg: QColor, path: Path, tmp: str) -> None:
    sheet = plan.sheets[0]
    size = QSize(math.ceil(sheet.width * plan.scale), math.ceil(sheet.height * plan.scale))
    image = QImage(size, QImage.Format_ARGB32)
    if image.isNull():
        raise ResvizError(f"could not write {path}: no memory for a {size.width()} x "
                          f"{size.height()} px image")  # fmt: skip
    image.fill(bg)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setRenderHint(QPainter.TextAntialiasing)
    _draw_sheet(scene, painter, plan, sheet)
    painter.end()
    if not image.save(tmp, "PNG"):
        raise ResvizError(f"could not write {path}")


def _write_svg(scene, rect: QRectF, bg: QColor, tmp: str) -> None:
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


def _write_pdf(scene, plan: Plan, bg: QColor, tmp: str) -> None:
    writer = QPdfWriter(tmp)
    writer.setResolution(72)
    writer.setTitle("resviz block graph")
    painter = None
    for sheet in plan.sheets:
        size = QSizeF(sheet.width * plan.scale, sheet.height * plan.scale)
        writer.setPageSize(QPageSize(size, QPageSize.Point))  # the size of the next page
        writer.setPageMargins(QMarginsF(0, 0, 0, 0))
        if painter is None:
            painter = QPainter(writer)
        else:
            writer.newPage()
        painter.fillRect(QRectF(0, 0, size.width(), size.height()), bg)
        _draw_sheet(scene, painter, plan, sheet)
    painter.end()


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


def render_report(report, path, *, depth: int | None = None, collapse: str | None = None,
                  rollup: bool = False, engine: str = "auto",
                  notes: list[str] | None = None) -> Path:  # fmt: skip
    """Draw a report as the app would with these folds and save it (svg, png, pdf).

    ``notes`` collects what the user should know about the drawing (e.g. Graphviz was asked for
    but is not installed, so the built-in layout drew it)."""
    from ...render.view import build_view, render_state
    from .scene import QtGraphScene

    ensure_app()
    scene = QtGraphScene()
    graph = build_view(report, render_state(report, depth=depth, collapse=collapse, rollup=rollup))
    layout = scene.layout_graph(graph, engine=engine)
    if layout.note and notes is not None:
        notes.append(layout.note)
    scene.show_graph(graph, layout)
    return export_scene(scene, path, what=f"{report.model_name} drawn this way", smaller=SMALLER)
