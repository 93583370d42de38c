"""Background work: one QThread per :class:`QtWorker`, jobs run in order, the newest request wins.

A job is a plain callable that returns a result or raises. The worker never touches widgets; it
reports through signals only, so results always arrive on the UI thread through queued
connections. Every request gets a *generation* number: a result whose generation is no longer the
newest of its channel is dropped (a slow analysis for 224×224 never overwrites the one for 32×32
that the user asked for after it), and a job that is already stale when its turn comes is skipped.

Stopping is cooperative: analysis jobs are short, so :meth:`QtWorker.stop` asks the thread's event
loop to quit after the current job and waits for it.
"""

from __future__ import annotations

import atexit
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, QThread, Signal, Slot

from ...core.errors import NeedsTrust, ResvizError
from . import ui_thread_gc as qt_gc


@dataclass
class JobError:
    """Why a job failed: a user mistake (``ResvizError``) or a bug, with its traceback."""

    message: str
    user: bool = True
    details: str = ""
    needs_trust: bool = False  # the file opens only by unpickling it: the app may offer to trust it


_LIVE: weakref.WeakSet = weakref.WeakSet()  # workers whose thread may still run


@atexit.register
def _stop_all() -> None:
    """At interpreter exit (a notebook kernel, a script that never closed its window) join every
    worker thread, so Qt never destroys a running QThread."""
    for worker in list(_LIVE):
        try:
            worker.stop(5_000)
        except RuntimeError:  # its C++ side is already gone
            pass


class _Runner(QObject):
    """Lives on the worker thread; runs what it is sent."""

    done = Signal(str, int, object)  # channel, generation, result
    failed = Signal(str, int, object)  # channel, generation, JobError
    skipped = Signal(str, int)

    def __init__(self, owner: QtWorker):
        super().__init__()
        # A weak reference: owner -> runner -> owner would be a cycle, and only the cyclic
        # collector (possibly on some other thread) could then free the QObjects.
        self._owner = weakref.ref(owner)

    @Slot(str, int, object)
    def run(self, channel: str, gen: int, job: Callable[[], object]) -> None:
        owner = self._owner()
        if owner is None or owner.latest(channel) != gen:  # superseded while it waited: do not bother
            self.skipped.emit(channel, gen)
            return
        try:
            result = job()
        except NeedsTrust as exc:  # the reason without the command line's --trust advice
            self.failed.emit(channel, gen, JobError(exc.reason, True, needs_trust=True))
        except ResvizError as exc:
            self.failed.emit(channel, gen, JobError(str(exc), True))
        except Exception as exc:  # a bug in resviz or in the user's model code
            details = traceback.format_exc()
            self.failed.emit(channel, gen, JobError(f"{type(exc).__name__}: {exc}", False, details))
        else:
            self.done.emit(channel, gen, result)


class QtWorker(QObject):
    """A background thread that runs jobs for named channels ('model', 'view', ...).

    ``finished(channel, result)`` and ``failed(channel, JobError)`` are emitted on the UI thread,
    only for the newest request of each channel. ``busyChanged(bool)`` follows whether any job is
    queued or running.
    """

    finished = Signal(str, object)
    failed = Signal(str, object)
    busyChanged = Signal(bool)
    _send = Signal(str, int, object)

    def __init__(self, name: str = "resviz-worker", parent: QObject | None = None):
        super().__init__(parent)
        self._gens: dict[str, int] = {}
        self._pending = 0
        self._stopped = False
        self.stopping = False  # long jobs may poll this and return early
        self._thread = QThread()
        self._thread.setObjectName(name)
        self._runner = _Runner(self)
        self._runner.moveToThread(self._thread)
        self._send.connect(self._runner.run)
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(self._on_failed)
        self._runner.skipped.connect(self._on_skipped)
        qt_gc.install(self._thread)  # a second thread now allocates: collect cycles on the UI thread only
        self._thread.start()
        _LIVE.add(self)

    # -------------------------------------------------------------- requests

    def submit(self, channel: str, job: Callable[[], object]) -> int:
        """Queue ``job``; any earlier request of ``channel`` becomes stale. Returns its generation."""
        if self._stopped:
            return -1
        gen = self._gens.get(channel, 0) + 1
        self._gens[channel] = gen
        self._pending += 1
        if self._pending == 1:
            self.busyChanged.emit(True)
        self._send.emit(channel, gen, job)
        return gen

    def cancel(self, channel: str) -> None:
        """Make every queued or running request of ``channel`` stale."""
        self._gens[channel] = self._gens.get(channel, 0) + 1

    def latest(self, channel: str) -> int:
        return self._gens.get(channel, 0)

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def is_running(self) -> bool:
        return self._thread.isRunning()

    # -------------------------------------------------------------- results (UI thread)

    def _settle(self) -> None:
        self._pending = max(0, self._pending - 1)
        if self._pending == 0:
            self.busyChanged.emit(False)

    @Slot(str, int, object)
    def _on_done(self, channel: str, gen: int, result: object) -> None:
        if gen == self.latest(channel) and not self._stopped:
            self.finished.emit(channel, result)
        self._settle()

    @Slot(str, int, object)
    def _on_failed(self, channel: str, gen: int, error: object) -> None:
        if gen == self.latest(channel) and not self._stopped:
            self.failed.emit(channel, error)
        self._settle()

    @Slot(str, int)
    def _on_skipped(self, channel: str, gen: int) -> None:
        self._settle()

    # -------------------------------------------------------------- shutdown

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Drop what is queued, let the running job end, stop and join the thread."""
        if self._stopped:
            return not self._thread.isRunning()
        self._stopped = True
        self.stopping = True
        for channel in list(self._gens):
            self.cancel(channel)
        self._thread.quit()
        ok = self._thread.wait(timeout_ms)
        self._pending = 0
        _LIVE.discard(self)
        return ok
