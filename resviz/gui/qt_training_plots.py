"""The Training tab's plots (pyqtgraph): per-block probe curves, the blocks × steps heatmap, the
gradient highway, loss and accuracy; plus the small legends and colour scales beside them.

Every plot creates its items once and only calls ``setData``/``setImage`` on redraw; curves clip to
the view and downsample (peak mode), so a redraw costs about the same for 50 steps or 50,000.
Plots know block *names* and numbers; they never see torch. Clicking near a curve, a heatmap row
or a highway point emits ``blockClicked(name)``; :meth:`highlight` does the reverse.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QLineF, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from .qt_theme import is_dark_palette

FAULT = "#dc2626"  # NaN/Inf: red everywhere (plots, tint, banner)
PLAIN_DASH = Qt.DashLine
# Depth colours, first block → last: distinguishable on white and on dark grey, and no pure red
# (red means NaN/Inf).
DEPTH_LIGHT = ("#4338ca", "#0369a1", "#0f766e", "#4d7c0f", "#b45309", "#c2410c", "#9d174d")
DEPTH_DARK = ("#818cf8", "#38bdf8", "#2dd4bf", "#a3e635", "#fbbf24", "#fb923c", "#f472b6")


class Style:
    """Colours of the plots, following the desktop's light or dark palette."""

    def __init__(self, dark: bool | None = None):
        self.dark = is_dark_palette() if dark is None else dark
        if self.dark:
            self.bg, self.fg, self.dim, self.grid = "#111827", "#e5e7eb", "#9ca3af", 0.18
            self.select, self.plain = "#60a5fa", "#f59e0b"
            self.label_bg = QColor(31, 41, 55, 230)
        else:
            self.bg, self.fg, self.dim, self.grid = "#ffffff", "#1f2937", "#6b7280", 0.12
            self.select, self.plain = "#2563eb", "#d97706"
            self.label_bg = QColor(255, 255, 255, 235)
        self.residual = "#2563eb" if not self.dark else "#60a5fa"
        self.depth_stops = DEPTH_DARK if self.dark else DEPTH_LIGHT

    def depth_map(self) -> pg.ColorMap:
        stops = self.depth_stops
        return pg.ColorMap(np.linspace(0, 1, len(stops)), [QColor(c) for c in stops])

    def depth_colors(self, n: int) -> list[QColor]:
        if n <= 0:
            return []
        cmap = self.depth_map()
        pos = np.linspace(0, 1, n) if n > 1 else np.array([0.0])
        return [cmap.map(float(p), mode="qcolor") for p in pos]


def fmt(v: float) -> str:
    """A probe value, short: 0.0123, 12.3, 1.2e-05, NaN."""
    if v is None or not math.isfinite(v):
        return "NaN" if v is None or math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    a = abs(v)
    if a == 0:
        return "0"
    if 1e-3 <= a < 1e4:
        return f"{v:.3g}"
    return f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e")


