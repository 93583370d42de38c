"""The one worker design with Qt: a worker thread is owned (by a window or the QApplication), found
through its owner, stopped and joined by it; its state goes out as plain values."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from resviz.gui.runtime.workers import QtWorker, running_worker_threads  # noqa: E402

TIMEOUT = 30_000


def test_a_worker_without_an_owner_belongs_to_the_application_until_it_is_stopped(qtbot):
    worker = QtWorker("test-unowned")
    handle = worker._handle
    assert handle.parent() is QApplication.instance()  # stopped at aboutToQuit, found by the leak check
    assert handle.qthread() in running_worker_threads()
    assert worker.stop()
    assert handle.qthread() not in running_worker_threads()
    assert handle.parent() is None  # nothing runs: the application no longer keeps it


def test_a_window_s_worker_is_found_through_the_window_and_joined_by_it(qtbot):
    window = QWidget()
    qtbot.addWidget(window)
    worker = QtWorker("test-owned", window)
    assert worker._handle.parent() is worker and worker.parent() is window
    assert worker._handle.qthread() in running_worker_threads()
    worker.stop()
    assert not running_worker_threads()


def test_the_worker_s_state_goes_out_as_plain_values(qtbot):
    worker = QtWorker("test-states")
    states: list = []
    worker.stateChanged.connect(states.append)
    gate = threading.Event()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        worker.submit("a", lambda: gate.wait(TIMEOUT / 1000) and 1)
        gate.set()
    qtbot.waitUntil(lambda: not worker.busy, timeout=TIMEOUT)
    worker.stop()
    assert states == ["running", "idle", "stopping", "stopped"]
    assert all(type(s) is str for s in states)
    assert worker.submit("a", lambda: 1) == -1  # a stopped worker takes nothing new


def test_a_long_job_sees_that_its_owner_is_stopping(qtbot):
    worker = QtWorker("test-stopping")
    started, never, ended = threading.Event(), threading.Event(), []

    def long_job():
        started.set()
        while not worker.stopping:  # the job polls between its pieces of work
            never.wait(0.005)  # one piece of work
        ended.append(True)

    worker.submit("a", long_job)
    qtbot.waitUntil(started.is_set, timeout=TIMEOUT)
    assert worker.stop() and ended == [True]


def test_a_thread_that_outlives_its_owner_s_wait_is_handed_to_the_application(qtbot):
    """A job in one long call cannot see the stop flag: closing the window must not destroy its
    running QThread, so the QApplication takes the handle over until the thread ends."""
    window = QWidget()
    qtbot.addWidget(window)
    worker = QtWorker("test-outlives", window)
    handle = worker._handle
    started, gate = threading.Event(), threading.Event()
    worker.submit("a", lambda: started.set() or gate.wait(TIMEOUT / 1000))
    qtbot.waitUntil(started.is_set, timeout=TIMEOUT)
    assert not worker.stop(timeout_ms=1)  # still inside the job
    assert handle.parent() is QApplication.instance() and handle.qthread() in running_worker_threads()
    gate.set()
    qtbot.waitUntil(lambda: handle.state == "stopped" and handle.parent() is None, timeout=TIMEOUT)
    assert not running_worker_threads()  # the application let go once the thread ended
