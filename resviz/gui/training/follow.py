"""Following a run directory in the app: open it fast, then read only what is appended (no Qt).

:class:`RunFollower` is the headless side of the app's "open a run": it reads ``run.json``,
``report.json`` and ``steps.jsonl`` (:mod:`resviz.core.training.rundir`) into one
:class:`~resviz.core.training.store.RunStore` and, on each :meth:`RunFollower.poll`, files the
records appended since (a :class:`~resviz.core.training.rundir.RunReader`: only the new bytes,
only complete lines; a torn line is skipped, never an error). The Qt side
(:mod:`resviz.gui.training.follow_timer`) only decides *when* to poll.

Opening a long run does not parse every line, nor even count them. The store is a thinned view
anyway (at most ``capacity`` evenly spaced rows), so :meth:`RunFollower.open` reads the step
numbers of the first and last lines, works out which records appending every one would keep as
rows (every ``stride``-th, ``stride`` a power of two), finds each of those lines by its step number
(a byte offset interpolated from the line length, then a line or two scanned), and parses only
them and the last :data:`TAIL` lines (the latest step, steps/s, flags). The store ends as
appending every record would have left it: same rows, same stride, same count. NaN/Inf records
of the sampled part are found by a byte search, the first :data:`OPEN_SCAN_BYTES` at the open and
the rest a slice per poll after it (the plots mark them as they are found). A run whose steps
are not evenly numbered (a writer restarted from an earlier step) is read line by line. A
100,000-step x 50-block run (1 GB of JSON lines) opens by parsing ~1,600 of its lines
(``benchmarks/bench_follow.py``). Full fidelity stays on disk (``Run.records()``).

Each poll reads at most :data:`POLL_BYTES` (so a burst of appended records is filed over several
event-loop turns rather than in one long stall); :attr:`RunFollower.behind` says more is waiting.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import time
from pathlib import Path

import numpy as np

from ...core.errors import ResvizError
from ...core.training.rundir import (
    EVENTS_FILE,
    REPORT_FILE,
    RUN_FILE,
    STEPS_FILE,
    RunReader,
    read_json_object,
    read_run_meta,
    run_name,
    run_state,
)  # fmt: skip
from ...core.training.store import PROBES, SCALARS, RunState, RunStore, record_payload

try:  # an optional accelerator (3-5x faster parsing); the json module reads the same lines
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

TAIL = 64  # lines read in full at the end of the file: the latest steps (steps/s, flags)
SAMPLE_ABOVE = 4 << 20  # steps.jsonl bigger than this opens sampled (smaller: every line is read)
OPEN_SCAN_BYTES = 64 << 20  # NaN/Inf records are looked for in this much at the open, the rest later
SCAN_BYTES = 2 << 20  # ... and in this much per poll after it (a few ms)
STEP_RE = re.compile(rb'"step"\s*:\s*(-?\d+)')
CAPACITY = 2048  # rows a followed run keeps in memory: more than a plot has pixels across
POLL_BYTES = 1 << 20  # at most this much of steps.jsonl per poll (~100 records of 50 blocks)
FAULT_MARKS = (b'"nonfinite": true', b'"nonfinite":true')

__all__ = ["POLL_BYTES", "FollowedStore", "RunFollower", "open_run_session"]


class FollowedStore(RunStore):
    """A :class:`RunStore` whose rows are built with one numpy call when a record lists the
    store's blocks in the store's order (as every writer of one run does); else as RunStore does."""

    def _row(self, payload: dict) -> np.ndarray:
        blocks = payload.get("blocks") or {}
        if len(blocks) == len(self.names) and list(blocks) == self.names:
            try:
                return np.array([[p.get(k) for k in PROBES] for p in blocks.values()], dtype=float).reshape(
                    len(self.names), len(PROBES)
                )
            except (AttributeError, TypeError, ValueError):
                pass  # an odd record: the general path says what it can
        return super()._row(payload)


class RunFollower:
    """One run directory as the app follows it: ``meta`` (run.json), ``store`` (RunStore),
    ``state`` (RunState), :meth:`poll` for what was appended; see the module doc."""

    def __init__(self, path: str | os.PathLike, capacity: int = CAPACITY):
        self.path = Path(path).expanduser()
        self.meta = read_run_meta(self.path)
        self.store = FollowedStore(self.meta.get("blocks") or None, capacity)
        self.store.grow = True  # a monitor may meet blocks its first record did not list
        self.reader = RunReader(self.path / STEPS_FILE)
        self.events = RunReader(self.path / EVENTS_FILE)
        self.errors: list[str] = []  # events.jsonl messages of kind "error" (probe failures)
        self.parsed = 0  # lines parsed as JSON so far (the open's cost)
        self.last_growth = time.monotonic()  # when a record last arrived
        self._meta_stat: tuple | None = _stat(self.path / RUN_FILE)
        self._scan: list[int] | None = None  # [from, to): bytes still to search for NaN/Inf records
        self.store.set_state(self.state)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike, capacity: int = CAPACITY) -> RunFollower:
        """Open a run directory and read its steps so far (sampled when long; see the module doc)."""
        f = cls(path, capacity)
        f._read_existing()
        f.poll(max_bytes=None)  # the tail (or every line of a short run), and anything appended meanwhile
        return f

    def _read_existing(self) -> None:
        steps = self.reader.path
        try:
            size = os.stat(steps).st_size
        except FileNotFoundError:
            return
        except OSError as e:
            raise ResvizError(f"cannot read {steps}: {e.strerror or e}") from None
        if size == 0 or size < SAMPLE_ABOVE:
            return  # empty or short: the poll reads every line
        with open(steps, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            found = _plan(mm, self.store.capacity, (self.meta.get("config") or {}).get("every"))
            if found is None:
                return  # no regular step numbers to aim at: read every line
            plan, stride, head_end = found
            lines = plan
            for k, (a, b) in enumerate(lines):
                d = _loads(mm[a:b])
                self.parsed += 1
                if k == 0 or d is None or d.get("nonfinite"):
                    self._file(d)
                else:  # a row in the middle: its numbers go into the columns, its dicts nowhere
                    self._file_row(d)
            s = self.store
            s.stride, s.count = stride, plan.count  # as if every line before head_end had been appended
            self.reader.offset = head_end
            self.reader.lines = plan.count
            self._scan = [0, head_end]  # NaN/Inf records before head_end are looked for next
        self._scan_faults(OPEN_SCAN_BYTES)

    def _scan_faults(self, budget: int) -> None:
        """Look for NaN/Inf records (a byte search, no parsing) in the part of the file the open
        sampled, ``budget`` bytes at a time; those found join ``store.faults`` in step order."""
        if self._scan is None:
            return
        pos, end = self._scan
        stop = min(end, pos + budget)
        found = []
        with open(self.reader.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for mark in FAULT_MARKS:
                at = mm.find(mark, pos, min(end, stop + len(mark)))
                while at >= 0:
                    a = mm.rfind(b"\n", 0, at) + 1
                    b = mm.find(b"\n", at)
                    d = _loads(mm[a:b])
                    if d is not None and d.get("nonfinite") and "step" in d:
                        found.append(record_payload(d, wall=_wall(d)))
                    at = mm.find(mark, b, min(end, stop + len(mark)))
        self._scan = None if stop >= end else [stop, end]
        if found:
            s = self.store
            seen = {int(p["step"]) for p in s.faults}
            s.faults = sorted(
                s.faults + [p for p in found if int(p["step"]) not in seen], key=lambda p: p["step"]
            )
            s.version += 1
            self.parsed += len(found)

    def _file(self, d: dict | None) -> None:
        if d is None or "step" not in d:
            self.reader.skipped += 1
            return
        try:
            payload = record_payload(d, wall=_wall(d))
        except (AttributeError, TypeError, ValueError):
            self.reader.skipped += 1
            return
        self.store.append(payload)

    def _file_row(self, d: dict) -> None:
        """File a finite record that will never be the first, latest or a fault: the scalars as
        numbers, the blocks as parsed (JSON null is NaN in the columns)."""
        try:
            payload = {"step": int(d["step"]), **{k: _num(d.get(k)) for k in SCALARS},
                       "blocks": d.get("blocks") or {}, "flags": d.get("flags") or {}, "nonfinite": False,
                       "message": "", "t": _wall(d)}  # fmt: skip
            self.store.append(payload)
        except (AttributeError, KeyError, TypeError, ValueError):
            self.reader.skipped += 1

    # ---------------------------------------------------------------- following

    def poll(self, max_bytes: int | None = POLL_BYTES) -> int:
        """File the records appended since the last poll (at most ``max_bytes`` of them); re-read
        ``run.json`` when it changed. Returns how many records arrived (``store.version`` also
        moves when NaN/Inf records of the sampled part were found)."""
        recs = self._read_records(max_bytes)
        for d in recs:
            self._file(d)
        if recs:
            self.last_growth = time.monotonic()
        self._reread_meta()
        if self._scan is not None:
            self._scan_faults(SCAN_BYTES)
        for e in self.events.poll():
            if e.get("kind") == "error":
                self.errors.append(str(e.get("message", "")))
        self.store.set_state(self.state)
        return len(recs)

    def _read_records(self, max_bytes: int | None) -> list[dict]:
        """The records appended since the last read, at most ``max_bytes`` of them, unless the
        next line alone is longer: then that line (and what else there is)."""
        recs = self.reader.poll(max_bytes)
        if not recs and max_bytes is not None and self.reader.pending():  # a line longer than the budget?
            try:
                waiting = os.stat(self.reader.path).st_size - self.reader.offset
            except OSError:
                waiting = 0
            if waiting > max_bytes:
                recs = self.reader.poll(None)
        return recs

    def _reread_meta(self) -> None:
        """Read ``run.json`` again when it changed on disk (keeping the last good one while it is
        being replaced)."""
        st = _stat(self.path / RUN_FILE)
        if st == self._meta_stat:
            return
        self._meta_stat = st
        try:
            meta = read_json_object(self.path / RUN_FILE, "run file")
        except ResvizError:
            meta = None  # mid-replace on a shared file system: keep the last good one
        if meta:
            self.meta = meta

    @property
    def behind(self) -> bool:
        """More waits than the last poll read: bytes of steps.jsonl, or NaN/Inf records to look for."""
        if self._scan is not None:
            return True
        try:
            size = os.stat(self.reader.path).st_size
        except OSError:
            return False
        return size - self.reader.offset > POLL_BYTES

    @property
    def name(self) -> str:
        return run_name(self.meta, self.path)

    @property
    def state(self) -> RunState:
        return run_state(self.meta)

    @property
    def live(self) -> bool:
        """The writer has not said the run ended (it may still have died: see :meth:`quiet_for`)."""
        return self.state in (RunState.IDLE, RunState.RUNNING, RunState.PAUSED)

    def quiet_for(self) -> float:
        """Seconds since the last record arrived (while following)."""
        return time.monotonic() - self.last_growth

    def report_json(self) -> dict | None:
        return read_json_object(self.path / REPORT_FILE, "report")

    def describe(self) -> str:
        """``resnet20 · sgd lr 0.1 · batch 32 · 500 steps · cpu``: the run's settings in one line."""
        c = self.meta.get("config") or {}
        parts = [self.name]
        if c.get("optimizer"):
            parts.append(f"{c['optimizer']} lr {c.get('lr', '?')}")
        if c.get("batch_size"):
            parts.append(f"batch {c['batch_size']}")
        if c.get("steps"):
            parts.append(f"{c['steps']} steps")
        if c.get("data"):
            parts.append(str(c["data"]))
        if c.get("device"):
            parts.append(
                str(c["device"]) + (f" × {c['world_size']}" if (c.get("world_size") or 1) > 1 else "")
            )
        return " · ".join(parts)


