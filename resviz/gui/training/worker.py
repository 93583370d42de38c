"""Training on a background thread: a :class:`TrainingWorker` on its own QThread, driven from the UI
by a :class:`TrainingController`.

The worker owns the run (a :class:`~resviz.core.training.Trainer`, or a
:class:`~resviz.core.training.TwinRun` for the plain-twin comparison) built from the window's
Session. It trains one step per event of its thread's loop: after each step it queues the next one
instead of looping, so commands sent from the UI (pause, resume, step, reset, stop) are handled
between two steps. Pausing, the learning rate and the step target are plain attributes the UI
thread sets directly (an attribute assignment is atomic under the GIL), so they act at the very
next step even while the worker's queue is busy.

Stopping is cooperative but quick: hooks on the training copies (forward pre-hooks on the
container modules, gradient hooks on the parameters) raise as soon as the stop switch is on, so a
stop or a window close ends a long step within one layer's work, and the thread is joined within
the close timeout.

Every run is recorded as a run directory (:class:`~resviz.gui.training.record.RunRecording`):
the worker writes each step record as it comes, on the training thread, and closes the files when
the run stops, is reset (the reset run gets a new folder), is replaced or the window closes; the
``recording`` signal says where (``resviz RUN_DIR`` reopens it).

Everything the worker sends is plain Python: dicts and lists of numbers and strings (see
:func:`~resviz.core.training.store.record_payload`), never tensors or modules. Step records
are sent in batches (at most ~25 per second), so a tiny network stepping at hundreds of steps per
second does not flood the UI thread.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import traceback

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from ...core.training.store import record_payload
from ..runtime import ui_thread_gc as qt_gc

FLUSH_S = 0.04  # send step records at most this often (plus at every pause/fault/stop)
JOIN_MS = 2000  # how long closing the window waits for the training thread

# Every started training thread with its worker, referenced here until it is joined: even if its
# controller is garbage-collected first, Qt never destroys a running QThread.
_THREADS: dict[int, tuple] = {}


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, stop and join every training thread still running."""
    for thread, worker in list(_THREADS.values()):
        try:
            worker.pause_requested = True
            worker.switch.on = True
            thread.quit()
            if thread.wait(10_000):
                worker.close_recording("the app quit")
        except RuntimeError:  # its C++ side is already gone
            pass
    _THREADS.clear()


class _Abort(Exception):
    """Raised by the stop hooks inside a training step."""


class _StopSwitch:
    """Hooks on a training copy that end the running step when ``on`` is set."""

    def __init__(self):
        self.on = False
        self._handles: list = []

    def attach(self, model) -> None:
        switch = self

        def pre(_module, _args):
            if switch.on:
                raise _Abort("the run was stopped")

        def grad(_g):
            if switch.on:
                raise _Abort("the run was stopped")

        for m in model.modules():
            if next(m.children(), None) is not None:  # containers and blocks, not every leaf layer
                self._handles.append(m.register_forward_pre_hook(pre))
        for p in model.parameters():
            if p.requires_grad:
                self._handles.append(p.register_hook(grad))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def describe_error(exc: BaseException, phase: str = "") -> str:
    """What went wrong, in words; for a bug outside resviz, the user's file and line."""
    from ...core.errors import ResvizError

    if isinstance(exc, ResvizError):
        return str(exc)
    from ...core.training.trainer import user_location

    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    where = user_location(exc)
    loc = f"\n  at {where}" if where else ""
    what = f" while {phase}" if phase else ""
    if os.environ.get("RESVIZ_DEBUG"):
        traceback.print_exception(exc)
    return f"training failed{what}: {text}{loc}"


def config_threads(device: str, step_macs: float | None = None) -> tuple[int, int] | None:
    """On the CPU, train on every core this process may use, or on one for a step too small to
    share (:func:`~resviz.gui.training.estimate.training_threads`); returns (before, now) when
    that changed torch's intra-op thread count, which is restored when the run ends."""
    if not str(device).startswith("cpu"):
        return None
    import torch

    from .estimate import training_threads

    before = torch.get_num_threads()
    want = training_threads(step_macs)
    if want == before:
        return None
    torch.set_num_threads(want)
    return before, want


