"""The block graph as Qt graphics items: nodes to hover, select and fold; edges with shapes.

The scene draws a :class:`~resviz.render.view.BlockGraph` at the positions a
:class:`~resviz.render.layout.Layout` gives; it computes nothing about the model itself.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QStyleOptionGraphicsItem,
)

from ...render.layout import Layout, Metrics, auto_layout
from ...render.theme import LIGHT, LineStyle, Theme, category, edge_style, frame_style
from ...render.view import BlockGraph, ViewNode, shape_label

Z_GROUP, Z_EDGE, Z_LABEL, Z_NODE = -10, 0, 1, 2


def fonts() -> tuple[QFont, QFont, QFont]:
    label = QFont()
    label.setPointSizeF(9.5)
    label.setBold(True)
    detail = QFont()
    detail.setPointSizeF(8.5)
    small = QFont()
    small.setPointSizeF(8)
    return label, detail, small


def node_look(theme: Theme, node: ViewNode, cat: str, highlight: QColor | None, selected: bool,
              hover: bool) -> tuple[QColor, QColor, float]:  # fmt: skip
    """A node box's fill, border colour and border width: its kind's colour (or its tint), red when
    broken; selection, then hover, override the border."""
    fill = QColor(theme.kinds.get(cat, theme.kinds["other"]))
    if highlight is not None:
        fill = highlight
    border = QColor(theme.node_border)
    width = 1.2
    if node.broken:
        border = QColor(theme.broken)
        fill = QColor(theme.broken_fill) if highlight is None else fill
        width = 2.2
    if selected:
        border, width = QColor(theme.selection), 3.0
    elif hover:
        border, width = QColor(theme.hover), 2.4
    return fill, border, width


def text_colors(theme: Theme, node: ViewNode, cat: str, highlight: QColor | None) -> tuple[QColor, QColor]:
    """The colours of a node's label and of its detail line."""
    text = QColor(theme.background if cat == "io" else theme.text)
    dim = QColor(theme.background if cat == "io" else theme.text_dim)
    if highlight is not None:
        # a gradient tint can be light or dark whatever the theme: text follows the fill
        light_fill = highlight.lightnessF() > 0.55
        text = QColor("#111827" if light_fill else "#f9fafb")
        dim = QColor("#374151" if light_fill else "#e5e7eb")
    if node.broken and node.kind != "io":
        dim = QColor(theme.broken)
    return text, dim


class NodeItem(QGraphicsItem):
    """One node: a rounded box with its name and what it is; an add is a small ⊕ circle."""

    def __init__(self, node: ViewNode, rect: QRectF, scene: QtGraphScene):
        super().__init__()
        self.node = node
        self.rect = rect
        self._scene = scene
        self._hover = False
        self._highlight = None  # QColor tint set by the training view (gradient norms)
        self.setPos(rect.topLeft())
        self.setFlag(QGraphicsItem.ItemIsSelectable, True)
        self.setAcceptHoverEvents(True)
        self.setZValue(Z_NODE)
        self.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        # Tooltip and cursor are set on first hover: resnet1202 expanded has 4,000 nodes, and
        # every setter is a call into Qt (selection repaints need no itemChange hook either:
        # QGraphicsItem.setSelected updates the item itself).

    def boundingRect(self) -> QRectF:
        return QRectF(-3, -3, self.rect.width() + 6, self.rect.height() + 6)

    def set_tint(self, color: QColor | None) -> None:
        self._highlight = color
        self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        theme = self._scene.theme
        node = self.node
        w, h = self.rect.width(), self.rect.height()
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        cat = category(node.type, node.kind)
        fill, border, width = node_look(theme, node, cat, self._highlight, self.isSelected(), self._hover)
        painter.setRenderHint(QPainter.Antialiasing, True)
        painter.setPen(QPen(border, width))
        painter.setBrush(QBrush(fill))
        if node.is_add and node.kind == "op":
            self._paint_add(painter, w, h)
            return
        self._paint_box(painter, cat, border, w, h)
        if lod < 0.35:
            return
        label_font, detail_font, _ = self._scene.fonts
        text, dim = text_colors(theme, node, cat, self._highlight)
        painter.setPen(text)
        painter.setFont(label_font)
        painter.drawText(QRectF(8, 3, w - 12, h / 2), Qt.AlignHCenter | Qt.AlignVCenter, node.label)
        painter.setPen(dim)
        painter.setFont(detail_font)
        painter.drawText(QRectF(8, h / 2 - 1, w - 12, h / 2 - 2), Qt.AlignHCenter | Qt.AlignVCenter,
                         node.detail)  # fmt: skip

    def _paint_add(self, painter: QPainter, w: float, h: float) -> None:
        """An add op: a circle with a plus, in the pen and brush already set."""
        theme = self._scene.theme
        d = min(w, h)
        r = QRectF((w - d) / 2, (h - d) / 2, d, d)
        painter.drawEllipse(r)
        painter.setPen(QPen(QColor(theme.broken if self.node.broken else theme.text), 2))
        c = r.center()
        painter.drawLine(QPointF(c.x() - d / 4, c.y()), QPointF(c.x() + d / 4, c.y()))
        painter.drawLine(QPointF(c.x(), c.y() - d / 4), QPointF(c.x(), c.y() + d / 4))

    def _paint_box(self, painter: QPainter, cat: str, border: QColor, w: float, h: float) -> None:
        """The node's rounded box, a block's stripe in its shortcut's colour, a rollup's second edge."""
        theme, node = self._scene.theme, self.node
        radius = h / 2 if cat == "io" else 6
        painter.drawRoundedRect(QRectF(0, 0, w, h), radius, radius)
        if node.kind in ("block", "rollup"):
            # a stripe in the shortcut's colour says "this is a residual block" at a glance
            stripe = QColor(theme.shortcuts.get(node.stripe_kind or "none", theme.node_border))
            painter.setPen(Qt.NoPen)
            painter.setBrush(stripe)
            painter.drawRoundedRect(QRectF(0, 0, 6, h), 3, 3)
        if node.kind == "rollup":
            painter.setPen(QPen(border, 1))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(QRectF(3, 3, w, h), 6, 6)

    def hoverEnterEvent(self, event) -> None:
        if not self.hasCursor():
            self.setToolTip(_tooltip(self.node))
            self.setCursor(Qt.PointingHandCursor)
        self._hover = True
        self.update()
        self._scene.nodeHovered.emit(self.node.id)
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event) -> None:
        self._hover = False
        self.update()
        self._scene.nodeHovered.emit("")
        super().hoverLeaveEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        self._scene.nodeActivated.emit(self.node.id)
        event.accept()


