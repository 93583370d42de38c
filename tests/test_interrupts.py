"""Ctrl-C and SIGTERM are never lost: code that swallows the exception cannot keep resviz waiting.

Seen: one Ctrl-C in 25 sent while ``import torch`` ran in resviz's process was swallowed there, and
``resviz check model.py`` then waited for ever for a child whose code loops for ever."""

from __future__ import annotations

import os
import queue
import signal
import threading

import pytest

from resviz.core import interrupts
from resviz.core.errors import Terminated
from resviz.core.session.isolation import _await_answer, _Waiting


def swallowed(sig) -> None:
    """A signal whose exception some library catches and drops."""
    try:
        os.kill(os.getpid(), sig)
        for _ in range(1000):  # Python runs the handler between bytecodes, here
            pass
    except (KeyboardInterrupt, Terminated):
        pass


@pytest.mark.parametrize("sig, exc", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_swallowed_signal_is_raised_again_and_the_handlers_come_back(sig, exc):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with interrupts.signals_unwind():
        interrupts.raise_pending()  # nothing received: nothing raised
        swallowed(sig)
        with pytest.raises(exc):
            interrupts.raise_pending()
    assert {s: signal.getsignal(s) for s in before} == before
    interrupts.raise_pending()  # the record ends with the block


def test_the_wait_for_a_child_raises_a_swallowed_ctrl_c_instead_of_waiting_for_ever():
    answers: queue.Queue = queue.Queue()
    # should the Ctrl-C be lost, the wait ends with this answer instead of hanging the test
    fallback = threading.Timer(60.0, lambda: answers.put(("ok", "no Ctrl-C seen")))
    fallback.start()
    try:
        with interrupts.signals_unwind():
            swallowed(signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                _await_answer(answers, _Waiting("model.py", None), None)
    finally:
        fallback.cancel()
        fallback.join()


def test_outside_a_command_nothing_is_recorded():
    previous = signal.signal(signal.SIGINT, lambda *a: None)  # the host's own handler, as in the app
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        interrupts.raise_pending()  # the host's business: resviz raises nothing
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_held_back_during_an_import_arrives_when_it_ends():
    """Sent to the main thread: the test process has other threads, which do not hold it back (in
    resviz's command line only the main thread exists when it imports torch, and the threads that
    the import starts inherit the block)."""
    reached = False
    with interrupts.signals_unwind():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                for _ in range(1000):  # held back: no exception inside the block
                    pass
                reached = True
            pytest.fail("the held-back Ctrl-C was lost")  # pragma: no cover
        assert reached


def test_a_handled_ctrl_c_does_not_leave_python_set_to_exit_by_sigint():
    """CPython marks a KeyboardInterrupt that escaped ``exec`` of a string as unhandled, even once
    caught, and at exit kills the process with SIGINT (exit -2, not the documented 130)."""
    import ctypes

    try:
        mark = ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except ValueError:
        pytest.skip("this Python keeps the mark elsewhere")
    with interrupts.signals_unwind():
        try:
            exec("import signal, threading\n"
                 "signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)\n"
                 "for _ in range(1000): pass")  # fmt: skip
        except KeyboardInterrupt:
            pass
    if mark.value != 1:
        pytest.skip("this Python does not mark it")
    interrupts.forget_unhandled_interrupt()
    assert mark.value == 0
