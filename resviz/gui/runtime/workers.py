"""The app's one worker design: a worker QObject on its own QThread, owned and joined by its owner.

:class:`WorkerThread` is the owner's handle on one such thread. The worker object is moved to the
thread; the owner sends it commands through queued signals or a thread-safe
:class:`~resviz.gui.runtime.commands.CommandQueue` and may set its
:class:`~resviz.gui.runtime.commands.StopFlag`, never by writing its attributes; the worker answers
with signals carrying plain values, which arrive on the UI thread. The owner stops and joins the
thread (:meth:`WorkerThread.stop`) when it closes: the window's ``closeEvent`` and the
application's ``aboutToQuit``. There is no module-level registry and no ``atexit`` handler: a
thread without a parent given is owned by the QApplication (so it is stopped at ``aboutToQuit``
and can be found), and one that does not end within its owner's time-out is handed to the
QApplication, which joins it when it quits.

:class:`QtWorker` runs jobs (plain callables) in order for named channels; the newest request of a
channel wins. The training tab's worker (:mod:`resviz.gui.training.worker`) is the other user of
:class:`WorkerThread`.

Why not superqt's ``thread_worker``/``GeneratorWorker``: they run on the global ``QThreadPool``
and keep a class-level set of live workers for ``await_workers`` — the registry this design
removes — and a generator can only be stopped between two ``yield``s, while a training step must
end from inside (the stop hooks). What is shared here is small: a thread, a stop flag, a join.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from ...core.errors import NeedsTrust, ResvizError
from . import ui_thread_gc
from .commands import Generations, StopFlag, Stopped, WorkerState


@dataclass
class JobError:
    """Why a job failed: a user mistake (``ResvizError``) or a bug, with its traceback."""

    message: str
    user: bool = True
    details: str = ""
    needs_trust: bool = False  # the file opens only by unpickling it: the app may offer to trust it


class WorkerThread(QObject):
    """One background thread with one worker object on it, stopped and joined by its owner.

    ``stateChanged(str)`` carries a :class:`~resviz.gui.runtime.commands.WorkerState` value:
    running once started, stopping while :meth:`stop` waits, stopped once joined.
    """

    stateChanged = Signal(str)

    def __init__(self, worker: QObject, name: str, parent: QObject | None = None,
                 stop_flag: StopFlag | None = None):  # fmt: skip
        app = QCoreApplication.instance()
        super().__init__(parent if parent is not None else app)
        self.stop_flag = stop_flag if stop_flag is not None else StopFlag()  # the worker reads it
        self.state = WorkerState.IDLE
        self.join_ms: float | None = None  # how long the last stop waited for the thread
        self._thread = QThread(self)  # a child: found by running_worker_threads, never outlived
        self._thread.setObjectName(name)
        self.worker = worker
        worker.moveToThread(self._thread)
        if app is not None:
            app.aboutToQuit.connect(self.stop)
        ui_thread_gc.install(self._thread)  # a second thread now allocates: collect on the UI thread only
        self._thread.start()
        self._set_state(WorkerState.RUNNING)

    def _set_state(self, state: WorkerState) -> None:
        self.state = state
        self.stateChanged.emit(state.value)

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def qthread(self) -> QThread:
        return self._thread

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Ask the worker to stop (its flag), end the thread's event loop after the event in
        flight, and wait up to ``timeout_ms`` for it. True when the thread has ended."""
        if self.state is WorkerState.STOPPED:
            return True
        self._set_state(WorkerState.STOPPING)
        self.stop_flag.request()
        self._thread.quit()
        t0 = time.perf_counter()
        ok = self._thread.wait(int(timeout_ms))
        self.join_ms = (time.perf_counter() - t0) * 1000
        if ok:
            self._set_state(WorkerState.STOPPED)
            if self.parent() is QCoreApplication.instance():
                self.setParent(None)  # nothing runs any more: the app need not keep this alive
        else:
            self._outlive_owner()
        return ok

    def _outlive_owner(self) -> None:
        """The thread is still in one long kernel: the QApplication takes this handle over (its
        ``aboutToQuit`` waits for the thread again), so closing the window never destroys a
        running QThread."""
        app = QCoreApplication.instance()
        if app is not None and self.parent() is not app:
            self.setParent(app)
            self._thread.finished.connect(self._finished_late)

    @Slot()
    def _finished_late(self) -> None:
        self._set_state(WorkerState.STOPPED)
        # let go of the application's ownership from a later event, not from inside this slot:
        # the last reference may go with it, and an object must not be deleted in its own slot
        QTimer.singleShot(0, lambda handle=self: handle.setParent(None))


def running_worker_threads() -> list[QThread]:
    """The worker threads that still run, found through their owners (the QApplication and its
    top-level widgets); the tests check that none outlives the test that started it."""
    app = QCoreApplication.instance()
    if app is None:
        return []
    owners: list[QObject] = [app]
    top_level = getattr(app, "topLevelWidgets", None)
    if top_level is not None:
        owners += list(top_level())
    found: dict[int, QThread] = {}
    for owner in owners:
        for handle in owner.findChildren(WorkerThread):
            if handle.is_running():
                found[id(handle)] = handle.qthread()
    return list(found.values())