class EdgeItem(QGraphicsItem):
    """One edge: its line, its arrowhead and its shape label, painted by a single item.

    Three items per edge (path, arrow, text) made resnet1202 expanded a 20,000-item scene; one
    item each keeps building and repainting it fast. The path and arrowhead are built on first
    paint: most edges of a deep net are never on screen, and the bounds need only the route's
    points (a curve stays inside its control points' box, the arrowhead within the padding).
    """

    def __init__(self, route, pen: QPen, label: str, font: QFont, label_color: QColor,
                 sizes: TextSizes | None = None, halo: QPen | None = None,
                 label_fill: QColor | None = None):  # fmt: skip
        super().__init__()
        self.route = route
        self._shape: tuple[QPainterPath, QPolygonF] | None = None  # (path, arrowhead), lazily
        self.pen = pen
        self.halo = halo  # a wide pale stroke under the line (the edges of a broken add)
        self.label_fill = label_fill  # a box behind the label, so no line runs through it
        self.label = label
        self.font = font
        self.label_color = label_color
        if route.label_pos is None:
            self.label = label = ""
        w, h = (sizes or TextSizes())(font, label)
        x, y = route.label_pos or route.points[0]
        if route.label_anchor == "right":
            x -= w
        self.label_rect = QRectF(x, y - h / 2, w + 2, h)
        pad = max(pen.widthF(), halo.widthF() if halo else 0) + 8  # > the arrowhead's 7 px
        xs, ys = [p[0] for p in route.points], [p[1] for p in route.points]
        x0, y0 = min(xs), min(ys)
        self._bounds = QRectF(x0 - pad, y0 - pad, max(xs) - x0 + 2 * pad, max(ys) - y0 + 2 * pad) | self.label_rect
        self.setZValue(Z_EDGE)

    @property
    def path(self) -> QPainterPath:
        if self._shape is None:
            self._shape = (_path(self.route), _arrow_polygon(self.route))
        return self._shape[0]

    @property
    def arrow(self) -> QPolygonF:
        self.path  # noqa: B018  (builds both)
        return self._shape[1]

    def text(self) -> str:
        return self.label

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        painter.setRenderHint(QPainter.Antialiasing, True)
        painter.setBrush(Qt.NoBrush)
        if self.halo is not None:
            painter.setPen(self.halo)
            painter.drawPath(self.path)
        painter.setPen(self.pen)
        painter.drawPath(self.path)
        painter.setPen(QPen(self.pen.color(), 1))
        painter.setBrush(QBrush(self.pen.color()))
        painter.drawPolygon(self.arrow)
        if self.label and option.levelOfDetailFromTransform(painter.worldTransform()) >= 0.45:
            if self.label_fill is not None:
                painter.setPen(QPen(self.pen.color(), 1))
                painter.setBrush(self.label_fill)
                painter.drawRoundedRect(self.label_rect.adjusted(-3, -1, 3, 1), 3, 3)
            painter.setFont(self.font)
            painter.setPen(self.label_color)
            painter.drawText(self.label_rect, Qt.AlignLeft | Qt.AlignVCenter, self.label)


