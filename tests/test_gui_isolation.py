"""The app runs a Python file's code in a child process: it survives code that ends the process,
and Cancel stops code that never returns. Each test starts a child or two (Python + torch)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 60_000

MODEL = """\
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)
"""


@pytest.fixture
def win(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    yield w
    w.close()
    assert not w.document.worker.is_running() and not w.aux.is_running()


def settled(qtbot, w):
    qtbot.waitUntil(lambda: w.is_idle() and not w.document._reading, timeout=TIMEOUT)


def test_the_app_survives_code_that_ends_the_process(qtbot, win, tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    win.open_source(str(path), input_shape="1x3x8x8")
    settled(qtbot, win)
    assert win.document.error is None and win.session.report.ok
    assert win.session.loaded.isolated and win.session.loaded.module is None  # nothing of it here
    path.write_text("import os\nos._exit(0)\n" + MODEL)
    win.reload()
    settled(qtbot, win)
    assert "model.py ended the process with status 0 while resviz was importing" in win.document.error
    assert win.session.report.ok and win.document.drawn is not None  # the last good graph stays
    assert "reload failed" in win.count_label.text()


@pytest.mark.slow
def test_a_new_input_shape_runs_the_file_again_in_a_child(qtbot, win, tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    win.open_source(str(path), input_shape="1x3x8x8")
    settled(qtbot, win)
    win.set_input_shape("1x3x16x16")
    settled(qtbot, win)
    assert win.document.error is None and win.session.input_shape == (1, 3, 16, 16)
    assert win.session.report.output_shapes == [(1, 3, 16, 16)]


def test_cancel_stops_code_that_never_returns(qtbot, win, tmp_path):
    path = tmp_path / "model.py"
    path.write_text("while True:\n    pass\n" + MODEL)
    assert win.cancel_button.isHidden()
    win.open_source(str(path), input_shape="1x3x8x8")
    qtbot.waitUntil(lambda: "importing" in win.busy_label.text(), timeout=TIMEOUT)  # looping now
    assert not win.cancel_button.isHidden() and win.document.can_cancel()
    win.cancel_button.click()
    settled(qtbot, win)  # the job returned: its child was killed and reaped
    assert win.document.error.startswith("cancelled: resviz stopped running")
    assert "importing" in win.document.error
    assert win.cancel_button.isHidden() and not win.document.can_cancel()
    path.write_text(MODEL)  # and the app goes on: the fixed file opens
    win.reload()
    settled(qtbot, win)
    assert win.document.error is None and win.session.report.ok
