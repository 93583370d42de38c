"""The app settles Python's heap after each model loads (qt_heap), so full garbage collections
while a run is followed walk only what was allocated since, not every module, widget and model;
a window inside someone else's process (resviz.show) leaves their garbage collector alone."""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("torch")

from resviz.gui.runtime.heap import settle_after_loads, settle_heap  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture
def win(qtbot):
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()
    settle_heap()  # as conftest leaves it (all frozen), minus what this test froze that died since


def loaded(qtbot, w, source: str, blocks: int):
    w.open_source(source)
    qtbot.waitUntil(lambda: w.is_idle() and w.document.drawn is not None
                    and len(w.session.report.blocks) == blocks, timeout=TIMEOUT)  # fmt: skip


def tracked(obj) -> bool:
    """Whether a later collection would walk ``obj`` (frozen objects are not in any generation)."""
    return any(o is obj for o in gc.get_objects())


def test_each_model_load_settles_the_heap_once(qtbot, win):
    settler = settle_after_loads(win)
    loaded(qtbot, win, "resnet20", 9)
    assert settler.settles == 1
    report = win.session.report
    assert not tracked(report.__dict__)  # the loaded model's report is out of full collections
    folded = len(win.scene.node_items)
    win.expand_all()  # a new view of the same model: idle again, but no second pause
    qtbot.waitUntil(lambda: win.is_idle() and len(win.scene.node_items) > folded, timeout=TIMEOUT)
    assert settler.settles == 1
    loaded(qtbot, win, "resnet32", 15)
    assert settler.settles == 2


def test_settling_again_collects_what_the_last_settle_froze():
    a, b = [], []
    a.append(b)
    b.append(a)  # a cycle only the cyclic collector can free
    settle_heap()
    assert not tracked(a)
    del a, b  # the old model's objects, dropped while frozen
    assert settle_heap() >= 2  # found at the next settle, not kept for the process's life


def test_a_window_without_the_settler_leaves_gc_alone(qtbot, win):
    loaded(qtbot, win, "resnet20", 9)  # as resviz.show(model) does, in the user's process
    assert tracked(win.session.report.__dict__)  # nothing frozen: collections as the host set them
