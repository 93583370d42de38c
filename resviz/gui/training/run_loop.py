"""The training run as a state machine (no Qt): commands in, one step per turn, events out.

:class:`TrainingLoop` owns the run (a :class:`~resviz.core.training.Trainer`, or a
:class:`~resviz.core.training.TwinRun` for the plain-twin comparison). The UI thread talks to it
only through its :class:`~resviz.gui.runtime.commands.CommandQueue` (build, pause, resume, step,
reset, resume_lower, stop, lr, target) and its :class:`~resviz.gui.runtime.commands.StopFlag`;
it never writes the loop's attributes. Each :meth:`TrainingLoop.turn` first handles every command
that waits, then trains one step if the run is running, and says whether to turn again. The Qt
worker (:mod:`resviz.gui.training.worker`) calls ``turn`` on the training thread, one turn per
event of that thread's loop; the tests call it directly, with no thread and no QApplication.

Stopping is cooperative but quick: hooks on the training copies (forward pre-hooks on the
container modules, gradient hooks on the parameters) raise
:class:`~resviz.gui.runtime.commands.Stopped` as soon as the stop flag is set, so a stop or a
window close ends a long step within one layer's work. A stopped step is known by that type and
by the flag, never by the words of an exception.

Every run is recorded as a run directory (:class:`~resviz.gui.training.record.RunRecording`),
written on the training thread and closed when the run stops, is reset (the reset run gets a new
folder), is replaced or the window closes. Events carry plain Python only: dicts and lists of
numbers and strings (:func:`~resviz.core.training.store.record_payload`), never tensors or
modules; step records go out in batches (at most ~25 per second).

The training runs on torch's intra-op thread count as the process has it: the host's own under
``resviz.show``; in the app, what :func:`resviz.gui.app.run_app` set once at start. The loop never
changes it (``torch.set_num_threads`` acts on the whole process, not on one thread).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple

from ...core.training.store import record_payload
from ..runtime.commands import CommandQueue, StopFlag, Stopped

FLUSH_S = 0.04  # send step records at most this often (plus at every pause/fault/stop)


class RunState(str, Enum):
    """The state of the run, as the loop announces it (``.value`` goes out in events).

    ``RESET`` and ``FAILED`` are announcements: the controller shows them as ``PAUSED`` (the
    plots cleared) and ``ERROR`` (no run left)."""

    IDLE = "idle"
    BUILDING = "building"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    FAULTED = "faulted"  # NaN/Inf: paused, can resume at a lower learning rate
    ERROR = "error"  # a step raised: paused, the run is kept
    STOPPED = "stopped"  # no run left
    RESET = "reset"
    FAILED = "failed"  # the run could not be built


Emit = Callable[[str, int, Any], None]  # (event, run generation, plain payload)


class BuiltRun(NamedTuple):
    run: Any  # a Trainer or a TwinRun
    trainers: list
    twin: bool
    config: Any  # the resolved TrainConfig


def build_run(session, spec: dict) -> BuiltRun:
    """The run ``spec`` asks for (``config``: TrainConfig fields, ``data``, ``twin``), built from
    ``session``'s model; raises what building raises (a ResvizError for a user mistake)."""
    from ...core.training import TrainConfig, Trainer, TwinRun

    cfg = TrainConfig(**spec["config"]).resolved()
    data = spec.get("data") or None
    if spec.get("twin"):
        run = TwinRun.from_loaded(session.loaded, cfg, report=session.report, data=data)
        return BuiltRun(run, [run.residual, run.plain], True, cfg)
    run = Trainer.from_session(session, cfg, data=data)
    return BuiltRun(run, [run], False, cfg)


def start_recording(trainers: list, spec: dict):
    """New run directories for the run (:class:`~resviz.gui.training.record.RunRecording`)."""
    from .record import RunRecording

    return RunRecording.create(trainers, spec)


class StopHooks:
    """Hooks on a training copy that end the running step when the stop flag is set."""

    def __init__(self, flag: StopFlag):
        self.flag = flag
        self._handles: list = []

    def attach(self, model) -> None:
        flag = self.flag

        def pre(_module, _args):
            flag.check()

        def grad(_g):
            flag.check()

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


