"""A run is data: the run directory (format 1), its writer and its incremental reader.

No torch and no Qt here: a tool that only reads runs imports this module alone. Layout::

    RUN_DIR/
      run.json       {"format": 1, "kind": "resviz-run", "name", "state", "config": {...},
                      "started", "ended", "blocks": [...], "message"}   (rewritten atomically)
      report.json    {"format": 1, "check": <resviz check --json>, "graph": <the trace, to draw
                      the block graph without the model's code>}      (optional, written once)
      steps.jsonl    one StepRecord.to_dict() per line, plus "time" (Unix seconds), appended and
                     flushed per record; a torn last line (a crash mid-write) is skipped on read
      events.jsonl   {"time", "kind": "note" | "error" | "state", "message"} per line (optional)

``config`` holds what reproduces the run: optimizer, lr, momentum, weight decay, batch, steps,
seed, data, device, world size, torch version, start time (``started``, ISO 8601 UTC) and the
probe cadence ``every``. Step numbers count from 0: step ``k`` is measured on the weights after
``k`` updates (the first record is the network as initialised).

Writing (:class:`RunWriter`)::

    w = RunWriter.create("runs/r1", name="resnet20", config={...}, blocks=[...], report=report_json)
    w.write(record)            # a StepRecord or its dict: one line, flushed
    w.log("error", "probe failed: ...")
    w.close(RunState.FINISHED)

Reading (:class:`RunReader`, :func:`open_run`)::

    run = open_run("runs/r1")   # meta, report and every record so far, into run.store (RunStore)
    new = run.poll()            # records appended since the last read (reads only the new bytes)
    run.records()               # every step at full fidelity, from disk
    report_from_json(run.report)  # (resviz.core.training.runreport; imports torch) a Report to draw

A viewer takes its events from ``run.store`` (:class:`RunStore`: ``on("stepped" | "state_changed"
| "faulted", callback)``), calls ``run.poll()`` when the file changed (a file watcher or a timer)
and redraws from the store's numpy columns.

The reader keeps a byte offset and re-opens the file on each poll (so it sees growth on shared
storage written by another machine, where a kept file handle may not); a file that shrank was
replaced, and is read again from the start (``reader.restarted`` counts that). Only complete
lines are consumed; a line that is not JSON (a crash mid-write, then more records) is skipped
and counted in ``reader.skipped``, never an error.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import sys
import time
from pathlib import Path

from ..errors import ResvizError
from ..files import atomic_write_text
from .steps import RecordWriter, StepRecord
from .store import RunState, RunStore, record_payload

RUN_FORMAT = 1
RUN_FILE, REPORT_FILE, STEPS_FILE, EVENTS_FILE = "run.json", "report.json", "steps.jsonl", "events.jsonl"

__all__ = [
    "EVENTS_FILE", "REPORT_FILE", "RUN_FILE", "RUN_FORMAT", "STEPS_FILE", "Run", "RunReader",
    "RunWriter", "default_run_dir", "export_run", "is_run_dir", "open_run", "user_data_dir",
]  # fmt: skip


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def user_data_dir() -> Path:
    """Where resviz keeps its data: ``$XDG_DATA_HOME/resviz`` (``~/.local/share/resviz``) on Linux,
    ``~/Library/Application Support/resviz`` on macOS, ``%LOCALAPPDATA%\\resviz`` on Windows;
    ``$RESVIZ_DATA_DIR`` when set."""
    if os.environ.get("RESVIZ_DATA_DIR"):
        return Path(os.environ["RESVIZ_DATA_DIR"]).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "resviz"


def default_run_dir(name: str) -> Path:
    """A new folder ``<user data dir>/runs/<name>-<UTC time>`` (``-2``, ``-3`` ... if taken)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = user_data_dir() / "runs" / f"{safe[:60]}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def is_run_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / RUN_FILE).is_file()


