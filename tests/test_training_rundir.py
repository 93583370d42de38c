"""The headless run model: RunStore (state, bounded columns, flags, events) and the run directory
(format 1: writer, incremental reader, torn lines). No Qt, no threads, no waits."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from resviz.core.errors import ResvizError
from resviz.core.training.rundir import (
    RUN_FORMAT,
    STEPS_FILE,
    RunReader,
    RunWriter,
    default_run_dir,
    open_run,
)
from resviz.core.training.steps import PROBES, StepRecord
from resviz.core.training.store import RunState, RunStore, natural_key, summarise_flags

NAMES = ["layer1.0", "layer1.1", "layer2.0"]


def rec(step: int, *, nonfinite=False, scale=1.0, names=NAMES) -> StepRecord:
    blocks = {n: {p: scale * (step + 1) * (i + 1) for p in PROBES} for i, n in enumerate(names)}
    if nonfinite:
        blocks[names[-1]]["input_grad_norm"] = math.nan
    from resviz.core.training.steps import flag_norms

    return StepRecord(step=step, loss=1.0 / (step + 1), accuracy=0.5, lr=0.1, seconds=0.01, blocks=blocks,
                      flags=flag_norms(blocks), nonfinite=nonfinite, message="boom" if nonfinite else "")  # fmt: skip


# ------------------------------------------------------------------------------------ the store


def test_store_events_state_and_faults():
    store = RunStore(NAMES, capacity=8)
    seen = []
    store.on("stepped", lambda s, p: seen.append(("stepped", p["step"])))
    store.on("faulted", lambda s, p: seen.append(("faulted", p["step"])))
    store.on("state_changed", lambda s, old, new: seen.append((old.value, new.value)))
    store.set_state(RunState.RUNNING)
    for i in range(3):
        store.append(rec(i, nonfinite=i == 2))
    store.set_state("faulted")
    assert seen == [("idle", "running"), ("stepped", 0), ("stepped", 1), ("stepped", 2), ("faulted", 2),
                    ("running", "faulted")]  # fmt: skip
    assert store.faults[0]["message"] == "boom" and store.bad_blocks() == ["layer2.0"]
    assert store.tint("grad_norm") == {"layer1.0": 3.0, "layer1.1": 6.0, "layer2.0": 9.0}


def test_a_failing_callback_does_not_stop_the_run():
    store = RunStore(NAMES)
    store.on("stepped", lambda s, p: 1 / 0)
    got = []
    store.on("stepped", lambda s, p: got.append(p["step"]))
    store.append(rec(0))
    assert got == [0] and "ZeroDivisionError" in store.callback_errors[0]
    with pytest.raises(ValueError, match="unknown event"):
        store.on("stepp", print)


def test_store_takes_block_names_from_the_records_and_grows():
    store = RunStore()
    store.append(rec(0, names=["a"]))
    store.append(rec(1, names=["a", "b"]))
    assert store.names == ["a", "b"]
    v = store.probe("grad_norm")
    assert v.shape == (2, 2) and v[1, 1] == 4.0 and math.isnan(v[0, 1])


def test_store_thins_evenly_keeps_first_latest_and_faults():
    store = RunStore(NAMES, capacity=16)
    for i in range(1000):
        store.append(rec(i, nonfinite=i == 333))
    rows = store.steps(with_latest=False)
    assert len(rows) <= 16 and np.all(np.diff(rows) == store.stride) and rows[0] == 0
    steps = [r.step for r in store.records()]
    assert 333 in steps and steps[-1] == 999 and steps == sorted(steps)
    assert store.first["step"] == 0 and store.last.step == 999


def test_flags_sort_naturally_and_are_summarised():
    names = [f"layer1.{i}" for i in range(12)]
    assert sorted(names, key=natural_key)[:3] == ["layer1.0", "layer1.1", "layer1.2"]
    assert sorted(names, key=natural_key)[-1] == "layer1.11"
    flags = {f"{n}.grad_norm": "vanishing" for n in names} | {"layer3.0.input_grad_norm": "exploding"}
    text = summarise_flags(flags)
    assert text == ("exploding in layer3.0; vanishing in 12 blocks (layer1.0, layer1.1, layer1.2, layer1.3 "
                    "and 8 more)")  # fmt: skip
    store = RunStore(["layer1.10", "layer1.2"])
    store.append(rec(0, scale=1e-9, names=["layer1.10", "layer1.2"]))
    assert store.flagged_blocks() == ["layer1.2", "layer1.10"]


# ------------------------------------------------------------------------------------ the run directory


def test_run_directory_round_trip(tmp_path):
    d = tmp_path / "r1"
    w = RunWriter.create(d, name="resnet20", config={"lr": 0.1, "batch": 32}, blocks=NAMES,
                         report={"check": {"model": "resnet20"}})  # fmt: skip
    for i in range(5):
        w.write(rec(i))
    w.log("error", "probe failed")
    w.close()
    meta = json.loads((d / "run.json").read_text())
    assert meta["format"] == RUN_FORMAT == 1 and meta["state"] == "finished" and meta["config"]["batch"] == 32
    run = open_run(d)
    assert run.state is RunState.FINISHED and run.report["check"]["model"] == "resnet20"
    assert [r.step for r in run.records()] == list(range(5)) and list(run.store.steps()) == list(range(5))
    assert run.store.names == NAMES and run.new_events()[0]["message"] == "probe failed"
    assert sorted(p.name for p in d.iterdir()) == ["events.jsonl", "report.json", "run.json", "steps.jsonl"]


def test_a_torn_last_line_is_skipped_then_read_when_completed(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    w.write(rec(0))
    w.write(rec(1))
    w.close()
    line = json.dumps(rec(2).to_dict()) + "\n"
    with open(d / STEPS_FILE, "a") as f:
        f.write(line[:25])  # a crash mid-write
    run = open_run(d)
    assert [r.step for r in run.records()] == [0, 1] and run.reader.pending()
    with open(d / STEPS_FILE, "a") as f:
        f.write(line[25:])
    assert [r.step for r in run.poll()] == [2] and run.reader.skipped == 0


def test_garbage_in_the_middle_is_skipped_not_an_error(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    w.write(rec(0))
    w._steps.write('{"step": 1, "lo\n')  # torn by a crash, then the run went on in append mode
    w.write(rec(2))
    w.close()
    run = open_run(d)
    assert [r.step for r in run.records()] == [0, 2] and run.reader.skipped == 1


def test_the_reader_reads_only_new_bytes_and_restarts_on_a_replaced_file(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"step": 0}\n{"step": 1}\n')
    r = RunReader(p)
    assert [d["step"] for d in r.poll()] == [0, 1] and r.poll() == []
    offset = r.offset
    with open(p, "a") as f:
        f.write('{"step": 2}\n')
    assert [d["step"] for d in r.poll()] == [2] and r.offset == offset + len('{"step": 2}\n')
    p.write_text('{"step": 0}\n')  # replaced by a new run: shorter
    assert [d["step"] for d in r.poll()] == [0] and r.restarted == 1


def test_writer_refuses_a_folder_with_another_runs_steps(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    w.write(rec(0))
    w.close()
    with pytest.raises(ResvizError, match="already holds a run"):
        RunWriter.create(d, name="x")
    (tmp_path / "f").write_text("")
    with pytest.raises(ResvizError, match="is a file"):
        RunWriter.create(tmp_path / "f", name="x")
    with pytest.raises(ResvizError, match="not a resviz run directory"):
        open_run(tmp_path)


def test_newer_formats_are_refused_with_words(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ResvizError, match="newer than this resviz"):
        open_run(d)


def test_default_run_dir_is_under_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("RESVIZ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    p = default_run_dir("resnet/20 plain")
    assert p.parent == tmp_path / "resviz" / "runs" and p.name.startswith("resnet_20_plain-")


def test_reading_runs_does_not_import_torch():
    code = (
        "import sys\nfrom resviz.core.training import open_run, RunStore, RunWriter\n"
        "import resviz.gui.training.follow, resviz.gui.training.run_model\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_export_run_writes_every_step_in_chunks_and_skips_a_torn_line(tmp_path, monkeypatch):
    from resviz.core.training import rundir
    from resviz.core.training.steps import write_csv, write_jsonl

    records = [rec(i, nonfinite=i == 7) for i in range(40)]
    w = RunWriter.create(tmp_path / "r", name="net", blocks=NAMES)
    for r in records:
        w.write(r)
    w.close()
    with open(tmp_path / "r" / STEPS_FILE, "a") as f:
        f.write('{"step": 40, "loss"')  # a crash mid-write
    monkeypatch.setattr(rundir, "EXPORT_CHUNK", 300)  # a few records per read
    got = rundir.export_run(tmp_path / "r", tmp_path / "all.csv", "csv")
    assert got.read_bytes() == write_csv(records, tmp_path / "want.csv", block_names=NAMES).read_bytes()
    got = rundir.export_run(tmp_path / "r", tmp_path / "all.jsonl", "jsonl")
    assert got.read_bytes() == write_jsonl(records, tmp_path / "want.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.csv", "all.jsonl", "r", "want.csv", "want.jsonl"]