def started_info(built: BuiltRun, spec: dict, threads: int | None) -> dict:
    """What the ``started`` event says of a run just built (plain values)."""
    res, cfg = built.trainers[0], built.config
    plain = built.trainers[1] if len(built.trainers) > 1 else None
    return {
        "model": res.name, "names": list(res.block_names),
        "plain_names": list(plain.block_names) if plain is not None else [],
        "twin": built.twin, "device": cfg.device, "data": res.data.describe(),
        "notes": list(res.notes) + (list(plain.notes) if plain is not None else []),
        "lr": cfg.lr, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size, "steps": cfg.steps,
        "threads": threads,
    }  # fmt: skip


def _torch_threads(device: str) -> int | None:
    """The intra-op threads a CPU run uses (torch's count as the process has it)."""
    if not str(device).startswith("cpu"):
        return None
    import torch

    return torch.get_num_threads()


def nonfinite_blocks(rec) -> set[str]:
    """The blocks of step record ``rec`` whose gradient norms are NaN or Inf."""
    keys = ("grad_norm", "input_grad_norm", "output_grad_norm")
    return {b for b, d in rec.blocks.items() if any(not math.isfinite(d.get(k, 0.0)) for k in keys)}


def first_fault(recs: dict, twin: bool) -> dict | None:
    """The ``faulted`` event of a step whose records (``{"residual": rec, "plain": rec}``) went
    NaN/Inf, or None when every record is finite."""
    faults = [(k, r) for k, r in recs.items() if r is not None and r.nonfinite]
    if not faults:
        return None
    which, rec = faults[0]
    bad = sorted({k.rpartition(".")[0] for k in rec.flags} | nonfinite_blocks(rec))
    msg = rec.message
    if twin:
        msg = f"{'plain twin' if which == 'plain' else 'residual net'}: {msg}"
    return {"message": msg, "which": which, "blocks": bad, "lr": rec.lr}


