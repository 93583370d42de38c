"""Cyclic garbage collection on the UI thread only, while resviz has background threads.

Python runs its cyclic collector in whichever thread happens to allocate when a generation's
threshold is crossed. In the app that is often a worker thread (building or tracing a model
allocates tens of thousands of objects), and the garbage it finds may include Qt wrappers: their
C++ objects then get destroyed from the wrong thread, and PySide6 crashes with a segmentation
fault (seen in CI: a worker building resnet20 crashed right after its own gc pause ended). The
standard remedy, used by pyqtgraph's ``GarbageCollector`` and others, is to switch automatic
collection off and collect from a timer on the UI thread instead.

Why not ``pyqtgraph.util.GarbageCollector`` itself (its ``check`` is the model for ours): it calls
``gc.disable()`` for good when created and never gives the collector back, which a window opened
by ``resviz.show`` in someone's notebook must do; and it knows nothing of the engine's pauses. This
one goes through :mod:`resviz.core.gcpause`: it *holds* automatic collection off, so no pause
ending in a worker switches it back on; it skips a tick while a pause is in progress (a full
collection mid-analysis would also stall the worker, which needs the GIL); and once none of the
threads it was installed for runs any more (the window closed; in a notebook after
``resviz.show``), it releases the hold, which leaves the collector as the host had it before.
Collection follows Python's own thresholds, so memory behaves as before, just a tick or two late.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer

from ...core import gcpause

INTERVAL_MS = 500
_installed: QtMainThreadGC | None = None
_hooked = False  # aboutToQuit connected once


class QtMainThreadGC(QObject):
    """Owns the timer; lives as long as the QApplication (its parent)."""

    def __init__(self, parent: QObject, interval_ms: int = INTERVAL_MS):
        super().__init__(parent)
        self.threshold = gc.get_threshold()
        self.collections = 0
        self.threads: list[QThread] = []  # the background threads this is for, while they run
        gcpause.hold_automatic_off(True)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._timer.start(interval_ms)

    def check(self) -> None:
        """Collect the generations whose allocation counts passed Python's thresholds."""
        self.threads = [t for t in self.threads if _running(t)]
        if not self.threads:
            uninstall()
            return
        if gcpause.active():  # the engine is building or tracing: collect once it is done
            return
        counts = gc.get_count()
        generation = -1
        for gen in range(3):
            if counts[gen] > self.threshold[gen]:
                generation = gen
            else:
                break
        if generation >= 0:
            gc.collect(generation)
            self.collections += 1


def _running(thread: QThread) -> bool:
    try:
        return thread.isRunning()
    except RuntimeError:  # its C++ side is gone
        return False


def install(thread: QThread) -> QtMainThreadGC | None:
    """Collect on the UI thread while ``thread`` runs (call just before starting it, on the UI
    thread, with a QApplication). Idempotent; one collector serves every thread."""
    global _installed, _hooked
    app = QCoreApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return None
    if _installed is None:
        _installed = QtMainThreadGC(app)
        if not _hooked:
            app.aboutToQuit.connect(uninstall)
            _hooked = True
    _installed.threads.append(thread)
    return _installed


def installed() -> bool:
    return _installed is not None


def uninstall() -> None:
    """Automatic collection back on: no resviz thread is left (the app quits; a test ends)."""
    global _installed
    if _installed is not None:
        _installed._timer.stop()
        _installed.deleteLater()
        _installed = None
        gcpause.hold_automatic_off(False)
