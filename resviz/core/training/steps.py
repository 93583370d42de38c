"""Step records and CSV / JSON-lines export (no torch here).

A :class:`StepRecord` holds plain Python numbers only (no tensors), so the GUI thread, the command
line and the exporters can read it without touching torch. Files are written atomically: into a
temporary file next to the target, then ``os.replace``; a crash or Ctrl-C never leaves half a file
under the user's name.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ResvizError
from ..files import AtomicTextFile

#: Probe names, in the order they appear in CSV columns.
PROBES = ("grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio", "gain")
#: Probes that are gradient norms: these are flagged as vanishing or exploding.
NORM_PROBES = ("grad_norm", "input_grad_norm", "output_grad_norm")
VANISHING = 1e-7
EXPLODING = 1e3

_FIXED = ("step", "loss", "accuracy", "lr", "seconds", "nonfinite")


@dataclass(slots=True)
class StepRecord:
    """What one training step measured. Plain numbers and strings only.

    ``blocks`` maps a block name (``layer1.0``) to its probes: ``grad_norm`` (L2 norm of the
    gradients of the block's own parameters), ``input_grad_norm`` ‖∂L/∂x‖ at the block input,
    ``output_grad_norm`` ‖∂L/∂H‖ at its output, ``gain`` (their ratio, input over output: the
    block's gradient gain) and ``residual_ratio`` ‖F(x)‖/‖shortcut(x)‖, the norms of the two
    operands of its residual add (‖F(x)‖/‖x‖ for an identity shortcut; at a projection or
    downsampling block, relative to the shortcut's output). A probe that
    could not be measured is NaN. ``flags`` maps ``"<block>.<probe>"`` to ``"vanishing"`` or
    ``"exploding"``. ``nonfinite`` is set when the loss or a gradient was NaN/Inf: the step was
    not applied and ``message`` says what to do.
    """

    step: int
    loss: float
    accuracy: float
    lr: float
    seconds: float
    blocks: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    nonfinite: bool = False
    message: str = ""

    @property
    def probes(self) -> dict[str, float]:
        """The probes as one flat dict: ``{"layer1.0.grad_norm": 0.12, ...}``."""
        return {f"{b}.{k}": v for b, d in self.blocks.items() for k, v in d.items()}

    def to_dict(self) -> dict:
        """JSON-ready: NaN and Inf become None (JSON has no NaN)."""
        return {
            "step": self.step,
            "loss": _json_num(self.loss),
            "accuracy": _json_num(self.accuracy),
            "lr": _json_num(self.lr),
            "seconds": _json_num(self.seconds),
            "nonfinite": self.nonfinite,
            "blocks": {b: {k: _json_num(v) for k, v in d.items()} for b, d in self.blocks.items()},
            "flags": dict(self.flags),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StepRecord:
        return cls(
            step=int(d["step"]),
            loss=_num(d.get("loss")),
            accuracy=_num(d.get("accuracy")),
            lr=_num(d.get("lr")),
            seconds=_num(d.get("seconds")),
            blocks={b: {k: _num(v) for k, v in p.items()} for b, p in (d.get("blocks") or {}).items()},
            flags=dict(d.get("flags") or {}),
            nonfinite=bool(d.get("nonfinite", False)),
            message=str(d.get("message") or ""),
        )


def flag_norms(blocks: dict[str, dict[str, float]]) -> dict[str, str]:
    """``"<block>.<probe>" -> "vanishing" | "exploding"`` for gradient norms out of range."""
    flags = {}
    for b, d in blocks.items():
        for k in NORM_PROBES:
            v = d.get(k)
            if v is None or math.isnan(v):
                continue
            if v < VANISHING:
                flags[f"{b}.{k}"] = "vanishing"
            elif v > EXPLODING:
                flags[f"{b}.{k}"] = "exploding"
    return flags


def _json_num(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _num(v) -> float:
    if v is None or v == "":
        return math.nan
    return float(v)


# ------------------------------------------------------------------------------------ export


def csv_columns(block_names: Sequence[str]) -> list[str]:
    """``step, loss, accuracy, lr, seconds, nonfinite, <block>.<probe>..., flags``."""
    return [*_FIXED, *(f"{b}.{p}" for b in block_names for p in PROBES), "flags"]


def _csv_row(rec: StepRecord, columns: Sequence[str]) -> list[str]:
    row = []
    for c in columns:
        if c == "flags":
            row.append(";".join(f"{k}={v}" for k, v in rec.flags.items()))
        elif c == "nonfinite":
            row.append("1" if rec.nonfinite else "0")
        elif c in _FIXED:
            row.append(_fmt(getattr(rec, c)))
        else:
            block, _, probe = c.rpartition(".")
            row.append(_fmt(rec.blocks.get(block, {}).get(probe, math.nan)))
    return row


def _fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v))  # 'nan', 'inf' and full precision; float() reads them back


def _blocks_of(records: Iterable[StepRecord]) -> list[str]:
    names: dict[str, None] = {}
    for r in records:
        for b in r.blocks:
            names.setdefault(b, None)
    return list(names)


class RecordWriter:
    """Writes records to a CSV or JSON-lines file, one row/line per :meth:`write`.

    ``fmt`` is ``"csv"`` or ``"jsonl"``. For CSV the columns are fixed by ``block_names``.
    ``stream=False`` (whole-file exports): written under a temporary name and moved into place on
    ``close``, so a failure never leaves half a file under the user's name. ``stream=True`` (a
    running training): written to ``path`` itself (through a symlink, as ``open`` does) and
    flushed after every record, so SIGTERM, Ctrl-C or a crash lose nothing and leave no temporary
    file. Use as a context manager: on an exception the records written so far are kept.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, block_names: Sequence[str] = (), *,
                 stream: bool = False):  # fmt: skip
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt = fmt
        self.stream = stream
        if stream:
            self._out = None
            self.path = Path(path)
            if self.path.is_dir():
                raise ResvizError(f"cannot write {self.path}: it is a folder; name a file")
            try:
                self.file = open(self.path, "w", encoding="utf-8", newline="")
            except OSError as e:
                raise ResvizError(f"cannot write {self.path}: {e.strerror or e}") from None
        else:
            self._out = AtomicTextFile(path)
            self.path = self._out.path
            self.file = self._out.file
        if fmt == "csv":
            self.columns = csv_columns(block_names)
            self._csv = csv.writer(self.file, lineterminator="\n")
            self._csv.writerow(self.columns)
            self._flush()

    def _flush(self) -> None:
        if self.stream:
            self.file.flush()

    def write(self, rec: StepRecord) -> None:
        if self.fmt == "csv":
            self._csv.writerow(_csv_row(rec, self.columns))
        else:
            self.file.write(json.dumps(rec.to_dict(), allow_nan=False) + "\n")
        self._flush()

    def close(self) -> Path:
        if self._out is not None:
            return self._out.commit()
        if not self.file.closed:
            self.file.flush()
            try:
                os.fsync(self.file.fileno())
            except OSError:
                pass  # a pipe or a terminal (/dev/stdout): nothing to sync
            self.file.close()
        return self.path

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_csv(records: Sequence[StepRecord], path: str | os.PathLike,
              block_names: Sequence[str] | None = None) -> Path:  # fmt: skip
    """Write ``records`` as CSV (one row per step), atomically."""
    names = _blocks_of(records) if block_names is None else block_names
    return _write_all(RecordWriter(path, "csv", names), records)


def write_jsonl(records: Sequence[StepRecord], path: str | os.PathLike) -> Path:
    """Write ``records`` as JSON lines (one object per step), atomically."""
    return _write_all(RecordWriter(path, "jsonl"), records)


def _write_all(w: RecordWriter, records: Sequence[StepRecord]) -> Path:
    # unlike the streaming context manager, a whole-list write that fails leaves no file at all
    try:
        for r in records:
            w.write(r)
    except BaseException:
        w._out.discard()
        raise
    return w.close()


def read_csv(path: str | os.PathLike) -> list[StepRecord]:
    """Read a file written by :func:`write_csv` back into records."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ResvizError(f"{path}: empty file, expected a resviz training CSV") from None
        if header[: len(_FIXED)] != list(_FIXED):
            raise ResvizError(f"{path}: not a resviz training CSV (expected columns {', '.join(_FIXED)})")
        for row in reader:
            rec = StepRecord(step=int(row[0]), loss=float(row[1]), accuracy=float(row[2]),
                             lr=float(row[3]), seconds=float(row[4]), nonfinite=row[5] == "1")  # fmt: skip
            for c, v in zip(header[len(_FIXED) :], row[len(_FIXED) :]):
                if c == "flags":
                    rec.flags = dict(p.split("=", 1) for p in v.split(";") if p)
                else:
                    block, _, probe = c.rpartition(".")
                    rec.blocks.setdefault(block, {})[probe] = float(v)
            out.append(rec)
    return out


def read_jsonl(path: str | os.PathLike) -> list[StepRecord]:
    """Read a file written by :func:`write_jsonl` back into records."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(StepRecord.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ResvizError(f"{path}:{n}: not a resviz step record ({e})") from None
    return out
