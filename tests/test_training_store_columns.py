"""RunStore: the run store's bounded, evenly thinned columns of step records (no Qt needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resviz.core.training.steps import PROBES
from resviz.core.training.store import RunStore


def payload(step: int, names, *, nonfinite=False, scale=1.0) -> dict:
    blocks = {
        n: {p: (math.nan if nonfinite and i == 0 else scale * (step + 1) * (i + 1) * (j + 1))
            for j, p in enumerate(PROBES)}
        for i, n in enumerate(names)
    }  # fmt: skip
    from resviz.core.training.steps import flag_norms

    return {"step": step, "loss": 1.0 / (step + 1), "accuracy": 0.5, "lr": 0.1, "seconds": 0.01,
            "blocks": blocks, "flags": flag_norms(blocks), "nonfinite": nonfinite, "message": "boom" if nonfinite else "",
            "t": step * 0.1}  # fmt: skip


NAMES = ["a.0", "a.1", "b.0"]


def test_keeps_every_step_until_full():
    buf = RunStore(NAMES, capacity=16)
    for s in range(10):
        buf.append(payload(s, NAMES))
    assert len(buf) == 10 and buf.stride == 1
    assert list(buf.steps()) == list(range(10))
    v = buf.probe("input_grad_norm")
    assert v.shape == (10, 3) and v[3, 2] == pytest.approx(4 * 3 * 2)
    assert buf.first_probe("grad_norm")[1] == pytest.approx(2)
    assert buf.latest_probe("grad_norm")[0] == pytest.approx(10)
    assert buf.steps_per_second() == pytest.approx(10.0)


def test_thins_evenly_and_keeps_the_latest():
    buf = RunStore(NAMES, capacity=16)
    for s in range(1000):
        buf.append(payload(s, NAMES))
    assert len(buf) <= 16 and buf.stride == 64
    rows = buf.steps(with_latest=False)
    assert np.all(np.diff(rows) == buf.stride)  # evenly spaced: the heatmap's columns
    assert rows[0] == 0
    assert buf.steps()[-1] == 999  # the latest step is always there
    assert buf.scalar("loss")[-1] == pytest.approx(1 / 1000)
    assert buf.probe("gain").shape == (len(buf.steps()), 3)


def test_faults_are_kept_and_exported_in_full():
    buf = RunStore(NAMES, capacity=8)
    for s in range(40):
        buf.append(payload(s, NAMES, nonfinite=(s == 21)))
    assert buf.faults[0]["step"] == 21
    recs = buf.records()
    steps = [r.step for r in recs]
    assert steps == sorted(steps) and 21 in steps and 39 in steps
    fault = next(r for r in recs if r.step == 21)
    assert fault.nonfinite and fault.message == "boom" and math.isnan(fault.blocks["a.0"]["grad_norm"])


def test_bad_blocks_name_the_nonfinite_ones():
    buf = RunStore(NAMES)
    buf.append(payload(0, NAMES))
    assert buf.bad_blocks() == []
    buf.append(payload(1, NAMES, nonfinite=True))
    assert buf.bad_blocks() == ["a.0"]
    everything = payload(2, NAMES, nonfinite=True)  # NaN spreads through every block's gradient
    everything["blocks"] = {n: {p: math.nan for p in PROBES} for n in NAMES}
    buf.append(everything)
    assert buf.bad_blocks() == NAMES


def test_records_round_trip_through_the_core_writers(tmp_path):
    from resviz.core.training import read_csv, read_jsonl, write_csv, write_jsonl

    buf = RunStore(NAMES)
    for s in range(5):
        buf.append(payload(s, NAMES, scale=1e-9 if s == 4 else 1.0))
    buf.append(payload(5, NAMES))
    recs = buf.records()
    assert recs[4].flags and recs[4].flags == payload(4, NAMES, scale=1e-9)["flags"]  # rebuilt rows too
    assert not recs[5].flags
    back = read_csv(write_csv(recs, tmp_path / "r.csv", block_names=NAMES))
    assert [r.step for r in back] == list(range(6))
    assert back[2].blocks["a.1"]["gain"] == pytest.approx(3 * 2 * 5)
    back = read_jsonl(write_jsonl(recs, tmp_path / "r.jsonl"))
    assert back[4].flags == recs[4].flags


def test_unknown_blocks_are_ignored_and_missing_probes_are_nan():
    buf = RunStore(["x"])
    buf.append({"step": 0, "loss": 1.0, "accuracy": 0.0, "lr": 0.1, "seconds": 0.0,
                "blocks": {"x": {"grad_norm": 2.0}, "other": {"grad_norm": 1.0}}})  # fmt: skip
    assert buf.probe("grad_norm")[0, 0] == 2.0 and math.isnan(buf.probe("gain")[0, 0])
