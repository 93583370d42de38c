"""The desktop window: opening every kind of source, folding, issues, input shapes, reloads."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("PySide6")

from PySide6.QtGui import QFontInfo  # noqa: E402

from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

torch = pytest.importorskip("torch")
nn = torch.nn

TIMEOUT = 30_000

TINY_SPEC = """\
name = "tiny"
input = "3x32x32"
classes = 10
block = "basic"
shortcut = "A"

[stem]
kind = "cifar"

[[stages]]
blocks = 1
width = 16

[[stages]]
blocks = 1
width = 32
stride = 2
"""

PY_MODEL = """\
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x) + x)


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layer1 = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.head(x.mean((2, 3)))
"""


class BrokenBlock(nn.Module):
    """Stride 2 and more channels on the residual path, identity shortcut: does not add up."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)) + x)


class BrokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.layer1 = nn.Sequential(BrokenBlock(16, 16, 1), BrokenBlock(16, 32, 2))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def win(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()
    assert not w.document.worker.is_running() and not w.aux.is_running()


def drawn(qtbot, w, timeout=TIMEOUT):
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=timeout)
    return w.document.drawn


def labels(w) -> set[str]:
    return {item.text() for item in w.scene.label_items}


# ---------------------------------------------------------------------------- model sources


def test_opens_zoo_model(qtbot, win):
    win.open_source("resnet18")
    d = drawn(qtbot, win)
    assert win.session.report.ok and len(win.session.report.blocks) == 8
    assert len(win.scene.node_items) == len(d.graph.nodes) > 10
    assert "✓ 8 blocks" in win.count_label.text()
    assert win.shape_field.text() == "1x3x224x224"
    assert "resnet18" in win.inspector.text()  # model overview while nothing is selected


