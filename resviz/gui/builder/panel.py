"""The builder panel: compose a ResNet, see it redrawn while typing, save it, export it as code.

The panel is a view of a :class:`~resviz.core.design.spec_editor.SpecBuilder`: widgets send edits to the
builder, the builder validates and announces, and the panel marks wrong fields and — once the
user pauses for :data:`DEBOUNCE_MS` — hands the valid spec to the window's document, which
analyses and lays it out on its worker thread and redraws the graph (folds and scroll kept).
Mismatches the analysis finds come back through the Issues tab, whose "Apply fix" lands here as a
spec edit (:meth:`QtBuilderPanel.apply_spec_fix`), undoable like any other.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QMessageBox,
    QSpinBox,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.design.spec_editor import BuilderEvent, SpecBuilder
from ...core.errors import ResvizError
from ...core.sources.spec import BLOCK_KINDS, SHORTCUT_POLICIES
from .fields import QtFieldCombo, QtFieldEdit

DEBOUNCE_MS = 40  # typing pauses shorter than this do not redraw
SPEC_FILTER = "Spec files (*.toml *.json);;TOML (*.toml);;JSON (*.json)"
STAGE_COLUMNS = ("Blocks", "Width", "Stride", "Shortcut", "Block")
_POLICY_HELP = {
    "A": "A: zero-pad the new channels, subsample (no parameters)",
    "B": "B: 1×1 conv + BN projection where the shape changes",
    "C": "C: 1×1 conv + BN projection in every block",
    "D": "D: 2×2 average pool, then 1×1 conv + BN (ResNet-D)",
    "identity": "identity: even where the shape changes (the add fails)",
    "none": "none: no shortcut (a plain net)",
}


class QtBuilderPanel(QWidget):
    specPushed = Signal(object)  # the valid NetSpec sent to the document for drawing

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.builder = SpecBuilder()
        self.fields: dict[str, QtFieldEdit | QtFieldCombo] = {}
        self._typing: str | None = None  # the field the user is typing into: not overwritten
        self._pushed = None  # the spec last sent to the document
        self.mismatch_fields: set[str] = set()  # stage shortcuts the last analysis blamed
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.push)
        self._build_ui()
        self.builder.subscribe(self._on_event)
        self._start_from_screen()
        window.sessionChanged.connect(self._on_session)

    # ------------------------------------------------------------------ layout

    def _build_ui(self) -> None:
        box = QVBoxLayout(self)
        box.setContentsMargins(8, 8, 8, 8)
        box.setSpacing(6)
        box.addLayout(self._toolbar())
        self.file_label = QLabel()
        self.file_label.setTextFormat(Qt.RichText)
        box.addWidget(self.file_label)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("Name", self._edit("name", "The network's name (also the generated class's)"))
        form.addRow("Input", self._edit("input", "N×C×H×W or C×H×W, e.g. 1x3x224x224"))
        form.addRow("Classes", self._edit("classes", "Outputs of the final fc layer"))
        form.addRow("Stem", self._combo("stem.kind", [("ImageNet: 7x7/2 conv + max-pool", "imagenet"),
                                                     ("CIFAR: 3x3 conv", "cifar")], "The layers before stage 1"))  # fmt: skip
        form.addRow(
            "Block", self._combo("block", [(k, k) for k in BLOCK_KINDS], "The residual block of every stage")
        )
        form.addRow("Shortcut", self._combo("shortcut", [(_POLICY_HELP[p], p) for p in SHORTCUT_POLICIES],
                                            "The shortcut policy of the net (stages and blocks may differ)"))  # fmt: skip
        groups = QHBoxLayout()
        groups.addWidget(self._edit("groups", "Groups of the 3x3 conv (bottleneck blocks: ResNeXt)"))
        groups.addWidget(QLabel("width per group"))
        groups.addWidget(self._edit("width_per_group", "Channels per group, 64 as in ResNet (bottleneck)"))
        form.addRow("Groups", groups)
        box.addLayout(form)

        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Stages</b>"))
        head.addStretch(1)
        for text, tip, slot in (("+", "Add a stage after the selected one", self.add_stage),
                                ("−", "Remove the selected stage", self.remove_stage),
                                ("↑", "Move the selected stage up", lambda: self.move_stage(-1)),
                                ("↓", "Move the selected stage down", lambda: self.move_stage(1))):  # fmt: skip
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            head.addWidget(b)
        box.addLayout(head)
        self.table = QTableWidget(0, len(STAGE_COLUMNS))
        self.table.setHorizontalHeaderLabels(STAGE_COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setMinimumHeight(150)
        self.table.currentCellChanged.connect(lambda *_: self._sync_block_row())
        box.addWidget(self.table, 1)

        per_block = QHBoxLayout()
        per_block.addWidget(QLabel("Block"))
        self.block_index = QSpinBox()
        self.block_index.setToolTip("A block of the selected stage (0 is the first, the one that strides)")
        self.block_index.valueChanged.connect(lambda _v: self._sync_block_row())
        per_block.addWidget(self.block_index)
        per_block.addWidget(QLabel("of the selected stage: shortcut"))
        self.block_policy = QtFieldCombo("", [("as its stage", None)] + [(p, p) for p in SHORTCUT_POLICIES],
                                         "The shortcut policy of this one block")  # fmt: skip
        self.block_policy.edited.connect(lambda _p, v: self._set_block_policy(v))
        per_block.addWidget(self.block_policy, 1)
        box.addLayout(per_block)

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.RichText)
        box.addWidget(self.status)

    def _toolbar(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.new_button = QToolButton()
        self.new_button.setText("New")
        self.new_button.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self.new_button)
        menu.addAction("Empty net", lambda: self.new_net(None))
        self._zoo_menu = menu.addMenu("From the zoo")
        self._zoo_menu.aboutToShow.connect(self._fill_zoo_menu)
        menu.addAction("The model on screen", self._start_from_screen_asked)
        self.new_button.setMenu(menu)
        row.addWidget(self.new_button)
        self.undo_button = self._tool(row, "Undo", self.undo, "Undo the last edit (Ctrl+Z)")
        self.redo_button = self._tool(row, "Redo", self.redo, "Redo (Ctrl+Shift+Z)")
        self._tool(row, "Open…", self.ask_open, "Open a spec file (.toml, .json)")
        self.save_button = self._tool(row, "Save", self.save, "Save the spec (Ctrl+S)")
        self._tool(row, "Save As…", self.ask_save_as, "Save the spec to another file")
        self._tool(row, "Export PyTorch code…", self.ask_export_code, "A standalone model.py for this net")
        row.addStretch(1)
        for keys, slot in ((QKeySequence.Undo, self.undo), (QKeySequence.Redo, self.redo),
                           (QKeySequence("Ctrl+Shift+Z"), self.redo), (QKeySequence.Save, self.save)):  # fmt: skip
            sc = QShortcut(keys, self)
            sc.setContext(Qt.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)
        return row

    def _tool(self, row: QHBoxLayout, text: str, slot, tip: str) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.clicked.connect(slot)
        row.addWidget(b)
        return b

    def _edit(self, path: str, help_text: str) -> QtFieldEdit:
        w = QtFieldEdit(path, help_text)
        self._wire(w)
        self.fields[path] = w
        return w

    def _combo(self, path: str, choices, help_text: str) -> QtFieldCombo:
        w = QtFieldCombo(path, choices, help_text)
        w.edited.connect(self._on_edited)
        self.fields[path] = w
        return w

    def _wire(self, w: QtFieldEdit) -> None:
        w.edited.connect(self._on_edited)
        w.left.connect(lambda _p: self.builder.end_merge())
        w.undoRequested.connect(self.undo)
        w.redoRequested.connect(self.redo)

    # ------------------------------------------------------------------ actions

    def undo(self) -> None:
        self.builder.undo()

    def redo(self) -> None:
        self.builder.redo()

    def new_net(self, spec=None) -> bool:
        """Start from ``spec`` (a zoo entry) or an empty net; asks first about unsaved edits."""
        if not self.maybe_discard("starting a new net"):
            return False
        if spec is None:
            self.builder.new()
        else:
            self.builder.new_from_spec(spec)
        return True

    def open_spec_file(self, path: str | Path) -> bool:
        if not self.maybe_discard("opening another spec"):
            return False
        try:
            self.builder.open(path)
        except ResvizError as exc:
            QMessageBox.warning(self, "Could not open the spec", str(exc))
            return False
        return True

    def ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a spec", "", SPEC_FILTER)
        if path:
            self.open_spec_file(path)

    def save(self) -> bool:
        if self.builder.path is None:
            return self.ask_save_as()
        return self._save_to(None)

    def ask_save_as(self) -> bool:
        start = str(self.builder.path or Path.cwd() / f"{self._file_stem()}.toml")
        path, _ = QFileDialog.getSaveFileName(self, "Save the spec", start, SPEC_FILTER)
        return bool(path) and self._save_to(path)

    def _save_to(self, path) -> bool:
        try:
            self.builder.save(path)
        except (ResvizError, OSError) as exc:
            QMessageBox.warning(self, "Could not save", str(exc))
            return False
        return True

    def ask_export_code(self) -> None:
        if self.builder.spec is None:
            QMessageBox.warning(self, "Cannot export", "Fix the fields marked in red first.")
            return
        start = str(Path.cwd() / f"{self._file_stem()}.py")
        path, _ = QFileDialog.getSaveFileName(self, "Export PyTorch code", start, "Python (*.py)")
        if path:
            self.export_code(path)

    def export_code(self, path: str | Path) -> Path | None:
        """Write the net as a standalone PyTorch file (atomically)."""
        from ...core.design.codegen import generate
        from ...core.files import atomic_write_text

        spec = self.builder.spec
        if spec is None:
            return None
        source = self.builder.path.name if self.builder.path else "the resviz builder"
        try:
            return atomic_write_text(path, generate(spec, source=source))
        except (ResvizError, OSError) as exc:
            QMessageBox.warning(self, "Could not export", str(exc))
            return None

    def maybe_discard(self, doing: str) -> bool:
        """True when there are no unsaved edits, or the user saved or discarded them."""
        if not self.builder.dirty:
            return True
        name = self.builder.path.name if self.builder.path else "The net in the builder"
        answer = QMessageBox.question(
            self, "Unsaved changes", f"{name} has unsaved changes. Save them before {doing}?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save,
        )  # fmt: skip
        if answer == QMessageBox.Save:
            return self.save()
        return answer == QMessageBox.Discard

    def add_stage(self) -> None:
        row = self.table.currentRow()
        i = self.builder.add_stage(None if row < 0 else row + 1)
        self.table.selectRow(i)

    def remove_stage(self) -> None:
        row = self.table.currentRow()
        if row < 0:
            row = self.builder.stage_count() - 1
        if row >= 0:
            self.builder.remove_stage(row)

    def move_stage(self, step: int) -> None:
        row = self.table.currentRow()
        if row < 0:
            return
        to = row + step
        if 0 <= to < self.builder.stage_count():
            self.builder.move_stage(row, to)
            self.table.selectRow(to)

    def apply_spec_fix(self, spec, edits, label: str = "apply fix") -> None:
        """Apply a fix (spec edits) to ``spec``, the net on screen: in the builder, undoable.

        When the builder holds another net, it first takes this one (from its file when it has
        one, so that saving keeps the file's comments), asking about unsaved edits first.
        """
        if self.builder.spec != spec:
            session = self.window_.session
            path = getattr(session.loaded, "path", None) if session is not None else None
            if path is not None and Path(path).is_file():
                if not self.open_spec_file(path):
                    return
            elif not self.new_net(spec):
                return
            if self.builder.spec != spec:  # the file changed since it was drawn: use what is drawn
                self.builder.new_from_spec(spec)
            self._pushed = spec
        self.builder.apply_spec_edits(edits, label)
        self.push()

    # ------------------------------------------------------------------ builder → widgets

    def _on_edited(self, path: str, value) -> None:
        self._typing = path
        try:
            self.builder.set_field(path, value)
        finally:
            self._typing = None

    def _set_block_policy(self, value) -> None:
        row = self.table.currentRow()
        if row < 0:
            return
        self.builder.set_field(
            f"stages[{row}].block_shortcuts.{self.block_index.value()}", value, merge=False
        )

    def _on_event(self, event: BuilderEvent) -> None:
        self.refresh()
        if self.builder.valid:
            self._timer.start()
        else:
            self._timer.stop()  # an intermediate value typed on the way to a wrong one: not drawn
        self._grey_if_stale()

    def _grey_if_stale(self) -> None:
        """While a field is wrong, the builder's net on screen is the last valid one: greyed."""
        session = self.window_.session
        spec = getattr(session.loaded, "spec", None) if session is not None else None
        scene = self.window_.scene
        if (
            spec is not None
            and spec == self._pushed
            and getattr(scene, "greyed", None) != (not self.builder.valid)
        ):
            scene.set_greyed(not self.builder.valid)

    def refresh(self) -> None:
        """Show the builder's state: values (except in the field being typed), errors, status."""
        b = self.builder
        for path, w in self.fields.items():
            if path == self._typing:
                continue
            w.show_value(b.shown(path))
        self._fill_table()
        errors = b.errors
        for path, w in self.fields.items():
            if isinstance(w, QtFieldCombo):
                w.set_reason(errors.get(path, ""), w.warning)
            else:
                w.set_reason(errors.get(path, ""))
        self.undo_button.setEnabled(b.can_undo)
        self.redo_button.setEnabled(b.can_redo)
        self.undo_button.setToolTip(f"Undo {b.undo_label()} (Ctrl+Z)" if b.can_undo else "Nothing to undo")
        self.redo_button.setToolTip(
            f"Redo {b.redo_label()} (Ctrl+Shift+Z)" if b.can_redo else "Nothing to redo"
        )
        name = b.path.name if b.path else "unsaved net"
        self.file_label.setText(f"<b>{name}</b>" + (" <i>(modified)</i>" if b.dirty else ""))
        self._sync_block_row()
        if errors:
            lines = "<br>".join(f"<b>{p or 'spec'}</b>: {_esc(r)}" for p, r in errors.items())
            self.status.setText(f"<span style='color:#dc2626'>{lines}</span>")
        else:
            spec = b.spec
            blocks = sum(s.blocks for s in spec.stages)
            self.status.setText(f"<span style='color:#16a34a'>✓ valid:</span> {len(spec.stages)} stages, "
                                f"{blocks} blocks, depth {spec.depth}")  # fmt: skip

    def _fill_table(self) -> None:
        b = self.builder
        n = b.stage_count()
        current = self.table.currentRow()
        if self.table.rowCount() != n:
            for path in [p for p in self.fields if p.startswith("stages[")]:
                del self.fields[path]
            self.table.setRowCount(n)
            for i in range(n):
                self._make_row(i)
        for i in range(n):
            for key in ("blocks", "width", "stride", "shortcut", "block"):
                path = f"stages[{i}].{key}"
                w = self.fields.get(path)
                if w is not None and path != self._typing:
                    w.show_value(b.shown(path))
        if 0 <= current < n:
            self.table.setCurrentCell(current, self.table.currentColumn())

    def _make_row(self, i: int) -> None:
        for col, key in enumerate(("blocks", "width", "stride")):
            w = QtFieldEdit(f"stages[{i}].{key}", {"blocks": "Blocks in this stage",
                            "width": "Planes (a bottleneck outputs 4x this)",
                            "stride": "Stride of the stage's first block"}[key])  # fmt: skip
            self._wire(w)
            self.fields[w.path] = w
            self.table.setCellWidget(i, col, w)
        shortcut = QtFieldCombo(f"stages[{i}].shortcut", [("as the net", None)] + [(p, p) for p in SHORTCUT_POLICIES],
                                "This stage's shortcut policy")  # fmt: skip
        shortcut.edited.connect(self._on_edited)
        self.fields[shortcut.path] = shortcut
        self.table.setCellWidget(i, 3, shortcut)
        block = QtFieldCombo(f"stages[{i}].block", [("as the net", None)] + [(k, k) for k in BLOCK_KINDS],
                             "This stage's block kind")  # fmt: skip
        block.edited.connect(self._on_edited)
        self.fields[block.path] = block
        self.table.setCellWidget(i, 4, block)

    def _sync_block_row(self) -> None:
        row = self.table.currentRow()
        blocks = self.builder.shown(f"stages[{row}].blocks") if row >= 0 else None
        has = isinstance(blocks, int) and blocks > 0
        self.block_index.setEnabled(has)
        self.block_policy.setEnabled(has)
        if not has:
            return
        self.block_index.blockSignals(True)
        self.block_index.setRange(0, blocks - 1)
        self.block_index.blockSignals(False)
        overrides = self.builder.value(f"stages[{row}].block_shortcuts") or {}
        value = overrides.get(str(self.block_index.value())) if isinstance(overrides, dict) else None
        self.block_policy.show_value(value)
        if value is None:
            self.block_policy.blockSignals(True)
            self.block_policy.setCurrentIndex(0)
            self.block_policy.blockSignals(False)
        reason = self.builder.errors.get(f"stages[{row}].block_shortcuts", "")
        self.block_policy.set_reason(reason)

    # ------------------------------------------------------------------ builder → graph

    def push(self) -> None:
        """Send the valid spec to the window's document (it analyses and redraws off the UI thread)."""
        self._timer.stop()
        spec = self.builder.spec
        if spec is None or spec == self._pushed:
            return
        keep = self._pushed is not None
        self._pushed = spec
        self.window_.document.open_spec(spec, keep_view=keep)
        self.specPushed.emit(spec)

    def pending(self) -> bool:
        """An edit is waiting for its debounce (a --screenshot waits for the redraw)."""
        return self._timer.isActive()

    def _start_from_screen(self) -> None:
        """Begin with the net on screen when it came from a spec or the zoo, else an empty net."""
        session = self.window_.session
        loaded = session.loaded if session is not None else None
        spec = getattr(loaded, "spec", None)
        path = getattr(loaded, "path", None)
        if spec is None:
            self.refresh()
            return
        if path is not None and Path(path).is_file():
            try:
                self.builder.open(path)
            except ResvizError:
                self.builder.new_from_spec(spec)
        else:
            self.builder.new_from_spec(spec)
        if self.builder.spec == spec:
            self._pushed = spec  # already on screen: nothing to redraw
        self.refresh()

    def _on_session(self, session) -> None:
        """Another model on screen: follow it while the builder holds nothing unsaved. The
        builder's own net: mark the stage shortcuts the analysis blames for a mismatch."""
        spec = getattr(session.loaded, "spec", None)
        if spec is not None and spec == self.builder.spec:
            self._mark_mismatches(session.report)
            return
        if spec is None or spec == self._pushed or self.builder.dirty:
            return
        self._start_from_screen()
        if spec == self.builder.spec:
            self._mark_mismatches(session.report)

    def _mark_mismatches(self, report) -> None:
        from ...core.fixes.spec_edits import block_position

        blamed: dict[str, str] = {}
        spec = self.builder.spec
        for m in report.mismatches:
            pos = block_position(spec, m.block)
            if pos is not None:
                path = f"stages[{pos[0]}].shortcut"
                blamed[path] = (blamed.get(path, "") + f"{m.block}: the shortcut does not match the residual "
                                "branch; see the Issues tab (Apply fix)\n")  # fmt: skip
        for path, w in self.fields.items():
            if isinstance(w, QtFieldCombo) and path.startswith("stages["):
                w.set_reason(w.reason, blamed.get(path, "").strip())
        self.mismatch_fields = set(blamed)

    def _start_from_screen_asked(self) -> None:
        if self.maybe_discard("taking the model on screen"):
            self.builder.new()  # not dirty now, so the start below does not ask again
            self._start_from_screen()

    def _fill_zoo_menu(self) -> None:
        if self._zoo_menu.actions():
            return
        from ...core.sources import zoo

        for family in ("imagenet", "cifar"):
            sub = self._zoo_menu.addMenu("ImageNet" if family == "imagenet" else "CIFAR-10")
            for e in zoo.entries(family=family):
                sub.addAction(e.name, lambda e=e: self.new_net(e.spec)).setToolTip(e.description)

    def _file_stem(self) -> str:
        spec = self.builder.last_valid_spec
        return (spec.name if spec is not None else "net").replace(" ", "_")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
