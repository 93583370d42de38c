"""The Summary tab: ``resviz summary`` as a sortable, filterable table, with totals below.

Rows come from :func:`resviz.core.analysis.layer_table.layer_rows`, so the numbers are the command line's.
Sorting uses the raw numbers (``Qt.UserRole``), not the displayed text; clicking a row asks the
window to select that module in the graph.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QAbstractTableModel, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QFont, QFontMetricsF
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QSpinBox,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...core.analysis.layer_table import layer_rows
from ...render.text import human
from ...render.view import shape_label

COLUMNS = ("layer", "type", "output", "params", "MACs")
_DISPLAY, _SORT, _ALIGN, _FONT, _TOOLTIP = (
    int(r.value) for r in (Qt.DisplayRole, Qt.UserRole, Qt.TextAlignmentRole, Qt.FontRole, Qt.ToolTipRole)
)


class QtLayerTableModel(QAbstractTableModel):
    """Rows of :func:`layer_rows`; texts and sort keys are computed once per fill, not per paint."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list = []
        self.texts: list[tuple[str, ...]] = []
        self.keys: list[tuple] = []
        self._bold = QFont()
        self._bold.setBold(True)
        self._right = Qt.AlignRight | Qt.AlignVCenter

    def set_rows(self, rows: list) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.texts = [
            (
                "  " * max(0, r.depth - 1) + r.name, r.type, shape_label(r.output_shape),
                f"{r.params:,}" if r.params else "–", human(r.macs) if r.macs else "–",
            )
            for r in self.rows
        ]  # fmt: skip
        self.keys = [(i, r.type, _numel(r.output_shape), r.params, r.macs) for i, r in enumerate(self.rows)]
        self.endResetModel()

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role == Qt.DisplayRole and orientation == Qt.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=_DISPLAY):
        role = int(role)  # plain ints: enum comparisons dominate the cost of this hot method
        i, col = index.row(), index.column()
        if role == _DISPLAY:
            return self.texts[i][col]
        if role == _SORT:
            return self.keys[i][col]
        if role == _ALIGN:
            return self._right if col >= 3 else None
        if role == _FONT:
            return None if self.rows[i].leaf else self._bold
        if role == _TOOLTIP:
            row = self.rows[i]
            return f"{row.name}\nin: {shape_label(row.input_shape)}\nout: {shape_label(row.output_shape)}"
        return None

    def name_width(self, font: QFont) -> float:
        """Width of the longest layer name as drawn (summary rows of modules are bold)."""
        plain, bold = QFontMetricsF(font), QFont(font)
        bold.setBold(True)
        strong = QFontMetricsF(bold)
        return max(((plain if r.leaf else strong).horizontalAdvance(t[0])
                    for r, t in zip(self.rows, self.texts)), default=0.0)  # fmt: skip


class _Filter(QSortFilterProxyModel):
    """Matches the filter text against the layer name and type; sorts on precomputed keys."""

    text = ""

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        text = self.text
        if not text:
            return True
        row = self.sourceModel().rows[source_row]
        t = text.lower()
        return t in row.name.lower() or t in row.type.lower()

    def lessThan(self, left, right) -> bool:
        keys = self.sourceModel().keys
        col = left.column()
        return keys[left.row()][col] < keys[right.row()][col]


class QtSummaryTable(QWidget):
    moduleActivated = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._report = None
        self._dirty = False
        self.model = QtLayerTableModel(self)
        self.proxy = _Filter(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.UserRole)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter layers by name or type")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._on_filter)
        self.depth = QSpinBox()
        self.depth.setRange(0, 32)
        self.depth.setSpecialValueText("all")
        self.depth.setPrefix("depth ")
        self.depth.setToolTip("Show modules down to this depth (all: every layer)")
        self.depth.valueChanged.connect(self._refill)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setAlternatingRowColors(True)
        # Names are shown whole: the layer column is as wide as its longest name (a horizontal
        # scroll bar in a narrow pane). Narrowed by hand, it elides in the middle, keeping both
        # ends of a name ('layer1…downsample.0'); the tooltip has the full name.
        self.table.setTextElideMode(Qt.ElideMiddle)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setResizeContentsPrecision(200)  # size columns from 200 rows, not all 5000
        header.setSectionResizeMode(0, QHeaderView.Interactive)
        for c in range(1, len(COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeToContents)
        header.setStretchLastSection(False)
        self.table.clicked.connect(self._on_clicked)
        self.totals = QLabel()
        self.totals.setWordWrap(True)
        self.totals.setTextInteractionFlags(Qt.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.depth)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.totals)

    def set_report(self, report) -> None:
        """Fill now if the tab is on screen, else when it is first shown."""
        self._report = report
        self._dirty = True
        if self.isVisible():
            self._refill()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._dirty:
            self._refill()

    def row_count(self) -> int:
        if self._dirty:
            self._refill()
        return self.proxy.rowCount()

    def _refill(self) -> None:
        self._dirty = False
        r = self._report
        if r is None:
            self.model.set_rows([])
            self.totals.setText("")
            return
        depth = self.depth.value() or None
        self.model.set_rows(layer_rows(r, depth))
        self.fit_name_column()
        self.totals.setText(
            f"<b>{r.total_params:,}</b> parameters ({human(r.total_params)}, "
            f"{r.trainable_params:,} trainable) · <b>{human(r.macs)}</b> MACs · input "
            f"{shape_label(r.input_shape)} (batch {r.input_shape[0] if r.input_shape else '?'}) → "
            + ", ".join(shape_label(s) for s in r.output_shapes)
        )

    def fit_name_column(self) -> None:
        """Size the layer column to its longest name, plus the cell's own margins."""
        margin = 2 * self.table.style().pixelMetric(QStyle.PM_FocusFrameHMargin) + 16
        width = math.ceil(self.model.name_width(self.table.font())) + margin
        self.table.horizontalHeader().resizeSection(0, max(width, 80))

    def _on_filter(self, text: str) -> None:
        self.proxy.text = text.strip()
        self.proxy.setFilterFixedString(self.proxy.text)  # re-runs filterAcceptsRow

    def _on_clicked(self, index) -> None:
        src = self.proxy.mapToSource(index)
        if src.isValid():
            self.moduleActivated.emit(self.model.rows[src.row()].name)


def _numel(shape) -> int:
    n = 1
    for d in shape or ():
        n *= d
    return n
