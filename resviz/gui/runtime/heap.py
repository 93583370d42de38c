"""Short garbage collections in the app's own process: the heap is settled after each model loads.

A full (oldest-generation) collection walks every tracked Python object; with PyTorch, PySide6,
pyqtgraph and an analysed model loaded that is ~220,000 objects and 60-190 ms, during which the
window cannot repaint or react. While a run is followed, parsing its new steps allocates enough to
start such a collection every few seconds, and that pause, not a plot's repaint, was the longest
stall (``benchmarks/bench_follow.py``). :func:`settle_heap` collects once, when a new model has just
loaded and the window is busy anyway, and then freezes (:func:`gc.freeze`) what survived: modules,
widgets, the model and its report, which live on. Later full collections only walk what was
allocated since, a few milliseconds.

Only the app's own process does this (:func:`resviz.gui.app.run_app` calls
:func:`settle_after_loads`); ``resviz.show(model)`` runs inside the user's process, whose garbage
collector is theirs to configure. The next settle first unfreezes, so garbage of a previous model
(cycles among its objects) is collected then and never kept for the process's life. The
collections themselves stay on the UI thread, as :mod:`~resviz.gui.runtime.ui_thread_gc` has them while workers run
(``idle`` is emitted there, with no worker running).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject


def settle_heap() -> int:
    """Collect every generation now, then freeze the survivors out of later collections.
    Returns the number of unreachable objects found."""
    gc.unfreeze()  # what a previous settle froze is checked again: the old model's cycles go now
    found = gc.collect()
    gc.freeze()
    return found


class HeapSettler(QObject):
    """Settles the heap (:func:`settle_heap`) once after each new model (a new session) is loaded
    and the document is idle; not on other idle moments (a view change, a followed run's update),
    where the full collection would itself be a stall."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.settles = 0
        self._pending = False
        doc = window.document
        doc.sessionChanged.connect(self._on_session)
        doc.idle.connect(self._on_idle)

    def _on_session(self, *_args) -> None:
        self._pending = True

    def _on_idle(self) -> None:
        if self._pending:
            self._pending = False
            settle_heap()
            self.settles += 1


def settle_after_loads(window) -> HeapSettler:
    """Settle the heap after each model ``window`` loads (for the app's own process only)."""
    return HeapSettler(window)