class TrainingWorker(QObject):
    """Lives on the training thread. The UI talks to it through :class:`TrainingController`."""

    # every signal carries the generation of the run it is about (the controller drops old ones)
    started = Signal(int, object)  # dict: names, plain_names, twin, device, data, notes, lr, ...
    stepped = Signal(int, object)  # list of {"residual": payload | None, "plain": payload | None}
    stateChanged = Signal(int, str)  # building, running, paused, finished, faulted, error, ...
    faulted = Signal(int, object)  # dict: message, which ('residual'/'plain'), blocks, lr
    failed = Signal(int, str)  # a message for the user
    lrChanged = Signal(int, float)  # the learning rate now used (after resume ×0.1)
    recording = Signal(int, object)  # {"residual": run dir, "plain": run dir} or {"error": message}
    _next = Signal()

    def __init__(self):
        super().__init__()
        self.switch = _StopSwitch()
        self.pause_requested = False  # set by the UI thread: do not start another step
        self._lock = threading.Lock()
        self._lr_request: float | None = None  # set by the UI thread: use from the next step on
        self._sessions: dict[int, object] = {}  # run generation -> the Session to build it from
        self.target = 0  # step target (0: unlimited), set by the UI thread
        self.run = None
        self.trainers: list = []
        self.twin = False
        self.gen = 0
        self._running = False
        self._pending: list = []
        self._last_emit = 0.0
        self._threads: tuple[int, int] | None = None
        self.recorder = None  # the RunRecording of the run (its run directories)
        self._spec: dict = {}
        self._next.connect(self._tick, Qt.QueuedConnection)

    # ---------------------------------------------------------------- commands (worker thread)

    def _state(self, state: str) -> None:
        if self.recorder is not None:
            self.recorder.set_state(state)
        self.stateChanged.emit(self.gen, state)

    def _record(self) -> None:
        """Start recording the run built (or reset) in new run directories; a folder that cannot
        be written is said, and the run trains unrecorded."""
        from .record import RunRecording

        try:
            self.recorder = RunRecording.create(self.trainers, self._spec)
        except Exception as exc:  # noqa: BLE001 - a disk or permission problem: say it, train on
            self.recorder = None
            self.recording.emit(self.gen, {"error": f"this run is not recorded: {describe_error(exc)}"})
            return
        self.recording.emit(self.gen, self.recorder.paths)

    def close_recording(self, message: str = "", reason: str = "stopped") -> None:
        """Close the run directories (the training thread, or any thread once it has ended)."""
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.close(reason, message)

    def request_lr(self, lr: float | None) -> None:
        """Use learning rate ``lr`` from the next step on (any thread)."""
        with self._lock:
            self._lr_request = lr

    def _take_lr(self) -> float | None:
        with self._lock:
            lr, self._lr_request = self._lr_request, None
        return lr

    def hand_over(self, gen: int, session) -> None:
        """The Session run ``gen`` is built from (any thread; signals carry only plain data)."""
        with self._lock:
            self._sessions[gen] = session

    @Slot(object, str, int)
    def build(self, spec: dict, then: str, gen: int) -> None:
        """Build run ``gen`` (``spec``: plain settings) from the Session handed over for it;
        then 'run', 'step' (one step) or 'pause'."""
        with self._lock:
            session = self._sessions.pop(gen, None)
            for old in [g for g in self._sessions if g < gen]:
                del self._sessions[old]
        self._drop()
        self.gen = gen
        if session is None:
            return
        self._state("building")
        try:
            from ...core.training import TrainConfig, Trainer, TwinRun

            cfg = TrainConfig(**spec["config"]).resolved()
            shape = tuple(getattr(session, "input_shape", ()) or (1,))
            macs = getattr(session.report, "macs", 0) / max(1, shape[0]) * cfg.batch_size * 3
            self._threads = config_threads(cfg.device, macs)
            data = spec.get("data") or None
            if spec.get("twin"):
                run = TwinRun.from_loaded(session.loaded, cfg, report=session.report, data=data)
                trainers = [run.residual, run.plain]
            else:
                run = Trainer.from_session(session, cfg, data=data)
                trainers = [run]
        except Exception as exc:  # noqa: BLE001 - a user mistake or a bug in the model: say so
            self._restore_threads()
            self.failed.emit(gen, describe_error(exc, "building the run"))
            self._state("failed")
            return
        if self.switch.on:  # stopped (or the window closed) while building
            self._restore_threads()
            return
        for t in trainers:
            self.switch.attach(t.model)
        self.run, self.trainers, self.twin = run, trainers, bool(spec.get("twin"))
        self._spec = dict(spec)
        self._record()
        res = trainers[0]
        notes = list(res.notes) + (list(trainers[1].notes) if len(trainers) > 1 else [])
        self.started.emit(gen, {
            "model": res.name, "names": list(res.block_names),
            "plain_names": list(trainers[1].block_names) if len(trainers) > 1 else [],
            "twin": self.twin, "device": cfg.device, "data": res.data.describe(), "notes": notes,
            "lr": cfg.lr, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size, "steps": cfg.steps,
            "threads": self._threads[1] if self._threads else None,
        })  # fmt: skip
        if then == "step":
            self._one_step()
        elif then == "run" and not self.pause_requested:
            self._go()
        else:
            self._state("paused")

    @Slot()
    def resume_run(self) -> None:
        if self.run is not None and not self._running:
            self._go()

    @Slot()
    def step_once(self) -> None:
        if self.run is not None and not self._running:
            self._one_step()

    @Slot()
    def reset_run(self) -> None:
        self._running = False
        self._flush()
        for t in self.trainers:
            t.reset()
        if self.twin:
            self.run.step_index = 0
        self.close_recording("reset to step 0 in the app; the run went on in a new folder", reason="reset")
        self._record()  # step numbers start at 0 again: a new run directory
        self._state("reset")

    @Slot(float)
    def resume_lower(self, factor: float) -> None:
        """After NaN/Inf: roll the stopped net(s) back and go on at ``factor`` × the failing lr."""
        if self.run is None:
            return
        blocked = [t for t in self.trainers if t.blocked]
        base = min((t._blocked_lr or t.lr) for t in blocked) if blocked else self.trainers[0].lr
        lr = base * factor
        self._take_lr()
        try:
            for t in self.trainers:
                if t.blocked:
                    t.resume(lr)
                else:
                    t.set_lr(lr)
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(self.gen, describe_error(exc, "resuming"))
            self._state("paused")
            return
        self.lrChanged.emit(self.gen, lr)
        if not self.pause_requested:
            self._go()
        else:
            self._state("paused")

    @Slot()
    def stop_run(self) -> None:
        self._running = False
        self._flush()
        self._drop()
        self.switch.on = False
        self._state("stopped")

    # ---------------------------------------------------------------- the loop

    def _go(self) -> None:
        if self._done():
            self._state("finished")
            return
        self._running = True
        self._state("running")
        self._next.emit()

    def _done(self) -> bool:
        return bool(self.target) and self._step_index() >= self.target

    def _step_index(self) -> int:
        return self.run.step_index if self.run is not None else 0

    @Slot()
    def _tick(self) -> None:
        if not self._running:
            return
        if self.run is None or self.pause_requested or self.switch.on:
            self._halt("paused")
            return
        if self._done():
            self._halt("finished")
            return
        status = self._do_step()
        if status is not None:
            self._halt(status)
        elif self._done():
            self._halt("finished")
        else:
            self._next.emit()

    def _one_step(self) -> None:
        status = self._do_step()
        self._flush()
        if status == "aborted":
            return
        self._state(status or ("finished" if self._done() else "paused"))

    def _halt(self, state: str) -> None:
        self._running = False
        self._flush()
        if state != "aborted":
            self._state(state)

    def _do_step(self) -> str | None:
        """One step of the run; None when it went fine, else the state to halt in."""
        from ...core.training import TrainingBlocked

        lr = self._take_lr()
        if lr is not None:
            try:
                self.run.set_lr(lr)
            except Exception as exc:  # noqa: BLE001
                self.failed.emit(self.gen, describe_error(exc))
        try:
            if self.twin:
                out = self.run.step()
                recs = {"residual": out.residual, "plain": out.plain}
            else:
                recs = {"residual": self.run.step(), "plain": None}
        except TrainingBlocked as exc:
            self._flush()
            self.faulted.emit(self.gen, {"message": str(exc), "which": "residual", "blocks": [],
                                         "lr": self.run.residual.lr if self.twin else self.run.lr})  # fmt: skip
            return "faulted"
        except Exception as exc:  # noqa: BLE001 - the model's code raised: show it, keep the app
            if self.switch.on or _is_abort(exc):
                return "aborted"
            self._flush()
            self.failed.emit(self.gen, describe_error(exc, f"at step {self._step_index()}"))
            return "error"
        if self.recorder is not None:
            problem = self.recorder.write(recs)
            if problem is not None:
                self.recorder = None
                self.recording.emit(self.gen, {"error": problem})
        now = time.perf_counter()
        item = {k: (record_payload(r, now) if r is not None else None) for k, r in recs.items()}
        self._pending.append(item)
        faults = [(k, r) for k, r in recs.items() if r is not None and r.nonfinite]
        if faults or now - self._last_emit >= FLUSH_S:
            self._flush()
        if faults:
            which, rec = faults[0]
            bad = sorted({k.rpartition(".")[0] for k in rec.flags} | _nonfinite_blocks(rec))
            msg = rec.message
            if self.twin:
                msg = f"{'plain twin' if which == 'plain' else 'residual net'}: {msg}"
            self.faulted.emit(self.gen, {"message": msg, "which": which, "blocks": bad, "lr": rec.lr})
            return "faulted"
        return None

    def _flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._last_emit = time.perf_counter()
            self.stepped.emit(self.gen, batch)

    def _drop(self) -> None:
        self.close_recording("stopped in the app")
        self.switch.detach()
        self.run, self.trainers, self.twin = None, [], False
        self._pending = []
        self._restore_threads()

    def _restore_threads(self) -> None:
        if self._threads is not None:
            import torch

            torch.set_num_threads(self._threads[0])
            self._threads = None


