"""Pausing Python's cyclic garbage collector around heavy engine work.

Building or tracing a big model allocates tens of thousands of small objects and no reference
cycles; letting the collector walk them (and every module of the model) mid-way costs ~30% on
resnet1202, and half the time of building it on meta. Pausing only delays collection.

One pause state for the whole process, because ``gc.disable`` is process-wide: pauses nest and
overlap across threads (the app may analyse one model while another is being built), and the
collector comes back on only when the last pause ends, and only if it was on when the first began.
The desktop app collects on its UI thread itself while it has worker threads (``resviz.gui.qt_gc``):
it *holds* automatic collection off, so no pause ending in a worker switches it back on, and it
asks :func:`active` so that it does not collect in the middle of one.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_depth = 0  # pauses in progress, all threads together
_restore = False  # whether the collector was on when the first of them began
_held = False  # automatic collection is held off by the app (see module docstring)


class gc_paused:
    """``with gc_paused(): ...`` — no cyclic collection inside; nestable, thread-safe."""

    def __enter__(self):
        global _depth, _restore
        with _lock:
            if _depth == 0:
                _restore = gc.isenabled()
                gc.disable()
            _depth += 1
        return self

    def __exit__(self, *exc):
        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0 and _restore and not _held:
                gc.enable()
        return False


def active() -> bool:
    """Whether some thread is inside a pause now."""
    return _depth > 0


def hold_automatic_off(hold: bool) -> None:
    """Keep automatic collection off (``True``) until released (``False``), pauses or not."""
    global _held, _restore
    with _lock:
        if hold and not _held:
            if _depth > 0:
                _restore = _restore or gc.isenabled()
            else:
                _restore = False
            gc.disable()
        elif not hold and _held:
            if _depth > 0:
                _restore = True  # the last pause to end switches it back on
            else:
                gc.enable()
        _held = hold
