"""The one headless model of a training run: state, a bounded store of step records, faults, events.

No Qt and no torch here (numpy only), so the app can import it before torch is loaded and a tool
that only reads a run directory never loads torch. One :class:`RunStore` holds the steps of one
series (a network, or its plain twin):

* **columns**: ``steps()``, ``scalar("loss" | "accuracy" | "lr" | "seconds")`` and
  ``probe(name)`` (a ``rows x blocks`` array) are numpy arrays, so a plot slices instead of walking
  dicts. Memory is bounded: every step is kept until ``capacity`` rows are full, then every other
  row is dropped and from then on only every second step is kept (then every fourth, ...). Rows
  stay evenly spaced in steps (the heatmap needs that). The first step, the latest step and every
  NaN/Inf step are always at hand besides. Full fidelity lives on disk (``steps.jsonl`` of the run
  directory, see :mod:`resviz.core.training.rundir`); this is the thinned view in memory.
* **state**: :class:`RunState` (``idle``, ``running``, ``paused``, ``faulted``, ``finished``,
  ``stopped``) set with :meth:`RunStore.set_state`.
* **flags and faults**: ``latest_flags()`` (``"<block>.<probe>" -> "vanishing" | "exploding"``) and
  ``faults`` (every NaN/Inf record in full, as payload dicts); ``flagged_blocks()`` and
  :func:`summarise_flags` give them in natural order (``layer1.2`` before ``layer1.10``).
* **tint**: ``tint(probe)`` is ``{block: value}`` of the latest step, what the graph colours by.
* **events**: plain-Python callbacks, no Qt signals::

      store.on("stepped", lambda store, payload: ...)       # after every append
      store.on("state_changed", lambda store, old, new: ...)
      store.on("faulted", lambda store, payload: ...)       # a NaN/Inf record arrived

  A callback that raises is removed from nothing and does not stop the others; the error is kept
  in ``store.callback_errors`` and said once per callback as a ``RuntimeWarning`` (the training
  loop must never die of a viewer's bug, nor hide it).

``append`` takes a :class:`~resviz.core.training.steps.StepRecord` or its payload dict
(``StepRecord.to_dict()`` with an optional wall time ``"t"``; JSON ``null`` reads as NaN).
Block names are fixed at construction, or (``block_names=None``) taken from the records as they
arrive, new blocks growing the columns.
"""

from __future__ import annotations

import enum
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable

import numpy as np

from .steps import EXPLODING, NORM_PROBES, PROBES, VANISHING, StepRecord, flag_norms

PROBE_INDEX = {p: i for i, p in enumerate(PROBES)}
SCALARS = ("loss", "accuracy", "lr", "seconds")
PROBE_TITLES = {
    "grad_norm": "parameter gradient norm ‖∂L/∂θ‖",
    "input_grad_norm": "gradient norm at the block input ‖∂L/∂x‖",
    "output_grad_norm": "gradient norm at the block output ‖∂L/∂H‖",
    "residual_ratio": "residual ratio ‖F(x)‖ / ‖shortcut(x)‖",
    "gain": "gradient gain ‖∂L/∂x‖ / ‖∂L/∂H‖",
}
EVENTS = ("stepped", "state_changed", "faulted")

__all__ = [
    "EVENTS", "EXPLODING", "PROBES", "PROBE_TITLES", "RunState", "RunStore", "VANISHING",
    "natural_key", "record_payload", "summarise_flags",
]  # fmt: skip


class RunState(enum.Enum):
    """Where a run is. ``value`` is what ``run.json`` stores."""

    IDLE = "idle"  # set up, no step yet
    RUNNING = "running"
    PAUSED = "paused"  # stopped by the user, can go on
    FAULTED = "faulted"  # a NaN/Inf step stopped it
    FINISHED = "finished"  # ran all its steps
    STOPPED = "stopped"  # ended early: Ctrl-C, SIGTERM, an error, or the writer went away

    @property
    def live(self) -> bool:
        return self in (RunState.IDLE, RunState.RUNNING)


