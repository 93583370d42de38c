"""The Training tab records every run it starts as a run directory, and exports every step."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("torch")

from resviz.core.training import RunState, open_run  # noqa: E402
from resviz.gui.qt_main_window import QtMainWindow  # noqa: E402
from resviz.gui.qt_training import install  # noqa: E402

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
    assert p.recorded.isVisibleTo(p) and path in p.recorded.text()
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
