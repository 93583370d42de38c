"""What the app's background workers share, without Qt: their states, the queue the UI thread
sends commands through, the flag that asks them to stop, and the exception that ends a step.

These are plain Python so that a worker's logic (e.g. the training loop,
:mod:`resviz.gui.training.run_loop`) is a state machine the tests drive directly: put commands,
turn the loop, read the states it announced, with no QApplication and no thread.

The rule they encode: the UI thread never writes a worker's attributes. It puts a command on the
worker's :class:`CommandQueue` (or sends a queued signal) and may set its :class:`StopFlag`; both
are safe across threads. The worker reads them between steps, and the flag also ends a step from
inside (the training's hooks raise :class:`Stopped`).
"""

from __future__ import annotations

import queue
import threading
from enum import Enum
from typing import Any, NamedTuple


class WorkerState(str, Enum):
    """Where a background worker's thread is; signals carry ``.value`` (a plain string)."""

    IDLE = "idle"  # started, nothing to do
    RUNNING = "running"  # a job or a step is queued or running
    PAUSED = "paused"
    STOPPING = "stopping"  # asked to stop: the job in flight ends, nothing new starts
    STOPPED = "stopped"  # the thread has ended (joined)
    FAILED = "failed"


class Stopped(BaseException):
    """Raised inside a step when its worker was asked to stop.

    A ``BaseException`` like ``KeyboardInterrupt``: the model's own ``except Exception`` and the
    trainer's wrapping of model errors let it through unchanged, so a stop is told apart from a
    failure by its type (and by the :class:`StopFlag`), never by the words of a message.
    """


class StopFlag:
    """A thread-safe "please stop" switch: set by the owner (UI thread), read by the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def requested(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Stopped` when a stop was requested (called between or inside steps)."""
        if self._event.is_set():
            raise Stopped("the worker was asked to stop")


class Command(NamedTuple):
    name: str
    args: tuple = ()


class CommandQueue:
    """Commands from the UI thread to a worker, in order; the worker takes all that wait at once
    (between two steps), so a command acts at the next step however busy the thread is."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Command] = queue.SimpleQueue()

    def put(self, name: str, *args: Any) -> None:
        self._queue.put(Command(name, args))

    def drain(self) -> list[Command]:
        out: list[Command] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def empty(self) -> bool:
        return self._queue.empty()


class Generations:
    """The newest request number of each channel, shared by the UI thread (which makes requests
    stale) and the worker thread (which skips stale ones) under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gens: dict[str, int] = {}

    def bump(self, channel: str) -> int:
        with self._lock:
            gen = self._gens.get(channel, 0) + 1
            self._gens[channel] = gen
            return gen

    def latest(self, channel: str) -> int:
        with self._lock:
            return self._gens.get(channel, 0)

    def is_latest(self, channel: str, gen: int) -> bool:
        return self.latest(channel) == gen

    def bump_all(self) -> None:
        with self._lock:
            for channel in self._gens:
                self._gens[channel] += 1
