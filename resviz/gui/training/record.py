"""The run directory of a run the Training tab trains (no Qt; runs on the training thread).

Every run the tab starts is written as a run directory (format 1, :mod:`resviz.core.training.rundir`)
exactly as ``resviz train`` writes one: the same :class:`~resviz.core.training.RunWriter`, the
same default place (``<user data dir>/runs/<model>-<UTC time>``, ``$RESVIZ_DATA_DIR`` when set),
``report.json`` from the same report. A run beside its plain twin writes two: the plain twin's
goes to the sibling folder ``<residual folder>-plain``, and each ``run.json`` names the other.

:class:`RunRecording` is held by the training worker: it writes each step record as the trainer
returns it (one line, flushed, on the training thread, never on the UI thread), mirrors the
controller's state into ``run.json`` and closes the files when the run stops, is reset (a reset
run starts a new folder: its steps count from 0 again), is replaced or the window closes. A disk
that fills up or a folder that cannot be written ends the recording with a message, never the
training.
"""

from __future__ import annotations

from pathlib import Path

from ...core.training.rundir import RunWriter, default_run_dir, now_iso
from ...core.training.store import RunState

# the controller's states as run.json states (building and reset write nothing)
_STATE = {
    "running": RunState.RUNNING, "paused": RunState.PAUSED, "error": RunState.PAUSED,
    "finished": RunState.FINISHED, "faulted": RunState.FAULTED,
}  # fmt: skip

__all__ = ["RunRecording", "app_run_config"]


def app_run_config(trainer, spec: dict, *, plain: bool, twin: bool, started: str) -> dict:
    """What ``run.json`` records of a run started in the app (the keys ``resviz train`` writes)."""
    import torch

    from ..._version import __version__

    cfg = trainer.config
    return {
        "source": "resviz app", "model": trainer.name, "input_shape": list(trainer.input_shape),
        "plain": bool(plain), "twin": bool(twin), "optimizer": cfg.optimizer, "lr": cfg.lr,
        "momentum": cfg.momentum, "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size, "steps": cfg.steps, "seed": cfg.seed,
        "data": spec.get("data") or "synthetic", "data_description": trainer.data.describe(),
        "device": cfg.device, "world_size": 1, "every": 1, "probes": cfg.probes,
        "torch": torch.__version__, "resviz": __version__, "started": started,
    }  # fmt: skip


class RunRecording:
    """The run directories of one run (``"residual"``, and ``"plain"`` beside a plain twin)."""

    def __init__(self, writers: dict[str, RunWriter]):
        self.writers = writers
        self.error: str | None = None  # why the recording ended early (a disk problem)

    @classmethod
    def create(cls, trainers: list, spec: dict, base: str | Path | None = None) -> RunRecording:
        """New run directories for ``trainers`` (one, or the residual net and its plain twin);
        ``base`` is the residual run's folder (default: a new one under the user's data dir)."""
        from ...core.training.runreport import report_json

        twin = len(trainers) > 1
        res = trainers[0]
        path = Path(base) if base is not None else default_run_dir(res.name)
        paths = (
            {"residual": path, "plain": path.with_name(path.name + "-plain")} if twin else {"residual": path}
        )
        started = now_iso()
        writers: dict[str, RunWriter] = {}
        report = report_json(res.report)
        try:
            for (key, p), t in zip(paths.items(), trainers):
                plain = key == "plain"
                config = app_run_config(t, spec, plain=plain, twin=twin, started=started)
                if twin:
                    config["twin_run"] = str(paths["residual" if plain else "plain"])
                name = f"plain twin of {res.name}" if plain else res.name
                writers[key] = RunWriter.create(p, name=name, config=config, blocks=t.block_names,
                                                report=report)  # fmt: skip
                for note in t.notes:
                    writers[key].log("note", note)
        except BaseException:
            for w in writers.values():
                w.close(RunState.STOPPED, "the run could not be recorded")
            raise
        return cls(writers)

    @property
    def paths(self) -> dict[str, str]:
        return {k: str(w.path) for k, w in self.writers.items()}

    def write(self, records: dict) -> str | None:
        """File ``{"residual": StepRecord | None, "plain": ...}``; a message when writing failed
        (the recording then ends: the run goes on, unrecorded)."""
        if self.error is not None:
            return None
        try:
            for key, rec in records.items():
                w = self.writers.get(key)
                if rec is not None and w is not None:
                    w.write(rec)
        except (OSError, ValueError) as exc:
            where = ", ".join(self.paths.values())
            self.error = f"recording the run in {where} stopped: {getattr(exc, 'strerror', None) or exc}"
            self.close("stopped", self.error)
            return self.error
        return None

    def set_state(self, state: str, message: str = "") -> None:
        rs = _STATE.get(state)
        if rs is None or self.error is not None:
            return
        for w in self.writers.values():
            if not w.closed:
                try:
                    w.set_state(rs, message)
                except OSError:
                    pass  # run.json could not be replaced: the steps are what matters

    def close(self, reason: str = "stopped", message: str = "") -> None:
        """Close every file; a run left running or paused is recorded as stopped, a finished or
        faulted one keeps its state."""
        for w in self.writers.values():
            if w.closed:
                continue
            now = w.meta.get("state")
            keep = now in (RunState.FINISHED.value, RunState.FAULTED.value) and reason != "reset"
            try:
                w.close(RunState(now) if keep else RunState.STOPPED, message)
            except (OSError, ValueError):
                pass
