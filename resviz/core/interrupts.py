"""Ctrl-C and SIGTERM in resviz's own command-line process: they unwind, and are never lost.

While :func:`signals_unwind` is on (a command runs), SIGINT raises ``KeyboardInterrupt`` and
SIGTERM raises :class:`~resviz.core.errors.Terminated`, so that ``finally`` blocks run: a Python
file's child process is killed, a run directory is closed, no temporary file is left.

Why the handler also records the signal: Python raises a signal's exception wherever the main
thread happens to be, and code that resviz does not own can catch it there and carry on. Measured
here: one Ctrl-C in 25 sent while ``import torch`` ran was swallowed without a word, and
``resviz check model.py`` then waited for ever for a child whose code loops for ever. So every
wait that can last polls :func:`raise_pending`, which raises the recorded signal's exception again.

Where the exception must not land at all, :func:`deferred` holds the signals back: in torch's
start-up, whose C++ code runs Python, a KeyboardInterrupt raised inside was swallowed (2 of 30
Ctrl-Cs in a bare ``import torch``) or aborted the process (1 of 30), which would leave a Python
file's child running with no parent.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from .errors import Terminated

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: int | None = None  # a signal received while unwinding is on
_depth = 0  # nested signals_unwind blocks (a command calling another)


def _exception(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame) -> None:
    global _pending
    _pending = signum
    raise _exception(signum)


@contextlib.contextmanager
def signals_unwind():
    """SIGINT and SIGTERM raise (and are recorded) while the block runs; the previous handlers
    come back afterwards. Only in the main thread, and only where handlers can be set (not in an
    embedded interpreter that keeps them): elsewhere the block runs as it is."""
    global _pending, _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, _handler)
    except (ValueError, OSError):  # not settable here: keep the defaults
        for sig, old in previous.items():
            signal.signal(sig, old)
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)
        if _depth == 0:
            _pending = None


def raise_pending() -> None:
    """Raise the exception of a signal received under :func:`signals_unwind` again: for a wait
    to call now and then, in case the first one was swallowed on its way up. A no-op otherwise
    (no signal, or not under ``signals_unwind``, as in the app)."""
    if _pending is not None:
        raise _exception(_pending)


@contextlib.contextmanager
def deferred():
    """Hold SIGINT and SIGTERM back while the block runs (importing torch); one that arrives
    meanwhile is delivered as the block ends, where its exception unwinds cleanly. Threads started
    inside the block keep them blocked (Python runs signal handlers in the main thread only, and
    the kernel would otherwise hand the signal to one of them). Main thread only; a no-op where
    ``pthread_sigmask`` is missing."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def import_torch() -> None:
    """``import torch`` with the signals held back (see :func:`deferred`): for resviz's own
    process, before the first use of torch in a command."""
    with deferred():
        import torch  # noqa: F401


def forget_unhandled_interrupt() -> None:
    """Call once a KeyboardInterrupt is handled, so that the process exits with the status resviz
    returns (130). CPython marks a KeyboardInterrupt that escapes code run by ``exec``/``eval`` of
    a string (``collections.namedtuple`` and ``dataclasses`` do that, hundreds of times in
    torch's start-up) as unhandled even when a caller catches it, and at exit it then kills the
    process with SIGINT instead (exit -2 to a subprocess caller; seen in 3 of 40 Ctrl-Cs). Each
    such evaluation starts by clearing that mark: one empty evaluation clears it."""
    exec("pass")
