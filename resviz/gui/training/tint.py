"""The graph tint: the Graph tab's blocks coloured by their latest value of the selected probe
(log scale, a softened viridis; red for NaN/Inf), with the colour scale beside the Training tab's
controls.

A mixin of :class:`~resviz.gui.training.panel.TrainingPanel`: it maps the window's graph nodes
to the run's blocks and tints them from the panel's residual run buffer.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtGui import QColor

from .plot_base import FAULT


def _pastel(c: QColor, base: QColor, amount: float) -> QColor:
    """``c`` blended toward ``base`` (white or the dark background) so node text stays readable."""
    return QColor(
        round(c.red() * (1 - amount) + base.red() * amount),
        round(c.green() * (1 - amount) + base.green() * amount),
        round(c.blue() * (1 - amount) + base.blue() * amount),
    )


class GraphTintMixin:
    """Tints the graph's nodes by the run's current probe values (a mixin of ``TrainingPanel``)."""

    # ================================================================== graph tint

    def _tint_colors(self) -> list[QColor]:
        """The heatmap's colour map (viridis), softened so node labels stay readable on it."""
        cols = self.__dict__.get("_tint_cols")
        if cols is None:
            import pyqtgraph as pg

            base = QColor(self.style_.bg)
            cmap = pg.colormap.get("viridis")
            amount = 0.5 if not self.style_.dark else 0.35
            cols = [_pastel(cmap.map(float(f), mode="qcolor"), base, amount) for f in np.linspace(0, 1, 7)]
            self._tint_cols = cols
        return cols

    def _tint_color(self, f: float) -> QColor:
        cols = self._tint_colors()
        f = min(1.0, max(0.0, f)) * (len(cols) - 1)
        i = min(int(f), len(cols) - 2)
        t = f - i
        a, b = cols[i], cols[i + 1]
        return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                      round(a.blue() + (b.blue() - a.blue()) * t))  # fmt: skip

    def _on_tint_toggled(self, on: bool) -> None:
        if on:
            self.update_tint(force=True)
        else:
            self.clear_tint()

    def _on_graph(self, _drawn) -> None:
        self._node_graph = None
        self._tinted = set()
        self.update_tint(force=True)

    def clear_tint(self) -> None:
        w = self.window_
        if w is None:
            return
        _untint(w.scene.node_items, self._tinted)
        self._tinted = set()
        if w.view.overview.isVisible():
            w.view.overview.refresh()
        self._tint_version = None
        self.tint_scale.set_range(None, None)

    def _node_map(self) -> dict[str, list[str]]:
        """Graph node id → the blocks it stands for (a block, a member of one, a roll-up, a stage)."""
        w = self.window_
        graph = w.scene.graph
        if self._node_graph is graph:
            return self._node_blocks
        names = self.buffers["residual"].names if self.buffers else self.names
        index = {n: i for i, n in enumerate(names)}
        out: dict[str, list[str]] = {}
        for nid, item in w.scene.node_items.items():
            node = item.node
            if node.kind == "rollup" and node.name in index:
                i = index[node.name]
                out[nid] = names[i : i + max(1, node.repeat)]
            elif node.block and node.block in index:
                out[nid] = [node.block]
            elif node.kind == "module":
                inside = [b for b in names if b.startswith(node.name + ".")]
                if inside:
                    out[nid] = inside
        self._node_graph, self._node_blocks = graph, out
        return out

    def update_tint(self, force: bool = False) -> None:
        """Colour the graph's blocks by their latest value of the selected probe (log scale)."""
        w = self.window_
        res = self.buffers.get("residual")
        if w is None or not self.tint.isChecked() or res is None or res.latest is None:
            return
        key = (res.version, self.current_probe(), id(w.scene.graph))
        if key == self._tint_version and not force:
            return
        self._tint_version = key
        logs = log_values(res.names, res.latest_probe(self.current_probe()))
        scale = log_range(logs)
        self.tint_scale.set_range(*(scale or (None, None)))
        faulted, places = node_tints(self._node_map(), logs, self.model.bad_blocks(), scale)
        red = _pastel(QColor(FAULT), QColor(self.style_.bg), 0.35)
        colors = {nid: red if nid in faulted else self._tint_color(places[nid]) if nid in places else None
                  for nid in self._node_map()}  # fmt: skip
        items = w.scene.node_items
        tinted = _tint(items, colors)
        _untint(items, self._tinted - tinted)
        self._tinted = tinted
        if w.view.overview.isVisible():  # its schematic shows the tint too
            w.view.overview.refresh()


def log_values(names: list[str], values) -> dict[str, float]:
    """log10 of each block's value, for the finite positive ones."""
    return {name: math.log10(v) for name, v in zip(names, values) if math.isfinite(v) and v > 0}


def log_range(logs: dict[str, float]) -> tuple[float, float] | None:
    """The colour scale's ends (None when no block has a value to show)."""
    return (min(logs.values()), max(logs.values())) if logs else None


def node_tints(node_blocks: dict[str, list[str]], logs: dict[str, float], bad,
               scale: tuple[float, float] | None) -> tuple[set[str], dict[str, float]]:  # fmt: skip
    """The nodes that stand for a faulted block (drawn red), and each other node's place (0..1)
    on the log colour scale: the mean of its blocks' logs. A node with neither is not tinted."""
    lo, hi = scale or (0.0, 0.0)
    span = hi - lo if hi > lo else 1.0
    faulted: set[str] = set()
    places: dict[str, float] = {}
    for nid, blocks in node_blocks.items():
        if any(b in bad for b in blocks):
            faulted.add(nid)
            continue
        ls = [logs[b] for b in blocks if b in logs]
        if ls:
            places[nid] = (sum(ls) / len(ls) - lo) / span
    return faulted, places


def _tint(items: dict, colors: dict[str, QColor | None]) -> set[str]:
    """Give each node on the scene its colour (None: none); returns the nodes tinted."""
    tinted = set()
    for nid, color in colors.items():
        item = items.get(nid)
        if item is None:
            continue
        try:
            item.set_tint(color)
        except RuntimeError:  # the scene is being redrawn
            continue
        if color is not None:
            tinted.add(nid)
    return tinted


def _untint(items: dict, nids) -> None:
    for nid in nids:
        item = items.get(nid)
        if item is not None:
            try:
                item.set_tint(None)
            except RuntimeError:  # the scene is being redrawn
                pass
