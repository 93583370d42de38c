"""Following a run directory in the app: open it fast, then read only what is appended (no Qt).

:class:`RunFollower` is the headless side of the app's "open a run": it reads ``run.json``,
``report.json`` and ``steps.jsonl`` (:mod:`resviz.core.training.rundir`) into one
:class:`~resviz.core.training.store.RunStore` and, on each :meth:`RunFollower.poll`, files the
records appended since (a :class:`~resviz.core.training.rundir.RunReader`: only the new bytes,
only complete lines; a torn line is skipped, never an error). The Qt side
(:mod:`resviz.gui.qt_run_follow`) only decides *when* to poll.

Opening a long run does not parse every line. The store is a thinned view anyway (at most
``capacity`` evenly spaced rows), so :meth:`RunFollower.open` counts the lines (a byte scan of the
file, no JSON), parses only the lines the store would have kept (every ``stride``-th, ``stride``
a power of two, exactly as if every record had been appended), every NaN/Inf record (found by a
byte search) and the last :data:`TAIL` lines (the latest step, steps/s, flags), and leaves the
store as appending every record would have: same rows, same stride, same count. A 100,000-step
x 50-block run (1 GB of JSON lines) opens by parsing ~4,200 of its lines
(``benchmarks/bench_follow.py``). Full fidelity stays on disk (``Run.records()``).

Each poll reads at most :data:`POLL_BYTES` (so a burst of appended records is filed over several
event-loop turns rather than in one long stall); :attr:`RunFollower.behind` says more is waiting.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import time
from bisect import bisect_right
from pathlib import Path

from ..core.errors import ResvizError
from ..core.training.rundir import EVENTS_FILE, REPORT_FILE, RUN_FILE, RUN_FORMAT, STEPS_FILE, RunReader
from ..core.training.store import RunState, RunStore, record_payload

TAIL = 64  # lines read in full at the end of the file: the latest steps (steps/s, flags)
CHUNK = 1 << 20  # bytes per counting chunk of the line index
POLL_BYTES = 1 << 20  # at most this much of steps.jsonl per poll (~100 records of 50 blocks)
FAULT_MARKS = (b'"nonfinite": true', b'"nonfinite":true')

__all__ = ["POLL_BYTES", "RunFollower", "open_run_session"]


class RunFollower:
    """One run directory as the app follows it: ``meta`` (run.json), ``store`` (RunStore),
    ``state`` (RunState), :meth:`poll` for what was appended; see the module doc."""

    def __init__(self, path: str | os.PathLike, capacity: int = 4096):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise ResvizError(
                f"{self.path}: not a folder; a resviz run directory holds {RUN_FILE} and {STEPS_FILE}"
            )
        self.meta = _read_json(self.path / RUN_FILE, "run file") or {}
        if not self.meta and not (self.path / STEPS_FILE).exists():
            raise ResvizError(
                f"{self.path}: not a resviz run directory (no {RUN_FILE} or {STEPS_FILE} in it)"
            )
        fmt = self.meta.get("format", RUN_FORMAT)
        if not isinstance(fmt, int) or fmt > RUN_FORMAT:
            raise ResvizError(f"{self.path / RUN_FILE}: run format {fmt!r} is newer than this resviz "
                              f"understands (format {RUN_FORMAT}); update resviz")  # fmt: skip
        self.store = RunStore(self.meta.get("blocks") or None, capacity)
        self.store.grow = True  # a monitor may meet blocks its first record did not list
        self.reader = RunReader(self.path / STEPS_FILE)
        self.events = RunReader(self.path / EVENTS_FILE)
        self.errors: list[str] = []  # events.jsonl messages of kind "error" (probe failures)
        self.parsed = 0  # lines parsed as JSON so far (the open's cost)
        self.last_growth = time.monotonic()  # when a record last arrived
        self._meta_stat: tuple | None = _stat(self.path / RUN_FILE)
        self.store.set_state(self.state)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike, capacity: int = 4096) -> RunFollower:
        """Open a run directory and read its steps so far (sampled when long; see the module doc)."""
        f = cls(path, capacity)
        f._read_existing()
        f.poll()  # the tail, and anything appended meanwhile
        return f

    def _read_existing(self) -> None:
        steps = self.reader.path
        try:
            size = os.stat(steps).st_size
        except FileNotFoundError:
            return
        except OSError as e:
            raise ResvizError(f"cannot read {steps}: {e.strerror or e}") from None
        if size == 0:
            return
        with open(steps, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            end = mm.rfind(b"\n") + 1  # complete lines only
            counts = [mm[a : min(a + CHUNK, end)].count(b"\n") for a in range(0, end, CHUNK)]
            lines = sum(counts)
            cap = self.store.capacity
            if lines <= cap + TAIL:
                return  # short: the poll reads every line
            head = lines - TAIL
            stride = 1
            while -(-head // stride) > cap:
                stride *= 2
            index = _LineIndex(mm, counts)
            for i in range(0, head, stride):
                a, b = index.line(i)
                self._file(_loads(mm[a:b]))
                self.parsed += 1
            faults = []
            for mark in FAULT_MARKS:
                pos = mm.find(mark, 0, index.start(head))
                while pos >= 0:
                    a = mm.rfind(b"\n", 0, pos) + 1
                    b = mm.find(b"\n", pos)
                    d = _loads(mm[a:b])
                    if d is not None and d.get("nonfinite"):
                        faults.append(record_payload(d, wall=_wall(d)))
                    pos = mm.find(mark, b, index.start(head))
            self.parsed += len(faults)
            s = self.store
            s.stride, s.count = stride, head  # as if every head line had been appended
            if faults:
                seen = {int(p["step"]) for p in faults}
                s.faults = sorted([p for p in s.faults if int(p["step"]) not in seen] + faults,
                                  key=lambda p: p["step"])  # fmt: skip
            self.reader.offset = index.start(head)
            self.reader.lines = head

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

    # ---------------------------------------------------------------- following

    def poll(self, max_bytes: int | None = POLL_BYTES) -> int:
        """File the records appended since the last poll (at most ``max_bytes`` of them); re-read
        ``run.json`` when it changed. Returns how many records arrived."""
        recs = self.reader.poll(max_bytes)
        if not recs and max_bytes is not None and self.behind:  # one line longer than the budget
            recs = self.reader.poll(None)
        for d in recs:
            self._file(d)
        if recs:
            self.last_growth = time.monotonic()
        st = _stat(self.path / RUN_FILE)
        if st != self._meta_stat:
            self._meta_stat = st
            try:
                meta = _read_json(self.path / RUN_FILE, "run file")
            except ResvizError:
                meta = None  # mid-replace on a shared file system: keep the last good one
            if meta:
                self.meta = meta
        for e in self.events.poll():
            if e.get("kind") == "error":
                self.errors.append(str(e.get("message", "")))
        self.store.set_state(self.state)
        return len(recs)

    @property
    def behind(self) -> bool:
        """More complete bytes wait in steps.jsonl than the last poll read."""
        try:
            size = os.stat(self.reader.path).st_size
        except OSError:
            return False
        return size - self.reader.offset > POLL_BYTES

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def state(self) -> RunState:
        try:
            return RunState(self.meta.get("state", "running"))
        except ValueError:
            return RunState.RUNNING

    @property
    def live(self) -> bool:
        """The writer has not said the run ended (it may still have died: see :meth:`quiet_for`)."""
        return self.state in (RunState.IDLE, RunState.RUNNING, RunState.PAUSED)

    def quiet_for(self) -> float:
        """Seconds since the last record arrived (while following)."""
        return time.monotonic() - self.last_growth

    def report_json(self) -> dict | None:
        return _read_json(self.path / REPORT_FILE, "report")

    def describe(self) -> str:
        """``resnet20 · sgd lr 0.1 · batch 32 · cpu``: the run's settings in one line."""
        c = self.meta.get("config") or {}
        parts = [self.name]
        if c.get("optimizer"):
            parts.append(f"{c['optimizer']} lr {c.get('lr', '?')}")
        if c.get("batch_size"):
            parts.append(f"batch {c['batch_size']}")
        if c.get("data"):
            parts.append(str(c["data"]))
        if c.get("device"):
            parts.append(
                str(c["device"]) + (f" × {c['world_size']}" if (c.get("world_size") or 1) > 1 else "")
            )
        return " · ".join(parts)