def json_safe(v):
    """JSON has no NaN/Inf: they become None; tuples become lists; other objects their str."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return str(v)


# ------------------------------------------------------------------------------------ writing


class RunWriter:
    """Writes one run directory. Every record is one line of ``steps.jsonl``, written and flushed
    at once (no temporary file: what was written survives SIGTERM, SIGINT, a crash or SIGKILL).
    ``run.json`` and ``report.json`` are written atomically. Not thread-safe: one writer thread."""

    def __init__(self, path: str | os.PathLike, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self._steps = None
        self._events = None
        self.closed = False

    @classmethod
    def create(cls, path: str | os.PathLike, *, name: str, config: dict | None = None,
               blocks=(), report: dict | None = None, extra: dict | None = None) -> RunWriter:  # fmt: skip
        """Make (or reuse, when it has no steps yet) the folder ``path`` and write ``run.json``
        and ``report.json``. Refuses a folder that already holds another run's steps, or a file."""
        p = cls.check(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResvizError(f"--run-dir {p}: cannot create the folder ({e.strerror or e})") from None
        meta = {
            "format": RUN_FORMAT, "kind": "resviz-run", "name": name, "state": RunState.IDLE.value,
            "started": now_iso(), "ended": None, "config": json_safe(config or {}),
            "blocks": list(blocks), "message": "", **json_safe(extra or {}),
        }  # fmt: skip
        w = cls(p, meta)
        if report is not None:
            atomic_write_text(p / REPORT_FILE, json.dumps(json_safe(report)))
        w._write_meta()
        try:
            w._steps = open(p / STEPS_FILE, "a", encoding="utf-8", newline="")
        except OSError as e:
            raise ResvizError(f"--run-dir {p}: cannot write {STEPS_FILE} ({e.strerror or e})") from None
        return w

    @staticmethod
    def check(path: str | os.PathLike) -> Path:
        """``path`` (user-expanded) when a new run can go there, else a ResvizError saying why:
        call it before any work, so a bad ``--run-dir`` fails at once."""
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise ResvizError(f"--run-dir {p}: this is a file, not a folder; name a new or empty folder")
        if (p / STEPS_FILE).exists() and (p / STEPS_FILE).stat().st_size > 0:
            raise ResvizError(f"--run-dir {p}: this folder already holds a run ({STEPS_FILE} is not empty); "
                              "name a new folder, or leave --run-dir out for a new one under "
                              f"{user_data_dir() / 'runs'}")  # fmt: skip
        parent = next((q for q in [p, *p.parents] if q.exists()), None)
        if parent is not None and not os.access(parent, os.W_OK):
            raise ResvizError(f"--run-dir {p}: cannot write there ({parent} is not writable)")
        return p

    def _write_meta(self) -> None:
        atomic_write_text(self.path / RUN_FILE, json.dumps(self.meta, indent=1))

    def write(self, record) -> None:
        """Append one step (a StepRecord or its ``to_dict()``) and flush it to the OS."""
        d = record.to_dict() if isinstance(record, StepRecord) else json_safe(dict(record))
        d.setdefault("time", round(time.time(), 6))
        self._steps.write(json.dumps(d, allow_nan=False) + "\n")
        self._steps.flush()
        if self.meta["state"] == RunState.IDLE.value:
            self.set_state(RunState.RUNNING)

    def log(self, kind: str, message: str) -> None:
        """One line of ``events.jsonl`` (``kind``: note, error, state)."""
        if self._events is None:
            self._events = open(self.path / EVENTS_FILE, "a", encoding="utf-8", newline="")
        self._events.write(
            json.dumps({"time": round(time.time(), 6), "kind": kind, "message": str(message)}) + "\n"
        )
        self._events.flush()

    def set_state(self, state: RunState | str, message: str = "") -> None:
        state = RunState(state)
        self.meta["state"] = state.value
        if message:
            self.meta["message"] = message
        self.meta["ended"] = None if state.live else now_iso()  # a paused run that goes on has not ended
        self._write_meta()

    def close(self, state: RunState | str | None = None, message: str = "") -> None:
        """Flush and close; ``state`` (default: finished unless faulted) goes into ``run.json``."""
        if self.closed:
            return
        self.closed = True
        for f in (self._steps, self._events):
            if f is not None and not f.closed:
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    pass
                f.close()
        if state is None:
            state = RunState.FAULTED if self.meta["state"] == RunState.FAULTED.value else RunState.FINISHED
        self.set_state(state, message)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(RunState.STOPPED, f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)


# ------------------------------------------------------------------------------------ reading


class RunReader:
    """Reads a JSON-lines file incrementally: :meth:`poll` returns the dicts of the lines completed
    since the last call, reading only the new bytes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0  # bytes consumed: always at a line start
        self.skipped = 0  # complete lines that were not JSON objects
        self.restarted = 0  # times the file shrank (was replaced) and was read again from 0
        self.lines = 0

    def pending(self) -> bool:
        """True when the file holds bytes past the last complete line (a torn or growing line)."""
        try:
            return os.stat(self.path).st_size > self.offset
        except OSError:
            return False

    def poll(self, max_bytes: int | None = None) -> list[dict]:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return []
        except OSError as e:
            raise ResvizError(f"cannot read {self.path}: {e.strerror or e}") from None
        if size < self.offset:
            self.offset = 0
            self.restarted += 1
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            want = size - self.offset if max_bytes is None else min(size - self.offset, max_bytes)
            data = f.read(want)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # only a partial line so far
        self.offset += end + 1
        out = []
        for line in data[: end + 1].split(b"\n"):
            if not line.strip():
                continue
            self.lines += 1
            try:
                d = json.loads(line)
            except ValueError:
                self.skipped += 1
                continue
            if isinstance(d, dict):
                out.append(d)
            else:
                self.skipped += 1
        return out


def read_json_object(path: Path, what: str) -> dict | None:
    """A run directory's JSON file (``run.json``, ``report.json``): its object, None when it is not
    there yet, one clear error when it cannot be read or is not a JSON object."""
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


def read_run_meta(path: Path) -> dict:
    """``run.json`` of the run directory ``path`` ({} while only ``steps.jsonl`` is there); one
    clear error when ``path`` is not a run directory or its format is newer than this resviz."""
    if not path.is_dir():
        raise ResvizError(f"{path}: not a folder; a resviz run directory holds {RUN_FILE} and {STEPS_FILE}")
    meta = read_json_object(path / RUN_FILE, "run file") or {}
    if not meta and not (path / STEPS_FILE).exists():
        raise ResvizError(f"{path}: not a resviz run directory (no {RUN_FILE} or {STEPS_FILE} in it)")
    fmt = meta.get("format", RUN_FORMAT)
    if not isinstance(fmt, int) or fmt > RUN_FORMAT:
        raise ResvizError(f"{path / RUN_FILE}: run format {fmt!r} is newer than this resviz "
                          f"understands (format {RUN_FORMAT}); update resviz")  # fmt: skip
    return meta


def run_name(meta: dict, path: Path) -> str:
    """A run's name: the one its writer gave in run.json, else its directory's."""
    return str(meta.get("name") or path.name)


def run_state(meta: dict) -> RunState:
    """A run's state from run.json; a state this reader does not know reads as still running."""
    try:
        return RunState(meta.get("state", "running"))
    except ValueError:
        return RunState.RUNNING


class Run:
    """An opened run directory: ``meta`` (run.json), ``report`` (report.json or None), ``store``
    (a :class:`RunStore` of the records read so far). :meth:`poll` reads what was appended."""

    def __init__(self, path: str | os.PathLike, capacity: int = 4096):
        self.path = Path(path)
        self.meta = read_run_meta(self.path)
        self._report: dict | None = None
        blocks = self.meta.get("blocks") or None
        self.store = RunStore(blocks, capacity)
        self.store.grow = True  # a monitor may meet blocks the first record did not list
        self.reader = RunReader(self.path / STEPS_FILE)
        self.events = RunReader(self.path / EVENTS_FILE)
        self.poll()

    @property
    def name(self) -> str:
        return run_name(self.meta, self.path)

    @property
    def state(self) -> RunState:
        return run_state(self.meta)

    @property
    def report(self) -> dict | None:
        if self._report is None:
            self._report = read_json_object(self.path / REPORT_FILE, "report")
        return self._report

    def refresh_meta(self) -> None:
        """Re-read ``run.json`` (the writer rewrites it when the state changes)."""
        try:
            meta = read_json_object(self.path / RUN_FILE, "run file")
        except ResvizError:
            return  # mid-replace on a shared file system: keep the last good one
        if meta:
            self.meta = meta
        self.store.set_state(self.state)

    def poll(self) -> list[StepRecord]:
        """Records appended since the last poll (also filed into ``store``); ``run.json`` re-read."""
        new = []
        for d in self.reader.poll():
            try:
                rec = StepRecord.from_dict(d)
            except (KeyError, TypeError, ValueError):
                self.reader.skipped += 1
                continue
            self.store.append(record_payload(rec, wall=d.get("time", time.time())))
            new.append(rec)
        self.refresh_meta()
        return new

    def new_events(self) -> list[dict]:
        return self.events.poll()

    def records(self) -> list[StepRecord]:
        """Every step on disk, at full fidelity (a torn last line left out)."""
        reader = RunReader(self.path / STEPS_FILE)
        out = []
        for d in reader.poll():
            try:
                out.append(StepRecord.from_dict(d))
            except (KeyError, TypeError, ValueError):
                continue
        return out


def open_run(path: str | os.PathLike, capacity: int = 4096) -> Run:
    """Open a run directory (see the module doc); ResvizError when it is not one."""
    return Run(path, capacity)


EXPORT_CHUNK = 32 << 20  # bytes of steps.jsonl read at a time: memory stays bounded on a long run


def export_run(path: str | os.PathLike, target: str | os.PathLike, fmt: str,
               block_names=None) -> Path:  # fmt: skip
    """Write every step of the run directory ``path`` to ``target`` as ``fmt`` (``"csv"`` or
    ``"jsonl"``): the same rows, through the same :class:`RecordWriter`, as ``resviz train
    --csv/--jsonl`` writes for those records. CSV columns are ``block_names`` (default: the run's
    ``blocks``). Written atomically; ``steps.jsonl`` is read in chunks, so a long run needs little
    memory; a torn last line is left out."""
    p = Path(path)
    meta = read_run_meta(p)
    names = list(block_names) if block_names is not None else list(meta.get("blocks") or [])
    writer = RecordWriter(target, fmt, names)
    reader = RunReader(p / STEPS_FILE)
    chunk = EXPORT_CHUNK
    try:
        while True:
            before = reader.offset
            for d in reader.poll(chunk):
                try:
                    rec = StepRecord.from_dict(d)
                except (KeyError, TypeError, ValueError):
                    continue
                writer.write(rec)
            if reader.offset == before:
                left = os.stat(reader.path).st_size - reader.offset if reader.pending() else 0
                if left <= chunk:  # the end, or only a torn last line
                    break
                chunk *= 2  # one line longer than a chunk: read more at once
    except BaseException:
        writer._out.discard()
        raise
    return writer.close()