def natural_key(name: str) -> tuple:
    """Sort key that orders ``layer1.2`` before ``layer1.10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", name))


def summarise_flags(flags: dict[str, str], limit: int = 4) -> str:
    """``"exploding in 3 blocks (layer3.0, layer3.1, layer3.2); vanishing in layer1.0"``: blocks
    per kind in natural order, at most ``limit`` names each, then ``and N more``."""
    by_kind: dict[str, set[str]] = {}
    for key, kind in flags.items():
        block, _, _probe = key.rpartition(".")
        by_kind.setdefault(kind, set()).add(block or key)
    parts = []
    for kind in sorted(by_kind):
        names = sorted(by_kind[kind], key=natural_key)
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
        parts.append(f"{kind} in {shown}" if len(names) == 1 else f"{kind} in {len(names)} blocks ({shown})")
    return "; ".join(parts)


def record_payload(rec, wall: float | None = None) -> dict:
    """A StepRecord (or its dict) as plain Python numbers, NaN for missing values, plus the wall
    time ``"t"`` (``time.perf_counter()`` unless given): what crosses threads and what the store
    keeps of its first, latest and faulted steps."""
    if isinstance(rec, StepRecord):
        d = {
            "step": int(rec.step), "loss": float(rec.loss), "accuracy": float(rec.accuracy),
            "lr": float(rec.lr), "seconds": float(rec.seconds),
            "blocks": {b: {k: float(v) for k, v in p.items()} for b, p in rec.blocks.items()},
            "flags": {str(k): str(v) for k, v in rec.flags.items()},
            "nonfinite": bool(rec.nonfinite), "message": str(rec.message),
        }  # fmt: skip
    else:
        d = {
            "step": int(rec["step"]),
            **{k: _num(rec.get(k)) for k in SCALARS},
            "blocks": {
                b: {k: _num(v) for k, v in (p or {}).items()} for b, p in (rec.get("blocks") or {}).items()
            },
            "flags": {str(k): str(v) for k, v in (rec.get("flags") or {}).items()},
            "nonfinite": bool(rec.get("nonfinite", False)),
            "message": str(rec.get("message") or ""),
        }
        if "t" in rec and wall is None:
            wall = rec["t"]
    d["t"] = time.perf_counter() if wall is None else float(wall)
    return d


def _num(v) -> float:
    if v is None or v == "":
        return math.nan
    return float(v)


class RunStore:
    """The steps of one run (one series) in numpy columns with bounded memory; see the module doc."""

    def __init__(self, block_names: Iterable[str] | None = None, capacity: int = 4096):
        if capacity < 4:
            raise ValueError("capacity must be at least 4")
        self.grow = block_names is None
        self.names: list[str] = list(block_names or ())
        self.index = {n: i for i, n in enumerate(self.names)}
        self.capacity = int(capacity)
        self._steps = np.zeros(self.capacity, dtype=np.int64)
        self._scalars = np.full((self.capacity, len(SCALARS)), np.nan)
        self._probes = np.full((self.capacity, len(self.names), len(PROBES)), np.nan)
        self._callbacks: dict[str, list[Callable]] = {e: [] for e in EVENTS}
        self.callback_errors: list[str] = []
        self._warned: set[tuple[str, int]] = set()
        self.state = RunState.IDLE
        self.clear()

    # ---------------------------------------------------------------- events and state

    def on(self, event: str, callback: Callable) -> Callable:
        """Call ``callback`` on ``event`` (one of :data:`EVENTS`); returns it (for :meth:`off`)."""
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        self._callbacks[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable) -> None:
        if callback in self._callbacks.get(event, []):
            self._callbacks[event].remove(callback)

    def _emit(self, event: str, *args) -> None:
        for cb in list(self._callbacks[event]):
            try:
                cb(self, *args)
            except Exception as e:  # noqa: BLE001 - a viewer's bug must not stop the run; kept and warned once
                self._callback_failed(event, cb, e)

    def _callback_failed(self, event: str, cb: Callable, e: Exception) -> None:
        what = f"{event} callback {getattr(cb, '__name__', cb)!r}: {e!r}"
        self.callback_errors.append(what)
        if (event, id(cb)) not in self._warned:  # once per callback: it may fail at every step
            self._warned.add((event, id(cb)))
            warnings.warn(f"resviz: the run store's {what}; the run goes on, the callback may have missed "
                          "this and later events", RuntimeWarning, stacklevel=3)  # fmt: skip

    def set_state(self, state: RunState | str) -> None:
        new = RunState(state)
        old, self.state = self.state, new
        if old is not new:
            self._emit("state_changed", old, new)

    # ---------------------------------------------------------------- filling

    def clear(self) -> None:
        """Forget every step (the block names, callbacks and state stay)."""
        self.n = 0  # rows kept
        self.stride = 1
        self.count = 0  # records appended since the start (or the last clear)
        self.latest: dict | None = None
        self.last_finite: dict | None = None  # the latest record without NaN/Inf (what led to a fault)
        self._latest_probes = np.full((len(self.names), len(PROBES)), np.nan)
        self.first: dict | None = None  # the first record of the run: the network at step 0
        self.first_probes = np.full((len(self.names), len(PROBES)), np.nan)
        self.faults: list[dict] = []  # every NaN/Inf record, in full
        self.times: list[tuple[int, float]] = []  # (step, wall time) of recent records, for steps/s
        self.version = 0  # bumps on every change: plots redraw only when it moved

    def __len__(self) -> int:
        return self.n

    def _add_names(self, names: Iterable[str]) -> None:
        new = [n for n in names if n not in self.index]
        if not new:
            return
        for n in new:
            self.index[n] = len(self.names)
            self.names.append(n)
        pad = ((0, 0), (0, len(new)), (0, 0))
        self._probes = np.pad(self._probes, pad, constant_values=np.nan)
        self._latest_probes = np.pad(self._latest_probes, pad[1:], constant_values=np.nan)
        self.first_probes = np.pad(self.first_probes, pad[1:], constant_values=np.nan)

    def _row(self, payload: dict) -> np.ndarray:
        blocks = payload.get("blocks") or {}
        if self.grow:
            self._add_names(blocks)
        out = np.full((len(self.names), len(PROBES)), np.nan)
        index = self.index
        for name, probes in blocks.items():
            i = index.get(name)
            if i is None:
                continue
            row = out[i]
            for k, v in probes.items():
                j = PROBE_INDEX.get(k)
                if j is not None:
                    row[j] = math.nan if v is None else v
        return out

    def append(self, record) -> dict:
        """File one step (a StepRecord or its payload dict); returns the payload kept."""
        payload = record_payload(record) if isinstance(record, StepRecord) or "t" not in record else record
        probes = self._row(payload)
        seq = self.count
        self.count += 1
        self.latest = payload
        self._latest_probes = probes
        self.version += 1
        if self.first is None:
            self.first = payload
            self.first_probes = probes
        if payload.get("nonfinite"):
            self.faults.append(payload)
        else:
            self.last_finite = payload
        t = payload.get("t")
        if t is not None:
            self.times.append((int(payload["step"]), float(t)))
            if len(self.times) > 64:
                del self.times[:-48]
        if seq % self.stride == 0:
            if self.n == self.capacity:
                self._thin()
            if seq % self.stride == 0:
                i = self.n
                self._steps[i] = payload["step"]
                self._scalars[i] = [_num(payload.get(k)) for k in SCALARS]
                self._probes[i] = probes
                self.n += 1
        self._emit("stepped", payload)
        if payload.get("nonfinite"):
            self._emit("faulted", payload)
        return payload

    def extend(self, records) -> None:
        for r in records:
            self.append(r)

    def _thin(self) -> None:
        """Keep every other row (rows are evenly spaced, so the kept ones still are)."""
        self.stride *= 2  # row i holds sequence number i * old stride: even rows are the new grid
        keep = slice(0, self.n, 2)
        m = len(range(*keep.indices(self.n)))
        self._steps[:m] = self._steps[keep].copy()
        self._scalars[:m] = self._scalars[keep].copy()
        self._probes[:m] = self._probes[keep].copy()
        self._scalars[m:] = np.nan
        self._probes[m:] = np.nan
        self.n = m

    # ---------------------------------------------------------------- reading

    def _with_latest(self, rows: np.ndarray, latest) -> np.ndarray:
        if self.latest is None or (self.n and self._steps[self.n - 1] == self.latest["step"]):
            return rows
        return np.concatenate([rows, np.asarray(latest)[None]], axis=0)

    def steps(self, with_latest: bool = True) -> np.ndarray:
        s = self._steps[: self.n]
        if not with_latest:
            return s
        return self._with_latest(s, self.latest["step"] if self.latest else 0)

    def scalar(self, key: str, with_latest: bool = True) -> np.ndarray:
        j = SCALARS.index(key)
        v = self._scalars[: self.n, j]
        if not with_latest or self.latest is None:
            return v
        return self._with_latest(v, self.latest[key])

    def probe(self, probe: str, with_latest: bool = True) -> np.ndarray:
        """``(rows, blocks)`` values of one probe (NaN where not measured)."""
        j = PROBE_INDEX[probe]
        v = self._probes[: self.n, :, j]
        if not with_latest or self.latest is None:
            return v
        return self._with_latest(v, self._latest_probes[:, j])

    def latest_probe(self, probe: str) -> np.ndarray:
        return self._latest_probes[:, PROBE_INDEX[probe]].copy()

    def first_probe(self, probe: str) -> np.ndarray:
        return self.first_probes[:, PROBE_INDEX[probe]].copy()

    def tint(self, probe: str = "input_grad_norm") -> dict[str, float]:
        """``{block: value}`` of one probe at the latest step (NaN where not measured)."""
        v = self._latest_probes[:, PROBE_INDEX[probe]]
        return {n: float(x) for n, x in zip(self.names, v)}

    def latest_flags(self) -> dict[str, str]:
        """Flags of the latest step (recomputed from its numbers when the record had none)."""
        if self.latest is None:
            return {}
        return dict(self.latest.get("flags") or flag_norms(self.latest.get("blocks") or {}))

    def flagged_blocks(self) -> list[str]:
        """Blocks flagged vanishing/exploding at the latest step, in natural order."""
        return sorted({k.rpartition(".")[0] for k in self.latest_flags()}, key=natural_key)

    def steps_per_second(self) -> float:
        """From the wall times of the last records (0 when there are too few)."""
        t = self.times[-32:]
        if len(t) < 2 or t[-1][1] <= t[0][1]:
            return 0.0
        return (t[-1][0] - t[0][0]) / (t[-1][1] - t[0][1])

    def bad_blocks(self) -> list[str]:
        """Blocks with a NaN/Inf gradient norm in the latest record (empty if it was finite).
        A block whose norms were not measured at step 0 either (NaN there too) is left out."""
        if self.latest is None or not self.latest.get("nonfinite"):
            return []
        k = len(NORM_PROBES)
        measured = np.isfinite(self.first_probes[:, :k]).any(axis=1)
        if self.first is self.latest:
            measured[:] = True
        bad = ~np.isfinite(self._latest_probes[:, :k]).all(axis=1) & measured
        return [n for n, b in zip(self.names, bad) if b]

    def records(self) -> list[StepRecord]:
        """The kept steps (plus every fault and the latest) as ``StepRecord`` objects, in step
        order. This is the thinned view; every step is in the run directory's ``steps.jsonl``."""
        by_step: dict[int, StepRecord] = {}
        scal = self._scalars
        for i in range(self.n):
            blocks = {
                name: {p: float(self._probes[i, b, j]) for j, p in enumerate(PROBES)}
                for b, name in enumerate(self.names)
            }
            s = int(self._steps[i])
            by_step[s] = StepRecord(step=s, loss=float(scal[i, 0]), accuracy=float(scal[i, 1]),
                                    lr=float(scal[i, 2]), seconds=float(scal[i, 3]), blocks=blocks,
                                    flags=flag_norms(blocks))  # fmt: skip
        extra = list(self.faults)
        if self.latest is not None:
            extra.append(self.latest)
        for p in extra:  # a fault row rebuilt from the arrays lacks its message: the full record wins
            by_step[int(p["step"])] = StepRecord.from_dict(p)
        return [by_step[s] for s in sorted(by_step)]

    # the reading API of the trainer's ``history`` (a RunStore)

    @property
    def last(self) -> StepRecord | None:
        return StepRecord.from_dict(self.latest) if self.latest is not None else None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of ``loss``, ``accuracy``, ``lr``, ``seconds`` or ``"<block>.<probe>"``
        over :meth:`records`."""
        steps, vals = [], []
        for r in self.records():
            if key in SCALARS:
                v = getattr(r, key)
            else:
                block, _, probe = key.rpartition(".")
                v = r.blocks.get(block, {}).get(probe, math.nan)
            steps.append(r.step)
            vals.append(v)
        return steps, vals
