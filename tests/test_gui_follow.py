"""The app follows a run directory: ``resviz RUN_DIR`` / File → Open run… draws the stored graph and
the recorded steps, then follows records as another writer appends them (a torn last line and a
writer killed mid-record included), and a second run can be overlaid, dashed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
torch = pytest.importorskip("torch")
nn = torch.nn

from PySide6.QtCore import Qt  # noqa: E402

from resviz.core.training import RunState, RunWriter  # noqa: E402
from resviz.core.training.runreport import report_json  # noqa: E402
from resviz.gui.training.tab import install  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 30_000


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(Block(4), Block(4))
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


BLOCKS = ["layer1.0", "layer1.1"]


def record(step: int) -> dict:
    g = 1.0 / (step + 1)
    return {"step": step, "loss": 2.3 - 0.01 * step, "accuracy": 0.1, "lr": 0.1, "seconds": 0.01,
            "nonfinite": False, "message": "", "flags": {}, "time": 1000.0 + step,
            "blocks": {b: {"grad_norm": g, "input_grad_norm": g, "output_grad_norm": g / 2,
                           "residual_ratio": 0.5, "gain": 2.0} for b in BLOCKS}}  # fmt: skip


@pytest.fixture(scope="module")
def report():
    import resviz

    return report_json(resviz.analyze(Net(), (1, 3, 8, 8)))


def new_run(path, report, steps: int, name="net") -> RunWriter:
    w = RunWriter.create(path, name=name, config={"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "steps": 0},
                         blocks=BLOCKS, report=report)  # fmt: skip
    for s in range(steps):
        w.write(record(s))
    return w


@pytest.fixture
def win(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.resize(1400, 900)
    install(w, None)
    w.show()
    w.select_tab("Training")
    yield w
    w.close()


def open_run(qtbot, w, path):
    w.open_source(str(path))
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=TIMEOUT)
    assert w.document.error is None, w.document.error
    p = w.training_tab.panel
    qtbot.waitUntil(lambda: p.following, timeout=TIMEOUT)
    return p


def latest(p, which="residual"):
    b = p.buffers.get(which)
    return -1 if b is None or b.latest is None else int(b.latest["step"])


def test_a_run_opens_with_its_graph_and_recorded_steps(qtbot, win, tmp_path, report):
    w = new_run(tmp_path / "r", report, 12)
    w.close(RunState.FINISHED)
    p = open_run(qtbot, win, tmp_path / "r")
    assert win.session.loaded.kind == "run" and win.session.report.model_name == report["graph"]["model_name"]
    assert {n.block for n in win.scene.graph.nodes.values() if n.block} >= set(
        BLOCKS
    )  # drawn from report.json
    assert latest(p) == 11 and p.names == BLOCKS
    p.redraw()
    assert p.loss_plot.point_count("residual") == 12
    assert "finished" in p.status.text()
    assert not p.start_btn.isEnabled() and not p.start()  # no model code: nothing to train
    assert "recorded run" in p.banner_text.text()
    assert win.set_input_shape("1x3x32x32") is False  # drawn at the shape it was trained at


def test_a_recorded_run_shows_its_own_settings_not_the_forms(qtbot, win, tmp_path, report):
    """The form holds the settings of a run to start; for a recorded run they would contradict
    the run's own (500 steps for a 30-step run): it is hidden, and the detail line says them."""
    p = win.training_tab.panel
    assert p.settings_widgets and all(w.isVisibleTo(p) for w in p.settings_widgets)
    w = RunWriter.create(tmp_path / "r", name="net", blocks=BLOCKS, report=report,
                         config={"optimizer": "sgd", "lr": 0.1, "batch_size": 4, "steps": 30})  # fmt: skip
    for s in range(3):
        w.write(record(s))
    w.close(RunState.FINISHED)
    open_run(qtbot, win, tmp_path / "r")
    assert p.steps in p.settings_widgets and p.lr in p.settings_widgets
    assert not any(w.isVisibleTo(p) for w in p.settings_widgets)
    assert "sgd lr 0.1 · batch 4 · 30 steps" in p.detail.text()
    win.open_source("resnet20")  # a model to train again: the form is back
    qtbot.waitUntil(lambda: win.is_idle() and win.session.loaded.kind != "run", timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not p.following, timeout=TIMEOUT)
    assert all(w.isVisibleTo(p) for w in p.settings_widgets)


def test_the_app_follows_appended_records_and_a_torn_last_line(qtbot, win, tmp_path, report):
    w = new_run(tmp_path / "r", report, 3)
    p = open_run(qtbot, win, tmp_path / "r")
    assert latest(p) == 2 and "running" in p.status.text()
    for s in range(3, 8):
        w.write(record(s))
    qtbot.waitUntil(lambda: latest(p) == 7, timeout=TIMEOUT)
    steps = tmp_path / "r" / "steps.jsonl"
    line = json.dumps(record(8))
    with open(steps, "a") as fh:  # half a record: the writer is mid-line
        fh.write(line[:40])
        fh.flush()
    watch = p.watches["residual"]
    polls = watch.polls
    qtbot.waitUntil(lambda: watch.polls > polls, timeout=TIMEOUT)
    assert latest(p) == 7  # the torn line is not read (yet)
    with open(steps, "a") as fh:  # ... and completed
        fh.write(line[40:] + "\n")
    qtbot.waitUntil(lambda: latest(p) == 8, timeout=TIMEOUT)
    w.close(RunState.FINISHED)
    qtbot.waitUntil(lambda: "finished" in p.status.text(), timeout=TIMEOUT)
    assert p.buffers["residual"].count == 9


