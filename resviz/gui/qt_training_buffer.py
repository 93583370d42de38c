"""What the Training tab remembers of a run: numpy columns with bounded memory, no Qt, no torch.

The worker thread sends one plain dict per step (see :func:`record_payload`); :class:`RunBuffer`
files it into preallocated arrays — loss, accuracy, learning rate and a ``steps × blocks × probes``
block — so a redraw slices arrays instead of walking dicts. Memory is bounded the way
:class:`~resviz.core.training.records.RunHistory` bounds it: every step is kept until ``capacity``
rows are full, then every other row is dropped and from then on only every second step is kept
(then every fourth, ...). The rows stay evenly spaced in steps, which the heatmap needs; the latest
step and every NaN/Inf step are always at hand besides.
"""

from __future__ import annotations

import time

import numpy as np

#: The probes of a block, as in ``resviz.core.training.records.PROBES`` (not imported from there:
#: that package imports torch, and the app shows its window before torch is loaded).
PROBES = ("grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio", "gain")
PROBE_INDEX = {p: i for i, p in enumerate(PROBES)}
NORM_PROBES = ("grad_norm", "input_grad_norm", "output_grad_norm")
PROBE_TITLES = {
    "grad_norm": "parameter gradient norm ‖∂L/∂θ‖",
    "input_grad_norm": "gradient norm at the block input ‖∂L/∂x‖",
    "output_grad_norm": "gradient norm at the block output ‖∂L/∂H‖",
    "residual_ratio": "residual ratio ‖F(x)‖ / ‖x‖",
    "gain": "gradient gain ‖∂L/∂x‖ / ‖∂L/∂H‖",
}


def record_payload(rec, wall: float | None = None) -> dict:
    """A StepRecord as plain Python (ints, floats, strings, dicts): what crosses threads."""
    return {
        "step": int(rec.step),
        "loss": float(rec.loss),
        "accuracy": float(rec.accuracy),
        "lr": float(rec.lr),
        "seconds": float(rec.seconds),
        "blocks": {b: {k: float(v) for k, v in d.items()} for b, d in rec.blocks.items()},
        "flags": {str(k): str(v) for k, v in rec.flags.items()},
        "nonfinite": bool(rec.nonfinite),
        "message": str(rec.message),
        "t": time.perf_counter() if wall is None else float(wall),
    }


class RunBuffer:
    """The steps of one run (the residual net, or its plain twin) in numpy arrays."""

    def __init__(self, block_names, capacity: int = 4096):
        if capacity < 4:
            raise ValueError("capacity must be at least 4")
        self.names: list[str] = list(block_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.capacity = int(capacity)
        nb = len(self.names)
        self._steps = np.zeros(capacity, dtype=np.int64)
        self._scalars = np.full((capacity, 4), np.nan)  # loss, accuracy, lr, seconds
        self._probes = np.full((capacity, nb, len(PROBES)), np.nan)
        self.clear()

    def clear(self) -> None:
        self.n = 0  # rows kept
        self.stride = 1
        self.count = 0  # records appended since the start (or the last clear)
        self.latest: dict | None = None
        self._latest_probes = np.full((len(self.names), len(PROBES)), np.nan)
        self.first: dict | None = None  # the first record of the run: the network at step 0
        self.first_probes = np.full((len(self.names), len(PROBES)), np.nan)
        self.faults: list[dict] = []  # every NaN/Inf record, in full
        self.times: list[tuple[int, float]] = []  # (step, wall time) of recent records, for steps/s
        self.version = 0  # bumps on every change: plots redraw only when it moved

    def __len__(self) -> int:
        return self.n

    # ---------------------------------------------------------------- filling

    def _row(self, payload: dict) -> np.ndarray:
        out = np.full((len(self.names), len(PROBES)), np.nan)
        index = self.index
        for name, probes in payload.get("blocks", {}).items():
            i = index.get(name)
            if i is None:
                continue
            row = out[i]
            for k, v in probes.items():
                j = PROBE_INDEX.get(k)
                if j is not None:
                    row[j] = v
        return out

    def append(self, payload: dict) -> None:
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
        t = payload.get("t")
        if t is not None:
            self.times.append((int(payload["step"]), float(t)))
            if len(self.times) > 64:
                del self.times[:-48]
        if seq % self.stride != 0:
            return
        if self.n == self.capacity:
            self._thin()
            if seq % self.stride != 0:
                return
        i = self.n
        self._steps[i] = payload["step"]
        self._scalars[i] = (payload["loss"], payload["accuracy"], payload["lr"], payload["seconds"])
        self._probes[i] = probes
        self.n += 1

    def extend(self, payloads) -> None:
        for p in payloads:
            self.append(p)

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
        j = ("loss", "accuracy", "lr", "seconds").index(key)
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

    def records(self) -> list:
        """The kept steps (plus every fault and the latest) as ``StepRecord`` objects, for export."""
        from ..core.training.records import StepRecord, flag_norms

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
        for p in extra:
            blocks = {name: {k: float(v) for k, v in d.items()} for name, d in p.get("blocks", {}).items()}
            by_step[int(p["step"])] = StepRecord(
                step=int(p["step"]), loss=p["loss"], accuracy=p["accuracy"], lr=p["lr"],
                seconds=p["seconds"], blocks=blocks, flags=dict(p.get("flags", {})),
                nonfinite=bool(p.get("nonfinite")), message=str(p.get("message", "")),
            )  # fmt: skip
        # a fault row rebuilt from the arrays lacks its message: the full record replaced it above
        return [by_step[s] for s in sorted(by_step)]
