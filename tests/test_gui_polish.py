"""What the app's tabs show: whole names in the Summary, readable training plots, honest buttons."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

import resviz  # noqa: E402
from resviz.core.sources import zoo  # noqa: E402


@pytest.fixture(scope="module")
def resnet18():
    return resviz.analyze(zoo.build("resnet18"), (1, 3, 64, 64))


def test_summary_shows_whole_layer_names(qtbot, resnet18):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont, QFontMetricsF

    from resviz.gui.panels.summary import QtSummaryTable

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


# ------------------------------------------------------------------------- training plots


def test_step_axes_tick_whole_steps_however_few():
    from resviz.gui.training.plot_base import integer_ticks

    for lo, hi in [(-0.05, 4.2), (0, 1), (0, 2), (-0.5, 9.5), (0, 37), (0, 10_000)]:
        for size in (80, 300, 900):
            levels = integer_ticks(lo, hi, size)
            values = [v for _, vals in levels for v in vals]
            assert values and all(v == int(v) and lo <= v <= hi for v in values), (lo, hi, size)
            assert all(step >= 1 for step, _ in levels)


def _axis_texts(axis) -> list[str]:
    from PySide6.QtGui import QImage, QPainter

    image = QImage(10, 10, QImage.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in (specs[2] if specs else [])]


def test_training_plots_label_steps_as_integers_and_keep_the_first_block(qtbot):
    import numpy as np

    from resviz.gui.training.plot_base import Style
    from resviz.gui.training.plots import CurvePlot, HighwayPlot

    style = Style(dark=False)
    loss = CurvePlot(style, ylog=True, ylabel="loss")
    qtbot.addWidget(loss)
    loss.resize(360, 180)
    loss.show()
    loss.set_series("residual", np.arange(5.0), np.array([2.5, 2.4, 2.45, 2.3, 2.35]))
    loss.fit()
    qtbot.waitExposed(loss)
    texts = _axis_texts(loss.getPlotItem().getAxis("bottom"))
    assert texts and all(t.lstrip("-").isdigit() for t in texts), texts  # no 0.5, 1.5 ...

    # resnet50's 16 blocks: the axis labels the first block of each stage
    names = [f"layer{s}.{i}" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for i in range(n)]
    highway = HighwayPlot(style)
    qtbot.addWidget(highway)
    highway.resize(360, 180)
    highway.show()
    highway.set_blocks(names)
    qtbot.waitExposed(highway)
    highway.follow_data(*highway.fixed_x, -2.0, -0.5)
    texts = _axis_texts(highway.getPlotItem().getAxis("bottom"))
    assert texts == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]


def test_a_log_axis_writes_all_its_labels_one_way():
    import math

    from resviz.gui.training.plot_base import LogAxis, log_labels

    axis = LogAxis("left")
    axis.setLogMode(False, True)
    for lo, hi in [(-3.3, -0.7), (-2.2, 0.4), (-6.1, -1.9), (-1.2, 3.5), (2.8, 4.6)]:
        for size in (120, 400):
            levels = axis.tickValues(lo, hi, size)
            texts = [t for sp, vals in levels if sp > 0 for t in axis.tickStrings(vals, 1, sp)]
            powers = ["10" in t and any(c in t for c in "⁰¹²³⁴⁵⁶⁷⁸⁹") for t in texts]
            assert texts and (all(powers) or not any(powers)), (lo, hi, texts)
    assert log_labels([math.log10(v) for v in (1e-3, 1e-2, 0.1)]) == ["10⁻³", "10⁻²", "10⁻¹"]
    assert log_labels([math.log10(v) for v in (0.01, 0.02, 0.1, 1)]) == ["0.01", "0.02", "0.1", "1"]


def test_a_finished_run_offers_only_what_can_go_on(qtbot):
    from resviz.gui.training.tab import install
    from resviz.gui.window.main_window import QtMainWindow
    from tests.test_gui_training import panel_for, wait_state

    w = QtMainWindow()
    qtbot.addWidget(w)
    install(w, None)
    w.show()
    w.select_tab("Training")
    try:
        p = panel_for(qtbot, w, steps=2)
        assert p.start()
        wait_state(qtbot, p, "finished")
        assert not p.resume_btn.isEnabled() and not p.step_btn.isEnabled()
        assert not p.stop_btn.isEnabled() and not p.pause_btn.isEnabled()
        assert p.start_btn.isEnabled() and p.reset_btn.isEnabled()
        p.steps.setValue(4)  # more steps asked for: the run can go on
        assert p.resume_btn.isEnabled() and p.step_btn.isEnabled()
        p.steps.setValue(0)  # unlimited
        assert p.resume_btn.isEnabled()
    finally:
        w.close()


def test_the_apps_export_refuses_an_unreadable_png_in_the_apps_words(qtbot, resnet18, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    from resviz.gui.graph.scene import QtGraphScene
    from resviz.gui.graph.scene_export import export_scene
    from resviz.render import pages
    from resviz.render.view import build_view

    scene = QtGraphScene()
    scene.show_graph(build_view(resnet18))
    monkeypatch.setattr(pages, "PNG_MAX_BYTES", 100_000)
    with pytest.raises(pages.PictureTooBig) as e:
        export_scene(scene, tmp_path / "g.png")
    assert "Roll up" in str(e.value) and "--rollup" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_folded_tree_node_is_striped_in_its_callers_shortcut_colour(qtbot):
    """A tree node handed its projection by the tree: orange stripe, not grey (the skip is an edge)."""
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QStyleOptionGraphicsItem

    from resviz.gui.graph.scene import QtGraphScene
    from resviz.render.view import build_view
    from tests.nets_wild import TreeNet

    graph = build_view(resviz.analyze(TreeNet(), (1, 3, 16, 16)))
    scene = QtGraphScene()
    scene.show_graph(graph)
    for name, kind in [("level1.tree1", "projection"), ("level1.tree2", "identity")]:
        node = next(n for n in graph.nodes.values() if n.name == name)
        item = scene.node_items[node.id]
        image = QImage(int(item.rect.width()) + 6, int(item.rect.height()) + 6, QImage.Format_ARGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        painter.translate(3, 3)
        item.paint(painter, QStyleOptionGraphicsItem(), None)
        painter.end()
        stripe = image.pixelColor(3 + 3, 3 + int(item.rect.height() / 2))
        assert stripe.name() == QColor(scene.theme.shortcuts[kind]).name(), name
