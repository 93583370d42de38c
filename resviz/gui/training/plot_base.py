"""The building blocks of the Training tab's plots: :class:`Style` (the palette's colours), the
shared colour constants, number and tick formatting (log axes with readable decades), and
:class:`BasePlot`, the pyqtgraph widget every plot derives from (data-following ranges, grid,
hover label, click-to-select); plus :class:`MultiCurve` and the numpy helpers (``peak_bins``,
``smoothed``) that keep a redraw's cost independent of the number of steps.

Kept apart from :mod:`~resviz.gui.training.plots` (the plots themselves) and
:mod:`~resviz.gui.training.legends` (the legends beside them), which both build on it.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QLineF, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..window.theme import is_dark_palette

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


def _tick_label(v: float, plain: bool | None = None) -> str:
    """A log-axis label for log10 value ``v``: plainly (``0.02``, ``300``) or as a power of ten
    (``10⁻⁵``, ``2·10⁻⁵``). ``plain=None`` decides for this value alone; an axis decides once for
    all its labels (:func:`log_labels`), so one axis never mixes ``0.01`` with ``10⁻³``."""
    if plain is None:
        plain = -2 - 1e-6 <= v < 4
    e = math.floor(v + 1e-6)
    mantissa = float(f"{10 ** (v - e):.2g}")
    if mantissa >= 10:
        e, mantissa = e + 1, mantissa / 10
    if plain:
        x = float(f"{mantissa:g}e{e}")
        return f"{x:.6f}".rstrip("0").rstrip(".") if x < 1 else f"{x:g}"
    if abs(mantissa - 1) < 1e-9:
        return pow10(e)
    return f"{mantissa:g}·{pow10(e)}"


def log_labels(values: list[float]) -> list[str]:
    """Labels for one log axis's ticks (log10 values), all in one notation: plain when every value
    lies in 0.01 … 1000s, else powers of ten."""
    plain = all(-2 - 1e-6 <= v < 4 for v in values)
    return [_tick_label(v, plain) for v in values]


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
    every minor tick; a range inside one decade gets round linear values. All its labels share
    one notation (see :func:`log_labels`)."""

    MIN_PX = 16  # vertical pixels a label needs

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plain = True  # the notation of the labels of the last tickValues()

    def tickValues(self, minVal, maxVal, size):
        if not self.logMode:
            return super().tickValues(minVal, maxVal, size)
        levels = log_ticks(minVal, maxVal, size, self.MIN_PX)
        labelled = [v for spacing, vals in levels if spacing > 0 for v in vals]
        self._plain = all(-2 - 1e-6 <= v < 4 for v in labelled)
        return levels

    def tickStrings(self, values, scale, spacing):
        if not self.logMode:
            return super().tickStrings(values, scale, spacing)
        if spacing < 0:
            return ["" for _ in values]
        return [_tick_label(v, self._plain) for v in values]


class StepAxis(pg.AxisItem):
    """A horizontal axis of whole numbers (steps, blocks): ticks at 1, 2, 5 × 10ⁿ steps, never
    at fractions, however few the steps. Labels may reach past the axis ends by half a label, so
    the first and last are not dropped (pyqtgraph hides labels that overhang the axis)."""

    MIN_PX = 48  # horizontal pixels a label needs

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setStyle(hideOverlappingLabels=40)

    def tickValues(self, minVal, maxVal, size):
        return integer_ticks(minVal, maxVal, size, self.MIN_PX)

    def tickStrings(self, values, scale, spacing):
        return [f"{int(round(v))}" for v in values]


def integer_ticks(lo: float, hi: float, size: float, min_px: float = 48) -> list[tuple[float, list[float]]]:
    """Whole-number ticks over [lo, hi] drawn across ``size`` pixels, a label every ``min_px`` at
    most, at 1, 2, 5 × 10ⁿ steps (never finer than 1)."""
    lo, hi = sorted((float(lo), float(hi)))
    if not (math.isfinite(lo) and math.isfinite(hi)) or size <= 0:
        return []
    want = max(1.0, (hi - lo) * min_px / size)  # the smallest step that leaves room for labels
    mag = 10 ** math.floor(math.log10(want))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= want - 1e-9)
    first = math.ceil(lo / step - 1e-9) * step
    values = [float(first + i * step) for i in range(int((hi - first) / step + 1e-9) + 1)]
    return [(step, values)]


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
        super().__init__(parent=parent, background=style.bg,
                         axisItems={"left": LogAxis("left"), "bottom": StepAxis("bottom")})  # fmt: skip
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