WRITER = r"""
import json, sys, time
steps = open(sys.argv[1], "a")
for line in sys.argv[2:-1]:
    steps.write(line + "\n")
    steps.flush()
steps.write(sys.argv[-1][: len(sys.argv[-1]) // 2])   # killed half-way through this record
steps.flush()
print("mid-record", flush=True)
time.sleep(600)
"""


def test_a_writer_killed_mid_record_leaves_a_partial_line_that_is_ignored(qtbot, win, tmp_path, report):
    new_run(tmp_path / "r", report, 2)  # the writer object is dropped: the process below takes over
    p = open_run(qtbot, win, tmp_path / "r")
    steps = tmp_path / "r" / "steps.jsonl"
    lines = [json.dumps(record(s)) for s in range(2, 6)]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(steps), *lines], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "mid-record"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    qtbot.waitUntil(lambda: latest(p) == 4, timeout=TIMEOUT)  # every complete record, not the partial one
    with open(steps, "a") as fh:  # a restarted writer appends complete records after the partial one
        for s in (6, 7):
            fh.write(json.dumps(record(s)) + "\n")
    qtbot.waitUntil(lambda: latest(p) == 7, timeout=TIMEOUT)
    assert p.watches["residual"].follower.reader.skipped == 1  # the partial record merged with step 6
    assert [int(s) for s in p.buffers["residual"].steps()] == [0, 1, 2, 3, 4, 7]


def test_a_second_run_is_overlaid_dashed(qtbot, win, tmp_path, report):
    new_run(tmp_path / "res", report, 10, name="resnet").close(RunState.FINISHED)
    new_run(tmp_path / "plain", report, 6, name="plain").close(RunState.FINISHED)
    p = open_run(qtbot, win, tmp_path / "res")
    assert p.overlay(tmp_path / "plain")
    p.redraw()
    assert latest(p, "plain") == 5 and p.run_pick.isVisible() and p.run_pick.itemText(1) == "plain"
    assert p.loss_plot.curves["plain"][1].opts["pen"].style() == Qt.DashLine  # as the app's own plain twin
    assert p.loss_plot.point_count("plain") == 6
    assert not p.overlay(tmp_path / "nothing-here")
    assert "Cannot overlay" in p.banner_text.text()


def test_resviz_run_dir_draws_its_picture_and_exits_0(qtbot, qapp, tmp_path, report, capsys):
    from PySide6.QtGui import QImage

    from resviz.cli import main

    w = new_run(tmp_path / "r", report, 4)
    w.log("error", "probe failed: layer1.1 output hook")
    code = main([str(tmp_path / "r"), "--screenshot", str(tmp_path / "r.png"), "--size", "1000x700"])
    assert code == 0, capsys.readouterr().err
    assert not QImage(str(tmp_path / "r.png")).isNull()


def test_a_live_run_whose_writer_went_quiet_says_so(qtbot, win, tmp_path, report):
    w = new_run(tmp_path / "r", report, 4)
    w.log("error", "probe failed: layer1.1 output hook")
    p = open_run(qtbot, win, tmp_path / "r")
    assert "1 probe error in events.jsonl" in p.detail.text()
    assert "probe failed" in p.detail.toolTip()
    assert "no new step" not in p.status.text()
    p.watches["residual"].follower.last_growth -= 300  # five minutes without a record
    p._update_status()
    assert "no new step for 5 min" in p.status.text() and "running" in p.status.text()


def test_file_overlay_run_opens_the_run_off_the_ui_thread(qtbot, win, tmp_path, report, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    new_run(tmp_path / "res", report, 10, name="resnet").close(RunState.FINISHED)
    new_run(tmp_path / "plain", report, 6, name="plain").close(RunState.FINISHED)
    p = open_run(qtbot, win, tmp_path / "res")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "plain"))
    win.actions_.overlay_run.trigger()
    qtbot.waitUntil(lambda: latest(p, "plain") == 5, timeout=TIMEOUT)
    assert "plain" in p.detail.text()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "nothing"))
    win.actions_.overlay_run.trigger()
    qtbot.waitUntil(lambda: "Cannot overlay" in p.banner_text.text(), timeout=TIMEOUT)


def test_file_open_run_opens_the_chosen_folder(qtbot, win, tmp_path, report, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    new_run(tmp_path / "r", report, 3).close(RunState.FINISHED)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "r"))
    win.actions_.open_run.trigger()
    qtbot.waitUntil(lambda: win.training_tab.built and win.training_tab.panel.following, timeout=TIMEOUT)
    assert latest(win.training_tab.panel) == 2 and win.session.loaded.kind == "run"


def test_without_change_notifications_the_poll_still_follows(qtbot, tmp_path, report):
    """A folder on shared storage written by another machine sends no inotify events: the timer reads."""
    from resviz.gui.training.follow import RunFollower
    from resviz.gui.training.follow_timer import QtRunWatch

    w = new_run(tmp_path / "r", report, 2)
    watch = QtRunWatch(RunFollower.open(tmp_path / "r"), poll_ms=50)
    watch._watcher.removePaths(watch._watcher.files() + watch._watcher.directories())  # no notifications
    try:
        for s in range(2, 5):
            w.write(record(s))
        with qtbot.waitSignal(watch.updated, timeout=TIMEOUT):
            pass
        qtbot.waitUntil(lambda: watch.follower.store.latest["step"] == 4, timeout=TIMEOUT)
    finally:
        watch.stop()
        watch.deleteLater()
