"""A compatibility step for one broken PySide6 release, taken at app start and only when needed.

PySide6-Essentials 6.12.0's stable-ABI (abi3) wheels are built against CPython 3.12 headers, where
``None``, ``True`` and ``False`` are immortal (PEP 683). Run on CPython 3.11 or older, they return
those objects without a new reference: every call of a C++ method returning ``void`` drops one
reference to ``None``, every ``SignalInstance.emit()`` one to ``True``, and after a few thousand
calls (painting makes hundreds a frame) the interpreter aborts with "none_dealloc" or
"bool_dealloc". ``pyproject.toml`` keeps that release off Python < 3.12; this step protects a
process that has it anyway (an older environment, a user's own pin): it measures whether
references are dropped and, only then, gives the three objects the huge reference count that
Python 3.12 gives them anyway, so they can never reach zero.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

PROBE_CALLS = 64


def drops_references(obj: object, call: Callable[[], object], calls: int = PROBE_CALLS) -> bool:
    """Whether ``call()`` leaves ``obj`` with fewer references than it found (most of the time:
    another thread may take or drop a reference while this counts)."""
    before = sys.getrefcount(obj)
    for _ in range(calls):
        call()
    return before - sys.getrefcount(obj) >= calls // 2


def pyside_drops_references() -> list[str]:
    """Which of ``None`` / ``True`` the installed PySide6 loses a reference to on each call."""
    if sys.version_info >= (3, 12):  # immortal objects: nothing to lose
        return []
    from PySide6.QtCore import QObject, QTimer, Signal

    class _Probe(QObject):
        ping = Signal()

    timer, probe = QTimer(), _Probe()
    found = []
    if drops_references(None, lambda: timer.setInterval(5)):  # a C++ method returning void
        found.append("None")
    if drops_references(True, probe.ping.emit):
        found.append("True")
    return found


def make_immortal(obj: object) -> None:
    """Raise ``obj``'s reference count by 2**50: no leak of one per call can bring it to zero."""
    import ctypes

    refcnt = ctypes.c_ssize_t.from_address(id(obj))
    if refcnt.value < 1 << 40:
        refcnt.value += 1 << 50


def keep_dropped_objects_alive() -> list[str]:
    """The compatibility step: acts only when the installed PySide6 drops references; returns what
    it found (empty: it did nothing)."""
    found = pyside_drops_references()
    if found:
        for obj in (None, True, False):  # False: emit() can return it too
            make_immortal(obj)
    return found