class TextSizes:
    """Width and height of a label in a font, memoised: an expanded resnet1202 has 4,800 edge
    labels but only a few dozen distinct ones (16×32×32, ...)."""

    def __init__(self):
        self._metrics: dict[str, QFontMetricsF] = {}
        self._sizes: dict[tuple[str, str], tuple[float, float]] = {}

    def __call__(self, font: QFont, text: str) -> tuple[float, float]:
        key = (font.key(), text)
        size = self._sizes.get(key)
        if size is None:
            metrics = self._metrics.get(key[0])
            if metrics is None:
                metrics = self._metrics[key[0]] = QFontMetricsF(font)
            size = self._sizes[key] = (metrics.horizontalAdvance(text), metrics.height())
        return size


def _arrow_polygon(route, size: float = 7.0) -> QPolygonF:
    (x0, y0), (x1, y1) = route.points[-2], route.points[-1]
    ang = math.atan2(y1 - y0, x1 - x0)
    return QPolygonF([
        QPointF(x1, y1),
        QPointF(x1 - size * math.cos(ang - 0.45), y1 - size * math.sin(ang - 0.45)),
        QPointF(x1 - size * math.cos(ang + 0.45), y1 - size * math.sin(ang + 0.45)),
    ])  # fmt: skip


class GroupItem(QGraphicsRectItem):
    """A stage band or the frame of an expanded block; double-click folds it."""

    def __init__(self, rect: QRectF, group, scene: QtGraphScene, fill: QColor, pen: QPen):
        super().__init__(rect)
        self.group = group
        self._scene = scene
        self.setBrush(QBrush(fill))
        self.setPen(pen)
        self.setZValue(Z_GROUP + group.depth)
        self.setToolTip(f"{group.label}\n(double-click to fold)")

    def mouseDoubleClickEvent(self, event) -> None:
        self._scene.groupActivated.emit(self.group.name)
        event.accept()


def _tooltip(node: ViewNode) -> str:
    lines = [f"<b>{node.name}</b> — {node.type}"]
    if node.in_shape is not None:
        lines.append(f"in: {shape_label(node.in_shape)}")
    if node.out_shape is not None:
        lines.append(f"out: {shape_label(node.out_shape)}")
    if node.params:
        lines.append(f"params: {node.params:,}")
    if node.skip_label:
        lines.append(f"shortcut: {node.skip_label}")
    if node.error:
        lines.append(f"<span style='color:#dc2626'>{node.error}</span>")
    if node.kind in ("block", "module", "rollup"):
        lines.append("<i>double-click to expand</i>")
    return "<br>".join(lines)