class _Plan(list):
    """The lines to parse (byte ranges), the stride, where the sampled part ends; ``count``: lines
    before that end."""

    count = 0


def _step_at(mm, a: int, b: int) -> int | None:
    m = STEP_RE.search(mm, a, min(b, a + 160))  # resviz writes "step" first
    if m is not None:
        return int(m.group(1))
    d = _loads(mm[a:b])
    step = d.get("step") if d is not None else None
    return step if isinstance(step, int) else None


def _plan(mm, capacity: int, every=None) -> tuple[_Plan, int, int] | None:
    """Which lines appending every record would keep as rows, found by their step numbers
    (interpolating byte offsets, a few line scans each) rather than by counting every line;
    None when the steps are not evenly numbered (then every line is read)."""
    head_end = _head_end(mm)
    if head_end is None:
        return None
    steps = _even_steps(mm, head_end, every)
    if steps is None:
        return None
    step0, every, count = steps
    avg = head_end / count  # bytes a line
    if count <= capacity or count > head_end:
        return None
    stride = _stride_for(count, capacity)
    plan = _Plan()
    plan.count = count
    cursor = 0
    for k in range(0, count, stride):
        start, line_end = _line_of_step(mm, step0 + k * every, k, cursor, avg, every, head_end)
        if start >= head_end:
            break
        plan.append((start, line_end))
        cursor = line_end + 1
    return plan, stride, head_end