class _Runner(QObject):
    """Lives on the worker thread; runs what it is sent, skips what is already stale."""

    done = Signal(str, int, object)  # channel, generation, result
    failed = Signal(str, int, object)  # channel, generation, JobError
    skipped = Signal(str, int)

    def __init__(self, generations: Generations):
        super().__init__()
        self._gens = generations

    @Slot(str, int, object)
    def run(self, channel: str, gen: int, job: Callable[[], object]) -> None:
        if not self._gens.is_latest(channel, gen):  # superseded while it waited: do not bother
            self.skipped.emit(channel, gen)
            return
        try:
            result = job()
        except Stopped:  # the job saw the stop flag: the owner is closing
            self.skipped.emit(channel, gen)
        except NeedsTrust as exc:  # the reason without the command line's --trust advice
            self.failed.emit(channel, gen, JobError(exc.reason, True, needs_trust=True))
        except ResvizError as exc:
            self.failed.emit(channel, gen, JobError(str(exc), True))
        except Exception as exc:  # noqa: BLE001 - a bug in resviz or the user's model code: the window shows it with its traceback
            details = traceback.format_exc()
            self.failed.emit(channel, gen, JobError(f"{type(exc).__name__}: {exc}", False, details))
        else:
            self.done.emit(channel, gen, result)


class QtWorker(QObject):
    """A background thread that runs jobs for named channels ('model', 'view', ...).

    A job is a plain callable that returns a result or raises; it never touches widgets. Every
    request gets a *generation* number: a result whose generation is no longer the newest of its
    channel is dropped (a slow analysis for 224×224 never overwrites the one for 32×32 asked for
    after it), and a job already stale when its turn comes is skipped. ``finished(channel,
    result)`` and ``failed(channel, JobError)`` are emitted on the UI thread, only for the newest
    request of each channel; ``busyChanged(bool)`` follows whether any job is queued or running,
    ``stateChanged(str)`` the :class:`~resviz.gui.runtime.commands.WorkerState` (idle, running,
    stopping, stopped). Stopping is cooperative: :meth:`stop` makes every request stale, sets the
    stop flag (a long job polls :attr:`stopping`) and joins the thread after the job in flight.
    """

    finished = Signal(str, object)
    failed = Signal(str, object)
    busyChanged = Signal(bool)
    stateChanged = Signal(str)
    _send = Signal(str, int, object)

    def __init__(self, name: str = "resviz-worker", parent: QObject | None = None):
        super().__init__(parent)
        self._gens = Generations()
        self._pending = 0
        self.state = WorkerState.IDLE
        self._runner = _Runner(self._gens)
        self._send.connect(self._runner.run)
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(self._on_failed)
        self._runner.skipped.connect(self._on_skipped)
        self._handle = WorkerThread(self._runner, name, self if parent is not None else None)

    # -------------------------------------------------------------- requests

    def submit(self, channel: str, job: Callable[[], object]) -> int:
        """Queue ``job``; any earlier request of ``channel`` becomes stale. Returns its generation."""
        if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            return -1
        gen = self._gens.bump(channel)
        self._pending += 1
        if self._pending == 1:
            self._set_state(WorkerState.RUNNING)
        self._send.emit(channel, gen, job)
        return gen

    def cancel(self, channel: str) -> None:
        """Make every queued or running request of ``channel`` stale."""
        self._gens.bump(channel)

    def latest(self, channel: str) -> int:
        return self._gens.latest(channel)

    @property
    def busy(self) -> bool:
        return self._pending > 0

    @property
    def stopping(self) -> bool:
        """Whether the owner asked this worker to stop (a long job polls it and returns early)."""
        return self._handle.stop_flag.requested()

    def is_running(self) -> bool:
        return self._handle.is_running()

    def _set_state(self, state: WorkerState) -> None:
        if state is self.state:
            return
        self.state = state
        self.stateChanged.emit(state.value)
        if state in (WorkerState.RUNNING, WorkerState.IDLE):
            self.busyChanged.emit(state is WorkerState.RUNNING)

    # -------------------------------------------------------------- results (UI thread)

    def _settle(self) -> None:
        self._pending = max(0, self._pending - 1)
        if self._pending == 0 and self.state is WorkerState.RUNNING:
            self._set_state(WorkerState.IDLE)

    def _current(self, channel: str, gen: int) -> bool:
        return gen == self.latest(channel) and self.state not in (WorkerState.STOPPING, WorkerState.STOPPED)

    @Slot(str, int, object)
    def _on_done(self, channel: str, gen: int, result: object) -> None:
        if self._current(channel, gen):
            self.finished.emit(channel, result)
        self._settle()

    @Slot(str, int, object)
    def _on_failed(self, channel: str, gen: int, error: object) -> None:
        if self._current(channel, gen):
            self.failed.emit(channel, error)
        self._settle()

    @Slot(str, int)
    def _on_skipped(self, channel: str, gen: int) -> None:
        self._settle()

    # -------------------------------------------------------------- shutdown

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Drop what is queued, let the running job end, stop and join the thread."""
        if self.state is WorkerState.STOPPED:
            return not self._handle.is_running()
        self._set_state(WorkerState.STOPPING)
        self._gens.bump_all()
        ok = self._handle.stop(timeout_ms)
        self._pending = 0
        self.state = WorkerState.STOPPED
        self.stateChanged.emit(WorkerState.STOPPED.value)
        return ok
