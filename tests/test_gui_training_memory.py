"""The Training tab refuses, before Start, a batch that will not fit in memory (the command
line's check), with the numbers and the batch that fits, in the tab."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
torch = pytest.importorskip("torch")

from resviz.core.training import data  # noqa: E402
from resviz.gui.training.tab import install  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture
def panel(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    tab = install(w, None)
    w.show()
    w.select_tab("Training")
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    w.open_module(net, (1, 3, 16, 16))
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=TIMEOUT)
    p = w.training_tab.panel
    qtbot.waitUntil(lambda: p.session is w.session, timeout=TIMEOUT)
    p.steps.setValue(1)
    p.device.setCurrentText("cpu")
    yield p
    w.close()
    assert not tab.built or not tab.panel.controller.is_running()


def test_a_batch_that_does_not_fit_is_refused_before_start_with_the_batch_that_fits(qtbot, panel, monkeypatch):
    report = panel.session.report
    at4 = sum(data.training_memory(report, 4, "sgd").values())
    per_item = sum(data.training_memory(report, 8, "sgd").values()) - at4  # 4 more items
    free = int((at4 + per_item / 8) / data._MEMORY_HEADROOM)  # batch 4 fits, batch 5 does not
    monkeypatch.setattr(data, "available_memory", lambda device="cpu": free)
    panel.optimizer.setCurrentIndex(panel.optimizer.findData("sgd"))

    panel.batch.setValue(8)
    assert panel.start() is False
    assert not panel.controller.has_run
    text = panel.banner_text.text()
    assert panel.banner.isVisible() and "Cannot start" in text
    assert "at batch 8" in text and data.human_bytes(free) in text and "Set Batch to 4 or less" in text
    assert "--batch" not in text

    panel.batch.setValue(4)
    assert panel.start() is True
    qtbot.waitUntil(lambda: panel.controller.state in ("finished", "error"), timeout=TIMEOUT)
    assert panel.controller.state == "finished", panel.banner_text.text()


def test_even_batch_one_not_fitting_says_so(qtbot, panel, monkeypatch):
    monkeypatch.setattr(data, "available_memory", lambda device="cpu": 1)
    panel.batch.setValue(2)
    assert panel.start() is False and not panel.controller.has_run
    assert "Even batch 1 does not fit" in panel.banner_text.text()


def test_a_twin_run_counts_both_models(qtbot, panel, monkeypatch):
    """A run beside the plain twin keeps two models' weights, gradients and optimizer state: a
    batch that fits one model alone but not the pair is refused for the twin run only."""
    report = panel.session.report
    one = sum(data.training_memory(report, 4, "sgd").values())
    two = sum(data.training_memory(report, 4, "sgd", models=2).values())
    assert two - one == data.training_memory(report, 4, "sgd")["weights"] > 0
    monkeypatch.setattr(data, "available_memory", lambda device="cpu": int((one + two) / 2 / data._MEMORY_HEADROOM))
    panel.optimizer.setCurrentIndex(panel.optimizer.findData("sgd"))
    panel.batch.setValue(4)
    assert panel.start(twin=True) is False and not panel.controller.has_run
    assert "beside its plain twin at batch 4" in panel.banner_text.text()
    assert panel.start() is True
    qtbot.waitUntil(lambda: panel.controller.state in ("finished", "error"), timeout=TIMEOUT)
    assert panel.controller.state == "finished", panel.banner_text.text()
