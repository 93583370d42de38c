"""Training on a background thread: a :class:`TrainingWorker` on its own thread
(:class:`~resviz.gui.runtime.workers.WorkerThread`), driven from the UI by a
:class:`TrainingController`.

The run itself is :class:`~resviz.gui.training.run_loop.TrainingLoop`, a state machine without
Qt. The controller puts commands on the loop's queue and wakes the worker with a queued signal;
the worker turns the loop once per event of its thread, and queues the next turn while the run
trains, so the commands that arrive meanwhile are handled between two steps. A stop sets the
loop's stop flag, which ends the step in flight from inside (its hooks raise ``Stopped``). The
controller owns the thread and joins it in :meth:`TrainingController.shutdown` (the tab calls it
when the window closes and when the application quits).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal, Slot

from ..runtime.workers import WorkerThread
from .run_loop import RunState, TrainingLoop

JOIN_MS = 2000  # how long closing the window waits for the training thread


class TrainingWorker(QObject):
    """Lives on the training thread: turns the :class:`TrainingLoop` and sends its events as
    signals (each carries the generation of the run it is about; the controller drops old ones)."""

    started = Signal(int, object)  # dict: names, plain_names, twin, device, data, notes, lr, ...
    stepped = Signal(int, object)  # list of {"residual": payload | None, "plain": payload | None}
    stateChanged = Signal(int, str)  # a RunState value
    faulted = Signal(int, object)  # dict: message, which ('residual'/'plain'), blocks, lr
    failed = Signal(int, str)  # a message for the user
    lrChanged = Signal(int, float)  # the learning rate now used (after resume ×0.1)
    recording = Signal(int, object)  # {"residual": run dir, "plain": run dir} or {"error": message}
    _next = Signal()

    def __init__(self):
        super().__init__()
        self.loop = TrainingLoop(self._emit)
        self._events = {
            "started": self.started, "stepped": self.stepped, "state": self.stateChanged,
            "faulted": self.faulted, "failed": self.failed, "lr": self.lrChanged, "recording": self.recording,
        }  # fmt: skip
        self._scheduled = False
        self._next.connect(self._continue, Qt.QueuedConnection)

    def _emit(self, event: str, gen: int, payload) -> None:
        self._events[event].emit(gen, payload)

    @Slot()
    def wake(self) -> None:
        """Commands are waiting (queued from the UI thread)."""
        self._turn()

    @Slot()
    def _continue(self) -> None:
        self._scheduled = False
        self._turn()

    def _turn(self) -> None:
        if self.loop.turn() and not self._scheduled:
            self._scheduled = True  # one turn per event: commands get their say between steps
            self._next.emit()


class TrainingController(QObject):
    """The UI side of training: owns the thread and the worker; call it on the UI thread.

    ``state`` is a :class:`~resviz.gui.training.run_loop.RunState` (a ``str``): idle, building,
    running, paused, finished, faulted (NaN/Inf), error, stopped. Events of a run that a newer
    :meth:`start` replaced are dropped.
    """

    started = Signal(object)
    stepped = Signal(object)
    stateChanged = Signal(str)
    faulted = Signal(object)
    failed = Signal(str)
    lrChanged = Signal(float)
    recording = Signal(object)  # where the run is recorded: {"residual": dir, "plain": dir} or {"error": ...}
    wasReset = Signal()
    _wake = Signal()

    def __init__(self, parent: QObject | None = None, name: str = "resviz-training"):
        super().__init__(parent)
        self._name = name
        self._handle: WorkerThread | None = None
        self._worker: TrainingWorker | None = None
        self._closed = False
        self.gen = 0
        self.state = RunState.IDLE
        self.has_run = False  # a run exists (or is being built) on the worker
        self.twin = False
        self.info: dict = {}
        self.recorded: dict = {}  # the run directories of the run (see TrainingWorker.recording)
        self.join_ms: float | None = None  # how long the last shutdown waited for the thread

    # ---------------------------------------------------------------- the thread

    def _ensure(self) -> TrainingWorker | None:
        if self._closed:
            return None
        if self._worker is None:
            worker = TrainingWorker()
            self._wake.connect(worker.wake)
            worker.started.connect(self._on_started)
            worker.stepped.connect(self._on_stepped)
            worker.stateChanged.connect(self._on_state)
            worker.faulted.connect(self._on_faulted)
            worker.failed.connect(self._on_failed)
            worker.lrChanged.connect(self._on_lr)
            worker.recording.connect(self._on_recording)
            self._handle = WorkerThread(worker, self._name, self, stop_flag=worker.loop.stop_flag)
            self._worker = worker
        return self._worker

    def _send(self, command: str, *args) -> None:
        if self._worker is not None:
            self._worker.loop.commands.put(command, *args)
            self._wake.emit()

    def is_running(self) -> bool:
        """Whether the training thread runs (not whether a run trains: see ``state``)."""
        return self._handle is not None and self._handle.is_running()

    @property
    def busy(self) -> bool:
        return self.state in (RunState.BUILDING, RunState.RUNNING)

    # ---------------------------------------------------------------- commands

    def start(self, session, spec: dict, then: str = "run") -> None:
        """A new run from ``session``: ``spec`` holds ``config`` (TrainConfig fields), ``data``
        (text) and ``twin``; ``then`` is run, step (one step, then pause) or pause."""
        w = self._ensure()
        if w is None:
            return
        if self.has_run:
            w.loop.stop_flag.request()  # end the step in flight at once; the stop command clears it
            self._send("stop")
        self.gen += 1
        self.twin = bool(spec.get("twin"))
        self.has_run = True
        self.info = {}
        self.recorded = {}
        self._set_state(RunState.BUILDING)
        self._send("build", spec, then, self.gen, session)

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        if self.has_run:
            self._send("resume")

    def step(self) -> None:
        if self.has_run:
            self._send("step")

    def reset(self) -> None:
        if self.has_run:
            self._send("reset")

    def resume_lower(self, factor: float = 0.1) -> None:
        if self.has_run:
            self._send("resume_lower", float(factor))

    def stop(self) -> None:
        """End the run now (the step in flight is abandoned); the plots keep what was recorded."""
        if self._worker is not None and self.has_run:
            self._worker.loop.stop_flag.request()
            self._send("stop")

    def set_lr(self, lr: float) -> None:
        self._send("lr", float(lr))

    def set_target(self, steps: int) -> None:
        self._send("target", max(0, int(steps)))

    # ---------------------------------------------------------------- worker events (UI thread)

    def _set_state(self, state: RunState) -> None:
        self.state = state
        self.stateChanged.emit(state.value)

    def _current(self, gen: int) -> bool:
        return gen == self.gen and not self._closed

    @Slot(int, object)
    def _on_started(self, gen: int, info: dict) -> None:
        if self._current(gen):
            self.info = info
            self.started.emit(info)

    @Slot(int, object)
    def _on_stepped(self, gen: int, batch: list) -> None:
        if self._current(gen):
            self.stepped.emit(batch)

    @Slot(int, str)
    def _on_state(self, gen: int, value: str) -> None:
        if not self._current(gen):
            return
        state = RunState(value)
        if state is RunState.RESET:
            self.wasReset.emit()
            state = RunState.PAUSED
        elif state in (RunState.STOPPED, RunState.FAILED):  # no run left on the worker
            self.has_run = False
            state = RunState.ERROR if state is RunState.FAILED else state
        self._set_state(state)

    @Slot(int, object)
    def _on_faulted(self, gen: int, fault: dict) -> None:
        if self._current(gen):
            self.faulted.emit(fault)

    @Slot(int, str)
    def _on_failed(self, gen: int, message: str) -> None:
        if self._current(gen):
            self.failed.emit(message)

    @Slot(int, float)
    def _on_lr(self, gen: int, lr: float) -> None:
        if self._current(gen):
            self.lrChanged.emit(lr)

    @Slot(int, object)
    def _on_recording(self, gen: int, where: dict) -> None:
        if self._current(gen):
            self.recorded = dict(where)
            self.recording.emit(self.recorded)

    # ---------------------------------------------------------------- shutdown

    def shutdown(self, timeout_ms: int = JOIN_MS) -> bool:
        """Stop the run (ending the step in flight) and join the thread; True if it ended in time.
        A thread still in one long kernel is handed to the QApplication, which joins it when it
        quits (:meth:`~resviz.gui.runtime.workers.WorkerThread.stop`)."""
        self._closed = True
        handle, worker = self._handle, self._worker
        if handle is None:
            return True
        ok = handle.stop(timeout_ms)
        self.join_ms = handle.join_ms
        if ok:
            worker.loop.close("the window was closed")  # the thread has ended: safe from here
            self._handle = self._worker = None
        else:
            handle.stateChanged.connect(lambda _s, loop=worker.loop: loop.close("the app quit"))
        self.has_run = False
        self.state = RunState.IDLE
        return ok