class QtGraphScene(QGraphicsScene):
    """Scene holding one drawn BlockGraph. Emits node ids; never touches the model."""

    nodeActivated = Signal(str)  # double-click: fold or unfold
    groupActivated = Signal(str)  # double-click on a band/frame: fold that module
    nodeHovered = Signal(str)

    def __init__(self, parent=None, theme: Theme = LIGHT):
        super().__init__(parent)
        self.theme = theme
        self.fonts = fonts()
        self.graph: BlockGraph | None = None
        self.layout: Layout | None = None
        self.node_items: dict[str, NodeItem] = {}
        self.edge_items: list[EdgeItem] = []
        self.label_items: list[EdgeItem] = []  # edges answer .text() with their shape label
        self.greyed = False
        self.text_sizes = TextSizes()
        self.setItemIndexMethod(QGraphicsScene.BspTreeIndex)

    # ------------------------------------------------------------------ building

    def measure(self):
        """Text width functions for the layout, memoised: labels repeat a lot (BatchNorm2d...)."""
        from functools import lru_cache

        fm_label = QFontMetricsF(self.fonts[0])
        fm_detail = QFontMetricsF(self.fonts[1])
        return (lru_cache(maxsize=None)(fm_label.horizontalAdvance),
                lru_cache(maxsize=None)(fm_detail.horizontalAdvance))  # fmt: skip

    def layout_graph(self, graph: BlockGraph, engine: str = "auto") -> Layout:
        big, small = self.measure()
        return auto_layout(graph, big, small, engine=engine)

    def show_graph(self, graph: BlockGraph, layout: Layout | None = None) -> None:
        self.clear()
        self.node_items.clear()
        self.edge_items.clear()
        self.label_items.clear()
        self.graph = graph
        self.layout = layout = layout or self.layout_graph(graph)
        self.setBackgroundBrush(QBrush(QColor(self.theme.background)))
        self._draw_groups(graph, layout)
        self._draw_edges(graph, layout)
        for nid, box in layout.nodes.items():
            item = NodeItem(graph.nodes[nid], QRectF(box.x, box.y, box.w, box.h), self)
            self.addItem(item)
            self.node_items[nid] = item
        self._draw_self_arcs(graph, layout)
        self.setSceneRect(QRectF(0, 0, layout.width, layout.height))
        if self.greyed:  # new items are fully opaque already
            self.set_greyed(True)

    def _draw_groups(self, graph: BlockGraph, layout: Layout) -> None:
        t = self.theme
        stage_i = 0
        _, _, small = self.fonts
        title_font = QFont(self.fonts[0])
        for g in sorted(graph.groups, key=lambda g: g.depth):
            box = layout.groups.get(g.id)
            if box is None:
                continue
            rect = QRectF(box.x, box.y, box.w, box.h)
            if g.kind == "stage":
                fill = QColor(t.stage_fills[stage_i % 2])
                stage_i += 1
                pen = QPen(QColor(t.block_frame), 1)
                pen.setStyle(Qt.SolidLine)
            else:
                fill = QColor(t.block_fill)
                fill.setAlpha(0)
                pen = _qpen(frame_style(t, g.broken))
            item = GroupItem(rect, g, self, fill, pen)
            self.addItem(item)
            label = g.label if layout.engine == "chain" else g.label.replace("\n", " · ")
            text = QGraphicsSimpleTextItem(label)
            text.setFont(title_font if g.kind == "stage" else small)
            text.setBrush(QColor(t.broken if g.broken else t.stage_text))
            text.setPos(rect.x() + 8, rect.y() + 6)
            text.setZValue(Z_LABEL)
            self.addItem(text)

    def _draw_edges(self, graph: BlockGraph, layout: Layout) -> None:
        t = self.theme
        _, _, small = self.fonts
        bold = QFont(small)
        bold.setBold(True)
        styles: dict[tuple, tuple] = {}  # a few edge styles, thousands of edges
        label_fill = QColor(t.background)
        for edge, route in zip(graph.edges, layout.edges):
            if len(route.points) < 2:
                continue
            key = (edge.kind, edge.shortcut, edge.broken)
            style = styles.get(key)
            if style is None:
                line = edge_style(t, edge.kind, edge.shortcut, edge.broken)
                color = QColor(t.broken if edge.broken else
                               (t.shortcuts.get(edge.shortcut, t.edge_label) if edge.kind == "skip"
                                else t.edge_label))  # fmt: skip
                style = styles[key] = (_qpen(line), color, _halo(line))
            pen, color, halo = style
            item = EdgeItem(route, pen, edge.label, bold if edge.broken else small, color,
                            self.text_sizes, halo, label_fill if edge.broken else None)  # fmt: skip
            self.addItem(item)
            self.edge_items.append(item)
            self.label_items.append(item)

    def _draw_self_arcs(self, graph: BlockGraph, layout: Layout) -> None:
        t = self.theme
        _, _, small = self.fonts
        for nid, route in layout.self_arcs.items():
            node = graph.nodes[nid]
            line = edge_style(t, "skip", node.skip, node.broken)
            self.addItem(EdgeItem(route, _qpen(line), node.skip_label, small, QColor(line.color),
                                  self.text_sizes, _halo(line)))  # fmt: skip

    def paint_schematic(self, painter: QPainter, origin: QPointF, sx: float, sy: float) -> None:
        """The graph as flat boxes straight from the layout, for an overview far too small to
        show any item's detail: stage bands, one bar per node (at least a pixel tall, broken ones
        red and taller, tinted ones in their tint). An expanded resnet1202 is 10,000 items;
        painting each of them at 1/100 scale costs more than half a second and draws nothing a
        user can see, this costs a few milliseconds."""
        layout, graph, t = self.layout, self.graph, self.theme
        if layout is None or graph is None:
            return
        rect = self.sceneRect()

        def to_px(box, min_h: float, min_w: float = 2.0) -> QRectF:
            h = max(min_h, box.h * sy)
            return QRectF(origin.x() + (box.x - rect.x()) * sx,
                          origin.y() + (box.y + box.h / 2 - rect.y()) * sy - h / 2,
                          max(min_w, box.w * sx), h)  # fmt: skip

        painter.setRenderHint(QPainter.Antialiasing, False)
        painter.setPen(Qt.NoPen)
        for color, box in self._stage_bands():
            painter.setBrush(color)
            painter.drawRect(to_px(box, 1.0))
        fills: dict[str, QColor] = {}
        broken = []
        for nid, box in layout.nodes.items():
            node = graph.nodes[nid]
            if node.broken:
                broken.append(box)
                continue
            painter.setBrush(self._schematic_fill(nid, node, fills))
            bar = to_px(box, 1.0)
            painter.drawRect(bar)
            if node.kind in ("block", "rollup"):  # the shortcut's colour, as on the block's stripe
                painter.setBrush(QColor(t.shortcuts.get(node.stripe_kind or "none", t.node_border)))
                painter.drawRect(QRectF(bar.x(), bar.y(), max(2.0, bar.width() / 4), bar.height()))
        painter.setBrush(QColor(t.broken))
        for box in broken:  # last, so nothing covers them
            painter.drawRect(to_px(box, 3.0, 4.0))

    def _stage_bands(self) -> list[tuple[QColor, object]]:
        """Each stage's colour (alternating, outer stages first) and its box in the layout."""
        bands = []
        for g in sorted(self.graph.groups, key=lambda g: g.depth):
            box = self.layout.groups.get(g.id)
            if box is None or g.kind != "stage":
                continue
            i = len(bands)
            bands.append((QColor(self.theme.stage_fills[i % 2]).darker(104 if i % 2 else 100), box))
        return bands

    def _schematic_fill(self, nid: str, node: ViewNode, fills: dict[str, QColor]) -> QColor:
        """A node's bar colour in the schematic: its tint, else its kind's colour a shade darker
        (memoised in ``fills``)."""
        item = self.node_items.get(nid)
        if item is not None and item._highlight is not None:
            return item._highlight
        cat = category(node.type, node.kind)
        fill = fills.get(cat)
        if fill is None:
            fill = fills[cat] = QColor(self.theme.kinds.get(cat, self.theme.kinds["other"])).darker(115)
        return fill

    # ------------------------------------------------------------------ state

    def set_greyed(self, greyed: bool) -> None:
        """A reload failed: keep the last good graph on screen, visibly out of date."""
        self.greyed = greyed
        for item in self.items():
            item.setOpacity(0.35 if greyed else 1.0)

    def select_node(self, nid: str) -> NodeItem | None:
        item = self.node_items.get(nid)
        self.clearSelection()
        if item is not None:
            item.setSelected(True)
        return item

    def selected_node(self) -> ViewNode | None:
        for item in self.selectedItems():
            if isinstance(item, NodeItem):
                return item.node
        return None


