"""The training worker as a state machine, without Qt: commands put on its queue, the loop turned
by hand, the states and events it announces read back. No QApplication, no thread."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from resviz.gui.runtime.commands import CommandQueue, Generations, StopFlag, Stopped  # noqa: E402
from resviz.gui.training import run_loop  # noqa: E402
from resviz.gui.training.run_loop import BuiltRun, RunState, TrainingLoop  # noqa: E402

SPEC = {"config": {"steps": 0}}


class FakeTrainer:
    """A trainer whose step runs a tiny model forward (so the stop hooks can fire inside it)."""

    def __init__(self, during_step=None):
        self.model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2))
        self.step_index = 0
        self.lr = 0.1
        self.blocked = None
        self._blocked_lr = None
        self.name, self.block_names, self.notes = "fake", ["0"], []
        self.data = SimpleNamespace(describe=lambda: "synthetic")
        self.during_step = during_step or (lambda: None)
        self.resets = 0

    def step(self):
        self.during_step()
        self.model(torch.zeros(1, 2))
        rec = SimpleNamespace(step=self.step_index, lr=self.lr, nonfinite=False, flags={}, blocks={}, message="")
        self.step_index += 1
        return rec

    def set_lr(self, lr):
        self.lr = lr

    def reset(self):
        self.step_index = 0
        self.resets += 1


class FakeRecording:
    def __init__(self):
        self.paths = {"residual": "/nowhere"}
        self.states: list[str] = []
        self.closed: list[str] = []

    def write(self, recs):
        return None

    def set_state(self, state):
        self.states.append(state)

    def close(self, reason="stopped", message=""):
        self.closed.append(reason)


class Harness:
    """A TrainingLoop with fakes, and everything it announced."""

    def __init__(self, monkeypatch, trainer=None, make_run=None):
        monkeypatch.setattr(run_loop, "record_payload", lambda rec, now: {"step": rec.step, "lr": rec.lr})
        self.events: list[tuple] = []
        self.trainer = trainer or FakeTrainer()
        self.recordings: list[FakeRecording] = []
        self.builds = 0

        def make(session, spec):
            self.builds += 1
            cfg = SimpleNamespace(device="meta", lr=0.1, optimizer="sgd", batch_size=1, steps=0)
            return BuiltRun(self.trainer, [self.trainer], False, cfg)

        def record(trainers, spec):
            self.recordings.append(FakeRecording())
            return self.recordings[-1]

        self.loop = TrainingLoop(lambda *e: self.events.append(e), make_run or make, record)

    def send(self, name, *args):
        self.loop.commands.put(name, *args)

    def turn(self, limit=100) -> int:
        """Turn until the loop rests (at most ``limit`` turns); returns how many turns it took."""
        for n in range(1, limit + 1):
            if not self.loop.turn():
                return n
        return limit

    def states(self) -> list[str]:
        return [p for e, _g, p in self.events if e == "state"]

    def steps(self) -> list[int]:
        return [item["residual"]["step"] for e, _g, p in self.events if e == "stepped" for item in p]


def test_a_run_trains_to_its_target_then_finishes(monkeypatch):
    h = Harness(monkeypatch)
    h.send("build", {"config": {"steps": 3}}, "run", 1, "session")
    h.turn()
    assert h.states() == ["building", "running", "finished"]
    assert h.steps() == [0, 1, 2]
    assert all(g == 1 for _e, g, _p in h.events)  # every event names its run
    assert h.recordings[0].states[-1] == "finished"  # run.json follows the state


def test_pause_acts_between_steps_and_resume_goes_on(monkeypatch):
    h = Harness(monkeypatch)
    h.send("build", SPEC, "run", 1, "session")
    h.loop.turn()
    h.loop.turn()
    h.send("pause")
    assert h.loop.turn() is False  # the command came first: no step this turn
    done = h.trainer.step_index
    assert h.states()[-1] == "paused" and h.loop.state is RunState.PAUSED
    assert h.loop.turn() is False and h.trainer.step_index == done  # paused: nothing trains
    h.send("resume")
    h.send("target", done + 2)
    h.turn()
    assert h.states()[-2:] == ["running", "finished"] and h.trainer.step_index == done + 2


def test_one_step_then_paused_and_lr_used_from_the_next_step(monkeypatch):
    h = Harness(monkeypatch)
    h.send("build", SPEC, "pause", 1, "session")
    h.turn()
    assert h.states() == ["building", "paused"] and h.steps() == []
    h.send("lr", 0.02)
    h.send("step")
    h.turn()
    assert h.steps() == [0] and h.states()[-1] == "paused"
    assert h.trainer.lr == 0.02


def test_stop_ends_the_step_in_flight_by_its_flag_not_by_an_error(monkeypatch):
    trainer = FakeTrainer()
    h = Harness(monkeypatch, trainer)
    h.send("build", SPEC, "run", 1, "session")
    h.loop.turn()
    # the UI asks to stop while a step runs: the hooks raise Stopped inside the model's forward
    trainer.during_step = h.loop.stop_flag.request
    assert h.loop.turn() is False
    assert "failed" not in [e for e, *_ in h.events] and h.states()[-1] == "running"  # nothing said yet
    h.send("stop")
    h.turn()
    assert h.states()[-1] == "stopped"
    assert not h.loop.stop_flag.requested()  # the next run starts with it off
    assert h.recordings[0].closed == ["stopped"]  # the run directory was closed
    assert h.loop.run is None


def test_a_model_error_that_mentions_stopping_is_still_an_error(monkeypatch):
    """A stop is known by its type and the flag, never by an exception's words."""

    def raises():
        raise RuntimeError("the run was stopped")

    h = Harness(monkeypatch, FakeTrainer(during_step=raises))
    h.send("build", SPEC, "run", 1, "session")
    h.turn()
    assert h.states()[-1] == "error"
    assert any(e == "failed" and "the run was stopped" in p for e, _g, p in h.events)