class _LineIndex:
    """Where line ``i`` of a memory-mapped file starts and ends, from per-chunk newline counts."""

    def __init__(self, mm, counts: list[int]):
        self.mm = mm
        self.before = [0]  # newlines before each chunk
        for c in counts:
            self.before.append(self.before[-1] + c)
        self._pos, self._done = 0, 0  # a cursor: `_done` newlines lie before byte `_pos`

    def start(self, i: int) -> int:
        """Lines are asked for in increasing order: walk on from the last one, or jump to the
        chunk holding the line when that is nearer; each byte is scanned at most once."""
        if i == 0:
            return 0
        k = i - 1  # the newline ending line i - 1
        c = bisect_right(self.before, k) - 1
        if self._done <= k + 1 and self._pos >= c * CHUNK:
            pos, done = self._pos, self._done
        else:
            pos, done = c * CHUNK, self.before[c]
        find = self.mm.find
        while done <= k:
            pos = find(b"\n", pos) + 1
            done += 1
        self._pos, self._done = pos, done
        return pos

    def line(self, i: int) -> tuple[int, int]:
        a = self.start(i)
        return a, self.mm.find(b"\n", a)


def _loads(raw: bytes) -> dict | None:
    try:
        d = json.loads(raw)
    except ValueError:
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


def _read_json(path: Path, what: str) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ResvizError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ResvizError(f"{path}: not a resviz {what} ({e})") from None
    if not isinstance(d, dict):
        raise ResvizError(f"{path}: not a resviz {what} (expected a JSON object)")
    return d


def open_run_session(path: str | os.PathLike, capacity: int = 4096):
    """A Session for the app from a run directory: the graph from ``report.json`` (no model code
    runs), the steps in ``session.run`` (a :class:`RunFollower`). Imports the analysis (torch)."""
    from ..core.loading import LoadedModel
    from ..core.session import Session
    from ..core.training.runreport import report_from_json

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
