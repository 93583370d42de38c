"""The Builder tab: edits redraw the graph, wrong values are marked, undo/redo, the unsaved-changes
prompt, and "Apply fix" on a mismatch mends the net (spec edits, undoable)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from resviz.core.sources import zoo  # noqa: E402
from resviz.core.sources.spec import load_spec  # noqa: E402
from resviz.gui.builder import install  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 30_000


@pytest.fixture
def win(qtbot, monkeypatch):
    # pytest-qt closes the window before fixtures tear down: unsaved edits must not prompt then
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Discard)
    w = QtMainWindow()
    qtbot.addWidget(w)
    install(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()
    assert not w.document.worker.is_running()


def idle(qtbot, w, until=lambda: True):
    qtbot.waitUntil(lambda: w.is_idle() and w.session is not None and until(), timeout=TIMEOUT)


def panel_with(qtbot, w, name="resnet20"):
    w.select_tab("Builder")
    panel = w.builder_tab.panel
    assert panel.new_net(zoo.get(name).spec)
    idle(qtbot, w, lambda: w.session.report.model_name == name)
    return panel


def type_into(qtbot, field, text: str) -> None:
    field.setFocus()
    field.selectAll()
    qtbot.keyClick(field, Qt.Key_Backspace)
    qtbot.keyClicks(field, text)


def block_names(w) -> list[str]:
    return [b.name for b in w.session.report.blocks]


def test_edits_redraw_the_graph_while_typing(qtbot, win):
    panel = panel_with(qtbot, win)
    assert len(block_names(win)) == 9
    type_into(qtbot, panel.fields["stages[0].blocks"], "1")
    idle(qtbot, win, lambda: len(block_names(win)) == 7)
    assert "layer1.1" not in block_names(win)
    assert {n.name for n in win.scene.graph.nodes.values()} >= {"layer1.0", "layer3.2"}
    type_into(qtbot, panel.fields["stages[2].width"], "128")
    idle(qtbot, win, lambda: win.session.report.blocks[-1].output_shape == (1, 128, 8, 8))
    panel.add_stage()
    idle(qtbot, win, lambda: "layer4.0" in block_names(win))
    assert win.session.report.ok and win.session.report.blocks[-1].output_shape == (1, 256, 4, 4)


def test_invalid_values_are_marked_with_the_reason_and_the_graph_stays(qtbot, win):
    panel = panel_with(qtbot, win)
    before = win.session
    field = panel.fields["stages[1].width"]
    type_into(qtbot, field, "3x")
    assert field.property("invalid") is True
    assert "expected an integer" in field.toolTip() and "'3x'" in field.toolTip()
    assert "stages[1].width" in panel.status.text()
    type_into(qtbot, panel.fields["input"], "3x32")
    assert panel.fields["input"].property("invalid") is True and "C×H×W" in panel.fields["input"].toolTip()
    assert not panel.pending() and win.session is before  # nothing invalid is drawn
    assert win.scene.greyed  # the graph on screen is the last valid net: shown as out of date
    type_into(qtbot, field, "48")
    assert field.property("invalid") is False and field.toolTip() != ""
    type_into(qtbot, panel.fields["input"], "3x32x32")
    idle(qtbot, win, lambda: win.session is not before)
    assert win.session.report.blocks[3].output_shape == (1, 48, 16, 16) and not win.scene.greyed


def test_identity_on_a_stride_2_block_is_flagged_and_apply_fix_clears_it(qtbot, win):
    panel = panel_with(qtbot, win)
    panel.table.selectRow(1)
    panel.block_index.setValue(0)
    i = panel.block_policy.findData("identity")
    panel.block_policy.setCurrentIndex(i)
    panel.block_policy.activated.emit(i)
    idle(qtbot, win, lambda: not win.session.report.ok)
    assert [m.block for m in win.session.report.mismatches] == ["layer2.0"]
    assert "layer2.0" in panel.fields["stages[1].shortcut"].toolTip()  # the stage is marked too
    card = next(c for c in win.issues.cards if c.kind == "mismatch")
    assert "block_shortcuts.0" in card.code.text() and "nn." not in card.code.text()
    card.fix_button.click()
    idle(qtbot, win, lambda: win.session.report.ok)
    assert panel.builder.value("stages[1].block_shortcuts") == {"0": "B"}
    assert [c.kind for c in win.issues.cards] == ["ok"]
    panel.undo()  # the fix is one undo step
    idle(qtbot, win, lambda: not win.session.report.ok)
    assert panel.builder.value("stages[1].block_shortcuts") == {"0": "identity"}


def test_apply_fix_on_a_spec_file_edits_it_in_the_builder_not_on_disk(qtbot, win, tmp_path):
    src = tmp_path / "net.toml"
    src.write_text(open("assets/broken_padding.toml").read())
    before = src.read_text()
    win.open_source(str(src))
    idle(qtbot, win, lambda: len(win.session.report.mismatches) == 3)
    cards = [c for c in win.issues.cards if c.kind == "mismatch"]
    assert all(c.fix_button.isEnabled() for c in cards)
    cards[1].fix_button.click()
    idle(qtbot, win, lambda: win.session.report.ok)
    panel = win.builder_tab.panel
    assert panel.builder.path == src and panel.builder.dirty
    assert src.read_text() == before  # the file is only written by Save
    assert panel.save()
    assert "\npadding = 0" not in src.read_text() and "# DELIBERATELY BROKEN" in src.read_text()
    assert load_spec(src).stages[0].padding == 1


def test_undo_redo_with_the_keyboard(qtbot, win):
    panel = panel_with(qtbot, win)
    field = panel.fields["classes"]
    type_into(qtbot, field, "100")
    field.clearFocus()
    type_into(qtbot, panel.fields["stages[0].width"], "32")
    assert panel.builder.value("classes") == 100 and panel.builder.value("stages[0].width") == 32
    qtbot.keyClick(panel.fields["stages[0].width"], Qt.Key_Z, Qt.ControlModifier)
    assert panel.builder.value("stages[0].width") == 16 and panel.fields["stages[0].width"].text() == "16"
    qtbot.keyClick(field, Qt.Key_Z, Qt.ControlModifier)
    assert panel.builder.value("classes") == 10 and field.text() == "10"
    assert not panel.builder.dirty
    qtbot.keyClick(field, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert field.text() == "100"
    idle(qtbot, win, lambda: win.session.report.output_shapes == [(1, 100)])
    assert panel.undo_button.isEnabled() and panel.redo_button.isEnabled()


def test_closing_with_unsaved_changes_asks_first(qtbot, win, monkeypatch):
    panel = panel_with(qtbot, win)
    type_into(qtbot, panel.fields["name"], "mine")
    asked = []

    def answer(choice):
        def question(parent, title, text, *args, **kwargs):
            asked.append(text)
            return choice

        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.Cancel))
    win.close()
    assert win.isVisible() and asked and "unsaved changes" in asked[0]
    assert win.document.worker.is_running()  # nothing was shut down
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.Discard))
    assert panel.new_net(None)  # New asks too; Discard starts over
    assert not panel.builder.dirty and len(asked) == 2
    win.close()
    assert not win.isVisible() and len(asked) == 2  # nothing unsaved any more: no question


def test_save_open_and_export_code(qtbot, win, tmp_path):
    panel = panel_with(qtbot, win, "resnet18")
    type_into(qtbot, panel.fields["classes"], "7")
    out = tmp_path / "net.toml"
    assert panel._save_to(str(out)) and not panel.builder.dirty
    assert load_spec(out).classes == 7
    code = panel.export_code(tmp_path / "model.py")
    assert code is not None and "class Resnet18(nn.Module)" in code.read_text()
    assert panel.new_net(None) and not panel.builder.valid and "stages" in panel.builder.errors
    assert panel.open_spec_file(out) and panel.builder.spec == load_spec(out)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stages]]\nblocks = 0\nwidth = 8\n")
    shown = []
    import resviz.gui.builder.panel as mod

    mod.QMessageBox.warning, real = (lambda *a: shown.append(a[2])), mod.QMessageBox.warning
    try:
        assert not panel.open_spec_file(bad)
    finally:
        mod.QMessageBox.warning = real
    assert "stages[0].blocks" in shown[0] and panel.builder.path == out


def test_apply_fix_on_a_live_module_opens_a_patched_copy_with_the_code_to_paste(qtbot, win):
    import torch

    from tests.test_patch_fix import Net

    torch.manual_seed(0)
    net = Net()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    win.open_module(net, (1, 3, 32, 32), name="Net")
    idle(qtbot, win, lambda: len(win.session.report.mismatches) == 3)
    card = next(c for c in win.issues.cards if c.kind == "mismatch" and "layer2.0" in c.title.text())
    assert "copy of the model" in card.fix_button.toolTip()
    card.fix_button.click()
    idle(qtbot, win, lambda: win.session.loaded.name == "Net (patched)")
    assert [m.block for m in win.session.report.mismatches] == ["layer1.1", "layer2.1"]
    assert "layer2.0 fixed" in win.banner.text() and "shortcut" in win.banner.text()
    for block in ("layer1.1", "layer2.1"):  # the rest, one click each, on the patched copy
        card = next(c for c in win.issues.cards if c.kind == "mismatch" and block in c.title.text())
        card.fix_button.click()
        idle(qtbot, win, lambda b=block: b not in {m.block for m in win.session.report.mismatches})
    assert win.session.report.ok and win.session.loaded.name == "Net (patched)"
    patched = win.session.loaded.module
    patched(torch.randn(2, 3, 32, 32)).sum().backward()  # trainable: real weights, shapes add up
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())  # never mutated
    assert net.layer1[1].conv1.padding == (0, 0)


def test_apply_fix_on_a_python_file_never_edits_the_file(qtbot, win, tmp_path):
    import inspect

    import tests.test_patch_fix as nets

    path = tmp_path / "model.py"
    path.write_text("import torch\nfrom torch import nn\n\n\n" + "\n\n".join(
        inspect.getsource(c) for c in (nets.Block, nets.ProjBlock, nets.Net)))  # fmt: skip
    before = path.read_text()
    win.open_source(f"{path}:Net", input_shape="1x3x32x32")
    idle(qtbot, win, lambda: len(win.session.report.mismatches) == 3)
    card = next(c for c in win.issues.cards if c.kind == "mismatch" and "layer2.1" in c.title.text())
    card.fix_button.click()
    idle(qtbot, win, lambda: win.session.loaded.name.endswith("(patched)"))
    assert [m.block for m in win.session.report.mismatches] == ["layer1.1", "layer2.0"]
    assert "stride" in win.banner.text() and path.read_text() == before
