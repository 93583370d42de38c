"""The desktop app: the only package that imports PySide6 and pyqtgraph."""

from __future__ import annotations

import sys


def _keep_none_alive() -> None:
    """Work around PySide6 abi3 builds that return ``None`` without a new reference.

    Some PySide6 6.x wheels (stable ABI, built against 3.12+ headers where ``None`` is immortal)
    drop one reference to ``None`` on every call of a C++ method returning ``void`` when they run
    on Python 3.11 or older. After a few thousand such calls (painting does hundreds per frame)
    ``None`` would be deallocated and the interpreter aborts with "none_dealloc". Giving ``None``
    a huge reference count is what Python 3.12 does anyway (PEP 683, immortal objects).
    ``True`` and ``False`` get the same: ``SignalInstance.emit()`` returns ``True`` without a new
    reference ("bool_dealloc" after ~1000 emits from Python; pyqtgraph emits on every paint).
    """
    if sys.version_info >= (3, 12):
        return
    import ctypes

    for obj in (None, True, False):
        refcnt = ctypes.c_ssize_t.from_address(id(obj))
        if refcnt.value < 1 << 40:
            refcnt.value += 1 << 50


_keep_none_alive()
