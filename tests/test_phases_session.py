"""The phases of running a user's file in a child process, each on its own (issue 11): waiting
for the answer, its errors, and how a child that ended is told. No child is started here."""

import queue

import pytest

from resviz.core.errors import LoadError, ResvizError
from resviz.core.session import isolated_child
from resviz.core.session.isolation import (
    _ENDED,
    Cancelled,
    CancelToken,
    _await_answer,
    _child_error,
    _ended_error,
    _Waiting,
)


def _answers(*items):
    q: queue.Queue = queue.Queue()
    for item in items:
        q.put(item)
    return q


def test_the_clock_starts_at_the_first_stage_not_while_python_starts():
    waiting = _Waiting("model.py", timeout=5.0)
    assert waiting.stage == "starting Python for model.py" and waiting.seconds_left() is None
    waiting.start_grace()
    assert waiting.seconds_left() > 100  # torch's import has its own grace
    waiting.enter("importing model.py")
    assert 0 < waiting.seconds_left() <= 5.0
    assert waiting.stage == "importing model.py"
    assert _Waiting("model.py", timeout=None).seconds_left() is None


def test_the_answer_comes_after_the_stages_each_heard():
    heard = []
    waiting = _Waiting("model.py", timeout=None)
    answers = _answers(("ready", None), ("stage", "importing model.py"), ("stage", "tracing"), ("ok", 42))
    assert _await_answer(answers, waiting, heard.append) == 42
    assert heard == ["importing model.py", "tracing"]
    assert waiting.stage == "tracing"


def test_output_that_ends_without_an_answer_is_told_apart():
    assert (
        _await_answer(_answers(("stage", "tracing"), ("eof", None)), _Waiting("m.py", None), None) is _ENDED
    )


def test_past_the_deadline_the_message_names_the_stage_and_the_flag():
    waiting = _Waiting("model.py", timeout=0.0)
    waiting.enter("building model.py:Net")  # the deadline is now: no answer can come in time
    with pytest.raises(
        LoadError, match=r"did not finish within 0 s \(resviz was building model.py:Net\).*--timeout"
    ):
        _await_answer(_answers(), waiting, None)


def test_the_childs_error_is_the_users_or_an_internal_one(monkeypatch):
    with pytest.raises(LoadError, match="model.py:3: bad"):
        _await_answer(_answers(("error", {"message": "model.py:3: bad"})), _Waiting("model.py", None), None)
    internal = _child_error({"message": "KeyError: x", "user": False, "details": "Traceback ..."}, "model.py")
    assert type(internal) is ResvizError
    assert str(internal) == "internal error while checking model.py: KeyError: x"
    monkeypatch.setenv("RESVIZ_DEBUG", "1")
    assert "Traceback ..." in str(
        _child_error({"message": "x", "user": False, "details": "Traceback ..."}, "m.py")
    )


def test_a_child_that_ended_was_cancelled_or_ended_by_the_code():
    def never() -> int:
        raise AssertionError("a cancelled child's exit status is not waited for")

    token = CancelToken()
    token.cancel()
    assert isinstance(_ended_error("model.py", "tracing", token, never), Cancelled)
    err = _ended_error("model.py", "importing model.py", CancelToken(), lambda: 7, "Broken pipe")
    assert isinstance(err, LoadError)
    assert "ended the process with status 7 while resviz was importing model.py" in str(err)
    assert "(Broken pipe)" in str(err)
    assert "killed by SIGSEGV (a crash in native code)" in str(
        _ended_error("m.py", "tracing", None, lambda: -11)
    )


def test_a_failed_warm_up_is_said_on_stderr(monkeypatch, capsys):
    from resviz.core.analysis import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("meta kernel missing")

    monkeypatch.setattr(pipeline, "analyze", broken)
    isolated_child._warm_up()
    err = capsys.readouterr().err
    assert "warming up the child process failed (RuntimeError: meta kernel missing)" in err