def test_opens_spec_file(qtbot, win, tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    win.open_file(str(spec))
    drawn(qtbot, win)
    assert win.session.input_shape == (1, 3, 32, 32)
    assert [b.name for b in win.session.report.blocks] == ["layer1.0", "layer2.0"]
    assert win.actions_.watch.isEnabled()


def test_opens_python_file_and_shows_class_source(qtbot, win, tmp_path):
    path = tmp_path / "model.py"
    path.write_text(PY_MODEL)
    win.open_file(str(path))  # two classes, but only Net builds without arguments... both do
    qtbot.waitUntil(
        lambda: win.actions_._py_dialog is not None or win.document.src is not None, timeout=TIMEOUT
    )
    dlg = win.actions_._py_dialog
    assert dlg is not None and [c.name for c in dlg.candidates] == ["Block", "Net"]
    assert dlg.chosen() == "Net"
    dlg.kwargs.setText('{"width": 4}')
    dlg.accept()
    drawn(qtbot, win)
    report = win.session.report
    assert report.ok and len(report.blocks) == 2
    assert win.select_module("layer1.0")
    qtbot.waitUntil(
        lambda: win.inspector.node is not None and "model.py:" in win.inspector.text(), timeout=5000
    )
    assert "Block" in win.inspector.text()


def test_python_picker_rejects_bad_kwargs(qtbot, win, tmp_path):
    from resviz.core.sources.loading import python_candidates
    from resviz.gui.dialogs.open_model import QtPythonPicker

    path = tmp_path / "model.py"
    path.write_text(PY_MODEL)
    dlg = QtPythonPicker(str(path), python_candidates(path), win)
    dlg.kwargs.setText("{width: 4}")
    dlg.accept()
    assert dlg.result() == 0 and not dlg.error.isHidden()
    dlg.close()


def test_opens_torchscript_archive(qtbot, win, tmp_path):
    namespace: dict = {}
    exec(PY_MODEL, namespace)
    model = namespace["Net"]().eval()
    path = tmp_path / "net.pt"
    torch.jit.trace(model, torch.randn(1, 3, 32, 32)).save(str(path))
    win.open_file(str(path))
    win.set_input_shape("1x3x32x32")
    drawn(qtbot, win)
    assert win.document.error is None and win.session.loaded.kind == "torchscript"
    assert len(win.session.report.blocks) == 2 and win.session.report.ok


# ---------------------------------------------------------------------------- mismatches


def test_broken_model_is_highlighted_and_listed(qtbot, win):
    win.open_module(BrokenNet(), (1, 3, 32, 32))
    graph = drawn(qtbot, win).graph
    assert any(n.broken for n in graph.nodes.values())
    assert "1 mismatch" in win.count_label.text()
    cards = [c for c in win.issues.cards if c.kind == "mismatch"]
    assert len(cards) == 1 and "layer1.1" in cards[0].title.text()
    # collapse everything, then ask the issue: the block opens and its add is selected
    win.collapse_all()
    qtbot.waitUntil(
        lambda: win.is_idle() and win.scene.graph.find("layer1.1").kind == "block", timeout=TIMEOUT
    )
    cards = [c for c in win.issues.cards if c.kind == "mismatch"]
    cards[0].activate()
    qtbot.waitUntil(lambda: win.is_idle() and win.scene.selected_node() is not None, timeout=TIMEOUT)
    node = win.scene.selected_node()
    assert node.broken and node.name.startswith("layer1.1")
    assert "residual" in win.inspector.text()


def test_fix_code_has_copy_button(qtbot, win):
    from PySide6.QtGui import QGuiApplication

    win.open_module(BrokenNet(), (1, 3, 32, 32))
    drawn(qtbot, win)
    card = next(c for c in win.issues.cards if c.kind == "mismatch")
    card.copy_button.click()
    assert "nn.Conv2d(16, 32" in QGuiApplication.clipboard().text()
    from PySide6.QtWidgets import QLabel

    texts = " ".join(lbl.text() for lbl in card.findChildren(QLabel))
    mm = win.issues._report.mismatches[0]
    assert "use as the block's shortcut" not in texts  # the heading says what this fix does
    assert "<b>Fix:</b>" in texts and mm.fix_title.split("`")[0] in texts


# ---------------------------------------------------------------------------- folding


def test_expand_collapse_changes_node_count(qtbot, win):
    win.open_source("resnet18")
    folded = len(drawn(qtbot, win).graph.nodes)
    win.expand_all()
    qtbot.waitUntil(lambda: win.is_idle() and len(win.scene.node_items) > folded, timeout=TIMEOUT)
    expanded = len(win.scene.node_items)
    block = next(n for n in win.scene.graph.nodes.values() if n.block == "layer2.0")
    win.scene.nodeActivated.emit(block.id)  # double-click on a layer: folds its block
    qtbot.waitUntil(lambda: win.is_idle() and len(win.scene.node_items) < expanded, timeout=TIMEOUT)
    node = win.scene.graph.find("layer2.0")
    assert node.kind == "block"
    win.scene.nodeActivated.emit(node.id)  # and unfolds it again
    qtbot.waitUntil(lambda: win.is_idle() and len(win.scene.node_items) == expanded, timeout=TIMEOUT)
    win.scene.groupActivated.emit("layer3")  # double-click on a stage band folds the stage
    qtbot.waitUntil(
        lambda: win.is_idle() and win.scene.graph.find("layer3").kind == "module", timeout=TIMEOUT
    )


def test_roll_up_repeated_blocks(qtbot, win):
    win.open_source("resnet56")
    before = len(drawn(qtbot, win).graph.nodes)
    win.actions_.rollup.trigger()
    qtbot.waitUntil(lambda: win.is_idle() and len(win.scene.node_items) < before, timeout=TIMEOUT)
    assert any(n.kind == "rollup" for n in win.scene.graph.nodes.values())
    assert win.select_module("layer2.5")  # hidden in a roll-up: unrolled and selected
    qtbot.waitUntil(lambda: win.is_idle() and win.scene.selected_node() is not None, timeout=TIMEOUT)
    assert win.scene.selected_node().name == "layer2.5"


def test_find_module_expands_and_selects(qtbot, win):
    win.open_source("resnet18")
    drawn(qtbot, win)
    assert win.actions_.find_module("layer3.1.conv2")
    qtbot.waitUntil(lambda: win.is_idle() and win.scene.selected_node() is not None, timeout=TIMEOUT)
    node = win.scene.selected_node()
    assert node.name == "layer3.1.conv2"
    text = win.inspector.text()
    assert "Conv2d" in text and "kernel_size" in text and "256×14×14" in text
    assert not win.actions_.find_module("no_such_layer")


# ---------------------------------------------------------------------------- input shape


def test_input_shape_updates_labels(qtbot, win):
    win.open_source("resnet18")
    drawn(qtbot, win)
    assert "64×112×112" in labels(win)
    win.shape_field.setText("1x3x32x32")
    win.shape_field.returnPressed.emit()
    qtbot.waitUntil(lambda: win.is_idle() and win.session.input_shape == (1, 3, 32, 32), timeout=TIMEOUT)
    assert "64×16×16" in labels(win) and "64×112×112" not in labels(win)
    assert win.summary.row_count() > 0 and win.summary.model.rows[0].input_shape == (1, 3, 32, 32)


def test_invalid_shape_changes_nothing(qtbot, win):
    win.open_source("resnet18")
    drawn(qtbot, win)
    session = win.session
    win.shape_field.setText("1x3xabc")
    win.shape_field.returnPressed.emit()
    assert win.shape_field.error and win.shape_field.toolTip() == win.shape_field.error
    assert "red" in win.shape_field.styleSheet() or "#dc2626" in win.shape_field.styleSheet()
    assert not win.set_input_shape("0x3")
    assert win.session is session and not win.document.is_busy()


def test_stale_analysis_never_wins(qtbot, win):
    win.open_source("resnet18")
    drawn(qtbot, win)
    seen = []
    win.sessionChanged.connect(lambda s: seen.append(s.input_shape))
    win.set_input_shape("1x3x64x64")
    win.set_input_shape("1x3x96x96")  # asked for after: this one must be what stays
    qtbot.waitUntil(lambda: win.is_idle() and bool(seen), timeout=TIMEOUT)
    qtbot.wait(100)
    assert seen == [(1, 3, 96, 96)]
    assert win.session.input_shape == (1, 3, 96, 96)


# ---------------------------------------------------------------------------- reloading


def test_failed_reload_keeps_last_graph_greyed(qtbot, win, tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text(TINY_SPEC)
    win.open_source(str(spec))
    drawn(qtbot, win)
    count = len(win.scene.node_items)
    spec.write_text(TINY_SPEC.replace('block = "basic"', 'block = "basik"'))
    win.reload()
    qtbot.waitUntil(lambda: win.is_idle() and win.document.error is not None, timeout=TIMEOUT)
    assert win.scene.greyed and len(win.scene.node_items) == count
    assert "basik" in win.banner.text() and win.banner.kind == "error"
    assert win.issues.cards[0].kind == "load" and "reload failed" in win.count_label.text()
    spec.write_text(TINY_SPEC.replace("blocks = 1\nwidth = 32", "blocks = 2\nwidth = 32"))
    win.reload()
    qtbot.waitUntil(lambda: win.is_idle() and win.document.error is None, timeout=TIMEOUT)
    assert not win.scene.greyed and len(win.session.report.blocks) == 3
    assert win.issues.cards[0].kind != "load"


def test_watch_reloads_after_atomic_save(qtbot, win, tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text(TINY_SPEC)
    win.open_source(str(spec))
    drawn(qtbot, win)
    win.actions_.watch.trigger()
    assert win.document.watching
    tmp = tmp_path / "net.toml.tmp"
    tmp.write_text(TINY_SPEC.replace("blocks = 1\nwidth = 32", "blocks = 3\nwidth = 32"))
    os.replace(tmp, spec)  # how many editors save
    qtbot.waitUntil(lambda: win.is_idle() and len(win.session.report.blocks) == 4, timeout=TIMEOUT)


def test_first_load_failure_shows_error(qtbot, win, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 3\n[[stages]]\nblocks = 'x'\n")
    win.open_source(str(bad))
    qtbot.waitUntil(lambda: win.is_idle() and win.document.error is not None, timeout=TIMEOUT)
    assert win.session is None and win.banner.kind == "error" and not win.scene.node_items
    assert win.tabs.currentWidget() is win.issues


# ---------------------------------------------------------------------------- summary, exports


def test_summary_table_filters_sorts_and_selects(qtbot, win):
    from PySide6.QtCore import Qt

    win.open_source("resnet18")
    drawn(qtbot, win)
    table = win.summary
    total = table.row_count()
    assert total > 50 and "parameters" in table.totals.text()
    table.filter.setText("conv")
    assert 0 < table.row_count() < total
    table.filter.setText("")
    table.depth.setValue(1)
    assert table.row_count() < total
    table.table.sortByColumn(3, Qt.DescendingOrder)  # params
    first = table.proxy.index(0, 0)
    assert table.proxy.data(first).strip() in ("layer4", "fc")
    table._on_clicked(first)
    qtbot.waitUntil(lambda: win.is_idle() and win.scene.selected_node() is not None, timeout=TIMEOUT)


def test_exports_are_valid_files(qtbot, win, tmp_path):
    import json
    import xml.etree.ElementTree as ET

    from PySide6.QtGui import QImage

    win.open_source("resnet18")
    drawn(qtbot, win)
    png, svg, pdf, js = (tmp_path / f"g.{e}" for e in ("png", "svg", "pdf", "json"))
    win.export_graph(str(png))
    win.export_graph(str(svg))
    win.export_graph(str(pdf))
    win.export_report(str(js))
    assert not QImage(str(png)).isNull()
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert json.loads(js.read_text())["model"] == "resnet18"
    try:
        import resviz.render.dot  # noqa: F401
    except ImportError:
        return
    dot = tmp_path / "g.dot"
    win.export_graph(str(dot))
    assert "digraph" in dot.read_text()


@pytest.mark.parametrize("graph_per_window", [0.4, 2.5], ids=["graph-narrower-than-window", "graph-wider"])
def test_unfolding_keeps_the_block_under_the_cursor(qtbot, win, graph_per_window):
    """The block's top stays at the same pixel whether or not the graph fills the window: the zoom
    is set from the measured graph and window, so neither fonts nor the window's size matter."""
    from PySide6.QtCore import QPointF

    win.open_source("resnet34")
    drawn(qtbot, win)
    view = win.view
    view.set_zoom(graph_per_window * view.viewport().width() / win.scene.sceneRect().width())
    node = win.scene.graph.find("layer3.2")
    item = win.scene.node_items[node.id]
    view.centerOn(item)
    rect = item.sceneBoundingRect()
    before = view.mapFromScene(QPointF(rect.center().x(), rect.top()))
    win.scene.nodeActivated.emit(node.id)
    qtbot.waitUntil(lambda: win.is_idle() and "b:layer3.2" in win.scene.layout.groups, timeout=TIMEOUT)
    frame = win.scene.layout.groups["b:layer3.2"]
    after = view.mapFromScene(QPointF(frame.x + frame.w / 2, frame.y))
    assert (after.x(), after.y()) == pytest.approx((before.x(), before.y()), abs=2)


def test_a_deep_net_opens_from_its_top_zoomed_out_while_its_labels_stay_legible(qtbot, win, tmp_path):
    """Not at 1:1 (resnet50 showed two stages): as small as the scene's smallest font allows, the
    width fitting, the top in view, and the overview beside it naming the stages."""
    spec = tmp_path / "deep.toml"
    spec.write_text(TINY_SPEC.replace("blocks = 1", "blocks = 60"))  # far taller than any window
    win.open_source(str(spec))
    drawn(qtbot, win)
    view, rect = win.view, win.scene.sceneRect()
    assert view.scale_factor() == pytest.approx(view.legible_scale(), rel=1e-3) and view.legible_scale() < 1
    smallest_px = min(QFontInfo(f).pixelSize() for f in win.scene.fonts)
    assert smallest_px * view.scale_factor() >= 7 - 1e-6
    assert rect.width() * view.scale_factor() <= view.viewport().width()
    assert view.visible_scene_rect().top() <= rect.top() + 1
    qtbot.waitUntil(lambda: view.overview.isVisible() and view.overview._pix is not None, timeout=5000)
    assert view.overview.labels == ["layer1", "layer2"]


def test_a_fitted_view_refits_on_resize_until_the_user_scrolls(qtbot, win, tmp_path):
    from PySide6.QtWidgets import QAbstractSlider

    spec = tmp_path / "deep.toml"
    spec.write_text(TINY_SPEC.replace("blocks = 1", "blocks = 60"))
    win.open_source(str(spec))
    drawn(qtbot, win)
    view, rect = win.view, win.scene.sceneRect()

    def resize_by(dx):
        width = view.viewport().width()
        win.resize(win.width() + dx, win.height())
        qtbot.waitUntil(lambda: view.viewport().width() != width, timeout=5000)

    resize_by(-150)  # the program's placement (top, legible zoom) holds through a resize
    assert view.visible_scene_rect().top() <= rect.top() + 1
    view.verticalScrollBar().triggerAction(QAbstractSlider.SliderPageStepAdd)  # the user scrolls
    top = view.visible_scene_rect().top()
    assert top > rect.top() + 10
    resize_by(+150)
    assert view.visible_scene_rect().top() == pytest.approx(top, abs=2)  # not thrown back to the top


def test_overview_appears_for_deep_nets_and_jumps(qtbot, win):
    from PySide6.QtCore import QPoint, Qt

    win.open_source("resnet110")
    drawn(qtbot, win)
    overview = win.view.overview
    qtbot.waitUntil(lambda: overview.isVisible() and overview._pix is not None, timeout=5000)
    top = win.view.visible_scene_rect().top()
    qtbot.mouseClick(overview, Qt.LeftButton, pos=QPoint(overview.width() // 2, overview.height() - 5))
    assert win.view.visible_scene_rect().top() > top + 1000


def test_overview_of_a_very_deep_net_shows_where_the_broken_blocks_are(qtbot, win, tmp_path):
    """Hundreds of blocks make every item sub-pixel in the overview: it switches to flat bars,
    and the broken blocks stay visible as red bars at their place in the net."""
    from PySide6.QtGui import QColor

    spec = tmp_path / "deep_broken.toml"
    spec.write_text(TINY_SPEC.replace("blocks = 1", "blocks = 150").replace('shortcut = "A"', 'shortcut = "identity"'))
    win.open_source(str(spec))
    drawn(qtbot, win)
    overview = win.view.overview
    qtbot.waitUntil(lambda: overview.isVisible() and overview._pix is not None, timeout=5000)
    assert overview._sx != overview._sy  # the schematic, stretched to the strip's width
    assert overview.width() >= overview.MIN_WIDTH and overview.labels == ["layer1", "layer2"]  # not a sliver
    image = overview._pix.toImage()
    red = QColor(win.scene.theme.broken).rgb()
    rows = [y for y in range(image.height()) if any(image.pixel(x, y) == red for x in range(image.width()))]
    assert rows, "no broken block drawn in the overview"
    # one broken block (the second stage's first), about half way down the net
    assert 0.3 * image.height() < min(rows) and max(rows) < 0.7 * image.height()
    assert max(rows) - min(rows) < 0.05 * image.height()


def test_shape_change_during_reload_keeps_the_reload(qtbot, win, tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text(TINY_SPEC)
    win.open_source(str(spec))
    drawn(qtbot, win)
    spec.write_text(TINY_SPEC.replace("blocks = 1\nwidth = 32", "blocks = 2\nwidth = 32"))
    win.reload()
    win.set_input_shape("1x3x64x64")  # asked while the file is being read again
    qtbot.waitUntil(lambda: win.is_idle() and win.session.input_shape == (1, 3, 64, 64), timeout=TIMEOUT)
    assert len(win.session.report.blocks) == 3


def test_dropping_a_file_opens_it(qtbot, win, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    spec = tmp_path / "dropped.toml"
    spec.write_text(TINY_SPEC)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(spec))])
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    win.dropEvent(event)
    qtbot.waitUntil(lambda: win.document.drawn is not None and win.is_idle(), timeout=TIMEOUT)
    assert win.session.loaded.name == "tiny"


def test_extension_points_for_other_tabs(qtbot, win):
    from PySide6.QtWidgets import QLabel

    index = win.add_tab(QLabel("training goes here"), "Training")
    assert win.tabs.tabText(index) == "Training" and win.select_tab("train")
    selected = []
    win.moduleSelected.connect(selected.append)
    sessions = []
    win.sessionChanged.connect(sessions.append)
    win.open_source("resnet18")
    drawn(qtbot, win)
    assert sessions and sessions[-1] is win.session
    assert win.select_module("layer1.0") and selected[-1] == "layer1.0"
