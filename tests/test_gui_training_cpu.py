"""Training on a CPU in the app: the cores used (and given back), the time a step should take said
before Start, the offer of a smaller input for an ImageNet-size one, and a --screenshot time-out
that names what it waited for."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
torch = pytest.importorskip("torch")
nn = torch.nn

from resviz.gui.app import _waiting_for  # noqa: E402
from resviz.gui.training import estimate as te  # noqa: E402
from resviz.gui.training.tab import install  # noqa: E402
from resviz.gui.training.views import rate_text  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 60_000


THREADS_SEEN: list[int] = []  # torch's intra-op threads inside training forwards (batch > 1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        if x.shape[0] > 1 and not x.is_meta:
            THREADS_SEEN.append(torch.get_num_threads())
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layer1 = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


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


def open_net(qtbot, w, shape, batch=8):
    w.open_module(Net(), shape)
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=TIMEOUT)
    p = w.training_tab.panel
    qtbot.waitUntil(lambda: p.session is w.session, timeout=TIMEOUT)
    p.batch.setValue(batch)
    p.device.setCurrentText("cpu")
    return p


def test_a_step_s_time_is_estimated_before_start_and_an_imagenet_input_gets_a_smaller_offer(
    qtbot, win, monkeypatch
):
    monkeypatch.setattr(te, "_SPEED", {n: 1e9 for n in {1, te.usable_cores()}})  # a slow laptop: 1 GMAC/s
    p = open_net(qtbot, win, (1, 3, 224, 224), batch=32)
    p.steps.setValue(500)
    text = p.estimate.text()
    assert p.estimate.isVisible() and "Estimated about" in text and "a step on this CPU" in text
    assert "500 steps take about" in text
    assert "ImageNet-size input" in text and "href='size:64'" in text and "href='zoo:resnet20'" in text
    p._on_offer("size:64")  # the user takes the offer
    qtbot.waitUntil(lambda: tuple(win.session.input_shape) == (1, 3, 64, 64), timeout=TIMEOUT)
    qtbot.waitUntil(lambda: p.session is win.session, timeout=TIMEOUT)
    assert "Estimated about" in p.estimate.text() and "ImageNet-size" not in p.estimate.text()


def test_a_small_input_gets_no_offer_and_the_estimate_follows_the_batch(qtbot, win, monkeypatch):
    monkeypatch.setattr(te, "_SPEED", {n: 1e9 for n in {1, te.usable_cores()}})
    p = open_net(qtbot, win, (1, 3, 32, 32), batch=8)
    small = p.estimate.text()
    assert "Estimated" in small and "ImageNet" not in small
    p.batch.setValue(256)
    assert p.estimate.text() != small and "batch 256" in p.estimate.text()


def test_training_uses_the_cores_and_gives_torch_s_thread_count_back(qtbot, win, monkeypatch):
    monkeypatch.delenv("RESVIZ_TRAIN_THREADS", raising=False)  # the tests' own cap (conftest.py)
    monkeypatch.setattr(te, "SHARED_STEP_MACS", 0)  # this tiny net's steps too
    monkeypatch.setattr(te, "_SPEED", {1: 1e9, te.usable_cores(): 1.8e9})  # sharing measured faster
    before = torch.get_num_threads()
    p = open_net(qtbot, win, (1, 3, 8, 8), batch=4)
    p.steps.setValue(0)
    assert p.start()
    THREADS_SEEN.clear()
    qtbot.waitUntil(lambda: p.steps_done() >= 2, timeout=TIMEOUT)
    assert THREADS_SEEN and set(THREADS_SEEN) == {te.usable_cores()}  # what the training ran on
    assert torch.get_num_threads() == before  # the UI thread's setting is its own
    p.stop()
    qtbot.waitUntil(lambda: p.controller.state == "stopped", timeout=TIMEOUT)
    assert torch.get_num_threads() == before


def test_threads_are_what_this_machine_runs_fastest_on_and_the_user_may_choose(monkeypatch):
    monkeypatch.delenv("RESVIZ_TRAIN_THREADS", raising=False)
    monkeypatch.setattr(te, "usable_cores", lambda: 4)
    monkeypatch.setattr(te, "_SPEED", {})
    assert te.training_threads(1e6) == 1  # a tiny step: split kernels only wait on each other
    assert te.training_threads(1e10) == 4  # not measured yet: every core
    te._SPEED.update({1: 10e9, 4: 30e9})
    assert te.training_threads(1e10) == 4
    te._SPEED.update({1: 10e9, 4: 5e9})  # a machine busy with other work: one thread is faster
    assert te.training_threads(1e10) == 1
    monkeypatch.setenv("RESVIZ_TRAIN_THREADS", "3")
    assert te.training_threads(1e10) == 3


def test_the_rate_is_never_zero_steps_per_second():
    assert rate_text(0.04) == "<b>25.0</b> s/step"
    assert rate_text(12.34) == "<b>12.3</b> steps/s"
    assert rate_text(0.0, 37.0) == "<b>37.0</b> s/step"
    assert rate_text(0.0) == ""


def test_a_screenshot_time_out_names_the_model_or_the_training(qtbot, win):
    win.open_module(Net(), (1, 3, 8, 8))
    assert "the model" in _waiting_for(win)  # still loading
    qtbot.waitUntil(lambda: win.is_idle() and win.document.drawn is not None, timeout=TIMEOUT)
    tab = win.training_tab
    tab.auto_train(100_000)
    qtbot.waitUntil(lambda: tab.panel.steps_done() >= 1, timeout=TIMEOUT)
    said = _waiting_for(win)
    assert said.startswith("the training (") and "of 100000 steps done" in said and "--input" in said
    tab.panel.stop()
    qtbot.waitUntil(lambda: tab.panel.controller.state == "stopped", timeout=TIMEOUT)


def test_the_app_s_default_batch_is_the_command_line_s(qtbot, win):
    from resviz.core.training import TrainConfig
    from resviz.train_cli import DEFAULT_BATCH

    p = win.training_tab.panel  # fresh settings (conftest): the default, not a remembered batch
    assert p.batch.value() == DEFAULT_BATCH == TrainConfig().batch_size