class TrainingLoop:
    """One training run at a time, driven by commands; see the module's docstring."""

    def __init__(self, emit: Emit, make_run: Callable[[Any, dict], BuiltRun] = build_run,
                 make_recording: Callable[[list, dict], Any] = start_recording):  # fmt: skip
        self.commands = CommandQueue()
        self.stop_flag = StopFlag()
        self._emit = emit
        self._make_run = make_run
        self._make_recording = make_recording
        self._hooks = StopHooks(self.stop_flag)
        self.gen = 0
        self.state = RunState.IDLE
        self.run = None
        self.trainers: list = []
        self.twin = False
        self.running = False
        self.target = 0  # step target (0: unlimited)
        self.recorder = None  # the RunRecording of the run (its run directories)
        self._lr: float | None = None  # the learning rate asked for, used from the next step on
        self._spec: dict = {}
        self._pending: list = []
        self._last_emit = 0.0
        self._handlers: dict[str, Callable[..., None]] = {
            "build": self._build, "pause": self._pause, "resume": self._resume, "step": self._step,
            "reset": self._reset, "resume_lower": self._resume_lower, "stop": self._stop,
            "lr": self._set_lr, "target": self._set_target,
        }  # fmt: skip

    # ---------------------------------------------------------------- the turn

    def turn(self) -> bool:
        """Handle every command that waits, then train one step if running; True: turn again."""
        commands = self.commands.drain()
        while commands:  # those sent while these were handled (during a long build) act before a step
            last_build = max((i for i, c in enumerate(commands) if c.name == "build"), default=-1)
            for i, cmd in enumerate(commands):
                if cmd.name == "build" and i < last_build:
                    continue  # a newer run was asked for in the same breath: build only that one
                self._handlers[cmd.name](*cmd.args)
            commands = self.commands.drain()
        if self.running:
            self._tick()
        return self.running

    def _announce(self, state: RunState) -> None:
        self.state = state
        if self.recorder is not None:
            self.recorder.set_state(state.value)
        self._emit("state", self.gen, state.value)

    # ---------------------------------------------------------------- commands

    def _build(self, spec: dict, then: str, gen: int, session) -> None:
        """Build run ``gen`` from ``session``; then 'run', 'step' (one step) or 'pause'."""
        self._drop()
        self.gen = gen
        self.target = int(spec.get("config", {}).get("steps", 0) or 0)
        self._lr = None
        self._announce(RunState.BUILDING)
        try:
            built = self._make_run(session, spec)
        except Exception as exc:  # noqa: BLE001 - a user mistake or a bug in the model: the tab says which
            self._emit("failed", gen, describe_error(exc, "building the run"))
            self._announce(RunState.FAILED)
            return
        if self.stop_flag.requested():  # stopped (or the window closed) while building
            return
        for t in built.trainers:
            self._hooks.attach(t.model)
        self.run, self.trainers, self.twin = built.run, built.trainers, built.twin
        self._spec = dict(spec)
        self._record()
        self._emit("started", gen, started_info(built, spec, _torch_threads(built.config.device)))
        if then == "step":
            self._one_step()
        elif then == "run":
            self._go()
        else:
            self._announce(RunState.PAUSED)

    def _pause(self) -> None:
        if self.running:
            self._halt(RunState.PAUSED)

    def _resume(self) -> None:
        if self.run is not None and not self.running:
            self._go()

    def _step(self) -> None:
        if self.running:
            self._halt(RunState.PAUSED)
        if self.run is not None:
            self._one_step()

    def _reset(self) -> None:
        if self.run is None:
            return
        self.running = False
        self._flush()
        for t in self.trainers:
            t.reset()
        if self.twin:
            self.run.step_index = 0
        self._close_recording("reset to step 0 in the app; the run went on in a new folder", reason="reset")
        self._record()  # step numbers start at 0 again: a new run directory
        self._announce(RunState.RESET)

    def _resume_lower(self, factor: float) -> None:
        """After NaN/Inf: roll the stopped net(s) back and go on at ``factor`` × the failing lr."""
        if self.run is None:
            return
        blocked = [t for t in self.trainers if t.blocked]
        base = min((t._blocked_lr or t.lr) for t in blocked) if blocked else self.trainers[0].lr
        lr = base * factor
        self._lr = None
        try:
            for t in self.trainers:
                if t.blocked:
                    t.resume(lr)
                else:
                    t.set_lr(lr)
        except Exception as exc:  # noqa: BLE001 - the model's code raised while rolling back: say it, stay paused
            self._emit("failed", self.gen, describe_error(exc, "resuming"))
            self._announce(RunState.PAUSED)
            return
        self._emit("lr", self.gen, lr)
        self._go()

    def _stop(self) -> None:
        self.running = False
        self._flush()
        self._drop()
        self.stop_flag.clear()
        self._announce(RunState.STOPPED)

    def _set_lr(self, lr: float | None) -> None:
        self._lr = lr

    def _set_target(self, steps: int) -> None:
        self.target = max(0, int(steps))

    # ---------------------------------------------------------------- the steps

    def _go(self) -> None:
        if self._done():
            self._announce(RunState.FINISHED)
            return
        self.running = True
        self._announce(RunState.RUNNING)

    def _done(self) -> bool:
        return bool(self.target) and self._step_index() >= self.target

    def _step_index(self) -> int:
        return self.run.step_index if self.run is not None else 0

    def _tick(self) -> None:
        if self.run is None or self.stop_flag.requested():
            self.running = False  # the stop command that set the flag is on its way
            self._flush()
            return
        if self._done():
            self._halt(RunState.FINISHED)
            return
        status = self._do_step()
        if status is not None:
            self._halt(status)
        elif self._done():
            self._halt(RunState.FINISHED)

    def _one_step(self) -> None:
        status = self._do_step()
        self._flush()
        if status is None:
            self._announce(RunState.FINISHED if self._done() else RunState.PAUSED)
        elif status is not Stopped:
            self._announce(status)

    def _halt(self, state: RunState | type[Stopped]) -> None:
        self.running = False
        self._flush()
        if state is not Stopped:
            self._announce(state)

    def _do_step(self) -> RunState | type[Stopped] | None:
        """One step of the run: None when it went fine, else the state to halt in (``Stopped``:
        the step was abandoned, the stop command says the rest)."""
        self._apply_lr()
        try:
            recs = self._train_step()
        except Stopped:
            return Stopped
        except _Blocked as blocked:
            self._flush()
            self._emit("faulted", self.gen, blocked.fault)
            return RunState.FAULTED
        except Exception as exc:  # noqa: BLE001 - the model's code raised: the tab shows it, the app stays
            if self.stop_flag.requested():  # the model turned our Stopped into its own error
                return Stopped
            self._flush()
            self._emit("failed", self.gen, describe_error(exc, f"at step {self._step_index()}"))
            return RunState.ERROR
        self._write(recs)
        fault = self._queue_records(recs)
        if fault is not None:
            self._emit("faulted", self.gen, fault)
            return RunState.FAULTED
        return None

    def _apply_lr(self) -> None:
        lr, self._lr = self._lr, None
        if lr is None:
            return
        try:
            self.run.set_lr(lr)
        except Exception as exc:  # noqa: BLE001 - a bad value from the field: said, training goes on
            self._emit("failed", self.gen, describe_error(exc))

    def _train_step(self) -> dict:
        """The step's records, ``{"residual": rec, "plain": rec | None}``; a run blocked by an
        earlier NaN/Inf raises :class:`_Blocked`."""
        from ...core.training import TrainingBlocked

        try:
            if self.twin:
                out = self.run.step()
                return {"residual": out.residual, "plain": out.plain}
            return {"residual": self.run.step(), "plain": None}
        except TrainingBlocked as exc:
            lr = self.run.residual.lr if self.twin else self.run.lr
            raise _Blocked({"message": str(exc), "which": "residual", "blocks": [], "lr": lr}) from exc

    def _write(self, recs: dict) -> None:
        if self.recorder is None:
            return
        problem = self.recorder.write(recs)
        if problem is not None:
            self.recorder = None
            self._emit("recording", self.gen, {"error": problem})

    def _queue_records(self, recs: dict) -> dict | None:
        """Queue the step's payloads for the UI (sent in batches); returns its fault, if any."""
        now = time.perf_counter()
        self._pending.append({k: (record_payload(r, now) if r is not None else None) for k, r in recs.items()})
        fault = first_fault(recs, self.twin)
        if fault is not None or now - self._last_emit >= FLUSH_S:
            self._flush()
        return fault

    def _flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._last_emit = time.perf_counter()
            self._emit("stepped", self.gen, batch)

    # ---------------------------------------------------------------- the run's lifetime

    def _record(self) -> None:
        """Start recording the run in new run directories; a folder that cannot be written is
        said, and the run trains unrecorded."""
        try:
            self.recorder = self._make_recording(self.trainers, self._spec)
        except Exception as exc:  # noqa: BLE001 - a disk or permission problem: said, the run trains on
            self.recorder = None
            self._emit("recording", self.gen, {"error": f"this run is not recorded: {describe_error(exc)}"})
            return
        self._emit("recording", self.gen, self.recorder.paths)

    def _close_recording(self, message: str = "", reason: str = "stopped") -> None:
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.close(reason, message)

    def _drop(self) -> None:
        self._close_recording("stopped in the app")
        self._hooks.detach()
        self.run, self.trainers, self.twin = None, [], False
        self.running = False
        self._pending = []

    def close(self, message: str) -> None:
        """The thread has ended (the window closed): take the hooks off and close the files.
        Called by the owner once the training thread is joined."""
        self._hooks.detach()
        self._close_recording(message)
        self.running = False


class _Blocked(Exception):
    """A step refused because an earlier NaN/Inf blocked the run (carries the fault event)."""

    def __init__(self, fault: dict):
        super().__init__(fault["message"])
        self.fault = fault