def test_a_model_that_wraps_the_stop_in_its_own_error_is_still_stopped(monkeypatch):
    h = Harness(monkeypatch)

    def wraps():
        h.loop.stop_flag.request()
        try:
            h.loop.stop_flag.check()
        except BaseException as exc:  # the user's model code catching everything
            raise ValueError("something else") from exc

    h.trainer.during_step = wraps
    h.send("build", SPEC, "run", 1, "session")
    h.turn()
    assert "failed" not in [e for e, *_ in h.events] and "error" not in h.states()


def test_only_the_newest_of_several_queued_runs_is_built(monkeypatch):
    h = Harness(monkeypatch)
    h.send("build", SPEC, "pause", 1, "a")
    h.send("build", SPEC, "pause", 2, "b")
    h.turn()
    assert h.builds == 1 and {g for _e, g, _p in h.events} == {2}


def test_a_run_that_cannot_be_built_says_why(monkeypatch):
    def fails(session, spec):
        raise ValueError("no such layer")

    h = Harness(monkeypatch, make_run=fails)
    h.send("build", SPEC, "run", 1, "session")
    h.turn()
    assert h.states() == ["building", "failed"]
    assert any(e == "failed" and "no such layer" in p for e, _g, p in h.events)


def test_reset_starts_a_new_recording_at_step_zero(monkeypatch):
    h = Harness(monkeypatch)
    h.send("build", {"config": {"steps": 2}}, "run", 1, "session")
    h.turn()
    h.send("reset")
    h.turn()
    assert h.states()[-1] == "reset" and h.trainer.step_index == 0 and h.trainer.resets == 1
    assert h.recordings[0].closed == ["reset"] and len(h.recordings) == 2


def test_the_shared_pieces_are_thread_safe_plain_objects():
    q = CommandQueue()
    q.put("a", 1)
    q.put("b")
    assert [(c.name, c.args) for c in q.drain()] == [("a", (1,)), ("b", ())] and q.empty()
    flag = StopFlag()
    flag.check()  # not set: nothing happens
    flag.request()
    with pytest.raises(Stopped):
        flag.check()
    assert not isinstance(Stopped(), Exception)  # `except Exception` in a model lets it through
    gens = Generations()
    first = gens.bump("view")
    assert gens.is_latest("view", first)
    gens.bump_all()
    assert not gens.is_latest("view", first)


def test_a_pause_sent_while_the_run_is_built_acts_before_its_first_step(monkeypatch):
    h = Harness(monkeypatch)
    make = h.loop._make_run

    def slow_build(session, spec):  # the user presses Pause while the model is being built
        h.send("pause")
        return make(session, spec)

    h.loop._make_run = slow_build
    h.send("build", SPEC, "run", 1, "session")
    h.turn()
    assert h.states() == ["building", "running", "paused"] and h.steps() == []
