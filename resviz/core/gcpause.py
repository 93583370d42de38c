"""Pausing Python's cyclic garbage collector around heavy engine work — only in resviz's own process.

Building or tracing a big model allocates tens of thousands of small objects and no reference
cycles; letting the collector walk them mid-way costs about 25% of analysing resnet1202
(``benchmarks/bench_analysis.py`` prints both). Pausing only delays collection.

But ``gc.disable`` is process-wide: a library call (``resviz.analyze`` in a notebook, a training
script, a server) must leave the host's collector exactly as it found it, even for the length of
the call, because the host's other threads run meanwhile. So a pause acts only while resviz owns
the process: :class:`owning_process` is entered by the command line's ``main`` (which also runs
the app); everywhere else :class:`gc_paused` does nothing.

Where it acts, there is one pause state for the whole process: pauses nest and overlap across
threads (the app may analyse one model while another is being built), and the collector comes back
on only when the last pause ends, and only if it was on when the first began. The desktop app
collects on its UI thread itself while it has worker threads (``resviz.gui.runtime.ui_thread_gc``): it *holds*
automatic collection off, so no pause ending in a worker switches it back on, and it asks
:func:`active` so that it does not collect in the middle of one. Pauses and the hold together
restore what they found when the last of them ends.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_owners = 0  # resviz's own entry points running in this process (see owning_process)
_depth = 0  # pauses in progress, all threads together
_held = False  # automatic collection is held off by the app (see module docstring)
_restore = False  # whether the collector was on when the first pause or the hold began


class owning_process:
    """``with owning_process(): ...`` — resviz owns this process (the CLI's and app's ``main``):
    the engine may pause the collector inside. Nestable."""

    def __enter__(self):
        global _owners
        with _lock:
            _owners += 1
        return self

    def __exit__(self, *exc):
        global _owners
        with _lock:
            _owners -= 1
        return False


def owns_process() -> bool:
    return _owners > 0


def _switch_off() -> None:
    """The first pause or the hold begins: remember the host's setting, collector off."""
    global _restore
    if _depth == 0 and not _held:
        _restore = gc.isenabled()
        gc.disable()


def _switch_back() -> None:
    """The last pause and the hold have ended: the collector as the first of them found it."""
    if _depth == 0 and not _held and _restore:
        gc.enable()


class gc_paused:
    """``with gc_paused(): ...`` — no cyclic collection inside when resviz owns the process;
    nestable, thread-safe; a no-op in a host's process."""

    def __enter__(self):
        global _depth
        with _lock:
            self._acting = _owners > 0
            if self._acting:
                _switch_off()
                _depth += 1
        return self

    def __exit__(self, *exc):
        global _depth
        with _lock:
            if self._acting:
                _depth -= 1
                _switch_back()
        return False


def active() -> bool:
    """Whether some thread is inside a pause now."""
    return _depth > 0


def hold_automatic_off(hold: bool) -> None:
    """Keep automatic collection off (``True``) until released (``False``), pauses or not; on
    release the collector is as it was before the hold (or the pause around it) began."""
    global _held
    with _lock:
        if hold and not _held:
            _switch_off()
            _held = True
        elif not hold and _held:
            _held = False
            _switch_back()
