"""What the app's tabs show: whole names in the Summary, readable training plots, honest buttons."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

import resviz  # noqa: E402
from resviz.core import zoo  # noqa: E402


@pytest.fixture(scope="module")
def resnet18():
    return resviz.analyze(zoo.build("resnet18"), (1, 3, 64, 64))


def test_summary_shows_whole_layer_names(qtbot, resnet18):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont, QFontMetricsF

    from resviz.gui.qt_summary_table import QtSummaryTable

    table = QtSummaryTable()
    qtbot.addWidget(table)
    table.resize(300, 400)  # a narrow pane: names still whole, the table scrolls sideways
    table.set_report(resnet18)
    assert table.row_count() > 50
    bold = QFont(table.table.font())
    bold.setBold(True)
    longest = max(QFontMetricsF(bold).horizontalAdvance(t[0]) for t in table.model.texts)
    assert "layer2.0.downsample.0" in {t[0].strip() for t in table.model.texts}
    assert table.table.horizontalHeader().sectionSize(0) >= longest
    assert table.table.textElideMode() == Qt.ElideMiddle  # if narrowed by hand: both ends stay
    row = next(i for i, r in enumerate(table.model.rows) if r.name == "layer2.0.downsample.0")
    tip = table.model.data(table.model.index(row, 0), Qt.ToolTipRole)
    assert tip.splitlines()[0] == "layer2.0.downsample.0"
