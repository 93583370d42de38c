"""Training on a CPU in the app: the threads it runs on (torch's, never changed by resviz), the time a step should take said
before Start, the offer of a smaller input for an ImageNet-size one, and a --screenshot time-out
that names what it waited for."""

from __future__ import annotations

import sys
import threading

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
    return open_net_shown(qtbot, w, batch)


def open_net_shown(qtbot, w, batch=8):
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None, timeout=TIMEOUT)
    p = w.training_tab.panel
    qtbot.waitUntil(lambda: p.session is w.session, timeout=TIMEOUT)
    p.batch.setValue(batch)
    p.device.setCurrentText("cpu")
    return p


def test_a_step_s_time_is_estimated_before_start_and_an_imagenet_input_gets_a_smaller_offer(
    qtbot, win, monkeypatch
):
    monkeypatch.setattr(te, "_SPEED", {torch.get_num_threads(): 1e9})  # a slow laptop: 1 GMAC/s
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
    monkeypatch.setattr(te, "_SPEED", {torch.get_num_threads(): 1e9})
    p = open_net(qtbot, win, (1, 3, 32, 32), batch=8)
    small = p.estimate.text()
    assert "Estimated" in small and "ImageNet" not in small
    p.batch.setValue(256)
    assert p.estimate.text() != small and "batch 256" in p.estimate.text()


def _new_thread_sees() -> int:
    """torch's intra-op count as a thread started now gets it: the process-wide setting."""
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    return seen[0]


@pytest.fixture
def host_threads():
    """The host process chose 3 intra-op threads (not the tests' 1, nor this machine's cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def test_resviz_show_trains_on_the_host_s_threads_and_changes_no_torch_setting(qtbot, host_threads):
    import resviz

    w = resviz.show(Net(), (1, 3, 8, 8), block=False)  # the library path, in this (the host's) process
    try:  # the window deletes itself on close (WA_DeleteOnClose), so qtbot does not hold it
        p = open_net_shown(qtbot, w, batch=4)
        p.steps.setValue(0)
        assert p.start()
        THREADS_SEEN.clear()
        qtbot.waitUntil(lambda: p.steps_done() >= 2, timeout=TIMEOUT)
        assert set(THREADS_SEEN) == {host_threads}  # what the training ran on: the host's choice
        assert _new_thread_sees() == host_threads  # nothing process-wide changed while it trains
        assert torch.get_num_threads() == host_threads
        assert p.controller.info["threads"] == host_threads  # and the tab says so
        p.stop()
        qtbot.waitUntil(lambda: p.controller.state == "stopped", timeout=TIMEOUT)
    finally:
        w.close()
    assert torch.get_num_threads() == host_threads and _new_thread_sees() == host_threads


def test_resviz_analyze_leaves_torch_s_threads_as_the_host_had_them(host_threads):
    import resviz

    resviz.analyze(Net(), (1, 3, 8, 8))
    assert torch.get_num_threads() == host_threads and _new_thread_sees() == host_threads


def test_the_app_sets_its_thread_count_once_at_start_and_only_when_asked(monkeypatch):
    from resviz.gui.app import set_thread_policy

    before = torch.get_num_threads()
    assert set_thread_policy({}) is None and torch.get_num_threads() == before  # torch's default stands
    assert set_thread_policy({"RESVIZ_TRAIN_THREADS": "zero"}) is None
    try:
        assert set_thread_policy({"RESVIZ_TRAIN_THREADS": "3"}) == 3  # torch already loaded: set now
        assert torch.get_num_threads() == 3 and _new_thread_sees() == 3
    finally:
        torch.set_num_threads(before)
    monkeypatch.delitem(sys.modules, "torch")  # the app's start: torch loads later, on a worker thread
    env: dict = {"RESVIZ_TRAIN_THREADS": "2"}
    assert set_thread_policy(env) == 2
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"


def test_the_estimate_counts_the_threads_training_will_use(host_threads, monkeypatch):
    monkeypatch.setattr(te, "_SPEED", {})
    monkeypatch.setattr(te, "_time_conv", lambda torch: 5e9)
    assert te.training_threads() == host_threads
    assert te.calibrate() == {host_threads: 5e9}
    assert torch.get_num_threads() == host_threads  # timed at the count as it is, never changed


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


def test_a_thread_count_that_is_not_one_is_said_and_ignored(capsys):
    from resviz.gui.app import set_thread_policy

    before = torch.get_num_threads()
    for text in ("abc", "-3", "0", "99999999999"):
        env = {"RESVIZ_TRAIN_THREADS": text}
        assert set_thread_policy(env) is None and "OMP_NUM_THREADS" not in env
        assert f"RESVIZ_TRAIN_THREADS={text!r} is not a thread count" in capsys.readouterr().err
    assert torch.get_num_threads() == before

