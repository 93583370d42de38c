"""The app's follower of a run directory, headless: no Qt, no threads, no waits.

Opening a long run parses only the lines the store keeps, yet leaves the store exactly as filing
every record would; following reads only what was appended, skips a torn line and goes on.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from resviz.core.errors import ResvizError
from resviz.core.training import RunState, RunStore, RunWriter
from resviz.core.training.store import record_payload
from resviz.gui.training import follow as run_follow
from resviz.gui.training.follow import RunFollower

BLOCKS = ["layer1.0", "layer1.1", "layer2.0"]


def record(step: int, nonfinite: bool = False) -> dict:
    v = math.nan if nonfinite else 1.0 / (step + 1)
    return {
        "step": step, "loss": 2.0 - step * 1e-3 if not nonfinite else None, "accuracy": 0.1, "lr": 0.1,
        "seconds": 0.01, "nonfinite": nonfinite, "message": "NaN in layer1.1" if nonfinite else "",
        "blocks": {b: {"grad_norm": v * (i + 1), "input_grad_norm": v, "output_grad_norm": v / 2,
                       "residual_ratio": 0.5, "gain": 2.0} for i, b in enumerate(BLOCKS)},
        "flags": {}, "time": 1000.0 + step,
    }  # fmt: skip


def write_run(path, steps: int, faults=(), state=None) -> RunWriter:
    w = RunWriter.create(path, name="tiny", config={"optimizer": "sgd", "lr": 0.1, "batch_size": 32},
                         blocks=BLOCKS)  # fmt: skip
    for s in range(steps):
        w.write(record(s, nonfinite=s in faults))
    if state is not None:
        w.close(state)
    return w


def every_record_store(path, capacity) -> RunStore:
    """What filing every line of steps.jsonl gives: the reference."""
    store = RunStore(BLOCKS, capacity)
    for line in (path / "steps.jsonl").read_text().splitlines():
        d = json.loads(line)
        store.append(record_payload(d, wall=d["time"]))
    return store


def same_store(a: RunStore, b: RunStore) -> None:
    assert (a.n, a.count, a.stride) == (b.n, b.count, b.stride)
    assert np.array_equal(a.steps(), b.steps())
    for p in ("grad_norm", "input_grad_norm", "residual_ratio"):
        assert np.array_equal(a.probe(p), b.probe(p), equal_nan=True)
    assert np.array_equal(a.scalar("loss"), b.scalar("loss"), equal_nan=True)
    assert a.latest["step"] == b.latest["step"] and a.first["step"] == b.first["step"]
    assert [f["step"] for f in a.faults] == [f["step"] for f in b.faults]


@pytest.mark.parametrize("steps", [50, 700, 1000])
def test_a_long_run_opens_sampled_as_if_every_record_was_filed(tmp_path, monkeypatch, steps):
    monkeypatch.setattr(run_follow, "SAMPLE_ABOVE", 0)  # sampled however small
    monkeypatch.setattr(run_follow, "OPEN_SCAN_BYTES", 20_000)  # NaN/Inf records: partly found later
    monkeypatch.setattr(run_follow, "SCAN_BYTES", 50_000)
    monkeypatch.setattr(run_follow, "TAIL", 8)
    write_run(tmp_path / "r", steps, faults={17, 333, 601}, state=RunState.FINISHED)
    f = RunFollower.open(tmp_path / "r", capacity=32)
    while f.behind:
        f.poll()
    same_store(f.store, every_record_store(tmp_path / "r", 32))
    if steps > 100:
        assert f.parsed < steps / 4  # only the kept rows, the faults and the tail were parsed
    assert f.state is RunState.FINISHED and f.store.state is RunState.FINISHED and not f.live


def test_following_reads_what_is_appended_and_goes_on_like_the_full_store(tmp_path, monkeypatch):
    monkeypatch.setattr(run_follow, "SAMPLE_ABOVE", 0)
    monkeypatch.setattr(run_follow, "TAIL", 8)
    w = write_run(tmp_path / "r", 300)
    f = RunFollower.open(tmp_path / "r", capacity=32)
    assert f.live and f.store.latest["step"] == 299
    assert f.poll() == 0
    for s in range(300, 420):
        w.write(record(s, nonfinite=s == 400))
    assert f.poll() == 120
    same_store(f.store, every_record_store(tmp_path / "r", 32))
    w.close(RunState.FAULTED)
    f.poll()
    assert f.state is RunState.FAULTED and f.store.state is RunState.FAULTED


def test_a_torn_last_line_waits_and_a_killed_writer_s_partial_record_is_skipped(tmp_path):
    write_run(tmp_path / "r", 5)
    f = RunFollower.open(tmp_path / "r")
    steps = tmp_path / "r" / "steps.jsonl"
    line = json.dumps(record(5))
    with open(steps, "a") as fh:  # the writer dies half-way through step 5
        fh.write(line[: len(line) // 2])
    assert f.poll() == 0 and f.store.latest["step"] == 4 and f.reader.skipped == 0
    with open(steps, "a") as fh:  # a restarted writer goes on with complete records
        for s in (5, 6):
            fh.write(json.dumps(record(s)) + "\n")
    assert f.poll() == 1  # the torn line merged with step 5's is skipped; step 6 is complete
    assert f.store.latest["step"] == 6 and f.reader.skipped == 1
    assert f.poll() == 0


def test_each_poll_reads_a_bounded_slice(tmp_path, monkeypatch):
    w = write_run(tmp_path / "r", 1)
    f = RunFollower.open(tmp_path / "r")
    for s in range(1, 200):
        w.write(record(s))
    size = len(json.dumps(record(1))) + 1
    monkeypatch.setattr(run_follow, "POLL_BYTES", size * 10)
    n = f.poll(max_bytes=run_follow.POLL_BYTES)
    assert 1 <= n <= 10 and f.behind
    while f.behind:
        f.poll(max_bytes=run_follow.POLL_BYTES)
    f.poll(max_bytes=run_follow.POLL_BYTES)
    assert f.store.latest["step"] == 199 and f.store.count == 200


def test_a_run_without_a_report_or_not_a_run_is_one_clear_message(tmp_path):
    write_run(tmp_path / "r", 3)
    with pytest.raises(ResvizError, match="no report.json"):
        run_follow.open_run_session(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResvizError, match="not a resviz run directory"):
        RunFollower.open(tmp_path / "empty")


@pytest.mark.parametrize("every", [1, 5])
def test_sampling_finds_the_kept_lines_among_uneven_ones(tmp_path, monkeypatch, every):
    """Lines of very different lengths (a note of 0-3000 characters) and a monitor's every=N."""
    import random

    monkeypatch.setattr(run_follow, "SAMPLE_ABOVE", 0)
    monkeypatch.setattr(run_follow, "TAIL", 4)
    rnd = random.Random(every)
    w = RunWriter.create(tmp_path / "r", name="uneven", config={"every": every}, blocks=BLOCKS)
    for s in range(0, 900 * every, every):
        w.write({**record(s), "note": "x" * rnd.choice([0, 0, 10, 3000])})
    w.close(RunState.FINISHED)
    f = RunFollower.open(tmp_path / "r", capacity=64)
    same_store(f.store, every_record_store(tmp_path / "r", 64))
    assert f.parsed < 200


