"""The Training tab records every run it starts as a run directory, and exports every step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
torch = pytest.importorskip("torch")

from resviz.core.training import RunState, open_run  # noqa: E402
from resviz.gui.training.tab import install  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("RESVIZ_DATA_DIR", str(d))
    return d


@pytest.fixture
def win(qtbot, data_dir):
    w = QtMainWindow()
    qtbot.addWidget(w)
    install(w, None)
    w.show()
    w.select_tab("Training")
    yield w
    w.close()


def zoo_panel(qtbot, w, steps):
    w.open_source("resnet20")
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=TIMEOUT)
    p = w.training_tab.panel
    qtbot.waitUntil(lambda: p.session is w.session, timeout=TIMEOUT)
    p.batch.setValue(2)
    p.steps.setValue(steps)
    p.device.setCurrentText("cpu")
    return p


def same_records(disk, shown):
    assert [r.step for r in disk] == [r.step for r in shown]
    for a, b in zip(disk, shown):
        assert (a.loss, a.accuracy, a.lr) == pytest.approx((b.loss, b.accuracy, b.lr))
        assert a.blocks.keys() == b.blocks.keys()
        for name in a.blocks:
            assert a.blocks[name] == pytest.approx(b.blocks[name], rel=1e-6, nan_ok=True)


def test_a_run_started_in_the_tab_is_recorded_step_by_step(qtbot, win, data_dir):
    p = zoo_panel(qtbot, win, steps=3)
    p.start_btn.click()
    qtbot.waitUntil(lambda: p.controller.state == "finished" and p.steps_done() == 3, timeout=TIMEOUT)
    path = p.controller.recorded["residual"]
    assert path.startswith(str(data_dir / "runs" / "resnet20-"))  # the same place as `resviz train`
    from resviz.gui.training.panel import _home_relative

    assert p.recorded.isVisibleTo(p) and _home_relative(path) in p.recorded.text()
    run = open_run(path)
    same_records(run.records(), p.buffers["residual"].records())
    assert len(run.records()) == 3
    cfg = run.meta["config"]
    assert (cfg["optimizer"], cfg["batch_size"], cfg["device"], cfg["data"]) == ("sgd", 2, "cpu", "synthetic")
    assert cfg["lr"] == pytest.approx(float(p.lr.text())) and cfg["torch"] and cfg["started"]
    assert run.meta["blocks"] == p.names and run.report is not None
    assert run.state is RunState.FINISHED
    win.close()  # closing the window closes the files: the run ends as it was (finished)
    assert open_run(path).state is RunState.FINISHED


def test_stop_reset_and_plain_twin_each_close_their_run_directory(qtbot, win):
    p = zoo_panel(qtbot, win, steps=0)
    p.twin_btn.click()
    qtbot.waitUntil(lambda: p.steps_done() >= 2, timeout=TIMEOUT)
    first = dict(p.controller.recorded)
    assert first["plain"] == first["residual"] + "-plain"
    p.reset()  # back to step 0: the steps go to a new folder, the old one is closed
    qtbot.waitUntil(lambda: p.controller.recorded.get("residual") not in (None, first["residual"]),
                    timeout=TIMEOUT)  # fmt: skip
    old = open_run(first["residual"])
    assert old.state is RunState.STOPPED and len(old.records()) >= 2
    assert open_run(first["plain"]).meta["config"]["plain"] is True
    p.resume()
    qtbot.waitUntil(lambda: p.steps_done() >= 2, timeout=TIMEOUT)
    p.stop()
    qtbot.waitUntil(lambda: p.controller.state == "stopped", timeout=TIMEOUT)
    for key in ("residual", "plain"):
        run = open_run(p.controller.recorded[key])
        assert run.state is RunState.STOPPED
        same_records(run.records(), p.buffers[key].records())


class TinyBlock(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


class TinyNet(torch.nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, width, 3, padding=1)
        self.layer1 = torch.nn.Sequential(TinyBlock(width), TinyBlock(width))
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


def test_export_writes_every_step_as_resviz_train_does(qtbot, win, tmp_path):
    from resviz.core.training import RecordWriter
    from resviz.train_cli import _open_writers

    win.open_module(TinyNet(), (1, 3, 4, 4))
    qtbot.waitUntil(lambda: win.is_idle() and win.document.drawn is not None, timeout=TIMEOUT)
    p = win.training_tab.panel
    qtbot.waitUntil(lambda: p.session is win.session, timeout=TIMEOUT)
    p.model.capacity = 8  # the tab keeps 8 rows, then thins (4,096 in the app)
    p.batch.setValue(2)
    p.steps.setValue(30)
    p.device.setCurrentText("cpu")
    p.twin_btn.click()
    qtbot.waitUntil(lambda: p.controller.state == "finished" and p.steps_done() == 30, timeout=TIMEOUT)
    assert len(p.buffers["residual"].records()) < 30  # the tab holds a thinned view
    for fmt in ("csv", "jsonl"):
        files = p.export(tmp_path / f"run.{fmt}")
        assert [f.name for f in files] == [f"run.{fmt}", f"run.plain.{fmt}"]
        for key, got in zip(("residual", "plain"), files):
            run = open_run(p.controller.recorded[key])
            records = run.records()
            assert [r.step for r in records] == list(range(30))
            # what `resviz train --csv/--jsonl` writes for the same records, with its own code
            cli = tmp_path / f"cli-{key}.{fmt}"
            args = SimpleNamespace(
                csv=str(cli) if fmt == "csv" else None, jsonl=str(cli) if fmt == "jsonl" else None
            )
            (writer,) = _open_writers(args, SimpleNamespace(block_names=run.meta["blocks"]), RecordWriter)
            for r in records:
                writer.write(r)
            writer.close()
            assert got.read_bytes() == cli.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_closing_the_window_mid_run_closes_its_run_directory(qtbot, win):
    win.open_module(TinyNet(), (1, 3, 4, 4))
    qtbot.waitUntil(lambda: win.is_idle() and win.document.drawn is not None, timeout=TIMEOUT)
    p = win.training_tab.panel
    qtbot.waitUntil(lambda: p.session is win.session, timeout=TIMEOUT)
    p.batch.setValue(2)
    p.steps.setValue(0)  # unlimited: still running when the window closes
    p.device.setCurrentText("cpu")
    p.start_btn.click()
    qtbot.waitUntil(lambda: p.steps_done() >= 3, timeout=TIMEOUT)
    path = p.controller.recorded["residual"]
    shown = p.steps_done()
    win.close()
    run = open_run(path)
    assert run.state is RunState.STOPPED and run.meta["ended"]
    assert "window was closed" in run.meta["message"]
    steps = [r.step for r in run.records()]
    assert steps == list(range(len(steps))) and len(steps) >= shown


def test_the_recorded_path_is_shown_home_relative():
    from pathlib import Path

    from resviz.gui.training.panel import _home_relative

    assert _home_relative(Path.home() / "runs" / "r1") == "~/runs/r1"
    assert _home_relative("/srv/shared/runs/r1") == "/srv/shared/runs/r1"
