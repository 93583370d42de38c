"""The small widgets beside the Training tab's plots: :class:`LineLegend` (pen samples),
:class:`DepthLegend` (which colour is which block; clickable) and :class:`ColorScale` (the graph
tint's log colour scale). Plain QWidgets painted by hand, not pyqtgraph items, so they live apart
from the plots in :mod:`~resviz.gui.training.plots`.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from .plot_base import Style, fmt, stage_ticks


class LineLegend(QWidget):
    """A one-line legend of pen samples: ── residual   ‒ ‒ plain twin."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list[tuple[str, QPen]] = []
        self.setSizePolicy(QSizePolicy.Maximum, QSizePolicy.Fixed)
        f = self.font()
        f.setPointSizeF(8)
        self.setFont(f)

    def set_entries(self, entries: list[tuple[str, QPen]]) -> None:
        self.entries = list(entries)
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        fm = self.fontMetrics()
        w = sum(26 + fm.horizontalAdvance(label) + 12 for label, _ in self.entries)
        return QSize(w, fm.height() + 4)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        fm = self.fontMetrics()
        x, y = 0, self.height() / 2
        for label, pen in self.entries:
            pen = QPen(pen)
            pen.setWidthF(max(1.6, pen.widthF()))
            p.setPen(pen)
            p.drawLine(QPointF(x, y), QPointF(x + 22, y))
            p.setPen(self.palette().windowText().color())
            p.drawText(QPointF(x + 26, y + fm.ascent() / 2 - 1), label)
            x += 26 + fm.horizontalAdvance(label) + 12
        p.end()


