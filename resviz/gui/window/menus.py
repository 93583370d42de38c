"""Menus, toolbar and the dialogs behind them: open, zoo, recent files, reload, export, find.

:class:`QtWindowActions` belongs to one :class:`~resviz.gui.window.main_window.QtMainWindow`; it turns
user commands into calls on the window and its document.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QStringListModel, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QCompleter, QFileDialog, QLabel, QLineEdit, QMessageBox

from ...core.errors import ResvizError

OPEN_FILTER = (
    "Models (*.toml *.json *.py *.pt *.pth *.ts *.jit *.pt2 *.zip);;Spec files (*.toml *.json);;"
    "Python files (*.py);;TorchScript / torch.export (*.pt *.ts *.jit *.pt2);;All files (*)"
)
EXPORT_FILTER = "SVG image (*.svg);;PNG image (*.png);;PDF document (*.pdf);;Graphviz DOT (*.dot)"
MAX_RECENT = 10


def settings() -> QSettings:
    """The app's settings; ``RESVIZ_SETTINGS=file.ini`` keeps them elsewhere (tests)."""
    path = os.environ.get("RESVIZ_SETTINGS")
    if path:
        return QSettings(path, QSettings.IniFormat)
    return QSettings("resviz", "resviz")


class QtWindowActions(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self._zoo_dialog = None
        self._py_dialog = None
        self._candidates_token = None  # the CancelToken of the running File → Open listing
        self._matches: list[str] = []
        self._match_i = 0
        self._names: list[str] = []
        self._query = ""
        self._candidates_path: str | None = None
        w = window
        a = self._action
        self.open = a("&Open…", self.ask_open, QKeySequence.Open, "Open a spec, Python file or archive")
        self.zoo = a("Open from &zoo…", self.ask_zoo, "Ctrl+Shift+O", "Pick a built-in ResNet")
        self.open_run = a("Open r&un…", self.ask_open_run, None,
                          "Open a run directory (resviz train, resviz.monitor): its graph and steps, followed live")
        self.overlay_run = a("O&verlay run…", self.ask_overlay_run, None,
                             "Draw another run directory's steps dashed over the run shown")  # fmt: skip
        self.reload = a("&Reload", w.reload, "F5", "Read the model file again")
        self.watch = a("&Watch file", w.document.set_watching, None, "Reload whenever the file is saved")
        self.watch.setCheckable(True)
        self.export = a("&Export graph…", self.ask_export, "Ctrl+E", "Save the graph as SVG, PNG, PDF or DOT")
        self.export_json = a("Export &report (JSON)…", self.ask_export_json, None, "Save the check report")
        self.quit = a("&Quit", w.close, QKeySequence.Quit)
        self.fit = a("&Fit", w.view.fit, "F", "Fit the whole graph in the window")
        self.zoom_in = a("Zoom &in", w.view.zoom_in, QKeySequence.ZoomIn)
        self.zoom_out = a("Zoom &out", w.view.zoom_out, QKeySequence.ZoomOut)
        self.actual = a("&Actual size", lambda: w.view.set_zoom(1.0), "Ctrl+0")
        self.find = a("&Find module…", self.focus_search, QKeySequence.Find, "Find a module by name")
        self.expand = a("&Expand all blocks", w.expand_all, "Ctrl+Shift+E", "Show every layer")
        self.collapse = a("&Collapse all", w.collapse_all, "Ctrl+Shift+C", "One node per block")
        self.rollup = a("&Roll up repeated blocks", w.set_rolled, "Ctrl+Shift+R",
                        "Show runs of identical blocks as one node")  # fmt: skip
        self.rollup.setCheckable(True)
        self.overview = a("&Overview map", self._toggle_overview, None, "Mini-map for deep networks")
        self.overview.setCheckable(True)
        self.overview.setChecked(True)
        for act, short in ((self.zoo, "Zoo"), (self.watch, "Watch"), (self.zoom_in, "+"), (self.zoom_out, "−"),
                           (self.expand, "Expand all"), (self.rollup, "Roll up")):  # fmt: skip
            act.setIconText(short)  # the toolbar's short label; menus keep the full text
        self._build_menus()
        self._build_toolbar()
        self.aux = w.aux
        self.aux.finished.connect(self._on_aux)
        self.aux.failed.connect(self._on_aux_failed)
        self.source_changed(None)

    def _action(self, text, slot, shortcut=None, tip="") -> QAction:
        act = QAction(text, self.w)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(f"{tip} ({act.shortcut().toString()})" if shortcut else tip)
        act.triggered.connect(lambda checked=False: slot(checked) if act.isCheckable() else slot())
        self.w.addAction(act)
        return act

    def _build_menus(self) -> None:
        bar = self.w.menuBar()
        file = bar.addMenu("&File")
        file.addActions([self.open, self.zoo, self.open_run, self.overlay_run])
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file.addSeparator()
        file.addActions([self.reload, self.watch])
        file.addSeparator()
        file.addActions([self.export, self.export_json])
        file.addSeparator()
        file.addAction(self.quit)
        view = bar.addMenu("&View")
        view.addActions([self.fit, self.zoom_in, self.zoom_out, self.actual, self.find])
        view.addSeparator()
        view.addActions([self.expand, self.collapse, self.rollup])
        view.addSeparator()
        view.addAction(self.overview)

    def _build_toolbar(self) -> None:
        tb = self.w.addToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.addActions([self.open, self.zoo, self.reload, self.watch])
        tb.addSeparator()
        tb.addWidget(QLabel(" Input "))
        tb.addWidget(self.w.shape_field)
        tb.addSeparator()
        tb.addActions([self.fit, self.zoom_out, self.zoom_in])
        tb.addSeparator()
        tb.addActions([self.expand, self.collapse, self.rollup])
        tb.addSeparator()
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find module (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMaximumWidth(240)
        self.search.returnPressed.connect(lambda: self.find_module(self.search.text()))
        self.search.textEdited.connect(lambda _t: self.search.setStyleSheet(""))
        self._completer_model = QStringListModel(self)
        completer = QCompleter(self._completer_model, self)
        completer.setCaseSensitivity(Qt.CaseInsensitive)
        completer.setFilterMode(Qt.MatchContains)
        completer.activated.connect(self.find_module)
        self.search.setCompleter(completer)
        tb.addWidget(self.search)

    # ------------------------------------------------------------------ state from the window

    def source_changed(self, src) -> None:
        has_file = src is not None and src.file() is not None
        self.watch.setEnabled(has_file)
        self.reload.setEnabled(src is not None)
        if src is not None and src.source:
            self._remember(src.source)

    def session_changed(self, session) -> None:
        report = session.report
        names = dict.fromkeys(c.path for c in report.calls if c.path)
        names.update(dict.fromkeys(o.name for o in report.ops if o.kind in ("module", "function")))
        self._names = list(names)
        self._completer_model.setStringList(self._names)
        self._matches = []

    # ------------------------------------------------------------------ find

    def focus_search(self) -> None:
        self.search.setFocus(Qt.ShortcutFocusReason)
        self.search.selectAll()

    def find_module(self, text: str) -> bool:
        """Select the module called ``text``, else the next one whose name contains it."""
        text = text.strip()
        if not text:
            return False
        if text in self._names:
            self._matches, self._match_i = [text], 0
        elif not self._matches or self._query != text:
            low = text.lower()
            self._matches, self._match_i = [n for n in self._names if low in n.lower()], 0
        else:
            self._match_i = (self._match_i + 1) % len(self._matches)
        self._query = text
        if not self._matches:
            self.search.setStyleSheet("QLineEdit { border: 2px solid #dc2626; }")
            self.w.statusBar().showMessage(f"No module matches '{text}'", 4000)
            return False
        name = self._matches[self._match_i]
        if len(self._matches) > 1:
            self.w.statusBar().showMessage(
                f"{name} ({self._match_i + 1} of {len(self._matches)}; Enter for next)", 5000
            )
        return self.w.select_module(name)

    # ------------------------------------------------------------------ opening

    def ask_open(self) -> None:
        start = (
            str(Path(self._recent()[0]).parent)
            if self._recent() and os.path.exists(self._recent()[0])
            else ""
        )
        path, _ = QFileDialog.getOpenFileName(self.w, "Open a model", start, OPEN_FILTER)
        if path:
            self.open_file(path)

    def ask_open_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self.w, "Open a run directory", self._run_start())
        if path:
            settings().setValue("runs/last", str(Path(path).parent))
            self.w.open_source(path)

    def ask_overlay_run(self) -> None:
        tab = getattr(self.w, "training_tab", None)
        if tab is None:
            return
        path = QFileDialog.getExistingDirectory(self.w, "Overlay a run directory", self._run_start())
        if path:
            settings().setValue("runs/last", str(Path(path).parent))
            self.w.select_tab("Training")
            tab.panel  # noqa: B018 - built now: it receives the opened run
            from ..training.follow import RunFollower

            self.w.statusBar().showMessage(f"Reading {path}…", 4000)
            self.aux.submit("overlay-run", lambda: RunFollower.open(path))

    def _run_start(self) -> str:
        last = str(settings().value("runs/last", ""))
        if last and os.path.isdir(last):
            return last
        from ...core.training.rundir import user_data_dir

        runs = user_data_dir() / "runs"
        return str(runs) if runs.is_dir() else ""

    def open_file(self, path: str) -> None:
        if path.lower().endswith(".py") and os.path.isfile(path):
            from ...core.session.isolation import CancelToken

            self.w.statusBar().showMessage(f"Reading {os.path.basename(path)}…")
            self._candidates_path = path
            self._end_candidates(cancel=True)  # an earlier listing still running is stale
            token = self._candidates_token = CancelToken()
            self.w.document.user_code_started(token)  # the file runs in a child: Cancel stops it
            spare = self.w.document.spare
            self.aux.submit("candidates", lambda: (path, _candidates(path, token, spare)))
        else:
            self.w.open_source(path)

    def _end_candidates(self, cancel: bool = False):
        """Forget the listing's CancelToken (with ``cancel``, stop its child first); returns it."""
        token, self._candidates_token = self._candidates_token, None
        if token is not None:
            if cancel:
                token.cancel()
            self.w.document.user_code_ended(token)
        return token

    def ask_zoo(self) -> None:
        self.w.statusBar().showMessage("Listing the model zoo…")
        self.aux.submit("zoo", _zoo_entries)

    def _on_aux(self, channel: str, result) -> None:
        from ..dialogs.open_model import QtPythonPicker, QtZooPicker

        self.w.statusBar().clearMessage()
        if channel == "candidates":
            self._end_candidates()
            path, candidates = result
            if len(candidates) <= 1:
                self.w.open_source(path if not candidates else f"{path}:{candidates[0].name}")
                return
            dlg = self._py_dialog = QtPythonPicker(path, candidates, self.w)
            dlg.accepted.connect(lambda: self.w.open_source(dlg.source(), kwargs_text=dlg.kwargs_text()))
            dlg.open()
        elif channel == "zoo":
            dlg = self._zoo_dialog = QtZooPicker(result, self.w)
            dlg.accepted.connect(lambda: dlg.chosen() and self.w.open_source(dlg.chosen()))
            dlg.open()
            self.aux.submit(
                "params", lambda: _param_counts([e.name for e in result], lambda: self.aux.stopping)
            )
        elif channel == "params" and self._zoo_dialog is not None:
            self._zoo_dialog.set_param_counts(result)

    def _on_aux_failed(self, channel: str, error) -> None:
        self.w.statusBar().clearMessage()
        if channel == "candidates":  # let the loader explain what is wrong with the file
            token = self._end_candidates()
            if token is not None and token.cancelled:
                self.w.statusBar().showMessage(error.message, 6000)
            elif self._candidates_path:
                self.w.open_source(self._candidates_path)
        elif channel == "zoo":
            QMessageBox.warning(self.w, "resviz", f"Could not list the zoo: {error.message}")

    # ------------------------------------------------------------------ recent files

    def _recent(self) -> list[str]:
        value = settings().value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember(self, source: str) -> None:
        path, sep, name = source.rpartition(":") if ".py:" in source else (source, "", "")
        if os.path.exists(os.path.expanduser(path)):  # files by absolute path; zoo names as typed
            source = os.path.abspath(os.path.expanduser(path)) + sep + name
        items = [source] + [r for r in self._recent() if r != source]
        settings().setValue("recent", items[:MAX_RECENT])

    def _fill_recent(self) -> None:
        menu = self.recent_menu
        menu.clear()
        recent = self._recent()
        for source in recent:
            act = menu.addAction(source)
            act.triggered.connect(lambda _c=False, s=source: self.open_file(s))
        if not recent:
            menu.addAction("(none)").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear list", lambda: settings().setValue("recent", []))

    # ------------------------------------------------------------------ export

    def _default_name(self, ext: str) -> str:
        src = self.w.document.src
        stem = Path((src.title if src else "model").split(":")[0]).stem or "model"
        return f"{stem}{ext}"

    def ask_export(self) -> None:
        if self.w.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self.w, "Export graph", self._default_name(".svg"), EXPORT_FILTER
        )
        if path:
            self._guarded(self.export_graph, path)

    def ask_export_json(self) -> None:
        if self.w.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self.w, "Export report", self._default_name(".json"), "JSON (*.json)"
        )
        if path:
            self._guarded(self.export_report, path)

    def _guarded(self, fn, path: str) -> None:
        try:
            out = fn(path)
        except ResvizError as exc:
            QMessageBox.warning(self.w, "Export failed", str(exc))
        except OSError as exc:
            QMessageBox.warning(self.w, "Export failed", f"could not write {path}: {exc.strerror or exc}")
        else:
            self.w.statusBar().showMessage(f"Wrote {out}", 6000)

    def export_graph(self, path: str) -> Path:
        """The graph as on screen (.svg, .png, .pdf) or as Graphviz source (.dot)."""
        session = self.w.session
        if session is None:
            raise ResvizError("nothing to export: no model is loaded")
        if Path(path).suffix.lower() in (".dot", ".gv"):
            from ...render.dot import write_dot

            return Path(write_dot(session.report, path, depth=None))
        from ..graph.scene_export import export_scene

        return export_scene(self.w.scene, path)

    def export_report(self, path: str) -> Path:
        """The check report as JSON (what ``resviz check --json`` prints), written atomically."""
        session = self.w.session
        if session is None:
            raise ResvizError("nothing to export: no model is loaded")
        from ...core.files import atomic_write

        text = json.dumps(session.report.to_dict(), indent=2)
        return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def _toggle_overview(self, on: bool) -> None:
        self.w.view.overview.enabled_by_user = bool(on)
        self.w.view.overview.sync()


def _candidates(path: str, token=None, spare=None):
    from ...core.session.isolation import python_candidates  # the file's code runs in a child process

    return python_candidates(path, cancel=token, spare=spare)  # the load that follows gets a ready child


def _zoo_entries():
    from ...core.sources import zoo

    return zoo.entries()


def _param_counts(names: list[str], stopping) -> dict[str, int]:
    from ...core.sources import zoo

    counts = {}
    for n in names:
        if stopping():
            break
        counts[n] = zoo.param_count(n)
    return counts
