"""The Training tab's plots (pyqtgraph): per-block probe curves, the blocks × steps heatmap, the
gradient highway, loss and accuracy. Their shared machinery (style, ticks, :class:`BasePlot`) is in
:mod:`~resviz.gui.training.plot_base`; the small legends and colour scales beside them are in
:mod:`~resviz.gui.training.legends`.

Every plot creates its items once and only calls ``setData``/``setImage`` on redraw; curves clip to
the view and downsample (peak mode), so a redraw costs about the same for 50 steps or 50,000.
Plots know block *names* and numbers; they never see torch. Clicking near a curve, a heatmap row
or a highway point emits ``blockClicked(name)``; :meth:`highlight` does the reverse.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPen

from .plot_base import (
    FAULT,
    PLAIN_DASH,
    BasePlot,
    MultiCurve,
    Style,
    _log10,
    _positive,
    fmt,
    log_labels,
    log_ticks,
    peak_bins,
    smoothed,
    stage_ticks,
)


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
        labelled = [vals for sp, vals in levels if sp > 0]
        labels = log_labels([v for vals in labelled for v in vals])  # one notation for the bar
        it = iter(labels)
        self.bar.axis.setTicks([[(v, next(it)) for v in vals] for vals in labelled])

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
