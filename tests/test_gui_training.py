"""The Training tab: a live run on a background thread, its plots, controls, faults and exports."""

from __future__ import annotations

import math
import threading
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
torch = pytest.importorskip("torch")
nn = torch.nn

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from resviz.gui.training.tab import install  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 60_000


class Block(nn.Module):
    def __init__(self, c, delay=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.delay = delay

    def forward(self, x):
        if self.delay and x.shape[0] > 1:
            SLOW_BLOCKS_ENTERED.append(x.shape[0])  # module globals: the trained copy shares them
            INSIDE_A_STEP.set()
            time.sleep(self.delay)  # a slow layer: the step is long, so a close lands inside it
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


SLOW_BLOCKS_ENTERED: list[int] = []
INSIDE_A_STEP = threading.Event()


class TinyNet(nn.Module):
    def __init__(self, width=8, blocks=3, delay=0.0):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layer1 = nn.Sequential(*[Block(width, delay) for _ in range(blocks)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


class RaisingNet(TinyNet):
    def forward(self, x):
        if x.shape[0] > 1:  # the analysis (batch 1) runs; training (batch 8) does not
            raise ValueError("boom in the user's forward")
        return super().forward(x)


@pytest.fixture
def win(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.resize(1400, 900)
    tab = install(w, None)
    w.show()
    w.select_tab("Training")
    yield w
    w.close()
    assert not tab.built or not tab.panel.controller.is_running()


def panel_for(qtbot, w, model=None, shape=(1, 3, 8, 8), batch=8, steps=0, lr=None):
    w.open_module(model if model is not None else TinyNet(), shape)
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=TIMEOUT)
    p = w.training_tab.panel
    qtbot.waitUntil(lambda: p.session is w.session, timeout=TIMEOUT)
    p.batch.setValue(batch)
    p.steps.setValue(steps)
    p.device.setCurrentText("cpu")
    if lr is not None:
        p.lr.setText(str(lr))
    return p


def wait_state(qtbot, p, *states, timeout=TIMEOUT):
    qtbot.waitUntil(lambda: p.controller.state in states, timeout=timeout)


# ---------------------------------------------------------------------------- a run and its plots


def plain_data(obj) -> bool:
    """Only what the worker may send: dicts/lists of numbers, strings, bools and None."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain_data(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(plain_data(v) for v in obj)
    return obj is None or type(obj) in (int, float, str, bool)


def test_run_fills_every_plot(qtbot, win):
    p = panel_for(qtbot, win, steps=10)
    assert p.names == ["layer1.0", "layer1.1", "layer1.2"]
    sent = []
    p.controller.stepped.connect(sent.append)
    p.controller.started.connect(sent.append)
    assert p.start()
    wait_state(qtbot, p, "finished")
    p.redraw()
    assert p.steps_done() == 10
    assert sent and all(plain_data(x) for x in sent)  # no tensors or modules cross the threads
    assert sum(len(x) for x in sent if isinstance(x, list)) == 10
    plot = p.probe_plot
    assert [len(plot.series(n)[0]) for n in p.names] == [10, 10, 10]
    assert [path.elementCount() for path in plot.curve.paths] == [10, 10, 10]  # drawn: one point per step
    assert p.heatmap.image.image.shape == (10, 3)  # steps × blocks
    assert p.highway.point_count("residual") == 3 and p.highway.point_count("residual0") == 3
    assert p.loss_plot.point_count() == 10 and p.acc_plot.point_count() == 10
    assert p.loss_plot.point_count("plain") == 0
    assert "finished" in p.status.text() and "step <b>10</b>" in p.status.text()
    # the graph's blocks are tinted by their gradient norm, and the scale says from what to what
    tinted = [i for i in win.scene.node_items.values() if i._highlight is not None]
    assert {i.node.block for i in tinted} >= {"layer1.0", "layer1.1", "layer1.2"}
    assert p.tint_scale.lo is not None and p.tint_scale.lo <= p.tint_scale.hi
    p.tint.setChecked(False)
    assert all(i._highlight is None for i in win.scene.node_items.values())
    # switching the probe redraws from the same buffers
    p.probe.setCurrentIndex(p.probe.findData("input_grad_norm"))
    p.redraw()
    got = p.probe_plot.series("layer1.0")[1]
    want = p.buffers["residual"].probe("input_grad_norm")[:, 0]
    assert list(got) == pytest.approx(list(want), nan_ok=True)


def test_pause_step_resume_and_lr_change(qtbot, win):
    p = panel_for(qtbot, win, steps=0)
    p.start()
    qtbot.waitUntil(lambda: p.steps_done() >= 3, timeout=TIMEOUT)
    p.pause()
    wait_state(qtbot, p, "paused")
    n = p.steps_done()
    qtbot.wait(400)
    assert p.steps_done() == n  # paused: no more steps
    p.step()
    qtbot.waitUntil(lambda: p.steps_done() == n + 1, timeout=TIMEOUT)
    wait_state(qtbot, p, "paused")
    qtbot.wait(200)
    assert p.steps_done() == n + 1  # exactly one
    p.set_lr(0.0123)
    p.resume()
    wait_state(qtbot, p, "running")
    qtbot.waitUntil(lambda: p.steps_done() >= n + 4, timeout=TIMEOUT)
    res = p.buffers["residual"]
    assert res.latest["lr"] == pytest.approx(0.0123)
    assert res.scalar("lr")[n] == pytest.approx(0.1)  # the step before the change kept its lr
    # the learning rate can also change while it runs
    p.lr.setText("0.005")
    p.lr.editingFinished.emit()
    qtbot.waitUntil(lambda: p.buffers["residual"].latest["lr"] == pytest.approx(0.005), timeout=TIMEOUT)
    p.stop()
    wait_state(qtbot, p, "stopped")
    assert p.export_btn.isEnabled() and p.start_btn.isEnabled() and not p.pause_btn.isEnabled()
    p.reset()  # no run: clears the plots
    assert not p.buffers


def test_reset_goes_back_to_step_zero(qtbot, win):
    p = panel_for(qtbot, win, steps=4)
    p.start()
    wait_state(qtbot, p, "finished")
    first = p.buffers["residual"].first["loss"]
    p.reset()
    qtbot.waitUntil(lambda: p.steps_done() == 0 and p.controller.state == "paused", timeout=TIMEOUT)
    p.step()
    qtbot.waitUntil(lambda: p.steps_done() == 1, timeout=TIMEOUT)
    assert p.buffers["residual"].latest["step"] == 0
    assert p.buffers["residual"].latest["loss"] == pytest.approx(first)  # the same initial weights


def test_close_mid_step_ends_the_step_at_once(qtbot):
    """Closing inside a long step stops it at the next layer rather than waiting for the step to
    end (how long the close takes is measured by ``benchmarks/bench_gui_training.py --only close``)."""
    SLOW_BLOCKS_ENTERED.clear()
    INSIDE_A_STEP.clear()
    w = QtMainWindow()
    qtbot.addWidget(w)
    tab = install(w, None)
    w.show()
    w.select_tab("Training")
    p = panel_for(qtbot, w, model=TinyNet(delay=0.3), steps=0)  # a step passes three slow blocks
    p.start()
    qtbot.waitUntil(INSIDE_A_STEP.is_set, timeout=TIMEOUT)  # the first block of the first step
    w.close()
    assert not p.controller.is_running()
    assert SLOW_BLOCKS_ENTERED == [8]  # the step ended inside its first block: no second one ran
    assert p.steps_done() == 0
    assert tab._closed


# ---------------------------------------------------------------------------- faults


def test_nan_pauses_with_message_flags_and_resume(qtbot, win):
    p = panel_for(qtbot, win, steps=0, lr=1e5)
    p.start()
    wait_state(qtbot, p, "faulted")
    p.redraw()
    assert p.banner.isVisible() and p.resume_low_btn.isVisible()
    text = p.banner_text.text()
    assert "NaN/Inf" in text and "learning rate" in text
    assert p.fault["blocks"], p.fault
    assert p.buffers["residual"].latest["nonfinite"]
    n = p.steps_done()
    qtbot.wait(300)
    assert p.steps_done() == n  # paused by the fault
    # flagged red in the graph and marked in the plots
    red = [i for i in win.scene.node_items.values() if i._highlight is not None and i._highlight.red() > 200
           and i._highlight.green() < 200]  # fmt: skip
    assert red
    assert p.probe_plot.fault_lines and p.heatmap.fault_lines
    assert p.flag_list.count() > 0 and p.badge.isVisible()  # exploding norms listed before the NaN
    p.resume_low_btn.click()
    qtbot.waitUntil(lambda: p.steps_done() > n, timeout=TIMEOUT)
    assert float(p.lr.text()) == pytest.approx(1e4)
    assert p.buffers["residual"].latest["lr"] == pytest.approx(1e4)
    p.stop()
    wait_state(qtbot, p, "stopped")


def test_error_in_user_forward_is_shown_and_app_survives(qtbot, win):
    p = panel_for(qtbot, win, model=RaisingNet(), steps=5)
    p.start()
    wait_state(qtbot, p, "error")
    assert p.banner.isVisible() and not p.resume_low_btn.isVisible()
    assert "boom in the user's forward" in p.error
    assert "test_gui_training.py" in p.error and "line" in p.error
    # the app goes on: another model trains in the same window
    p = panel_for(qtbot, win, steps=2)
    assert not p.banner.isVisible()
    p.start()
    wait_state(qtbot, p, "finished")
    assert p.steps_done() == 2


def test_bad_settings_are_refused_before_a_run(qtbot, win):
    p = panel_for(qtbot, win)
    p.lr.setText("0")
    assert not p.start() and p.banner.isVisible()
    p.lr.setText("0.1")
    p.data_kind.setCurrentIndex(3)  # npz without a file
    assert not p.start()
    p.data_path.setText("/no/such/file.npz")
    assert p.start()
    wait_state(qtbot, p, "error")
    assert "file.npz" in p.error


# ---------------------------------------------------------------------------- twin, export


def test_twin_run_draws_both_runs(qtbot, win, tmp_path):
    from resviz.core.training import read_csv, read_jsonl

    p = panel_for(qtbot, win, steps=6)
    p.twin_btn.click()
    wait_state(qtbot, p, "finished")
    p.redraw()
    assert p.twin and set(p.buffers) == {"residual", "plain"}
    assert p.loss_plot.point_count("residual") == 6 and p.loss_plot.point_count("plain") == 6
    assert p.acc_plot.point_count("plain") == 6
    assert p.highway.point_count("residual") == 3 and p.highway.point_count("plain") == 3
    assert p.loss_plot.curves["plain"][1].opts["pen"].style() == Qt.DashLine
    assert p.loss_plot.curves["residual"][1].opts["pen"].style() == Qt.SolidLine
    assert "plain" in p.status.text()
    assert p.run_pick.isVisibleTo(p)
    p.run_pick.setCurrentIndex(1)  # the curves of the plain twin
    p.redraw()
    got = p.probe_plot.series("layer1.1")[1]
    assert list(got) == pytest.approx(list(p.buffers["plain"].probe("grad_norm")[:, 1]), nan_ok=True)
    # export: CSV and JSON lines, the twin's records beside
    files = p.export(tmp_path / "run.csv")
    assert [f.name for f in files] == ["run.csv", "run.plain.csv"]
    recs = read_csv(files[0])
    assert [r.step for r in recs] == list(range(6))
    assert set(recs[0].blocks) == {"layer1.0", "layer1.1", "layer1.2"}
    assert recs[-1].loss == pytest.approx(p.buffers["residual"].latest["loss"])
    files = p.export(tmp_path / "run.jsonl")
    plain = read_jsonl(files[1])
    assert len(plain) == 6 and math.isfinite(plain[0].blocks["layer1.0"]["grad_norm"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary files left


# ---------------------------------------------------------------------------- graph <-> plots


def test_selecting_a_block_highlights_its_curve_and_clicking_a_curve_selects_it(qtbot, win):
    p = panel_for(qtbot, win, steps=8)
    p.start()
    wait_state(qtbot, p, "finished")
    p.redraw()
    assert win.select_module("layer1.1")
    qtbot.waitUntil(lambda: p.selected == "layer1.1", timeout=TIMEOUT)
    widths = [p.probe_plot.pen_of(n).widthF() for n in p.names]
    assert widths[1] > 2 and widths[0] < 1.5 and widths[2] < 1.5
    assert p.probe_plot.pen_of("layer1.0").color().alpha() < 100  # the others dimmed
    assert p.probe_plot.curve.order[-1] == 1  # drawn on top
    assert p.heatmap.sel_lines[0].isVisible() and p.highway.sel_line.isVisible()
    win.select_module("layer1.1.conv1")  # a layer inside the block: its block's curve
    qtbot.waitUntil(lambda: win.is_idle(), timeout=TIMEOUT)
    assert p.selected == "layer1.1"

    calls = []
    original = win.select_module
    win.select_module = lambda name, unfold=True: calls.append(name) or original(name, unfold)
    plot = p.probe_plot
    plot.getPlotItem().autoRange()
    qtbot.wait(50)

    def separation(row: int) -> float:  # how far layer1.2 is from every other curve (log units)
        _, y0 = p.probe_plot.point_of("layer1.2", row=row)
        return min(abs(math.log10(y0) - math.log10(p.probe_plot.point_of(n, row=row)[1]))
                   for n in p.names if n != "layer1.2")  # fmt: skip

    x, y = p.probe_plot.point_of("layer1.2", row=max(range(1, 7), key=separation))

    # Map data → screen afresh on each try (the view's transform settles after auto-range), and
    # space the tries wider than the double-click interval, which pyqtgraph would otherwise eat.
    for _ in range(5):
        scene_pt = plot.vb.mapViewToScene(QPointF(x, math.log10(y)))
        qtbot.mouseClick(plot.viewport(), Qt.LeftButton, pos=plot.mapFromScene(scene_pt))
        qtbot.wait(QApplication.doubleClickInterval() + 100)
        if calls:
            break
    assert set(calls) == {"layer1.2"} and p.selected == "layer1.2"
    scene_pt = plot.vb.mapViewToScene(QPointF(x, math.log10(y)))
    # a click far from every curve selects nothing
    assert plot.click_at(x, y * 1e4) is None
    # the heatmap and the highway answer clicks too
    assert p.heatmap.click_at(x, 0.5) == "layer1.0"
    assert p.highway.click_at(2, p.highway.values["residual"][2]) == "layer1.2"
    # and hovering names the block
    plot._on_move(scene_pt)
    assert plot.label.isVisible() and "layer1.2" in plot.label.toPlainText()


def test_new_model_stops_the_run_and_resets_the_panel(qtbot, win):
    p = panel_for(qtbot, win, steps=0)
    p.start()
    qtbot.waitUntil(lambda: p.steps_done() >= 2, timeout=TIMEOUT)
    p = panel_for(qtbot, win, model=TinyNet(blocks=2))
    qtbot.waitUntil(lambda: p.controller.state in ("stopped", "idle"), timeout=TIMEOUT)
    assert p.names == ["layer1.0", "layer1.1"] and not p.buffers
    assert p.probe_plot.curves == p.names and p.heatmap.names == p.names
    p.start()
    qtbot.waitUntil(lambda: p.steps_done() >= 1, timeout=TIMEOUT)
    p.stop()


# ---------------------------------------------------------------------------- command line


def test_screenshot_after_training(qapp, tmp_path, capsys):
    from resviz.cli import main

    path = tmp_path / "train.png"
    code = main(["resnet20", "--input", "3x16x16", "--screenshot", str(path), "--train", "5",
                 "--size", "1200x800"])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "trained 5 steps for the screenshot" in err, err
    image = QImage(str(path))
    assert not image.isNull() and (image.width(), image.height()) == (1200, 800)
