"""Step records: CSV / JSON-lines round trips, atomic writes, bounded history, flags."""

from __future__ import annotations

import json
import math
import os

import pytest

from resviz.core.errors import ResvizError
from resviz.core.training.steps import (
    RecordWriter,
    StepRecord,
    csv_columns,
    flag_norms,
    read_csv,
    read_jsonl,
    write_csv,
    write_jsonl,
)
from resviz.core.training.store import RunStore


def _rec(step, nonfinite=False):
    blocks = {
        "layer1.0": {"grad_norm": 0.5 + step, "input_grad_norm": 1e-8, "output_grad_norm": 2.0,
                     "residual_ratio": math.nan, "gain": 0.25},
        "layer2.0": {"grad_norm": 3e3, "input_grad_norm": 0.1, "output_grad_norm": 0.2,
                     "residual_ratio": 0.75, "gain": 0.5},
    }  # fmt: skip
    return StepRecord(step=step, loss=math.nan if nonfinite else 2.0 / (step + 1), accuracy=0.125 * (step % 8),
                      lr=0.1, seconds=0.01, blocks=blocks, flags=flag_norms(blocks), nonfinite=nonfinite,
                      message="boom" if nonfinite else "")  # fmt: skip


def _same(a: StepRecord, b: StepRecord, msg=True) -> bool:
    def eq(x, y):
        return (math.isnan(x) and math.isnan(y)) or x == y

    ok = a.step == b.step and eq(a.loss, b.loss) and eq(a.accuracy, b.accuracy) and a.lr == b.lr
    ok = ok and a.nonfinite == b.nonfinite and a.flags == b.flags and a.blocks.keys() == b.blocks.keys()
    for k in a.blocks:
        ok = ok and a.blocks[k].keys() == b.blocks[k].keys()
        ok = ok and all(eq(a.blocks[k][p], b.blocks[k][p]) for p in a.blocks[k])
    if msg:
        ok = ok and a.message == b.message
    return ok


def test_flags():
    r = _rec(0)
    assert r.flags == {"layer1.0.input_grad_norm": "vanishing", "layer2.0.grad_norm": "exploding"}
    assert r.probes["layer2.0.residual_ratio"] == 0.75


def test_csv_round_trip(tmp_path):
    recs = [_rec(i) for i in range(5)] + [_rec(5, nonfinite=True)]
    path = write_csv(recs, tmp_path / "run.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:4] == ["step", "loss", "accuracy", "lr"]
    assert "layer1.0.grad_norm" in header and "layer2.0.residual_ratio" in header
    assert header == csv_columns(["layer1.0", "layer2.0"])
    back = read_csv(path)
    assert len(back) == 6
    assert all(_same(a, b, msg=False) for a, b in zip(recs, back))
    assert back[5].nonfinite and math.isnan(back[5].loss)


def test_jsonl_round_trip(tmp_path):
    recs = [_rec(i) for i in range(4)] + [_rec(4, nonfinite=True)]
    path = write_jsonl(recs, tmp_path / "run.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])  # strict JSON: NaN written as null
    assert first["blocks"]["layer1.0"]["residual_ratio"] is None
    assert set(first["blocks"]["layer2.0"]) >= {
        "grad_norm",
        "input_grad_norm",
        "output_grad_norm",
        "residual_ratio",
    }
    back = read_jsonl(path)
    assert all(_same(a, b) for a, b in zip(recs, back))


def test_writes_are_atomic(tmp_path):
    target = tmp_path / "run.csv"
    target.write_text("old contents\n")
    w = RecordWriter(target, "csv", ["layer1.0"])
    w.write(_rec(0))
    assert target.read_text() == "old contents\n"  # nothing replaced until the writer closes
    w.close()
    assert target.read_text().startswith("step,loss")
    assert sorted(os.listdir(tmp_path)) == ["run.csv"]  # no temp files left
    # a failing write leaves the old file in place and no temporary behind
    target.write_text("keep me\n")

    class Bad(StepRecord):
        pass

    with pytest.raises(AttributeError):
        write_jsonl([_rec(0), object()], target)
    assert target.read_text() == "keep me\n"
    assert sorted(os.listdir(tmp_path)) == ["run.csv"]
    with pytest.raises(ResvizError, match="does not exist"):
        write_csv([_rec(0)], tmp_path / "no" / "such.csv")


def test_writer_commits_on_exception(tmp_path):
    path = tmp_path / "partial.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with RecordWriter(path, "jsonl") as w:
            w.write(_rec(0))
            raise KeyboardInterrupt
    assert len(read_jsonl(path)) == 1


def test_read_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ResvizError, match="not a resviz training CSV"):
        read_csv(p)
    q = tmp_path / "x.jsonl"
    q.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ResvizError, match=r"x\.jsonl:2"):
        read_jsonl(q)


def test_history_is_bounded_and_keeps_the_ends():
    h = RunStore(capacity=16)
    for i in range(1000):
        h.append(_rec(i, nonfinite=(i == 333)))
    recs = h.records()
    assert len(recs) <= 16 + 2
    assert recs[0].step == 0 and recs[-1].step == 999
    assert any(r.step == 333 for r in recs)  # faults are never dropped
    steps = [r.step for r in recs]
    assert steps == sorted(steps)
    # evenly thinned: the stride is a power of two
    gaps = {b - a for a, b in zip(steps, steps[1:-1]) if a != 333 and b != 333}
    assert len(gaps) == 1 and (next(iter(gaps)) & (next(iter(gaps)) - 1)) == 0
    s, v = h.series("layer1.0.grad_norm")
    assert s == steps and v[0] == 0.5
    h.clear()
    assert h.records() == []


def test_history_keeps_everything_below_capacity():
    h = RunStore(capacity=64)
    for i in range(50):
        h.append(_rec(i))
    assert [r.step for r in h.records()] == list(range(50))


def test_the_one_run_store_has_one_name():
    import resviz.core.training as training
    from resviz.core.training import steps as records

    for module in (training, records):  # RunHistory (never used) was an alias of RunStore
        assert not hasattr(module, "RunHistory")
    assert "RunHistory" not in training.__all__
