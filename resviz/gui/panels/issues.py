"""The Issues tab: every shortcut mismatch and every other shape error, as cards.

A mismatch card says which block, the two shapes that do not add up, the cause in words, the fix
as code (monospace, with a Copy button) and the input sizes at which the block would work. An error
card names the module, the message and a suggestion. Clicking a card emits the module to select;
the window expands, centres and selects it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ...render.view import shape_label

RED, GREEN, AMBER = "#dc2626", "#16a34a", "#d97706"
MAX_CARDS = 200  # a net broken in every block still lists quickly


class QtIssueCard(QFrame):
    """One issue; a click anywhere outside its buttons selects ``target`` in the graph."""

    activated = Signal(str)

    def __init__(self, kind: str, title: str, target: str | None, color: str = RED):
        super().__init__()
        self.kind = kind  # 'mismatch' | 'error' | 'load' | 'ok'
        self.target = target
        self.setFrameShape(QFrame.StyledPanel)
        self.setObjectName("issueCard")
        self.setStyleSheet(
            f"#issueCard {{ border: 1px solid palette(mid); border-left: 4px solid {color};"
            " border-radius: 4px; }"
        )
        if target:
            self.setCursor(Qt.PointingHandCursor)
            self.setToolTip(f"Show {target} in the graph")
        self.box = QVBoxLayout(self)
        self.box.setContentsMargins(10, 8, 10, 8)
        self.box.setSpacing(4)
        self.title = self.add_text(f"<b style='color:{color}'>{_esc(title)}</b>")

    def add_text(self, html: str, selectable: bool = False) -> QLabel:
        label = QLabel(html)
        label.setWordWrap(True)
        label.setTextFormat(Qt.RichText)
        if selectable:
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.box.addWidget(label)
        return label

    def add_code(self, code: str) -> QLabel:
        """Code in a monospace box (wrapped at spaces, selectable) with a Copy button."""
        box = QLabel(code)
        box.setObjectName("fixCode")
        box.setTextFormat(Qt.PlainText)
        box.setWordWrap(True)
        box.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        box.setStyleSheet(
            "#fixCode { background: palette(base); border: 1px solid palette(mid);"
            " border-radius: 3px; padding: 6px; }"
        )
        copy = QPushButton("Copy")
        copy.setToolTip("Copy the fix to the clipboard")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(code))
        row = QHBoxLayout()
        row.addWidget(box, 1)
        row.addWidget(copy, 0, Qt.AlignTop)
        self.box.addLayout(row)
        self.code = box
        self.copy_button = copy
        return box

    def add_fix_button(self, tip: str, slot) -> QPushButton:
        """"Apply fix": mend this block in place (a spec edit, or a patched copy of the model)."""
        button = QPushButton("Apply fix")
        button.setToolTip(tip)
        button.clicked.connect(slot)
        row = QHBoxLayout()
        row.addWidget(button, 0, Qt.AlignLeft)
        row.addStretch(1)
        self.box.addLayout(row)
        self.fix_button = button
        return button

    def activate(self) -> None:
        if self.target:
            self.activated.emit(self.target)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            self.activate()
        super().mousePressEvent(event)


class QtIssuesPanel(QScrollArea):
    """Cards for the load error (if any), mismatches and shape errors, in model order."""

    issueActivated = Signal(str)  # module path (or op name) to show
    fixRequested = Signal(object)  # a Mismatch whose "Apply fix" was clicked

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self._body = QWidget()
        self._layout = QVBoxLayout(self._body)
        self._layout.setContentsMargins(8, 8, 8, 8)
        self._layout.setSpacing(8)
        self.setWidget(self._body)
        self.cards: list[QtIssueCard] = []
        self._report = None
        self._load_error: str | None = None
        # set by whoever can apply fixes (the builder): mismatch → the button's tooltip, or None
        self.fix_available = None
        self._rebuild()

    def set_report(self, report) -> None:
        self._report = report
        self._rebuild()

    def set_load_error(self, message: str | None) -> None:
        """A failed load or reload: shown first, until the next good load."""
        self._load_error = message
        self._rebuild()

    def count(self) -> tuple[int, int]:
        r = self._report
        return (len(r.mismatches), len(r.errors)) if r is not None else (0, 0)

    # ---------------------------------------------------------------- building

    def _rebuild(self) -> None:
        self.cards.clear()
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                # hidden now: until deleteLater runs, a widget out of the layout still paints
                # where it was, over the new cards ("No model loaded." across the first card)
                item.widget().hide()
                item.widget().deleteLater()
        if self._load_error:
            self._add(_load_error_card(self._load_error, greyed=self._report is not None))
        r = self._report
        if r is not None:
            self._add_report_cards(r)
        elif not self._load_error:
            self._layout.addWidget(QLabel("No model loaded."))
        self._layout.addStretch(1)

    def _add_report_cards(self, r) -> None:
        """A card for each mismatch and shape error (at most MAX_CARDS of each, a line for the
        rest), then one for a trace that stopped early or one that says all is well."""
        ops = r.ops
        for m in r.mismatches[:MAX_CARDS]:
            target = ops[m.add_op].name if 0 <= m.add_op < len(ops) else m.block
            card = _mismatch_card(m, target)
            tip = self.fix_available(m) if self.fix_available is not None else None
            if tip:
                card.add_fix_button(tip, lambda _=False, m=m: self.fixRequested.emit(m))
            self._add(card)
        for e in r.errors[:MAX_CARDS]:
            self._add(_error_card(e))
        hidden = max(0, len(r.mismatches) - MAX_CARDS) + max(0, len(r.errors) - MAX_CARDS)
        if hidden:
            self._layout.addWidget(QLabel(f"… and {hidden} more (resviz check lists them all)."))
        if not r.complete and not r.errors:
            card = QtIssueCard("error", "The trace stopped early", None, AMBER)
            card.add_text("Only the layers before the failure are drawn.")
            self._add(card)
        if r.ok and not self._load_error:
            self._add(_ok_card(r))

    def _add(self, card: QtIssueCard) -> None:
        card.activated.connect(self.issueActivated)
        self.cards.append(card)
        self._layout.addWidget(card)


def _load_error_card(message: str, greyed: bool) -> QtIssueCard:
    card = QtIssueCard("load", "Could not load the model", None)
    card.add_text(_esc(message).replace("\n", "<br>"), selectable=True)
    if greyed:
        card.add_text("<i>The graph shows the last version that loaded, greyed out.</i>")
    return card


def _ok_card(r) -> QtIssueCard:
    n = len(r.blocks)
    card = QtIssueCard("ok", "No problems found", None, GREEN)
    what = f"{n} blocks, all shortcuts match" if n else "every layer's shapes fit"
    card.add_text(f"✓ {what} at input {shape_label(r.input_shape)}.")
    return card


def _mismatch_card(m, target: str) -> QtIssueCard:
    card = QtIssueCard("mismatch", f"{m.block}: shortcut does not match", target)
    card.add_text(
        f"residual <b>{shape_label(m.residual_shape)}</b> ≠ shortcut "
        f"<b>{shape_label(m.shortcut_shape)}</b>"
        + (" <i>(PyTorch broadcasts this silently)</i>" if m.broadcastable else "")
    )
    if m.cause:
        card.add_text(_md(m.cause), selectable=True)
    if m.fix:
        # what the fix does and where it goes; the code below says it in lines that paste
        title = getattr(m, "fix_title", "")
        card.add_text(f"<b>Fix:</b> {_md(title)}" if title else "<b>Fix:</b>", selectable=True)
        card.add_code(m.fix.removeprefix("in the spec: ") if getattr(m, "spec_edits", None) else m.fix)
    if m.input_sizes:
        sizes = ", ".join(str(s) for s in m.input_sizes)
        card.add_text(f"Works at input sizes: {sizes}")
    return card


def _error_card(e) -> QtIssueCard:
    title = f"{e.module}: {e.type} failed" if e.type else f"{e.module}: shape error"
    card = QtIssueCard("error", title, e.module or None)
    card.add_text(_esc(e.message).replace("\n", "<br>"), selectable=True)
    if e.input_shapes:
        shapes = ", ".join(shape_label(s) for s in e.input_shapes)
        card.add_text(f"input: {shapes}")
    if e.fatal:
        card.add_text("<i>Tracing stopped here; later layers are not drawn.</i>")
    if e.suggestion:
        card.add_text(f"<b>Try:</b> {_md(e.suggestion)}", selectable=True)
    return card


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md(text: str) -> str:
    """Backticks as code, the rest escaped."""
    parts = _esc(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