def pow10(v: float) -> str:
    """A tick label for log10 values: 10⁻³."""
    sup = str.maketrans("-0123456789.", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹·")
    if abs(v - round(v)) < 1e-6:
        return "10" + str(int(round(v))).translate(sup)
    return fmt(10**v)


def _positive(a: np.ndarray) -> np.ndarray:
    """For log axes: values ≤ 0 and ±Inf become NaN (gaps) instead of -inf warnings."""
    a = np.asarray(a, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where((a > 0) & np.isfinite(a), a, np.nan)


def _log10(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(_positive(a))


def stage_ticks(names: list[str], limit: int = 14) -> list[tuple[float, str]]:
    """(index, name) ticks: every block when few, else the first block of each stage."""
    if len(names) <= limit:
        return list(enumerate(names))
    out, last = [], None
    for i, n in enumerate(names):
        stage = n.rpartition(".")[0]
        if stage != last:
            out.append((i, n))
            last = stage
    if len(out) > limit:
        step = math.ceil(len(out) / limit)
        out = out[::step]
    return out


def _round_range(lo: float, hi: float, log: bool, grow: bool) -> tuple[float, float]:
    """A stable view range around [lo, hi]: log10 ranges snap to half decades; linear ones to
    round steps (``grow``: the end rounds up to the next 1/2/5 step, for step counts that grow)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (0.0, 1.0)
    if log:
        a, b = math.floor(lo * 2) / 2, math.ceil(hi * 2) / 2
        if b - a < 0.5:
            a, b = a - 0.25, b + 0.25
        pad = (b - a) * 0.03
        return (a - pad, b + pad)
    span = hi - lo
    if grow:
        unit = 10 ** math.floor(math.log10(max(abs(hi), 1.0))) / 2
        end = max(lo + 1.0, math.ceil((hi + 1e-9) / unit) * unit)
        return (lo - (end - lo) * 0.01, end)
    if span <= 0:
        span = abs(hi) or 1.0
    unit = 10 ** math.floor(math.log10(span)) / 2
    a, b = math.floor(lo / unit) * unit, math.ceil(hi / unit) * unit
    pad = (b - a) * 0.03
    return (a - pad, b + pad)


def _nice_linear(lo: float, hi: float, n: int) -> list[float]:
    """About ``n`` round values between lo and hi (1, 2, 5 × 10^k steps)."""
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return []
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _tick_label(v: float) -> str:
    """A log-axis label for log10 value ``v``: 0.01 … 1000 plainly, 10⁻⁵ beyond; 2e-5 between."""
    if abs(v - round(v)) < 1e-6:
        e = int(round(v))
        return f"{10.0**e:g}" if -2 <= e <= 3 else pow10(e)
    x = 10**v
    if 1e-3 <= x < 1e4:
        return f"{x:.2g}"
    return f"{x:.0e}".replace("e-0", "e-").replace("e+0", "e")


def log_ticks(lo: float, hi: float, size: float, min_px: float = 16) -> list[tuple[float, list[float]]]:
    """Tick levels for a log10 range [lo, hi] drawn over ``size`` pixels: decades (every k-th when
    crowded), then 2× and 5× when there is room, then unlabelled minor ticks (spacing -1)."""
    lo, hi = sorted((float(lo), float(hi)))
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 0 or size <= 0:
        return []
    ppd = size / (hi - lo)  # pixels per decade
    every = max(1, math.ceil(min_px * 1.3 / ppd))
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    major = [float(d) for d in decades if lo <= d <= hi and d % every == 0]
    mults: tuple[int, ...] = (2, 5) if ppd >= min_px * 3.5 else ()
    if ppd >= min_px * 7:
        mults = (2, 3, 5)
    minor = [d + math.log10(m) for d in decades for m in mults if lo <= d + math.log10(m) <= hi]
    if len(major) + len(minor) < 2:  # less than a decade: round values, linear in the data
        vals = [v for v in _nice_linear(10**lo, 10**hi, max(2, int(size // 40))) if v > 0]
        return [(1.0, [math.log10(v) for v in vals if lo <= math.log10(v) <= hi])]
    unlabelled = [d + math.log10(m) for d in decades for m in range(2, 10)
                  if ppd >= 30 and lo <= d + math.log10(m) <= hi and m not in mults]  # fmt: skip
    return [(1.0, major), (0.5, minor), (-1.0, unlabelled)]


class LogAxis(pg.AxisItem):
    """An axis that, in log mode, labels decades (and 2×, 5× when there is room) instead of
    every minor tick; a range inside one decade gets round linear values."""

    MIN_PX = 16  # vertical pixels a label needs

    def tickValues(self, minVal, maxVal, size):
        if not self.logMode:
            return super().tickValues(minVal, maxVal, size)
        return log_ticks(minVal, maxVal, size, self.MIN_PX)

    def tickStrings(self, values, scale, spacing):
        if not self.logMode:
            return super().tickStrings(values, scale, spacing)
        if spacing < 0:
            return ["" for _ in values]
        return [_tick_label(v) for v in values]


class GridLines(pg.GraphicsObject):
    """Horizontal grid lines at given y values, across the view, painted as one item."""

    def __init__(self, pen: QPen):
        super().__init__()
        self.pen = pen
        self.values: list[float] = []
        self._rect = QRectF()
        self.setZValue(-100)

    def set_values(self, values: list[float]) -> None:
        if values != self.values:
            self.values = list(values)
            self.viewRangeChanged()

    def viewRangeChanged(self) -> None:
        vb = self.getViewBox()
        if vb is None:
            return
        r = vb.viewRect()
        self.prepareGeometryChange()
        self._rect = QRectF(r.left(), r.top(), r.width(), r.height())
        self.update()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):
        return (None, None)

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, p, *_args) -> None:
        if not self.values:
            return
        p.setPen(self.pen)
        x0, x1 = self._rect.left(), self._rect.right()
        p.drawLines([QLineF(x0, y, x1, y) for y in self.values])


class BasePlot(pg.PlotWidget):
    """A PlotWidget styled for the panel: app colours, small fonts, grid, no context clutter."""

    blockClicked = Signal(str)
    blockHovered = Signal(str)

    def __init__(self, style: Style, *, ylog: bool = False, xlabel: str = "step", ylabel: str = "",
                 parent: QWidget | None = None):  # fmt: skip
        super().__init__(parent=parent, background=style.bg, axisItems={"left": LogAxis("left")})
        self.style_ = style
        pi = self.getPlotItem()
        pi.hideButtons()
        pi.setMenuEnabled(False)
        font = QFont()
        font.setPointSizeF(7.5)
        for name in ("left", "bottom"):
            ax = pi.getAxis(name)
            ax.setPen(pg.mkPen(style.dim))
            ax.setTextPen(pg.mkPen(style.fg))
            ax.setTickFont(font)
        if xlabel:
            pi.setLabel("bottom", xlabel, **{"font-size": "8pt", "color": style.dim})
        if ylabel:
            pi.setLabel("left", ylabel, **{"font-size": "8pt", "color": style.dim})
        pi.getAxis("left").setWidth(44)
        for name in ("left", "bottom"):
            pi.getAxis(name).enableAutoSIPrefix(False)  # else the label's HTML is reset every frame
        pi.setLogMode(x=False, y=ylog)
        pi.layout.setContentsMargins(2, 4, 8, 2)
        self.ylog = ylog
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.label = pg.TextItem("", color=style.fg, fill=pg.mkBrush(style.label_bg),
                                 border=pg.mkPen(style.dim), anchor=(0, 1))  # fmt: skip
        self.label.setZValue(1000)
        self.label.setVisible(False)
        pi.addItem(self.label, ignoreBounds=True)
        f = QFont()
        f.setPointSizeF(8)
        self.label.setFont(f)
        self.scene().sigMouseMoved.connect(self._on_move)
        self.scene().sigMouseClicked.connect(self._on_click)
        self.hovered = ""
        # horizontal grid lines at the labelled ticks: a few lines instead of the axis grid, which
        # re-plays a picture of every tick line across the plot on each frame (~5 ms a plot)
        self.grid = True
        grid = QColor(style.fg)
        grid.setAlphaF(style.grid)
        self._grid = GridLines(pg.mkPen(grid, width=1))
        pi.addItem(self._grid, ignoreBounds=True)
        self.vb.sigYRangeChanged.connect(lambda *_: self._update_grid())
        self.vb.sigResized.connect(lambda *_: self._update_grid())
        # the view follows the data with rounded ranges (axes are re-laid out only when a range
        # changes, so not on every step) until the user zooms or pans; a double-click follows again
        self.follow = True
        self.fixed_x: tuple[float, float] | None = None
        self.fixed_y: tuple[float, float] | None = None
        self._range = None
        self.vb.disableAutoRange()
        self.vb.sigRangeChangedManually.connect(self._on_manual_range)

    @property
    def vb(self) -> pg.ViewBox:
        return self.getPlotItem().getViewBox()

    viewReset = Signal()

    def _on_manual_range(self, *_args) -> None:
        self.follow = False

    def mouseDoubleClickEvent(self, event) -> None:
        self.follow = True
        self._range = None
        self.viewReset.emit()
        super().mouseDoubleClickEvent(event)

    def follow_data(self, x0: float, x1: float, y0: float | None, y1: float | None) -> None:
        """Keep [x0, x1] × [y0, y1] (view units) in view with rounded ends, unless the user moved it."""
        if not self.follow:
            return
        xr = self.fixed_x or _round_range(x0, x1, log=False, grow=True)
        if self.fixed_y is not None:
            yr = self.fixed_y
        elif y0 is None or y1 is None or not (math.isfinite(y0) and math.isfinite(y1)):
            yr = self._range[1] if self._range else (0.0, 1.0)
        else:
            yr = _round_range(y0, y1, log=self.ylog, grow=False)
        if (xr, yr) != self._range:
            self._range = (xr, yr)
            self.vb.setRange(xRange=xr, yRange=yr, padding=0)
            # apply the new transform now: done lazily inside the paint, it updates the items and
            # makes Qt paint the whole plot a second time
            self.vb.updateMatrix()

    def _update_grid(self) -> None:
        if not self.grid:
            self._grid.set_values([])
            return
        (_, _), (y0, y1) = self.vb.viewRange()
        axis = self.getPlotItem().getAxis("left")
        levels = [lv for lv in axis.tickValues(y0, y1, max(1.0, self.vb.height())) if lv[0] > 0]
        keep = 2 if axis.logMode else 1  # log: decades and the labelled 2×/5×; linear: major ticks
        self._grid.set_values([v for _, vals in levels[:keep] for v in vals])

    # hover and click: subclasses answer pick(view point) -> (block name, label text) or None
    def pick(self, p: QPointF) -> tuple[str, str] | None:
        return None

    def _on_move(self, pos) -> None:
        if not self.vb.sceneBoundingRect().contains(pos):
            self._hide_label()
            return
        p = self.vb.mapSceneToView(pos)
        hit = self.pick(p)
        if hit is None:
            self._hide_label()
            return
        name, text = hit
        self.label.setText(text)
        r = self.vb.viewRect()
        self.label.setAnchor((1 if p.x() > r.center().x() else 0, 1 if p.y() < r.center().y() else 0)
                             if not self.vb.state["yInverted"] else
                             (1 if p.x() > r.center().x() else 0, 0 if p.y() < r.center().y() else 1))  # fmt: skip
        self.label.setPos(p)
        self.label.setVisible(True)
        if name != self.hovered:
            self.hovered = name
            self.blockHovered.emit(name)

    def _hide_label(self) -> None:
        if self.label.isVisible():
            self.label.setVisible(False)
        if self.hovered:
            self.hovered = ""
            self.blockHovered.emit("")

    def leaveEvent(self, event) -> None:
        self._hide_label()
        super().leaveEvent(event)

    def _on_click(self, ev) -> None:
        if ev.button() != Qt.LeftButton or ev.double():
            return
        pos = ev.scenePos()
        if not self.vb.sceneBoundingRect().contains(pos):
            return
        hit = self.pick(self.vb.mapSceneToView(pos))
        if hit is not None:
            ev.accept()
            self.blockClicked.emit(hit[0])

    def click_at(self, x: float, y: float) -> str | None:
        """What a click at view point (x, y) would select (y in data units): for tests and tools."""
        yv = math.log10(y) if self.ylog and y > 0 else y
        hit = self.pick(QPointF(x, yv))
        if hit is not None:
            self.blockClicked.emit(hit[0])
            return hit[0]
        return None

    def pixel_size(self) -> tuple[float, float]:
        px = self.vb.viewPixelSize()
        return max(px[0], 1e-12), max(px[1], 1e-12)


class MultiCurve(pg.GraphicsObject):
    """Many polylines in one graphics item: one bounds computation and one paint call for all.

    Fifty PlotDataItems cost ~50 ms a frame here (per-item setData bookkeeping, the ViewBox asking
    each for its bounds, one paint each); this item builds one path per curve with numpy-backed
    ``arrayToQPath`` and paints them in a single call, in ``order`` (the highlighted one last).
    """

    def __init__(self):
        super().__init__()
        self.pens: list[QPen] = []
        self.order: list[int] = []
        self.paths: list = []
        self._bounds = (0.0, 1.0, 0.0, 1.0)  # x0, x1, y0, y1 of all the data (not just the shown part)
        self._rect = QRectF(0, 0, 1, 1)

    def set_pens(self, pens: list[QPen], order: list[int] | None = None) -> None:
        self.pens = list(pens)
        self.order = list(order) if order is not None else list(range(len(pens)))
        self.update()

    def set_paths(
        self, x: np.ndarray, ys: np.ndarray, bounds: tuple[float, float, float, float] | None
    ) -> None:
        """``ys``: (len(x), curves) in view coordinates; NaN breaks a line. ``bounds``: of all data."""
        self.prepareGeometryChange()
        if len(x) == 0 or ys.size == 0:
            self.paths = []
        else:
            self.paths = [
                pg.functions.arrayToQPath(x, ys[:, i], connect="finite") for i in range(ys.shape[1])
            ]
        if bounds is not None:
            self._bounds = bounds
        x0, x1, y0, y1 = self._bounds
        self._rect = QRectF(x0, y0, max(x1 - x0, 1e-9), max(y1 - y0, 1e-9))
        self.informViewBoundsChanged()
        self.update()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):
        if not self.paths:
            return (None, None)
        x0, x1, y0, y1 = self._bounds
        return (x0, x1) if ax == 0 else (y0, y1)

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, p, *_args) -> None:
        if not self.paths:
            return
        for i in self.order:
            if i < len(self.paths) and i < len(self.pens):
                p.setPen(self.pens[i])
                p.drawPath(self.paths[i])


def peak_bins(x: np.ndarray, ys: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of each of ~``bins`` runs of rows (all curves at once): what a pixel column
    shows, spikes included (pyqtgraph's 'peak' downsampling, vectorised over the curves)."""
    n = len(x)
    k = n // max(1, bins)
    if k < 2:
        return x, ys
    m = (n // k) * k
    blocks = ys[:m].reshape(m // k, k, ys.shape[1])
    lo, hi = np.fmin.reduce(blocks, axis=1), np.fmax.reduce(blocks, axis=1)
    out = np.empty((2 * lo.shape[0], ys.shape[1]))
    out[0::2], out[1::2] = lo, hi
    xb = x[:m].reshape(-1, k)
    xo = np.empty(2 * lo.shape[0])
    xo[0::2], xo[1::2] = xb[:, 0], xb[:, -1]
    if m < n:
        xo, out = np.concatenate([xo, x[m:]]), np.concatenate([out, ys[m:]])
    return xo, out


class ProbePlot(BasePlot):
    """One curve per block over steps, coloured by depth, log-y (view y = log10 of the value).

    Only the part in view is drawn (clip to view), binned to about two points per pixel column
    (peak: each bin's min and max), so a frame costs the same for 50 steps or 50,000.
    """

    PICK_PX = 10

    def __init__(self, style: Style, parent=None):
        super().__init__(style, ylog=False, parent=parent)
        self.ylog = True  # the view's y is log10(value), drawn by MultiCurve
        pi = self.getPlotItem()
        pi.getAxis("left").setLogMode(False, True)
        self.curve = MultiCurve()
        self.curve.setZValue(10)
        pi.addItem(self.curve)
        self.names: list[str] = []
        self.colors: list[QColor] = []
        self.selected: str | None = None
        self._steps = np.zeros(0)
        self._values = np.zeros((0, 0))
        self._logs = np.zeros((0, 0))
        self._shown = (None, None, 0)
        self.faults = pg.ScatterPlotItem(
            size=9, pen=pg.mkPen(FAULT, width=1.5), brush=pg.mkBrush(FAULT), symbol="x"
        )
        self.faults.setZValue(50)
        pi.addItem(self.faults)
        self.fault_lines: list[pg.InfiniteLine] = []
        self.vb.sigXRangeChanged.connect(lambda *_: self._rebuild())
        self.vb.sigResized.connect(lambda *_: self._rebuild())

    @property
    def curves(self) -> list[str]:
        """The curves, one per block (by name), in depth order."""
        return list(self.names)

    def set_blocks(self, names: list[str]) -> None:
        self.names = list(names)
        self.colors = self.style_.depth_colors(len(names))
        self.clear_data()
        self._apply_pens()

    def clear_data(self) -> None:
        self._steps = np.zeros(0)
        self._values = np.zeros((0, len(self.names)))
        self._logs = np.zeros((0, len(self.names)))
        self._shown = (None, None, 0)
        self.curve.set_paths(np.zeros(0), np.zeros((0, len(self.names))), (0.0, 1.0, 0.0, 1.0))
        self.faults.setData([], [])
        for line in self.fault_lines:
            self.getPlotItem().removeItem(line)
        self.fault_lines = []

    def set_data(self, steps: np.ndarray, values: np.ndarray) -> None:
        """``values``: (len(steps), blocks)."""
        self._steps = np.asarray(steps, dtype=float)
        self._values = _positive(values)
        self._logs = np.log10(self._values)
        self._shown = (None, None, 0)
        self._rebuild()

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The full-resolution (steps, values) of block ``name``'s curve."""
        i = self.names.index(name)
        return self._steps, self._values[:, i]

    def _rebuild(self) -> None:
        x, logs = self._steps, self._logs
        if len(x) == 0 or logs.size == 0:
            return
        fin = logs[np.isfinite(logs)]
        bounds = (float(x[0]), float(x[-1]), float(fin.min()), float(fin.max())) if fin.size else None
        (vx0, vx1), _ = self.vb.viewRange()
        width = max(50, int(self.vb.width()))
        if bounds is not None:
            self.follow_data(bounds[0], bounds[1], bounds[2], bounds[3])
        if self.follow:
            i0, i1 = 0, len(x)
        else:  # zoomed or panned: only the rows in view, and one beyond each edge
            i0 = max(0, int(np.searchsorted(x, vx0)) - 1)
            i1 = min(len(x), int(np.searchsorted(x, vx1, side="right")) + 1)
        key = (i0, i1, width, len(x), float(x[-1]))
        if key == self._shown:
            return
        self._shown = key
        xs, ys = peak_bins(x[i0:i1], logs[i0:i1], width // 2)
        self.curve.set_paths(xs, ys, bounds)

    def set_faults(self, points: list[tuple[float, float]], steps: list[float]) -> None:
        """Red crosses at (step, value) of the blocks that went NaN/Inf, red lines at those steps."""
        ok = [(x, y) for x, y in points if y is not None and math.isfinite(y) and y > 0]
        self.faults.setData([p[0] for p in ok], [math.log10(p[1]) for p in ok])
        pi = self.getPlotItem()
        have = {line.value() for line in self.fault_lines}
        for s in steps:
            if s not in have:
                line = pg.InfiniteLine(pos=s, angle=90, pen=pg.mkPen(FAULT, width=1.2, style=Qt.DashLine))
                line.setZValue(40)
                pi.addItem(line, ignoreBounds=True)
                self.fault_lines.append(line)

    def highlight(self, name: str | None) -> None:
        name = name if name in self.names else None
        if name != self.selected:
            self.selected = name
            self._apply_pens()

    def pen_of(self, name: str) -> QPen:
        return self.curve.pens[self.names.index(name)]

    def _apply_pens(self) -> None:
        sel = self.selected
        pens = []
        for name, color in zip(self.names, self.colors):
            if sel is None:
                pens.append(pg.mkPen(color, width=1))
            elif name == sel:
                pens.append(pg.mkPen(color, width=3))
            else:
                dim = QColor(color)
                dim.setAlpha(55)
                pens.append(pg.mkPen(dim, width=1))
        order = list(range(len(self.names)))
        if sel is not None:
            i = self.names.index(sel)
            order.remove(i)
            order.append(i)
        self.curve.set_pens(pens, order)

    def pick(self, p: QPointF):
        x, n = self._steps, len(self._steps)
        if n == 0 or not self.names:
            return None
        i1 = int(np.clip(np.searchsorted(x, p.x()), 1, n - 1)) if n > 1 else 0
        i0 = max(i1 - 1, 0)
        logs = self._logs[[i0, i1]]
        if n > 1 and x[i1] != x[i0]:
            f = float(np.clip((p.x() - x[i0]) / (x[i1] - x[i0]), 0, 1))
            a, b = logs[0], logs[1]
            y = np.where(np.isnan(a), b, np.where(np.isnan(b), a, a + (b - a) * f))
            near = i1 if f >= 0.5 else i0
        else:
            y, near = logs[-1], i1
        if np.all(np.isnan(y)):
            return None
        d = np.abs(y - p.y())
        k = int(np.nanargmin(d))
        if d[k] / self.pixel_size()[1] > self.PICK_PX:
            return None
        name = self.names[k]
        v = self._values[near, k]
        return name, f"{name}  {fmt(v)}  (step {int(x[near])})"

    def point_of(self, name: str, row: int = -1) -> tuple[float, float] | None:
        """(step, value) of block ``name`` at data row ``row``: where a click selects it."""
        if name not in self.names or len(self._steps) == 0:
            return None
        v = self._values[row, self.names.index(name)]
        return (float(self._steps[row]), float(v)) if math.isfinite(v) else None


class HeatmapPlot(BasePlot):
    """Blocks × steps of log10(probe): one row per block in depth order (first block on top)."""

    def __init__(self, style: Style, parent=None):
        super().__init__(style, ylog=False, ylabel="", parent=parent)
        pi = self.getPlotItem()
        self.grid = False
        self.vb.invertY(True)
        self.vb.setMouseEnabled(x=True, y=False)
        self.image = pg.ImageItem(axisOrder="col-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        pi.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(-3, 0), colorMap=pg.colormap.get("viridis"), width=10,
                                   interactive=False, colorMapMenu=False, pen=style.dim)  # fmt: skip
        self.bar.setImageItem(self.image, insert_in=pi)
        font = QFont()
        font.setPointSizeF(7)
        self.bar.axis.setTickFont(font)
        self.bar.axis.setTextPen(pg.mkPen(style.fg))
        self.names: list[str] = []
        self.data = np.zeros((0, 0))  # (rows, blocks) log10 values as shown
        self._steps = np.zeros(0)
        self.sel_lines = [pg.InfiniteLine(angle=0, pen=pg.mkPen(style.select, width=2)) for _ in range(2)]
        for line in self.sel_lines:
            line.setVisible(False)
            line.setZValue(20)
            pi.addItem(line, ignoreBounds=True)
        self.fault_lines: list[pg.InfiniteLine] = []
        self.selected: str | None = None
        pi.getAxis("left").setWidth(62)

    def set_blocks(self, names: list[str]) -> None:
        self.names = list(names)
        ax = self.getPlotItem().getAxis("left")
        ax.setTicks([[(i + 0.5, n) for i, n in stage_ticks(self.names)], []])
        self.clear_data()
        self.highlight(self.selected)

    def clear_data(self) -> None:
        self.data = np.zeros((0, len(self.names)))
        self._steps = np.zeros(0)
        self.image.clear()
        for line in self.fault_lines:
            self.getPlotItem().removeItem(line)
        self.fault_lines = []

    def set_data(self, steps: np.ndarray, values: np.ndarray) -> None:
        n = len(steps)
        self._steps = np.asarray(steps, dtype=float)
        if n == 0 or not self.names:
            self.image.clear()
            self.data = np.zeros((0, len(self.names)))
            return
        self.data = _log10(values)
        finite = self.data[np.isfinite(self.data)]
        if finite.size:
            sample = finite[:: max(1, finite.size // 20000)]
            lo, hi = np.percentile(sample, [1, 99]) if sample.size > 50 else (finite.min(), finite.max())
            if hi - lo < 1e-3:
                lo, hi = lo - 0.5, hi + 0.5
        else:
            lo, hi = -3.0, 0.0
        x0, x1 = float(steps[0]), float(steps[-1])
        dx = (x1 - x0) / (n - 1) if n > 1 else 1.0
        self.image.setImage(self.data, autoLevels=False, levels=(lo, hi))
        self.image.setRect(QRectF(x0 - dx / 2, 0, (x1 - x0) + dx, len(self.names)))
        self.fixed_y = (0.0, float(len(self.names)))
        self.follow_data(x0 - dx / 2, x1 + dx / 2, None, None)
        self.bar.setLevels((lo, hi))
        levels = log_ticks(lo, hi, max(40.0, self.bar.axis.height() or self.height() * 0.7), 14)
        self.bar.axis.setTicks([[(v, _tick_label(v)) for v in vals] for sp, vals in levels if sp > 0])

    def set_fault_steps(self, steps: list[float]) -> None:
        have = {line.value() for line in self.fault_lines}
        for s in steps:
            if s not in have:
                line = pg.InfiniteLine(pos=s, angle=90, pen=pg.mkPen(FAULT, width=1.5))
                line.setZValue(25)
                self.getPlotItem().addItem(line, ignoreBounds=True)
                self.fault_lines.append(line)

    def highlight(self, name: str | None) -> None:
        self.selected = name if name in self.names else None
        if self.selected is None:
            for line in self.sel_lines:
                line.setVisible(False)
            return
        i = self.names.index(self.selected)
        for line, y in zip(self.sel_lines, (i, i + 1)):
            line.setValue(y)
            line.setVisible(True)

    def pick(self, p: QPointF):
        if not self.names:
            return None
        i = int(math.floor(p.y()))
        if not (0 <= i < len(self.names)):
            return None
        name = self.names[i]
        if len(self._steps) == 0:
            return name, name
        j = int(np.clip(np.searchsorted(self._steps, p.x()), 0, len(self._steps) - 1))
        if j > 0 and abs(self._steps[j - 1] - p.x()) < abs(self._steps[j] - p.x()):
            j -= 1
        v = self.data[j, i] if self.data.size else float("nan")
        val = fmt(10**v) if math.isfinite(v) else "NaN"
        return name, f"{name}  {val}  (step {int(self._steps[j])})"


class HighwayPlot(BasePlot):
    """input_grad_norm against block depth: now and at step 0; the plain twin dashed."""

    def __init__(self, style: Style, parent=None):
        super().__init__(style, ylog=True, xlabel="block (input → output)", parent=parent)
        pi = self.getPlotItem()
        s = style
        faint = QColor(s.residual)
        faint.setAlpha(120)
        pfaint = QColor(s.plain)
        pfaint.setAlpha(120)
        self.pens = {
            "residual": pg.mkPen(s.residual, width=2.2),
            "residual0": pg.mkPen(faint, width=1.4, style=Qt.DotLine),
            "plain": pg.mkPen(s.plain, width=2.2, style=PLAIN_DASH),
            "plain0": pg.mkPen(pfaint, width=1.4, style=Qt.DotLine),
        }
        self.curves = {}
        for key, pen in self.pens.items():
            first = key.endswith("0")
            color = pen.color()
            c = pg.PlotDataItem(pen=pen, connect="finite", symbol=None if first else ("o" if key == "residual" else "t"),
                                symbolSize=6, symbolPen=pg.mkPen(color), symbolBrush=pg.mkBrush(s.bg if first else color))  # fmt: skip
            c.setZValue(5 if first else 10)
            pi.addItem(c)
            self.curves[key] = c
        self.faults = pg.ScatterPlotItem(
            size=11, pen=pg.mkPen(FAULT, width=2), brush=pg.mkBrush(None), symbol="o"
        )
        self.faults.setZValue(20)
        pi.addItem(self.faults)
        self.sel_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(s.select, width=1.5, style=Qt.DashLine))
        self.sel_line.setVisible(False)
        pi.addItem(self.sel_line, ignoreBounds=True)
        self.names: list[str] = []
        self.values: dict[str, np.ndarray] = {}
        self.selected: str | None = None

    def set_blocks(self, names: list[str]) -> None:
        self.names = list(names)
        ax = self.getPlotItem().getAxis("bottom")
        ax.setTicks([stage_ticks(self.names, limit=8), [(i, "") for i in range(len(self.names))]])
        pad = max(1.0, 0.05 * len(self.names))  # room for the first and last tick labels
        self.fixed_x = (-pad, len(self.names) - 1 + pad) if self.names else None
        self._range = None
        self.clear_data()
        self.highlight(self.selected)

    def clear_data(self) -> None:
        self.values = {}
        for c in self.curves.values():
            c.setData([], [])
        self.faults.setData([], [])

    def set_series(self, key: str, values: np.ndarray | None) -> None:
        c = self.curves[key]
        if values is None or not len(values):
            self.values.pop(key, None)
            c.setData([], [])
            return
        v = _positive(values)
        self.values[key] = v
        c.setData(np.arange(len(v), dtype=float), v)

    def fit(self) -> None:
        """Follow the series now shown (call after the set_series of a frame)."""
        vals = [v for v in self.values.values() if v is not None and len(v)]
        if not vals:
            return
        logs = _log10(np.concatenate(vals))
        logs = logs[np.isfinite(logs)]
        if logs.size:
            self.follow_data(0, 1, float(logs.min()), float(logs.max()))

    def set_faults(self, indices: list[int], values: np.ndarray | None) -> None:
        if values is None or not indices:
            self.faults.setData([], [])
            return
        pts = [
            (i, values[i])
            for i in indices
            if 0 <= i < len(values) and math.isfinite(values[i]) and values[i] > 0
        ]
        self.faults.setData([p[0] for p in pts], [math.log10(v) for _, v in pts])

    def highlight(self, name: str | None) -> None:
        self.selected = name if name in self.names else None
        if self.selected is None:
            self.sel_line.setVisible(False)
        else:
            self.sel_line.setValue(self.names.index(self.selected))
            self.sel_line.setVisible(True)

    def point_count(self, key: str = "residual") -> int:
        c = self.curves[key]
        x, _ = c.getData()
        return 0 if x is None else len(x)

    def pick(self, p: QPointF):
        if not self.names:
            return None
        i = int(round(p.x()))
        if not (0 <= i < len(self.names)) or abs(p.x() - i) * 1 > 0.5:
            return None
        parts = []
        for key, label in (("residual", "now"), ("residual0", "step 0"), ("plain", "plain"),
                           ("plain0", "plain step 0")):  # fmt: skip
            v = self.values.get(key)
            if v is not None and i < len(v):
                parts.append(f"{label} {fmt(v[i])}")
        name = self.names[i]
        return name, f"{name}\n" + " · ".join(parts) if parts else name


class CurvePlot(BasePlot):
    """Loss or accuracy over steps: raw (faint) and smoothed; residual solid, plain twin dashed."""

    def __init__(self, style: Style, ylabel: str, ylog: bool = False, parent=None):
        super().__init__(style, ylog=ylog, ylabel=ylabel, parent=parent)
        pi = self.getPlotItem()
        pi.setClipToView(True)
        pi.setDownsampling(auto=True, mode="peak")
        self.curves = {}
        for key, color, dash in (
            ("residual", style.residual, Qt.SolidLine),
            ("plain", style.plain, PLAIN_DASH),
        ):
            faint = QColor(color)
            faint.setAlpha(70)
            raw = pg.PlotDataItem(pen=pg.mkPen(faint, width=1), connect="finite")
            smooth = pg.PlotDataItem(pen=pg.mkPen(color, width=2.2, style=dash), connect="finite")
            raw.setZValue(5)
            smooth.setZValue(10)
            pi.addItem(raw)
            pi.addItem(smooth)
            self.curves[key] = (raw, smooth)
        self._extent: dict = {}

    def clear_data(self) -> None:
        self._extent = {}
        for raw, smooth in self.curves.values():
            raw.setData([], [])
            smooth.setData([], [])

    def set_series(self, key: str, steps: np.ndarray | None, values: np.ndarray | None) -> None:
        raw, smooth = self.curves[key]
        if steps is None or not len(steps):
            self._extent[key] = None
            raw.setData([], [])
            smooth.setData([], [])
            return
        v = _positive(values) if self.ylog else np.where(np.isfinite(values), values, np.nan)
        raw.setData(steps, v)
        k = max(1, len(steps) // 400)  # the smoothed line needs no more points than pixels
        sm = smoothed(v)
        if k > 1:
            idx = np.unique(np.r_[np.arange(0, len(steps), k), len(steps) - 1])
            smooth.setData(steps[idx], sm[idx])
        else:
            smooth.setData(steps, sm)
        self._extent[key] = (float(steps[0]), float(steps[-1]), v)

    def fit(self) -> None:
        """Follow the series now shown (call after the set_series of a frame)."""
        ext = [e for e in self._extent.values() if e is not None]
        if not ext:
            return
        x0, x1 = min(e[0] for e in ext), max(e[1] for e in ext)
        vals = np.concatenate([e[2] for e in ext])
        vals = _log10(vals) if self.ylog else vals
        vals = vals[np.isfinite(vals)]
        if vals.size:
            self.follow_data(x0, x1, float(vals.min()), float(vals.max()))

    def point_count(self, key: str = "residual") -> int:
        x, _ = self.curves[key][1].getData()
        return 0 if x is None else len(x)


def smoothed(v: np.ndarray, frac: float = 0.03) -> np.ndarray:
    """A trailing moving average over ~3% of the points (at least 1, at most 50), NaN-aware."""
    n = len(v)
    w = int(min(50, max(1, round(n * frac))))
    if w <= 1 or n < 3:
        return v
    ok = np.isfinite(v)
    vals = np.where(ok, v, 0.0)
    c = np.concatenate([[0.0], np.cumsum(vals)])
    k = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, n + 1)
    lo = np.maximum(idx - w, 0)
    cnt = k[idx] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (c[idx] - c[lo]) / cnt
    return np.where(ok, out, np.nan)


# ------------------------------------------------------------------------------------ legends


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
        fm = self.fontMetrics()
        text = self.palette().windowText().color()
        if self.is_list():
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
            p.end()
            return
        r = self._bar_rect()
        grad = QLinearGradient(r.topLeft(), r.bottomLeft())
        cmap = self.style_.depth_map()
        for pos in np.linspace(0, 1, 9):
            grad.setColorAt(float(pos), cmap.map(float(pos), mode="qcolor"))
        p.setPen(Qt.NoPen)
        p.setBrush(QBrush(grad))
        p.drawRoundedRect(r, 3, 3)
        p.setPen(text)
        n = len(self.names)

        def y_of(i: int) -> float:
            return r.top() + r.height() * (i / max(1, n - 1))

        last_y = -1e9
        for i, name in self._ticks() + [(n - 1, self.names[-1])]:
            y = y_of(i)
            if y - last_y < fm.height() and i != n - 1:
                continue
            if i == n - 1 and y - last_y < fm.height():
                y = last_y + fm.height()
            p.drawLine(QPointF(r.right(), y_of(i)), QPointF(r.right() + 3, y_of(i)))
            p.drawText(QPointF(r.right() + 5, min(self.height() - 2, y + fm.ascent() / 2 - 1)), name)
            last_y = y
        if self.selected in self.names:
            y = y_of(self.names.index(self.selected))
            p.setPen(QPen(QColor(self.style_.select), 2))
            p.drawLine(QPointF(r.left() - 2, y), QPointF(r.right() + 2, y))
        p.end()


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
