"""``resviz train`` end to end through ``resviz.train_cli.run_train``."""

from __future__ import annotations

import argparse
import json
import math
import textwrap

import numpy as np
import pytest

from resviz.core.training import read_csv, read_jsonl
from resviz.train_cli import Progress, add_train_arguments, run_train

PROBES = {"grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio"}


def parse(argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p, model_args=True)
    return p.parse_args(argv)


def train(argv, capsys):
    rc = run_train(parse(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_csv_jsonl(tmp_path, capsys):
    csv_path, jsonl_path = tmp_path / "run.csv", tmp_path / "run.jsonl"
    rc, out, err = train(
        ["resnet20", "--input", "3x8x8", "--steps", "3", "--batch", "4", "--lr", "0.05", "--json",
         "--csv", str(csv_path), "--jsonl", str(jsonl_path), "--seed", "1"], capsys,
    )  # fmt: skip
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["step"] for d in lines] == [0, 1, 2]
    for d in lines:
        assert math.isfinite(d["loss"]) and d["lr"] == 0.05
        assert len(d["blocks"]) == 9 and "layer1.0" in d["blocks"]
        for probes in d["blocks"].values():
            assert PROBES <= set(probes)
            assert all(isinstance(probes[k], float) and probes[k] > 0 for k in PROBES)
    assert "step 2 (3/3 done)" in err and "wrote" in err and "\r" not in err  # not a TTY: plain lines
    from_csv, from_jsonl = read_csv(csv_path), read_jsonl(jsonl_path)
    assert [r.step for r in from_csv] == [r.step for r in from_jsonl] == [0, 1, 2]
    for d, a, b in zip(lines, from_csv, from_jsonl):
        assert a.loss == b.loss == d["loss"]
        assert a.blocks["layer3.2"]["grad_norm"] == d["blocks"]["layer3.2"]["grad_norm"]
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[:4] == ["step", "loss", "accuracy", "lr"] and "layer2.0.residual_ratio" in header


def test_same_seed_same_output(capsys):
    argv = ["resnet20", "--input", "3x8x8", "--steps", "2", "--batch", "4", "--json", "--optimizer", "adam"]
    _, out1, _ = train(argv, capsys)
    _, out2, _ = train(argv, capsys)
    strip = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in out1.splitlines()]
    strip2 = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in out2.splitlines()]
    assert strip == strip2


def test_plain_twin(capsys):
    rc, out, err = train(
        ["resnet20", "--input", "3x8x8", "--steps", "1", "--batch", "4", "--json", "--plain"], capsys
    )
    assert rc == 0, err
    d = json.loads(out)
    assert all(p["residual_ratio"] is None and p["grad_norm"] > 0 for p in d["blocks"].values())
    assert "plain twin of resnet20" in err


def test_nan_exits_1(tmp_path, capsys):
    rc, out, err = train(["resnet20", "--input", "3x8x8", "--steps", "6", "--batch", "4", "--lr", "1e30",
                          "--json", "--csv", str(tmp_path / "r.csv")], capsys)  # fmt: skip
    assert rc == 1
    last = json.loads(out.splitlines()[-1])
    assert last["nonfinite"] is True and last["loss"] is None
    assert "learning rate" in err and "x0.1" in err
    assert read_csv(tmp_path / "r.csv")[-1].nonfinite  # the file is still written


@pytest.mark.parametrize(
    "argv,match",
    [(["no_such_model_xyz"], "unknown model"), (["resnet20", "--lr", "0"], "learning rate"),
     (["resnet20", "--data", "npz:/no/such.npz"], "no such file"),
     (["resnet20", "--data", "mnist:/x"], "unknown kind"), (["resnet20", "--device", "tpu"], "expected auto")],
)  # fmt: skip
def test_bad_input_exits_2(argv, match, capsys):
    rc, out, err = train([*argv, "--steps", "1", "--input", "3x8x8"], capsys)
    assert rc == 2 and out == ""
    assert match in err and "Traceback" not in err


