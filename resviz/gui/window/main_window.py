"""The resviz window: the graph on the left, Inspector / Issues / Summary tabs on the right.

The window subscribes to its :class:`~resviz.gui.window.document.QtDocument` (the open model) and
calls setters on its widgets; it holds no engine logic. Other parts of the app (the Training tab)
plug in with :meth:`QtMainWindow.add_tab`, follow ``sessionChanged`` and ``moduleSelected``, and
select nodes with :meth:`QtMainWindow.select_module`.
"""

from __future__ import annotations

import html
import sys
import time

from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...render.text import verdict
from ...render.view import shape_label
from ..dialogs.trust import TRUST_ACTION, confirm_trust
from ..graph.scene import QtGraphScene
from ..graph.view import QtGraphView
from ..panels.inspector import QtInspector
from ..panels.issues import QtIssuesPanel
from ..panels.summary import QtSummaryTable
from ..runtime.workers import QtWorker
from .banner import QtBanner
from .document import QtDocument, text_measure
from .menus import QtWindowActions
from .shape_field import QtShapeField
from .theme import scene_theme


class QtMainWindow(QMainWindow):
    sessionChanged = Signal(object)  # a new Session is on screen (new model, reload, input shape)
    moduleSelected = Signal(str)  # the user selected a node: its module path ('' when none)

    def __init__(self, theme=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.setWindowTitle("resviz")
        self.setAcceptDrops(True)
        self.scene = QtGraphScene(self, theme=theme or scene_theme())
        label_font, detail_font, _ = self.scene.fonts
        self.document = QtDocument((text_measure(label_font), text_measure(detail_font)), self)
        self.aux = QtWorker("resviz-aux", self)  # zoo listing, Python candidates
        self.view = QtGraphView(self.scene)
        self.banner = QtBanner()
        self._session_notes: list[str] = []  # the banner's notes: the session's, then the layout's
        self._layout_note = ""
        self.inspector = QtInspector()
        self.issues = QtIssuesPanel()
        self.summary = QtSummaryTable()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.inspector, "Inspector")
        self.tabs.addTab(self.issues, "Issues")
        self.tabs.addTab(self.summary, "Summary")
        self.shape_field = QtShapeField()
        left = QWidget()
        box = QVBoxLayout(left)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addWidget(self.banner)
        graph_row = QHBoxLayout()
        graph_row.setContentsMargins(0, 0, 0, 0)
        graph_row.setSpacing(0)
        graph_row.addWidget(self.view, 1)
        graph_row.addWidget(self.view.overview)
        box.addLayout(graph_row, 1)
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([1000, 480])
        self.setCentralWidget(self.splitter)
        self._build_status_bar()
        self.actions_ = QtWindowActions(self)  # menus, toolbar, shortcuts, open/export dialogs
        self._pending_select: str | None = None
        self._shutdown = False
        self.busy_checks: list = []  # callables: extensions' work a --screenshot waits for (--train N)
        self.close_checks: list = []  # callables → False to keep the window open (unsaved builder edits)
        self._connect()
        self.view.set_placeholder("Open a model: File → Open, the zoo (Ctrl+Shift+O), or drop a file here.")
        self.resize(1400, 900)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # ------------------------------------------------------------------ wiring

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.busy_label = QLabel()
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate
        self.busy_bar.setFixedWidth(110)
        self.busy_bar.setMaximumHeight(14)
        self.busy_bar.setTextVisible(False)
        self.count_label = QLabel()
        self.count_label.setTextFormat(Qt.RichText)
        # a Python file's code runs in a child process: Cancel kills it (an endless loop, a hang)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Stop running the model file's code (the last good graph stays)")
        self.cancel_button.setVisible(False)
        bar.addPermanentWidget(self.busy_label)
        bar.addPermanentWidget(self.busy_bar)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.count_label)
        self._set_busy(False, "")

    def _connect(self) -> None:
        d = self.document
        d.sourceChanged.connect(self._on_source)
        d.sessionChanged.connect(self._on_session)
        d.graphChanged.connect(self._on_graph)
        d.loadFailed.connect(self._on_failed)
        d.busyChanged.connect(self._set_busy)
        d.cancellableChanged.connect(self.cancel_button.setVisible)
        self.cancel_button.clicked.connect(d.cancel_load)
        self.scene.selectionChanged.connect(self._on_selection)
        self.scene.nodeActivated.connect(self.toggle_node)
        self.scene.groupActivated.connect(self.fold_group)
        self.issues.issueActivated.connect(self.select_module)
        self.summary.moduleActivated.connect(self.select_module)
        self.shape_field.shapeEntered.connect(self.set_input_shape)

    # ------------------------------------------------------------------ public API

    @property
    def session(self):
        """The Session on screen (the last one that loaded), or None."""
        return self.document.session

    def add_tab(self, widget: QWidget, title: str) -> int:
        """Add a tab to the right-hand side (e.g. Training); returns its index."""
        return self.tabs.addTab(widget, title)

    def select_tab(self, title: str) -> bool:
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i).lower().startswith(title.lower()):
                self.tabs.setCurrentIndex(i)
                return True
        return False

    def open_source(self, source: str, input_shape: str | None = None, kwargs_text: str | None = None,
                    trust: bool = False) -> None:  # fmt: skip
        self.document.open_source(source, input_shape=input_shape, kwargs_text=kwargs_text, trust=trust)

    def open_module(self, module, input_shape=None, name: str | None = None) -> None:
        self.document.open_module(module, input_shape, name)

    def open_file(self, path: str) -> None:
        """Open a file as File → Open does (asks which model when a .py file holds several)."""
        self.actions_.open_file(path)

    def reload(self) -> None:
        self.document.reload()

    def set_input_shape(self, text: str) -> bool:
        error = self.document.set_input_shape(text)
        self.shape_field.set_error(error or "")
        return error is None

    def is_idle(self) -> bool:
        return (not self.document.is_busy() and self._pending_select is None
                and not any(check() for check in self.busy_checks))  # fmt: skip

    def select_module(self, name: str, unfold: bool = True) -> bool:
        """Select and centre the node for module ``name``, unfolding what hides it."""
        node = self._node_holding(name)
        if node is None:
            self.statusBar().showMessage(f"No module named {name!r} in this model", 4000)
            return False
        if node.name == name or node.kind == "op" or not unfold:
            item = self.scene.select_node(node.id)
            if item is not None:
                self.view.center_on_rect(item.sceneBoundingRect())
            return True
        self._pending_select = name  # hidden in a folded block, stage or roll-up: open, then select
        self.document.reveal(name)
        return True

    def _node_holding(self, name: str):
        """The visible node that is, or hides, module ``name``."""
        graph = self.scene.graph
        if graph is None:
            return None
        node = graph.find(name)
        if node is not None and (node.name == name or name.startswith(node.name + ".")):
            return node
        if self.session is not None:
            for op in self.session.report.ops:
                if op.name == name or op.name.startswith(name + "."):
                    return graph.node_for_op(op.id) or node
        return node

    def toggle_node(self, nid: str) -> None:
        """Double-click on a node: unfold a block/stage/roll-up, or fold the block around a layer."""
        graph = self.scene.graph
        if graph is None or nid not in graph.nodes:
            return
        node = graph.nodes[nid]
        if node.kind not in ("block", "module", "rollup") and not node.block:
            return
        name = node.name if node.kind in ("block", "module", "rollup") else node.block
        hint = self._anchor_hint(name, self.scene.node_items[nid].sceneBoundingRect())
        if node.kind == "rollup":
            self.document.unroll(name, hint)
        elif node.kind in ("block", "module"):
            self.document.unfold(name, hint)
        else:
            self.document.fold(name, hint)

    def fold_group(self, name: str) -> None:
        """Double-click on a stage band or block frame: fold it into one node."""
        layout = self.scene.layout
        box = layout and (layout.groups.get(f"b:{name}") or layout.groups.get(f"s:{name}"))
        self.document.fold(name, self._anchor_hint(name, _rect(box) if box else None))

    def expand_all(self) -> None:
        self.document.expand_all()

    def collapse_all(self) -> None:
        self.document.collapse_all()

    def set_rolled(self, on: bool) -> None:
        self.document.set_rolled(on)

    def export_graph(self, path: str):
        return self.actions_.export_graph(path)

    def export_report(self, path: str):
        return self.actions_.export_report(path)

    # ------------------------------------------------------------------ document events

    def _anchor_hint(self, name: str, rect) -> dict:
        """Keep the top of ``rect`` (what was double-clicked) where it is on screen after redrawing."""
        if rect is None:
            return {"mode": "keep"}
        vp = self.view.mapFromScene(QPointF(rect.center().x(), rect.top()))
        return {"mode": "anchor", "name": name, "vp": (vp.x(), vp.y())}

    def _on_source(self, src) -> None:
        self.setWindowTitle(f"{src.title} — resviz")
        self.actions_.source_changed(src)

    def _on_session(self, session) -> None:
        report = session.report
        self.scene.set_greyed(False)
        self.shape_field.set_shape(session.input_shape)
        self.inspector.set_report(report)
        self.issues.set_load_error(None)
        self.issues.set_report(report)
        self.summary.set_report(report)
        self.actions_.session_changed(session)
        self._session_notes = list(session.notes) + [
            n for n in getattr(session.loaded, "notes", []) if n not in session.notes
        ]
        self._layout_note = ""  # the new graph's layout says its own
        self._show_notes()
        self._update_counts(report)
        if not report.ok and self.tabs.currentWidget() is self.inspector and self.inspector.node is None:
            self.tabs.setCurrentWidget(self.issues)  # problems first
        self.sessionChanged.emit(session)

    def _show_notes(self) -> None:
        notes = self._session_notes + ([self._layout_note] if self._layout_note else [])
        if notes:
            self.banner.show_message("note", "\n".join(notes))
        else:
            self.banner.clear()

    def _on_layout_note(self, note: str) -> None:
        """A layout that could not be drawn as wanted says so (Graphviz missing or failing for a
        graph with branches: the built-in layout drew it) beside the session's notes."""
        old, self._layout_note = self._layout_note, note
        if note != old and (note or (old and old in self.banner.text())):
            self._show_notes()

    def _update_counts(self, report) -> None:
        nm, ne = len(report.mismatches), len(report.errors)
        if nm or ne or not report.complete:
            parts = []
            if nm:
                parts.append(f"{nm} mismatch{'es' if nm != 1 else ''}")
            if ne:
                parts.append(f"{ne} error{'s' if ne != 1 else ''}")
            if not parts:
                parts.append("trace incomplete")
            self.count_label.setText(f"<b style='color:#dc2626'>{' · '.join(parts)}</b>")
        else:
            self.count_label.setText(f"<b style='color:#16a34a'>✓ {html.escape(verdict(report))}</b>")

    def _on_graph(self, drawn) -> None:
        hint = drawn.hint or {}
        selected = self.scene.selected_node()
        keep_name = selected.name if selected is not None else None
        center = self.view.mapToScene(self.view.viewport().rect().center())
        self.scene.show_graph(drawn.graph, drawn.layout)
        self._on_layout_note(getattr(drawn.layout, "note", ""))
        self.view.follow_scene()
        self.view.set_placeholder("")
        mode = hint.get("mode")
        if mode == "fit":
            self.view.fit_readable()
        elif mode == "anchor":
            target = self._anchor_rect(hint["name"])
            if target is not None:
                self.view.keep_at(QPointF(target.center().x(), target.top()), QPointF(*hint["vp"]))
        else:
            self.view.centerOn(center)
        self.view.scene_drawn()
        if "shown" in self.timings and "drawn" not in self.timings:
            self.timings["drawn"] = time.perf_counter() - self.t0
        pending, self._pending_select = self._pending_select, None
        if pending:
            self.select_module(pending, unfold=False)
        elif keep_name and not hint.get("fresh"):
            node = drawn.graph.find(keep_name)
            if node is not None and node.name == keep_name:
                self.scene.select_node(node.id)

    def _anchor_rect(self, name: str):
        layout, graph = self.scene.layout, self.scene.graph
        for gid in (f"b:{name}", f"s:{name}"):
            if gid in layout.groups:
                return _rect(layout.groups[gid])
        node = graph.find(name)
        if node is not None and node.id in layout.nodes:
            return _rect(layout.nodes[node.id])
        return None

    def _on_failed(self, message: str, kept: bool) -> None:
        self._pending_select = None
        title = self.document.src.title if self.document.src else "the model"
        if kept:
            self.scene.set_greyed(True)
            self.count_label.setText(
                "<b style='color:#dc2626'>reload failed · showing the last good version</b>"
            )
            self.view.scene_drawn()
            self.banner.show_message("error", f"Could not load {title}:\n{message}\n"
                                              "The graph shows the last version that loaded (greyed).")  # fmt: skip
        else:
            self.scene.clear()
            self.scene.graph = None
            self.scene.node_items.clear()
            self.view.set_placeholder(
                f"Could not load {title}: see the message above.\n\n"
                "Open another model with File → Open, the zoo (Ctrl+Shift+O), "
                "or drop a file here."
            )
            self.view.scene_drawn()
            self.banner.show_message("error", f"Could not load {title}:\n{message}")
            self.count_label.setText("<b style='color:#dc2626'>load failed</b>")
        if self.document.trust_needed:  # opens only by unpickling: offer it, after a warning
            self.banner.set_action(TRUST_ACTION, self.trust_file)
        self.issues.set_load_error(message)
        self.tabs.setCurrentWidget(self.issues)

    def trust_file(self) -> None:
        """"Trust this file…": warn that unpickling runs the file's code; reload only if confirmed."""
        path = self.document.trust_needed
        if path and confirm_trust(self, path):
            self.document.trust_and_reload()

    def _set_busy(self, busy: bool, what: str) -> None:
        self.busy_bar.setVisible(busy)
        self.busy_label.setVisible(busy)
        self.busy_label.setText(what)
        if busy and self.scene.graph is None and what:
            first = "\n(the first model imports PyTorch: a few seconds)" if "torch" not in sys.modules else ""
            self.view.set_placeholder(f"{what}{first}")
        self.shape_field.setEnabled(True)

    def _on_selection(self) -> None:
        try:
            node = self.scene.selected_node()
        except RuntimeError:  # the scene is being cleared
            return
        self.inspector.show_node(node)
        self.moduleSelected.emit(node.name if node is not None else "")
        if node is not None:
            self.statusBar().showMessage(
                f"{node.name} — {node.type}"
                + (f" → {shape_label(node.out_shape)}" if node.out_shape is not None else ""),
                6000,
            )

    # ------------------------------------------------------------------ Qt events

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if "shown" not in self.timings:
            self.timings["shown"] = time.perf_counter() - self.t0

    def dragEnterEvent(self, event) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.open_file(files[0]))

    def closeEvent(self, event) -> None:
        if not self._shutdown and not all(check() for check in self.close_checks):
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop and join every background thread (closing, or the application quitting)."""
        if self._shutdown:
            return
        self._shutdown = True
        self.document.stop()
        self.aux.stop()


def _rect(box):
    from PySide6.QtCore import QRectF

    return QRectF(box.x, box.y, box.w, box.h)