def _qpen(line: LineStyle) -> QPen:
    pen = QPen(QColor(line.color), line.width)
    if line.dash:
        pen.setDashPattern(list(line.dash))
    pen.setCapStyle(Qt.RoundCap)
    pen.setJoinStyle(Qt.RoundJoin)
    return pen


def _halo(line: LineStyle) -> QPen | None:
    if not line.halo:
        return None
    pen = QPen(QColor(line.halo), line.halo_width)
    pen.setCapStyle(Qt.RoundCap)
    pen.setJoinStyle(Qt.RoundJoin)
    return pen


def _path(route) -> QPainterPath:
    pts = [QPointF(x, y) for x, y in route.points]
    path = QPainterPath(pts[0])
    if route.spline and (len(pts) - 1) % 3 == 0:
        for i in range(1, len(pts), 3):
            path.cubicTo(pts[i], pts[i + 1], pts[i + 2])
        return path
    # polyline with rounded corners
    r = 8.0
    for i in range(1, len(pts) - 1):
        a, b, c = pts[i - 1], pts[i], pts[i + 1]
        d1 = _toward(b, a, r)
        d2 = _toward(b, c, r)
        path.lineTo(d1)
        path.quadTo(b, d2)
    path.lineTo(pts[-1])
    return path


def _toward(p: QPointF, q: QPointF, r: float) -> QPointF:
    dx, dy = q.x() - p.x(), q.y() - p.y()
    dist = (dx * dx + dy * dy) ** 0.5
    if dist < 1e-6:
        return p
    k = min(r, dist / 2) / dist
    return QPointF(p.x() + dx * k, p.y() + dy * k)


__all__ = ["QtGraphScene", "NodeItem", "Metrics"]