MODEL_PY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.bn(self.conv(x))
            out += x
            return self.relu(out)


    class Net(nn.Module):
        def __init__(self, num_classes=3, broken=False):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1)
            self.blocks = nn.Sequential(Block(8), Block(8))
            self.fc = nn.Linear(8, num_classes)
            self.broken = broken

        def forward(self, x):
            x = self.blocks(self.stem(x))
            if self.training and self.broken:
                x = x.reshape(-1, 5)
            return self.fc(x.mean(dim=(2, 3)))
    """
)


def test_python_file_model_with_npz_data(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL_PY)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (20, 6, 6, 3), dtype=np.uint8), y=np.arange(20) % 3)
    rc, out, err = train([f"{tmp_path / 'model.py'}:Net", "--input", "3x6x6", "--steps", "2", "--batch", "5",
                          "--data", str(tmp_path / "d.npz"), "--json"], capsys)  # fmt: skip
    assert rc == 0, err
    d = json.loads(out.splitlines()[-1])
    assert set(d["blocks"]) == {"blocks.0", "blocks.1"}
    assert all(p["residual_ratio"] > 0 for p in d["blocks"].values())


def test_user_model_error_names_file_and_line(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL_PY)
    rc, out, err = train([f"{tmp_path / 'model.py'}:Net", "--kwargs", '{"broken": true}', "--input", "3x6x6",
                          "--steps", "2", "--batch", "4"], capsys)  # fmt: skip
    assert rc == 2
    line = MODEL_PY.splitlines().index("            x = x.reshape(-1, 5)") + 1
    assert "model.py" in err and f"line {line}" in err and "x.reshape(-1, 5)" in err


def test_a_file_that_ends_the_process_at_import_is_checked_in_a_child_first(tmp_path, capsys):
    # `resviz train model.py` imports the file in a child process first, as `resviz check` does:
    # os._exit at import ends the child, not this process, and is one clear paragraph, exit 2
    (tmp_path / "quits.py").write_text("import os\nos._exit(3)\n")
    rc, out, err = train([str(tmp_path / "quits.py"), "--input", "3x6x6", "--steps", "1"], capsys)
    assert rc == 2 and out == ""
    assert "quits.py" in err and "status 3" in err and "Traceback" not in err


def test_lead_parser_has_no_conflicts():
    import resviz.cli as cli

    p = argparse.ArgumentParser()
    cli._model_args(p)
    add_train_arguments(p)
    args = p.parse_args(["resnet20", "-i", "3x8x8", "--steps", "5", "--plain", "--trust"])
    assert args.model == "resnet20" and args.input == "3x8x8" and args.steps == 5 and args.plain


def test_progress_in_place_on_a_tty():
    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    s = Tty()
    p = Progress(3, s)
    for i in range(1, 4):
        p.update(i, 1.0, 0.5)
    p.close()
    assert s.text.startswith("\r[") and "3/3" in s.text and s.text.endswith("\n")


# ------------------------------------------------------------------------------------ the run directory


def test_train_writes_a_run_directory(tmp_path, capsys):
    from resviz.core.training import open_run
    from resviz.core.training.runreport import report_from_json

    d = tmp_path / "run1"
    rc, _, err = train(
        ["resnet20", "--input", "3x8x8", "--steps", "3", "--batch", "4", "--run-dir", str(d)], capsys
    )
    assert rc == 0, err
    run = open_run(d)
    assert run.meta["format"] == 1 and run.state.value == "finished"
    cfg = run.meta["config"]
    assert (cfg["optimizer"], cfg["lr"], cfg["batch_size"], cfg["device"], cfg["world_size"]) == (
        "sgd",
        0.1,
        4,
        "cpu",
        1,
    )
    assert cfg["torch"] and run.meta["started"] and cfg["data"] == "synthetic"
    assert [r.step for r in run.records()] == [0, 1, 2]
    assert run.report["check"]["model"] == "resnet20" and len(run.report["check"]["blocks"]) == 9
    assert [b.name for b in report_from_json(run.report).blocks] == [
        b["name"] for b in run.report["check"]["blocks"]
    ]
    assert str(d) in err
    rc, _, err = train(["resnet20", "--input", "3x8x8", "--steps", "1", "--run-dir", str(d)], capsys)
    assert rc == 2 and "already holds a run" in err  # never mixed into another run
    assert "training" not in err  # refused before any work


def test_default_batch_is_one_convention():
    from resviz.core.training import TrainConfig
    from resviz.train_cli import DEFAULT_BATCH

    assert parse(["resnet20"]).batch == TrainConfig().batch_size == DEFAULT_BATCH == 32


def test_headless_fault_says_what_to_run_not_resume(tmp_path, capsys):
    d = tmp_path / "r"
    rc, _, err = train(["resnet20", "--input", "3x8x8", "--steps", "6", "--batch", "4", "--lr", "1e30",
                        "--run-dir", str(d)], capsys)  # fmt: skip
    assert rc == 1
    assert "resume" not in err and "reset" not in err and "Run again with a lower learning rate" in err
    assert "--lr 1e+29" in err
    from resviz.core.training import open_run

    run = open_run(d)
    assert run.state.value == "faulted" and "Run again" in run.meta["message"]


@pytest.mark.slow  # a real subprocess: importing torch there takes most of its ~10 s
def test_sigterm_keeps_every_recorded_step_and_leaves_no_temp_files(tmp_path):
    """A real ``resviz train`` killed with SIGTERM mid-run: the run directory and --jsonl/--csv
    hold every step recorded before the signal, run.json says stopped, no temporary file is left."""
    import os
    import signal
    import subprocess
    import sys

    d, jl, cv = tmp_path / "run", tmp_path / "s.jsonl", tmp_path / "s.csv"
    cmd = [sys.executable, "-m", "resviz", "train", "resnet20", "--input", "3x8x8", "--batch", "2",
           "--steps", "100000", "--run-dir", str(d), "--jsonl", str(jl), "--csv", str(cv)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        for line in proc.stderr:  # wait for the first progress line: steps are being recorded
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 143, err
    assert "stopped by SIGTERM" in err
    from resviz.core.training import open_run, read_csv, read_jsonl

    run = open_run(d)
    steps = [r.step for r in run.records()]
    assert steps and steps == list(range(len(steps)))
    assert run.state.value == "stopped" and "SIGTERM" in run.meta["message"]
    assert [r.step for r in read_jsonl(jl)] == steps and [r.step for r in read_csv(cv)] == steps
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
