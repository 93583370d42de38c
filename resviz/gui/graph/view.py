"""The graph on screen: zoom around the cursor, drag to pan, fit, find, and a mini-map.

:class:`QtGraphView` shows a :class:`~resviz.gui.graph.scene.QtGraphScene`. It never relayouts
while panning or zooming: the scene's items are built once per view change, and the viewport only
repaints (with a bounding-rect update mode and cached node pixmaps), so resnet1202's 600 blocks move
smoothly. :class:`QtOverview` is a small second picture of the same scene for deep nets, with the
visible part outlined; click or drag in it to jump there.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontInfo, QFontMetricsF, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QFrame, QGraphicsView, QWidget

MIN_SCALE, MAX_SCALE = 0.01, 4.0
READABLE_SCALE = 0.75  # centring on a node zooms in at least this far
MIN_TEXT_PX = 7.0  # the smallest text still read without effort: a deep net opens no smaller
SCHEMATIC_BELOW = 0.06  # overview scale under which nodes (~40 px tall) become flat bars


class QtGraphView(QGraphicsView):
    viewChanged = Signal()  # zoomed or scrolled: the visible rect moved

    def __init__(self, scene, parent: QWidget | None = None):
        super().__init__(scene, parent)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.BoundingRectViewportUpdate)
        self.setOptimizationFlags(
            QGraphicsView.DontSavePainterState | QGraphicsView.DontAdjustForAntialiasing
        )
        self.setCacheMode(QGraphicsView.CacheBackground)
        self.setFrameShape(QFrame.NoFrame)
        self.setFocusPolicy(Qt.StrongFocus)
        self._placeholder = ""
        self._grown = False  # the scrollable area was grown past the graph by keep_at
        # How the program last placed the graph ("fit", "readable" or ("anchor", scene pt, viewport
        # pt)): kept through resizes (the overview strip appearing, a scroll bar, the user resizing
        # the window) until the user moves the view, so a fit stays a fit and an anchor stays put.
        self._placement: str | tuple | None = None
        self._placing = False
        for bar in (self.horizontalScrollBar(), self.verticalScrollBar()):
            bar.valueChanged.connect(self.viewChanged)
            bar.actionTriggered.connect(self.unpin)  # the user scrolled with it (not the program)
        self.overview = QtOverview(self)
        self.viewChanged.connect(self.overview.sync)

    # ---------------------------------------------------------------- zoom

    def scale_factor(self) -> float:
        return self.transform().m11()

    def set_zoom(self, scale: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``scale`` keeping ``anchor`` (a scene point) where it is on screen."""
        self._placement = None
        scale = min(MAX_SCALE, max(MIN_SCALE, scale))
        factor = scale / self.scale_factor()
        if abs(factor - 1) < 1e-6:
            return
        if anchor is None:
            self.scale(factor, factor)
        else:
            vp = self.mapFromScene(anchor)
            self.scale(factor, factor)
            self._scroll_to(anchor, QPointF(vp))
        self.viewChanged.emit()

    def zoom_by(self, factor: float) -> None:
        old = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.AnchorViewCenter)
        self.set_zoom(self.scale_factor() * factor)
        self.setTransformationAnchor(old)

    def zoom_in(self) -> None:
        self.zoom_by(1.25)

    def zoom_out(self) -> None:
        self.zoom_by(0.8)

    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y() or event.pixelDelta().y()
        if not delta or event.modifiers() & Qt.ShiftModifier:
            super().wheelEvent(event)  # horizontal or shift-wheel: scroll
            return
        self._placement = None
        factor = 1.0015**delta
        scale = min(MAX_SCALE, max(MIN_SCALE, self.scale_factor() * factor))
        self.scale(scale / self.scale_factor(), scale / self.scale_factor())  # around the cursor
        self.viewChanged.emit()
        event.accept()

    def fit(self) -> None:
        """The whole graph in the window."""
        rect = self.scene().sceneRect() if self.scene() else QRectF()
        if rect.isEmpty():
            return
        self.follow_scene()
        self.fitInView(rect, Qt.KeepAspectRatio)
        if self.scale_factor() > 1.0:
            self.set_zoom(1.0)
            self.centerOn(rect.center())
        self._placement = "fit"
        self.viewChanged.emit()

    def legible_scale(self) -> float:
        """The smallest zoom at which the graph's smallest text is still :data:`MIN_TEXT_PX` tall
        (from the scene's own fonts, so it holds for any font and screen)."""
        fonts = getattr(self.scene(), "fonts", None) or (self.font(),)
        smallest = min(QFontInfo(f).pixelSize() for f in fonts)
        return min(1.0, MIN_TEXT_PX / max(1, smallest))

    def fit_readable(self) -> None:
        """The whole graph when it stays legible; a deep net as much of it as stays legible.

        A net too tall to fit opens from its top, zoomed out to where its smallest labels are
        still readable (resnet50 shows its first two or three stages, not one), fitted to the
        window's width when it is wider than that, and the overview beside it shows where this is.
        """
        rect = self.scene().sceneRect() if self.scene() else QRectF()
        if rect.isEmpty():
            return
        self.follow_scene()
        vw, vh = max(1, self.viewport().width() - 8), max(1, self.viewport().height() - 8)
        whole = min(vw / rect.width(), vh / rect.height(), 1.0)
        legible = self.legible_scale()
        if whole >= legible:
            self.fit()
            self._placement = "readable"
            return
        scale = max(whole, min(legible, vw / rect.width()))
        self.resetTransform()
        self.set_zoom(scale)
        self.centerOn(QPointF(rect.center().x(), rect.top() + vh / scale / 2))
        self._placement = "readable"
        self.viewChanged.emit()

    # ---------------------------------------------------------------- moving

    def keep_at(self, scene_pt: QPointF, viewport_pt: QPointF) -> None:
        """Scroll so that ``scene_pt`` appears at ``viewport_pt`` (viewport pixels).

        Whatever the window's size: where the graph is narrower or shorter than the window there
        is nothing to scroll (Qt would centre it, and a block that grows on unfolding would jump
        sideways), so the view's scrollable area first grows to take in the window's rectangle at
        the wanted place. The next graph drawn, or a fit, goes back to the graph's own rectangle.
        """
        self._placement = ("anchor", QPointF(scene_pt), QPointF(viewport_pt))
        self._scroll_to(scene_pt, viewport_pt)

    def _scroll_to(self, scene_pt: QPointF, viewport_pt: QPointF) -> None:
        s = self.scale_factor()
        want = QRectF(scene_pt.x() - viewport_pt.x() / s, scene_pt.y() - viewport_pt.y() / s,
                      self.viewport().width() / s, self.viewport().height() / s)  # fmt: skip
        area = self.sceneRect()
        if not area.contains(want):
            # aligned top-left: an area exactly as wide as the window is not re-centred by Qt
            # as if the vertical scroll bar took no room
            self.setAlignment(Qt.AlignLeft | Qt.AlignTop)
            self.setSceneRect(area.united(want))
            self._grown = True
        now = QPointF(self.mapFromScene(scene_pt))
        dx, dy = now.x() - viewport_pt.x(), now.y() - viewport_pt.y()
        h, v = self.horizontalScrollBar(), self.verticalScrollBar()
        h.setValue(h.value() + round(dx))
        v.setValue(v.value() + round(dy))

    def follow_scene(self) -> None:
        """A new graph: scroll over its own rectangle again (undoing any growth by :meth:`keep_at`);
        what the last one was placed by no longer holds."""
        self._placement = None
        if self._grown:
            self.setSceneRect(QRectF())  # null: follow the scene's own rectangle
            self.setAlignment(Qt.AlignCenter)
            self._grown = False

    def center_on_rect(self, rect: QRectF) -> None:
        self._placement = None
        if self.scale_factor() < READABLE_SCALE * 0.6:
            self.set_zoom(READABLE_SCALE)
        self.centerOn(rect.center())
        self.viewChanged.emit()

    def visible_scene_rect(self) -> QRectF:
        return self.mapToScene(self.viewport().rect()).boundingRect()

    # ---------------------------------------------------------------- placeholder

    def set_placeholder(self, text: str) -> None:
        """Text shown in the middle while there is nothing drawn (loading, or nothing loaded)."""
        self._placeholder = text
        self.viewport().update()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        super().drawForeground(painter, rect)
        if not self._placeholder:
            return
        painter.save()
        painter.resetTransform()
        painter.setPen(self.palette().color(self.palette().ColorRole.PlaceholderText))
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        painter.setFont(font)
        painter.drawText(self.viewport().rect().adjusted(20, 20, -20, -20),
                         Qt.AlignCenter | Qt.TextWordWrap, self._placeholder)  # fmt: skip
        painter.restore()

    # ---------------------------------------------------------------- overview

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        placement = self._placement
        if placement is not None and not self._placing:
            self._placing = True  # placing may show or hide a scroll bar: one more resize
            try:
                if placement == "fit":
                    self.fit()
                elif placement == "readable":
                    self.fit_readable()
                else:
                    self._scroll_to(placement[1], placement[2])
            finally:
                self._placing = False
        self.viewChanged.emit()

    def unpin(self) -> None:
        """The user moved the view: a later resize keeps what is on screen, not the last placement."""
        self._placement = None

    def viewportEvent(self, event) -> bool:
        if event.type() in (QEvent.MouseButtonPress, QEvent.Wheel):
            self._placement = None
        return super().viewportEvent(event)

    def keyPressEvent(self, event) -> None:
        self._placement = None
        super().keyPressEvent(event)

    def scene_drawn(self) -> None:
        """The scene was rebuilt: refresh the mini-map."""
        self.overview.refresh()


