"""``resviz train``'s run split into phases (issue 11): the config from the command line, the
step loop and what is said at the end, each tested alone (the whole command in test_training_cli)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from resviz.core.errors import ResvizError
from resviz.core.training import RunState
from resviz.train_cli import (
    EXIT_NONFINITE,
    EXIT_OK,
    _Outcome,
    _train_steps,
    add_train_arguments,
    closing_lines,
    train_config,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser, model_args=True)
    return parser.parse_args(["resnet20", *argv])


def test_train_config_resolves_defaults_and_refuses_bad_values():
    cfg = train_config(parse("--optimizer", "adam", "--batch", "8", "--device", "cpu"))
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.device) == ("adam", 1e-3, 8, "cpu")
    with pytest.raises(ResvizError, match="expected auto, cpu or cuda"):
        train_config(parse("--device", "tpu"))


def rec(step, nonfinite=False):
    return SimpleNamespace(step=step, loss=0.5, accuracy=0.25, nonfinite=nonfinite, message="boom" if nonfinite else "",
                           flags={}, to_dict=lambda: {"step": step})  # fmt: skip


class FakeTrainer:
    def __init__(self, bad_at=None):
        self.step_index, self.bad_at, self.block_names = 0, bad_at, []

    def step(self):
        r = rec(self.step_index, self.step_index == self.bad_at)
        self.step_index += 1
        return r


def test_the_step_loop_records_each_step_and_stops_at_a_nonfinite_one(capsys):
    written = []
    run = SimpleNamespace(write=written.append)
    args = SimpleNamespace(csv=None, jsonl=None, json=True)
    out = _Outcome(end_state=RunState.FINISHED)
    _train_steps(args, SimpleNamespace(steps=5), FakeTrainer(bad_at=2), run, out)
    assert [r.step for r in written] == [0, 1, 2]
    assert (out.status, out.end_state, out.end_message, out.rec.step) == (EXIT_NONFINITE, RunState.FAULTED, "boom", 2)
    assert capsys.readouterr().out.splitlines() == ['{"step": 0}', '{"step": 1}', '{"step": 2}']
    out = _Outcome(end_state=RunState.FINISHED)
    _train_steps(SimpleNamespace(csv=None, jsonl=None, json=False), SimpleNamespace(steps=3), FakeTrainer(), run, out)
    assert (out.status, out.end_state, out.rec.step) == (EXIT_OK, RunState.FINISHED, 2)


def test_closing_lines_say_the_fault_or_the_last_step_then_the_files():
    run = SimpleNamespace(path="runs/r")
    writers = [SimpleNamespace(path="r.csv")]
    done = _Outcome(end_state=RunState.FINISHED, rec=rec(9), writers=writers)
    assert closing_lines(done, run) == ["done: 10 steps (0-9), last loss 0.5000, accuracy 0.250", "wrote runs/r",
                                        "wrote r.csv"]  # fmt: skip
    faulted = _Outcome(end_state=RunState.FAULTED, status=EXIT_NONFINITE, rec=rec(3, nonfinite=True))
    assert closing_lines(faulted, run) == ["resviz: boom", "wrote runs/r"]
    stopped = _Outcome(end_state=RunState.STOPPED, status=130, rec=rec(3))
    assert closing_lines(stopped, run) == ["wrote runs/r"]  # Ctrl-C said its own line already
