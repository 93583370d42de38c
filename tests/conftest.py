"""Shared test setup: Qt offscreen, isolated settings, and no test may leak a running thread."""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt
os.environ.setdefault(
    "RESVIZ_SETTINGS", os.path.join(tempfile.mkdtemp(prefix="resviz-test-"), "settings.ini")
)

# runs that resviz train writes by default go under the user's data dir: a temporary one here
os.environ.setdefault("RESVIZ_DATA_DIR", tempfile.mkdtemp(prefix="resviz-data-"))

import pytest  # noqa: E402

import resviz.gui  # noqa: E402,F401  (keeps None alive under PySide6 abi3 wheels on Python 3.11)


def _running_qthreads() -> list:
    import sys

    if "PySide6.QtCore" not in sys.modules:
        return []
    import shiboken6
    from PySide6.QtCore import QCoreApplication, QThread

    app = QCoreApplication.instance()
    main = app.thread() if app is not None else None
    out = []
    for obj in gc.get_objects():
        if issubclass(type(obj), QThread) and shiboken6.isValid(obj) and obj is not main:
            try:
                if obj.isRunning():
                    out.append(obj)
            except RuntimeError:
                pass
    return out


def _new_threads(before: set) -> list:
    return [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_settings(tmp_path, monkeypatch):
    """Each test starts from empty app settings: no splitter sizes or recent files from another."""
    monkeypatch.setenv("RESVIZ_SETTINGS", str(tmp_path / "settings.ini"))


@pytest.fixture(autouse=True)
def no_leaked_threads(request):
    """Fail a test that leaves a QThread or a threading.Thread running after it ends."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        py, qt = _new_threads(before), _running_qthreads()
        if not py and not qt or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if py or qt:
        names = [t.name for t in py] + [f"QThread {q.objectName() or hex(id(q))}" for q in qt]
        pytest.fail(f"test leaked running threads: {', '.join(names)}")
    _restore_automatic_gc()
    if {"qtbot", "qapp"} & set(request.fixturenames):
        # Free this test's Qt garbage (windows hold reference cycles) here, with no thread running
        # and no widget mid-paint, rather than at some allocation in the middle of the next test.
        gc.collect()


def _restore_automatic_gc() -> None:
    """No resviz thread is left: the next test starts with Python's own collector, as a user's
    process would after the app closes (``resviz.gui.qt_gc`` switches it off while threads run)."""
    import sys

    qt_gc = sys.modules.get("resviz.gui.qt_gc")
    if qt_gc is not None and qt_gc.installed():
        qt_gc.uninstall()