def test_a_run_whose_steps_restart_opens_with_steps_in_order(tmp_path, monkeypatch):
    """A writer resumed from a checkpoint repeats steps: the view keeps them in order, up to the last."""
    monkeypatch.setattr(run_follow, "SAMPLE_ABOVE", 0)
    monkeypatch.setattr(run_follow, "TAIL", 4)
    w = write_run(tmp_path / "r", 300)
    for s in range(100, 401):  # resumed at step 100
        w.write(record(s))
    w.close(RunState.FINISHED)
    f = RunFollower.open(tmp_path / "r", capacity=32)
    steps = f.store.steps()
    assert steps[0] == 0 and f.store.latest["step"] == 400 and len(steps) > 10
    assert np.all(np.diff(steps) > 0)
    loss = f.store.scalar("loss")
    assert np.allclose(loss, [2.0 - s * 1e-3 for s in steps])


def test_an_empty_run_opens_and_then_follows_its_first_records(tmp_path, monkeypatch):
    monkeypatch.setattr(run_follow, "SAMPLE_ABOVE", 0)
    w = write_run(tmp_path / "r", 0)
    f = RunFollower.open(tmp_path / "r")
    assert f.store.latest is None and f.live
    w.write(record(0))
    assert f.poll() == 1 and f.store.latest["step"] == 0
