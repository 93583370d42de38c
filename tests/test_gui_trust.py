"""The app never unpickles a file on its own: a whole pickled model offers "Trust this file…",
which warns first and reloads with trust only when the user confirms."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QMessageBox  # noqa: E402

from resviz.gui.dialogs import trust as qt_trust  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

torch = pytest.importorskip("torch")
nn = torch.nn

TIMEOUT = 30_000


class _Payload:
    """Unpickles by evaluating an expression that writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.expr = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return (eval, (self.expr,))


def _pickled_model(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "RAN"
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    model.payload = _Payload(marker)  # a plain attribute: pickled with the module
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    return path, marker


@pytest.fixture
def win(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def _open_and_fail(qtbot, win, path):
    win.open_source(str(path), input_shape="1x3x8x8")
    qtbot.waitUntil(lambda: win.is_idle() and win.document.error is not None, timeout=TIMEOUT)


def test_a_pickled_model_offers_trust_and_declining_runs_nothing(qtbot, win, tmp_path, monkeypatch):
    path, marker = _pickled_model(tmp_path)
    _open_and_fail(qtbot, win, path)
    assert not marker.exists(), "opening the file ran its code"
    assert win.banner.kind == "error" and win.banner.action.isVisible()
    assert win.banner.action.text() == qt_trust.TRUST_ACTION
    assert "--trust" not in win.banner.text() and "--trust" not in win.document.error
    assert "unpickling" in win.banner.text()

    asked = []

    def decline(box):  # the user reads the warning and presses Cancel
        asked.append(box.text())
        box.button(QMessageBox.StandardButton.Cancel).click()

    monkeypatch.setattr(qt_trust.QMessageBox, "exec", decline)
    win.banner.action.click()
    assert len(asked) == 1 and "runs any code the file contains" in asked[0]
    assert "made yourself or got from someone you trust" in asked[0]
    assert win.is_idle() and win.session is None and not win.scene.node_items
    assert not marker.exists(), "declining ran the file's code"
    assert win.banner.action.isVisible()  # still on offer


def test_confirming_trust_loads_the_model_for_this_file_only(qtbot, win, tmp_path, monkeypatch):
    path, marker = _pickled_model(tmp_path)
    _open_and_fail(qtbot, win, path)
    def confirm(box):
        trust = next(b for b in box.buttons() if b.text() == "Trust and open")
        assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)
        trust.click()

    monkeypatch.setattr(qt_trust.QMessageBox, "exec", confirm)
    win.banner.action.click()
    qtbot.waitUntil(lambda: win.is_idle() and win.session is not None, timeout=TIMEOUT)
    assert marker.exists()  # trusted: unpickled, its code ran, as the warning said
    assert win.document.error is None and win.scene.node_items
    assert not win.banner.action.isVisible()

    other = tmp_path / "other"
    other.mkdir()
    path2, marker2 = _pickled_model(other)  # another file is not trusted by the first's consent
    _open_and_fail(qtbot, win, path2)
    assert not marker2.exists() and win.banner.action.isVisible()
