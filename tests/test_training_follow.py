"""``resviz follow RUN_DIR``: the live summary of a run directory another process is appending to.
The waits between looks are a callback that appends the next records: no threads, no sleeps."""

from __future__ import annotations

import io
import json

import pytest

from resviz.core.training.rundir import STEPS_FILE, RunWriter
from resviz.core.training.steps import PROBES, StepRecord, flag_norms
from resviz.core.training.store import RunState
from resviz.follow_cli import follow

NAMES = ["layer1.2", "layer1.10", "layer2.0"]


def rec(step, t, vanishing=()):
    blocks = {n: {p: (1e-9 if n in vanishing else 1.0) for p in PROBES} for n in NAMES}
    r = StepRecord(step=step, loss=2.0 / (step + 1), accuracy=0.25, lr=0.1, seconds=0.5, blocks=blocks,
                   flags=flag_norms(blocks))  # fmt: skip
    d = r.to_dict()
    d["time"] = 1000.0 + t  # the writer's wall clock: 2 steps per second
    return d


def test_follow_prints_progress_until_the_run_ends(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="resnet20", config={"optimizer": "sgd", "lr": 0.1, "batch_size": 32,
                                                     "device": "cpu", "world_size": 1})  # fmt: skip
    w.write(rec(0, 0.0))
    script = iter(range(1, 4))

    def wait(_interval):  # what another process did meanwhile
        k = next(script)
        if k < 3:
            w.write(rec(2 * k - 1, k - 0.5, vanishing=("layer1.10", "layer1.2")))
            w.write(rec(2 * k, k))
            if k == 2:  # a record torn mid-write, completed at the next look
                w._steps.write(json.dumps(rec(5, 2.5))[:30])
                w._steps.flush()
        else:
            w._steps.write(json.dumps(rec(5, 2.5))[30:] + "\n")
            w._steps.flush()
            w.close(RunState.FINISHED)

    out = io.StringIO()
    assert follow(d, out, interval=0, sleep=wait) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("following resnet20") and "sgd lr 0.1" in lines[0] and "batch 32" in lines[0]
    steps = [ln for ln in lines if ln.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["0", "2", "4", "5"]  # each look, the latest step
    assert "2.00 steps/s" in steps[1] and "loss 0.6667" in steps[1]
    assert lines[-1] == "run finished: 6 steps read"


def test_flagged_blocks_are_named_in_natural_order_and_summarised(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    w.write(rec(0, 0.0, vanishing=("layer1.10", "layer1.2")))
    out = io.StringIO()
    assert follow(d, out, once=True) == 0
    step = next(ln for ln in out.getvalue().splitlines() if ln.startswith("step 0"))
    assert "flagged: vanishing in 2 blocks (layer1.2, layer1.10)" in step
    assert "the run is running" in out.getvalue()


def test_ctrl_c_stops_following_cleanly(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    w.write(rec(0, 0.0))

    def wait(_interval):
        raise KeyboardInterrupt

    out = io.StringIO()
    assert follow(d, out, interval=0, sleep=wait) == 130
    assert out.getvalue().splitlines()[-1] == "stopped following after 1 steps (the run itself goes on)"


def test_faults_and_probe_errors_are_shown_and_a_stray_line_is_skipped(tmp_path):
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    bad = rec(0, 0.0)
    bad.update(nonfinite=True, message="step 0: the loss became NaN")
    w.write(bad)
    w.log("error", "resviz.monitor: gradient hook failed")
    w._steps.write("garbage\n")
    w.close(RunState.FAULTED, "step 0: the loss became NaN")
    out = io.StringIO()
    assert follow(d, out) == 0
    text = out.getvalue()
    assert "fault at step 0: step 0: the loss became NaN" in text
    assert "error: resviz.monitor: gradient hook failed" in text
    assert "run faulted" in text and "1 unreadable lines skipped" in text


def test_not_a_run_directory_exits_2(tmp_path, capsys):
    from resviz.cli import main

    assert main(["follow", str(tmp_path)]) == 2
    assert "not a resviz run directory" in capsys.readouterr().err
    (tmp_path / STEPS_FILE).write_text("")
    assert main(["follow", str(tmp_path), "--once"]) == 0
    for bad in ("inf", "nan", "-1", "x"):
        with pytest.raises(SystemExit) as e:
            main(["follow", str(tmp_path), "--interval", bad])
        assert e.value.code == 2


def test_a_writer_that_died_is_pointed_out_once(tmp_path):
    """SIGKILL leaves run.json saying running: follow says no step came for a while, once."""
    d = tmp_path / "r"
    w = RunWriter.create(d, name="x")
    w.write(rec(0, 0.0))  # then the writer is killed: no close, no state change
    now = [0.0]
    looks = []

    def wait(_interval):
        now[0] += 100.0
        looks.append(now[0])
        if len(looks) == 4:
            raise KeyboardInterrupt

    out = io.StringIO()
    assert follow(d, out, interval=0, sleep=wait, clock=lambda: now[0], stale_after=150) == 130
    notes = [ln for ln in out.getvalue().splitlines() if ln.startswith("note: no new step")]
    assert len(notes) == 1 and "200 s" in notes[0] and "still says running" in notes[0]