def _is_abort(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, _Abort) or "the run was stopped" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _nonfinite_blocks(rec) -> set[str]:
    import math

    return {
        b for b, d in rec.blocks.items()
        if any(not math.isfinite(d.get(k, 0.0)) for k in ("grad_norm", "input_grad_norm", "output_grad_norm"))
    }  # fmt: skip


class TrainingController(QObject):
    """The UI side of training: owns the thread and the worker; call it on the UI thread.

    ``state``: idle, building, running, paused, finished, faulted (NaN/Inf), error, stopped.
    Events of a run that a newer :meth:`start` replaced are dropped.
    """

    started = Signal(object)
    stepped = Signal(object)
    stateChanged = Signal(str)
    faulted = Signal(object)
    failed = Signal(str)
    lrChanged = Signal(float)
    recording = Signal(object)  # where the run is recorded: {"residual": dir, "plain": dir} or {"error": ...}
    wasReset = Signal()
    _build = Signal(object, str, int)  # spec (plain dict), then, generation
    _resume = Signal()
    _step = Signal()
    _reset = Signal()
    _resume_lower = Signal(float)
    _stop = Signal()

    def __init__(self, parent: QObject | None = None, name: str = "resviz-training"):
        super().__init__(parent)
        self._name = name
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._closed = False
        self.gen = 0
        self.state = "idle"
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
            thread = QThread()  # no parent: Qt never deletes it behind our back
            thread.setObjectName(self._name)
            worker = TrainingWorker()
            worker.moveToThread(thread)
            self._build.connect(worker.build)
            self._resume.connect(worker.resume_run)
            self._step.connect(worker.step_once)
            self._reset.connect(worker.reset_run)
            self._resume_lower.connect(worker.resume_lower)
            self._stop.connect(worker.stop_run)
            worker.started.connect(self._on_started)
            worker.stepped.connect(self._on_stepped)
            worker.stateChanged.connect(self._on_state)
            worker.faulted.connect(self._on_faulted)
            worker.failed.connect(self._on_failed)
            worker.lrChanged.connect(self._on_lr)
            worker.recording.connect(self._on_recording)
            qt_gc.install(thread)  # training allocates on its thread: collect cycles on the UI thread
            thread.start()
            self._thread, self._worker = thread, worker
            _THREADS[id(thread)] = (thread, worker)
        return self._worker

    def is_running(self) -> bool:
        """Whether the training thread runs (not whether a run trains: see ``state``)."""
        return self._thread is not None and self._thread.isRunning()

    @property
    def busy(self) -> bool:
        return self.state in ("building", "running")

    # ---------------------------------------------------------------- commands

    def start(self, session, spec: dict, then: str = "run") -> None:
        """A new run from ``session``: ``spec`` holds ``config`` (TrainConfig fields), ``data``
        (text) and ``twin``; ``then`` is run, step (one step, then pause) or pause."""
        w = self._ensure()
        if w is None:
            return
        if self.has_run:
            w.switch.on = True  # end the step in flight at once; stop_run switches it off again
            w.pause_requested = True
            self._stop.emit()
        w.pause_requested = then != "run"
        w.request_lr(None)
        w.target = int(spec.get("config", {}).get("steps", 0) or 0)
        self.gen += 1
        self.twin = bool(spec.get("twin"))
        self.has_run = True
        self.info = {}
        self.recorded = {}
        self._set_state("building")
        w.hand_over(self.gen, session)
        self._build.emit(spec, then, self.gen)

    def pause(self) -> None:
        if self._worker is not None:
            self._worker.pause_requested = True

    def resume(self) -> None:
        if self._worker is not None and self.has_run:
            self._worker.pause_requested = False
            self._resume.emit()

    def step(self) -> None:
        if self._worker is not None and self.has_run:
            self._worker.pause_requested = True
            self._step.emit()

    def reset(self) -> None:
        if self._worker is not None and self.has_run:
            self._worker.pause_requested = True
            self._reset.emit()

    def resume_lower(self, factor: float = 0.1) -> None:
        if self._worker is not None and self.has_run:
            self._worker.pause_requested = False
            self._resume_lower.emit(float(factor))

    def stop(self) -> None:
        """End the run now (the step in flight is abandoned); the plots keep what was recorded."""
        if self._worker is not None and self.has_run:
            self._worker.pause_requested = True
            self._worker.switch.on = True
            self._stop.emit()

    def set_lr(self, lr: float) -> None:
        if self._worker is not None:
            self._worker.request_lr(float(lr))

    def set_target(self, steps: int) -> None:
        if self._worker is not None:
            self._worker.target = max(0, int(steps))

    # ---------------------------------------------------------------- worker events (UI thread)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.stateChanged.emit(state)

    @Slot(int, object)
    def _on_started(self, gen: int, info: dict) -> None:
        if gen == self.gen and not self._closed:
            self.info = info
            self.started.emit(info)

    @Slot(int, object)
    def _on_stepped(self, gen: int, batch: list) -> None:
        if gen == self.gen and not self._closed:
            self.stepped.emit(batch)

    @Slot(int, str)
    def _on_state(self, gen: int, state: str) -> None:
        if gen != self.gen or self._closed:
            return
        if state == "reset":
            self.wasReset.emit()
            state = "paused"
        if state in ("stopped", "failed"):  # no run left on the worker
            self.has_run = False
            state = "error" if state == "failed" else state
        self._set_state(state)

    @Slot(int, object)
    def _on_faulted(self, gen: int, fault: dict) -> None:
        if gen == self.gen and not self._closed:
            self.faulted.emit(fault)

    @Slot(int, str)
    def _on_failed(self, gen: int, message: str) -> None:
        if gen == self.gen and not self._closed:
            self.failed.emit(message)

    @Slot(int, float)
    def _on_lr(self, gen: int, lr: float) -> None:
        if gen == self.gen and not self._closed:
            self.lrChanged.emit(lr)

    @Slot(int, object)
    def _on_recording(self, gen: int, where: dict) -> None:
        if gen == self.gen and not self._closed:
            self.recorded = dict(where)
            self.recording.emit(self.recorded)

    # ---------------------------------------------------------------- shutdown

    def shutdown(self, timeout_ms: int = JOIN_MS) -> bool:
        """Stop the run (ending the step in flight) and join the thread; True if it ended in time."""
        self._closed = True
        thread, worker = self._thread, self._worker
        if thread is None:
            return True
        t0 = time.perf_counter()
        worker.pause_requested = True
        worker.switch.on = True
        thread.quit()
        ok = thread.wait(int(timeout_ms))
        self.join_ms = (time.perf_counter() - t0) * 1000
        if ok:
            _THREADS.pop(id(thread), None)
            worker.switch.detach()
            worker._restore_threads()
            worker.close_recording("the window was closed")
            self._thread = self._worker = None
        # else: one kernel longer than the timeout; _THREADS keeps it referenced, joined at exit
        self.has_run = False
        self.state = "idle"
        return ok