def _head_end(mm) -> int | None:
    """Where the lines before the last TAIL end (None: the file has no more than TAIL lines)."""
    head_end = mm.rfind(b"\n") + 1
    for _ in range(TAIL):  # the last TAIL lines are read by the poll, in full
        head_end = mm.rfind(b"\n", 0, head_end - 1) + 1
        if head_end <= 0:
            return None
    return head_end


def _even_steps(mm, head_end: int, every=None) -> tuple[int, int, int] | None:
    """The first step, the spacing of steps (``every``, or the first two lines' difference) and
    the number of lines before ``head_end``; None when they are not evenly numbered from there."""
    first_end = mm.find(b"\n")
    step0 = _step_at(mm, 0, first_end)
    last_start = mm.rfind(b"\n", 0, head_end - 1) + 1
    step_last = _step_at(mm, last_start, head_end - 1)
    if not isinstance(every, int) or every < 1:
        step1 = _step_at(mm, first_end + 1, mm.find(b"\n", first_end + 1))
        every = step1 - step0 if step0 is not None and step1 is not None else 0
    if step0 is None or step_last is None or every < 1 or (step_last - step0) % every:
        return None
    return step0, every, (step_last - step0) // every + 1


def _stride_for(count: int, capacity: int) -> int:
    """The smallest power of two that thins ``count`` rows to ``capacity`` or fewer."""
    stride = 1
    while -(-count // stride) > capacity:
        stride *= 2
    return stride


def _line_of_step(mm, target: int, k: int, cursor: int, avg: float, every: int, head_end: int) -> tuple[int, int]:
    """The byte range of the line of step ``target`` (the ``k``-th line), at or after ``cursor``:
    a guess from the average line length ``avg``, backed off when it landed past the target,
    then walked on to it."""
    start = cursor if k == 0 else max(cursor, mm.rfind(b"\n", 0, max(1, int((k - 1) * avg))) + 1)
    for _ in range(6):  # landed past the target (uneven lines): back off further
        line_end = mm.find(b"\n", start)
        step = _step_at(mm, start, line_end)
        if step is None or step <= target or start == cursor:
            break
        back = int(((step - target) // every + 2) * avg)
        start = max(cursor, mm.rfind(b"\n", 0, max(1, start - back)) + 1)
    while step is not None and step < target and line_end + 1 < head_end:  # walk on to it
        start = line_end + 1
        line_end = mm.find(b"\n", start)
        step = _step_at(mm, start, line_end)
    return start, line_end


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _loads(raw: bytes) -> dict | None:
    try:
        d = _orjson.loads(raw) if _orjson is not None else json.loads(raw)
    except ValueError:
        try:  # orjson refuses NaN/Infinity literals, which Python's json writes by default
            d = json.loads(raw) if _orjson is not None else None
        except ValueError:
            d = None
    if d is None:
        return None  # a torn line
    return d if isinstance(d, dict) else None


def _wall(d: dict) -> float:
    t = d.get("time")
    return float(t) if isinstance(t, (int, float)) and math.isfinite(t) else time.time()


def _stat(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def open_run_session(path: str | os.PathLike, capacity: int = CAPACITY):
    """A Session for the app from a run directory: the graph from ``report.json`` (no model code
    runs), the steps in ``session.run`` (a :class:`RunFollower`). Imports no torch."""
    from ...core.session.session_record import Session
    from ...core.sources.loaded import LoadedModel
    from ...core.training.runreport import report_from_json

    follower = RunFollower.open(path, capacity)
    data = follower.report_json()
    if data is None:
        raise ResvizError(f"{follower.path}: this run has no {REPORT_FILE}, so there is no graph to draw; "
                          f"`resviz follow {follower.path}` prints its steps")  # fmt: skip
    report = report_from_json(data)
    shape = tuple(report.input_shape)
    loaded = LoadedModel(module=None, exported=None, name=follower.name, source=str(follower.path), kind="run",
                         path=None, input_shape=shape, rebuild=None, plain_twin=None)  # fmt: skip
    note = (f"A recorded run ({follower.state.value}): the graph is the one stored in its {REPORT_FILE}, "
            f"the steps are in the Training tab" + (", followed as they are written." if follower.live else "."))  # fmt: skip
    session = Session(loaded, shape, report, [note])
    session.run = follower
    return session