class QtOverview(QWidget):
    """A mini-map strip beside the graph: the whole scene, the visible part outlined; click to jump.

    It renders the same scene once per change into a pixmap, so scrolling the big view only
    repaints an outline here. It shows itself only when the graph is much taller than the window,
    and it sits beside the view (the window puts it there), never over the graph.
    """

    WIDTH = 150
    MIN_WIDTH = 96  # room for a stage's name: a very deep net is not an unlabelled sliver

    def __init__(self, view: QtGraphView):
        super().__init__()
        self._view = view
        self._pix: QPixmap | None = None
        self._sx = self._sy = 1.0  # scene -> overview pixels; unequal only for a schematic
        self._offset = QPointF()
        self.labels: list[str] = []  # the stage names drawn on it, top to bottom
        self.enabled_by_user = True
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("Overview: click or drag to move there")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(60)
        self._timer.timeout.connect(self._render)
        self.hide()

    def needed(self) -> bool:
        scene = self._view.scene()
        if scene is None or scene.sceneRect().isEmpty() or not self.enabled_by_user:
            return False
        return scene.sceneRect().height() > 2.2 * self._view.visible_scene_rect().height()

    def refresh(self) -> None:
        self._timer.start()

    def render_now(self) -> None:
        """Draw it at once rather than on the next timer tick (a screenshot is being taken)."""
        self._timer.stop()
        self._render()

    def place(self) -> None:
        """Width from the scene's aspect (a thin strip for thin nets); shown only when needed."""
        scene = self._view.scene()
        if scene is None or scene.sceneRect().isEmpty():
            self.hide()
            return
        rect = scene.sceneRect()
        h = max(60, self._view.height() - 8)
        w = max(self.MIN_WIDTH, min(self.WIDTH, int(rect.width() * h / max(1.0, rect.height())) + 8))
        if w != self.width():
            self.setFixedWidth(w)
        self.setVisible(self.needed())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.refresh()

    def _render(self) -> None:
        self.place()
        scene = self._view.scene()
        if scene is None or scene.sceneRect().isEmpty():
            self._pix = None
            return
        rect = scene.sceneRect()
        size = QSize(self.width(), self.height())
        scale = min((size.width() - 4) / rect.width(), (size.height() - 4) / rect.height())
        schematic = scale < SCHEMATIC_BELOW and hasattr(scene, "paint_schematic")
        if schematic:  # items would be sub-pixel: flat bars, stretched to the strip's width
            self._sx, self._sy = (size.width() - 4) / rect.width(), (size.height() - 4) / rect.height()
        else:
            self._sx = self._sy = scale
        w, h = rect.width() * self._sx, rect.height() * self._sy
        self._offset = QPointF((size.width() - w) / 2, 2)  # top-aligned, like the graph
        dpr = self.devicePixelRatioF()
        pix = QPixmap(size * dpr)
        pix.setDevicePixelRatio(dpr)
        pix.fill(scene.backgroundBrush().color())
        painter = QPainter(pix)
        if schematic:
            scene.paint_schematic(painter, self._offset, self._sx, self._sy)
        else:
            scene.render(painter, QRectF(self._offset, QSize(int(w), int(h)).toSizeF()), rect)
        self.labels = self._paint_stage_names(painter, scene, rect)
        painter.end()
        self._pix = pix
        self.update()

    def _paint_stage_names(self, painter: QPainter, scene, rect: QRectF) -> list[str]:
        """Each stage's name at its top edge, on a light box, where it does not cover the last one:
        in a strip a thousandth of the graph's size the scene's own labels are specks."""
        graph, layout = getattr(scene, "graph", None), getattr(scene, "layout", None)
        if graph is None or layout is None:
            return []
        font = QFont(self.font())
        font.setPointSizeF(7.5)
        fm = QFontMetricsF(font)
        painter.setFont(font)
        back = QColor(self.palette().color(self.palette().ColorRole.Base))
        back.setAlpha(215)
        ink = self.palette().color(self.palette().ColorRole.Text)
        drawn, below = [], -1.0
        stages = [g for g in graph.groups if g.kind == "stage" and g.id in layout.groups]
        for g in sorted(stages, key=lambda g: layout.groups[g.id].y):
            y = self._offset.y() + (layout.groups[g.id].y - rect.y()) * self._sy
            if y < below:
                continue
            text = fm.elidedText(g.name, Qt.ElideRight, self.width() - 10)
            box = QRectF(3, y + 1, fm.horizontalAdvance(text) + 5, fm.height())
            painter.fillRect(box, back)
            painter.setPen(ink)
            painter.drawText(box, Qt.AlignCenter, text)
            drawn.append(g.name)
            below = box.bottom() + 1
        return drawn

    def _to_scene(self, p: QPoint) -> QPointF:
        rect = self._view.scene().sceneRect()
        return QPointF(rect.x() + (p.x() - self._offset.x()) / self._sx,
                       rect.y() + (p.y() - self._offset.y()) / self._sy)  # fmt: skip

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        border = self.palette().color(self.palette().ColorRole.Mid)
        if self._pix is not None:
            painter.drawPixmap(0, 0, self._pix)
            scene = self._view.scene()
            if scene is not None and not scene.sceneRect().isEmpty():
                rect = scene.sceneRect()
                vis = self._view.visible_scene_rect().intersected(rect)
                r = QRectF(self._offset.x() + (vis.x() - rect.x()) * self._sx,
                           self._offset.y() + (vis.y() - rect.y()) * self._sy,
                           max(4.0, vis.width() * self._sx), max(4.0, vis.height() * self._sy))  # fmt: skip
                accent = QColor(self.palette().color(self.palette().ColorRole.Highlight))
                painter.setPen(QPen(accent, 1.5))
                accent.setAlpha(50)
                painter.setBrush(accent)
                painter.drawRect(r)
        painter.setPen(QPen(border, 1))
        painter.setBrush(Qt.NoBrush)
        painter.drawRect(self.rect().adjusted(0, 0, -1, -1))

    def mousePressEvent(self, event) -> None:
        if self._pix is not None:
            self._view.unpin()
            self._view.centerOn(self._to_scene(event.position().toPoint()))
            self._view.viewChanged.emit()
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.LeftButton:
            self.mousePressEvent(event)

    def sync(self) -> None:
        """The big view moved: redraw the outline; show or hide as the zoom level needs."""
        visible = self.needed()
        if visible != self.isVisible():
            self.setVisible(visible)
            if visible:
                self.refresh()
        self.update()