class DepthLegend(QWidget):
    """Which colour is which block: a list of swatches for a few blocks, a depth bar for many.
    Clicking a block (or a point of the bar) emits ``blockClicked``."""

    blockClicked = Signal(str)
    LIST_MAX = 14

    def __init__(self, style: Style, parent=None):
        super().__init__(parent)
        self.style_ = style
        self.names: list[str] = []
        self.colors: list[QColor] = []
        self.selected: str | None = None
        f = self.font()
        f.setPointSizeF(7.5)
        self.setFont(f)
        self.setMouseTracking(True)
        self.setCursor(Qt.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Expanding)

    def set_blocks(self, names: list[str], colors: list[QColor]) -> None:
        self.names, self.colors = list(names), list(colors)
        fm = self.fontMetrics()
        if self.is_list():
            w = 18 + max((fm.horizontalAdvance(n) for n in names), default=40)
        else:
            w = 14 + 6 + max(fm.horizontalAdvance(names[0]), fm.horizontalAdvance(names[-1]),
                             *(fm.horizontalAdvance(n) for _, n in self._ticks()))  # fmt: skip
        self.setFixedWidth(min(150, w + 6))
        self.update()

    def is_list(self) -> bool:
        return len(self.names) <= self.LIST_MAX

    def highlight(self, name: str | None) -> None:
        self.selected = name
        self.update()

    def _ticks(self) -> list[tuple[int, str]]:
        return stage_ticks(self.names, limit=8)

    def _row_h(self) -> float:
        return self.fontMetrics().height() + 1

    def _bar_rect(self) -> QRectF:
        fm = self.fontMetrics()
        return QRectF(2, fm.height() / 2 + 2, 12, max(10, self.height() - fm.height() - 4))

    def block_at(self, y: float) -> str | None:
        if not self.names:
            return None
        if self.is_list():
            i = int(y // self._row_h())
            return self.names[i] if 0 <= i < len(self.names) else None
        r = self._bar_rect()
        f = (y - r.top()) / r.height()
        i = int(round(f * (len(self.names) - 1)))
        return self.names[max(0, min(len(self.names) - 1, i))]

    def mousePressEvent(self, event) -> None:
        name = self.block_at(event.position().y())
        if name:
            self.blockClicked.emit(name)

    def mouseMoveEvent(self, event) -> None:
        name = self.block_at(event.position().y())
        if name and not self.is_list():
            QToolTip.showText(event.globalPosition().toPoint(), name, self)

    def paintEvent(self, _event) -> None:
        if not self.names:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        text = self.palette().windowText().color()
        if self.is_list():
            self._paint_list(p, text)
        else:
            self._paint_bar(p, text)
        p.end()

    def _paint_list(self, p: QPainter, text: QColor) -> None:
        """A swatch and a name per block, as many as fit; the selected one bold, its swatch taller."""
        fm = self.fontMetrics()
        h = self._row_h()
        for i, (name, color) in enumerate(zip(self.names, self.colors)):
            y = i * h
            if y + h > self.height():
                break
            sel = name == self.selected
            p.setPen(Qt.NoPen)
            p.setBrush(QBrush(color))
            p.drawRoundedRect(
                QRectF(2, y + h / 2 - 2.5 if not sel else y + h / 2 - 3.5, 12, 5 if not sel else 7), 2, 2
            )
            f = p.font()
            f.setBold(sel)
            p.setFont(f)
            p.setPen(text)
            p.drawText(QPointF(18, y + h / 2 + fm.ascent() / 2 - 1), name)

    def _paint_bar(self, p: QPainter, text: QColor) -> None:
        """The depth colour bar, stage ticks and the last block's name beside it, a line at the
        selected block."""
        fm = self.fontMetrics()
        r = self._bar_rect()
        grad = QLinearGradient(r.topLeft(), r.bottomLeft())
        cmap = self.style_.depth_map()
        for pos in np.linspace(0, 1, 9):
            grad.setColorAt(float(pos), cmap.map(float(pos), mode="qcolor"))
        p.setPen(Qt.NoPen)
        p.setBrush(QBrush(grad))
        p.drawRoundedRect(r, 3, 3)
        p.setPen(text)
        ticks = self._ticks() + [(len(self.names) - 1, self.names[-1])]
        for tick_y, y, name in bar_labels(ticks, len(self.names), r.top(), r.height(), fm.height()):
            p.drawLine(QPointF(r.right(), tick_y), QPointF(r.right() + 3, tick_y))
            p.drawText(QPointF(r.right() + 5, min(self.height() - 2, y + fm.ascent() / 2 - 1)), name)
        if self.selected in self.names:
            y = bar_y(self.names.index(self.selected), len(self.names), r.top(), r.height())
            p.setPen(QPen(QColor(self.style_.select), 2))
            p.drawLine(QPointF(r.left() - 2, y), QPointF(r.right() + 2, y))


def bar_y(i: int, n: int, top: float, height: float) -> float:
    """Where block ``i`` of ``n`` lies on a depth bar."""
    return top + height * (i / max(1, n - 1))


def bar_labels(ticks: list[tuple[int, str]], n: int, top: float, height: float,
               line_h: float) -> list[tuple[float, float, str]]:  # fmt: skip
    """(tick y, label y, name) for each tick (block index, name) whose label does not overlap the
    one above it; the last block (index ``n - 1``) always gets its label, pushed down if needed."""
    out = []
    last_y = -1e9
    for i, name in ticks:
        y = bar_y(i, n, top, height)
        if y - last_y < line_h and i != n - 1:
            continue
        if i == n - 1 and y - last_y < line_h:
            y = last_y + line_h
        out.append((bar_y(i, n, top, height), y, name))
        last_y = y
    return out


class ColorScale(QWidget):
    """A horizontal log colour scale: lo ▇▇▇▇ hi (the graph tint's legend)."""

    def __init__(self, colors: list[QColor], parent=None):
        super().__init__(parent)
        self.colors = list(colors)
        self.lo = self.hi = None
        self.setMinimumWidth(160)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        f = self.font()
        f.setPointSizeF(8)
        self.setFont(f)

    def set_range(self, lo: float | None, hi: float | None) -> None:
        self.lo, self.hi = lo, hi
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(220, self.fontMetrics().height() + 6)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        fm = self.fontMetrics()
        lo = fmt(10**self.lo) if self.lo is not None else "–"
        hi = fmt(10**self.hi) if self.hi is not None else "–"
        wl, wh = fm.horizontalAdvance(lo), fm.horizontalAdvance(hi)
        r = QRectF(wl + 6, 3, max(20, self.width() - wl - wh - 12), self.height() - 6)
        grad = QLinearGradient(r.topLeft(), r.topRight())
        for i, c in enumerate(self.colors):
            grad.setColorAt(i / max(1, len(self.colors) - 1), c)
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.setBrush(QBrush(grad))
        p.drawRoundedRect(r, 3, 3)
        p.setPen(self.palette().windowText().color())
        y = self.height() / 2 + fm.ascent() / 2 - 1
        p.drawText(QPointF(0, y), lo)
        p.drawText(QPointF(r.right() + 6, y), hi)
        p.end()
