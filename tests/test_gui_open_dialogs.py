"""The app's open dialogs, without the main window."""

from __future__ import annotations

from resviz.core.sources.loading import python_candidates
from tests.test_loading import NET_BEFORE_ITS_BLOCK, write


def test_python_picker_preselects_the_network_not_its_block(qtbot, tmp_path):
    from resviz.gui.dialogs.open_model import QtPythonPicker

    path = write(tmp_path, "model.py", NET_BEFORE_ITS_BLOCK)
    dlg = QtPythonPicker(str(path), python_candidates(path))
    qtbot.addWidget(dlg)
    assert dlg.chosen() == "Net"
