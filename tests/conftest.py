"""Shared test setup: Qt offscreen, isolated settings, and no test may leak a running thread."""

from __future__ import annotations

import gc
import os
import sys
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
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from resviz.gui.runtime.pyside_compat import keep_dropped_objects_alive  # noqa: E402

# The tests make windows without the app's start, so they take its compatibility step themselves
# (it acts only under a PySide6 that drops references, which test_gui_app.py then reports).
keep_dropped_objects_alive()

# The tests run tiny tensors, where torch's intra-op threads only wait on each other: on a busy
# 2-core machine a small conv took 16 ms with 2 threads and 1.9 ms with one (test_mismatch.py's
# property test: 15 s -> 4 s). Tests that are about threads set their own count.
torch.set_num_threads(1)
os.environ.setdefault("RESVIZ_TRAIN_THREADS", "1")  # the app started by a test sets the same at start

# Property tests draw the same examples on every run (derandomize): a suite that is red one run in
# ten is a broken suite, and a random find belongs in a named regression test. To look for new
# counter-examples, run with HYPOTHESIS_PROFILE=explore (random, with the example database).
settings.register_profile("resviz", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "resviz"))


def _running_qthreads() -> list:
    """resviz's own QThreads still running, found through their owners: every worker thread
    belongs to a window (a top-level widget) or, without one, to the QApplication, so this is a
    walk over the Qt object trees, not over every object in the process."""
    workers = sys.modules.get("resviz.gui.runtime.workers")
    return workers.running_worker_threads() if workers is not None else []


# Daemon threads that a third-party library starts once and keeps for the life of the process by
# design (tqdm's progress-bar monitor, started by torch.export's decompositions when tqdm is
# installed, e.g. as a dependency of Lightning). They are not a leak of the code under test.
_PROCESS_LIFETIME_THREADS = frozenset({"tqdm_monitor"})


def _new_threads(before: set) -> list:
    return [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)
        and not (t.daemon and t.name in _PROCESS_LIFETIME_THREADS)
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_settings(tmp_path, monkeypatch):
    """Each test starts from empty app settings: no splitter sizes or recent files from another."""
    monkeypatch.setenv("RESVIZ_SETTINGS", str(tmp_path / "settings.ini"))


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """Fail a test after which SIGINT or SIGTERM is handled differently: code that takes a signal
    must give it back, or every later Ctrl-C (and pytest's own) goes somewhere else."""
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    changed = [s.name for s, h in before.items() if signal.getsignal(s) is not h]
    for s, h in before.items():
        signal.signal(s, h)
    if changed:
        pytest.fail(f"test left its own handler for {', '.join(changed)}")


@pytest.fixture(autouse=True)
def no_leaked_threads(request):
    """Fail a test that leaves a QThread or a threading.Thread running after it ends."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    py, qt = _new_threads(before), _running_qthreads()
    for t in py:  # give each a moment to finish what it was doing, then look again
        t.join(max(0.0, deadline - time.monotonic()))
    for q in qt:
        q.wait(max(0, int((deadline - time.monotonic()) * 1000)))
    py, qt = _new_threads(before), _running_qthreads()
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
    process would after the app closes (``resviz.gui.runtime.ui_thread_gc`` switches it off while threads run)."""
    qt_gc = sys.modules.get("resviz.gui.runtime.ui_thread_gc")
    if qt_gc is not None and qt_gc.installed():
        qt_gc.uninstall()


def pytest_collection_finish(session) -> None:
    """Every test module is imported (torch, Qt, hypothesis): move what exists now out of the
    collector's reach, so the full collection after each Qt test walks that test's objects only,
    not the hundreds of thousands that the imports made and that live until the process ends."""
    gc.collect()
    gc.freeze()
