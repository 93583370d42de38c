"""Running the code of a user's Python file in a child process, never in resviz's own.

A ``model.py`` is code: at import, in ``__init__`` or in ``forward`` it may loop forever, call
``os._exit()``, start a thread that never ends, print to stdout or crash the interpreter. The
command line and the desktop app therefore import, build and trace it in a child process
(``python -m resviz.core.session.isolated_child``) and take back plain records: the
:class:`~resviz.core.analysis.pipeline.Report` with every live ``nn.Module`` replaced by a
:class:`PlainModule` (class name, where the class is defined, hyper-parameters), and the
candidates of a file. This process never imports the user's module: the answer is unpickled with
an allow-list of resviz's own record classes, so a user class that slipped into a record is an
error here, not an import.

What the parent does around the child:

* a deadline (``--timeout``) and a :class:`CancelToken` (the app's Cancel) kill it;
* Ctrl-C and SIGTERM in the parent kill it on the way out (it runs in its own session, so the
  terminal's Ctrl-C reaches only resviz); if the parent dies anyway, the child sees its stdin close
  and exits;
* once the answer is read the child is killed and reaped, so a non-daemon thread of the user's
  module cannot keep anything alive;
* the child's stdout is its stderr: whatever the user's code prints goes to stderr, never into
  ``--json`` output; the answer travels on the original stdout pipe;
* a child that ends without an answer (``os._exit``, a segfault) is a :class:`LoadError` naming
  the file and what resviz was doing ("importing model.py", "tracing model.py:Net").

Not isolated: training a Python-file model (``resviz train``, the Training tab) needs the live
model, so :attr:`LoadedModel.rebuild` imports and builds it in this process when asked; and live
modules given to :func:`resviz.analyze` / :func:`resviz.show` are the caller's own.

Cost: one Python + torch start per load (see ``benchmarks/bench_isolation.py``); the app keeps
one spare child started ahead (:class:`SpareChild`), so a reload after an edit does not wait for it.
"""

from __future__ import annotations

import io
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import LoadError, ResvizError
from ..interrupts import deferred, raise_pending
from ..sources.python_source import split_python_source
from ..tracing.plain_module import PlainModule  # noqa: F401 - part of this module's interface

__all__ = ["CancelToken", "Cancelled", "PlainModule", "SpareChild", "open_python",
           "python_candidates", "run_in_child"]

_HEADER = struct.Struct(">Q")
_STARTUP_GRACE_S = 120.0  # for the child to start Python and import torch, on top of --timeout


class Cancelled(ResvizError):
    """The user cancelled the load (the app's Cancel): not a problem with the model."""


class CancelToken:
    """Cancel a child run from another thread (the app's Cancel button); kills the child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:  # held while killing: once _attach(None) returns, no kill is under way
            self.cancelled = True
            if self._proc is not None:
                _kill(self._proc)

    def _attach(self, proc: subprocess.Popen | None) -> None:
        with self._lock:
            self._proc = proc
            if self.cancelled and proc is not None:
                _kill(proc)


# --------------------------------------------------------------------------------------------
# Framing: 8-byte length + pickle, both ways


def write_frame(stream: io.RawIOBase | io.BufferedIOBase, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_exactly(stream, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


_DTYPE_NAMES = frozenset({"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                          "uint8", "bool", "complex64", "complex128"})  # fmt: skip


class _RecordsOnly(pickle.Unpickler):
    """Unpickles resviz's own records and builtins; refuses anything else (a user class)."""

    _BUILTINS = {"set", "frozenset", "complex", "slice", "range", "bytearray"}

    def find_class(self, module: str, name: str) -> Any:
        if (module.startswith("resviz.core.") and not name.startswith("_")) or (
            module == "builtins" and name in self._BUILTINS
        ):
            return super().find_class(module, name)
        if module == "torch" and name in _DTYPE_NAMES:  # an input's dtype (torch.int64)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the child's answer holds {module}.{name}, which is not a resviz record")


def loads_records(data: bytes) -> object:
    return _RecordsOnly(io.BytesIO(data)).load()


# --------------------------------------------------------------------------------------------
# The parent side


def _child_command() -> tuple[list[str], dict[str, str]]:
    """``python -m resviz.core.session.isolated_child`` with this resviz first on its path."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return [sys.executable, "-m", "resviz.core.session.isolated_child"], env


def _spawn(spare: bool = False) -> subprocess.Popen:
    cmd, env = _child_command()
    if spare:
        cmd.append("--warm-up")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            start_new_session=True)  # fmt: skip
    proc.resviz_cwd = os.getcwd()  # type: ignore[attr-defined]
    return proc


class SpareChild:
    """One child started ahead of the next request, for the app: between two reloads of a file the
    user edits, it has Python and torch imported already. Never for one-off checks.

    Owned by whoever keeps it (the app's document) and closed by it. Nothing process-wide: a spare
    whose parent exits without closing it reads the end of its stdin and exits by itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._closed = False

    def take(self) -> subprocess.Popen | None:
        """The spare, if it is alive and was started in this working directory; else None."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None and proc.resviz_cwd == os.getcwd():
            return proc
        if proc is not None:
            _end(proc)
        return None

    def refill(self) -> None:
        """Start a child now for the next request (it imports torch while nothing waits for it)."""
        with self._lock:
            if not self._closed and (self._proc is None or self._proc.poll() is not None):
                self._proc = _spawn(spare=True)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the spare has said it is ready (torch imported); for benchmarks and tests."""
        import select

        with self._lock:
            proc = self._proc
        return proc is not None and bool(select.select([proc.stdout], [], [], timeout)[0])

    def close(self) -> None:
        """End the spare; no other is started after this."""
        with self._lock:
            proc, self._proc, self._closed = self._proc, None, True
        if proc is not None:
            _end(proc)


def _end(proc: subprocess.Popen) -> None:
    _kill(proc)
    _wait(proc)
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child and whatever the user's code started in its session (its own processes)."""
    if proc.poll() is None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session and group
            else:
                proc.kill()
        except OSError:
            pass


def _reader(stream, out: queue.Queue) -> None:
    """Frames from the child, then ``("eof", None)``; runs on a daemon thread."""
    try:
        while True:
            header = read_exactly(stream, _HEADER.size)
            if header is None:
                break
            data = read_exactly(stream, _HEADER.unpack(header)[0])
            if data is None:
                break
            try:
                out.put(loads_records(data))
            except Exception as exc:  # noqa: BLE001 - a bad answer is an error, not a crash
                out.put(("error", {"message": f"resviz could not read the child's answer: {exc}",
                                   "user": False}))
    finally:
        out.put(("eof", None))


def run_in_child(request: dict, *, file: str, timeout: float | None = None,
                 cancel: CancelToken | None = None, prepare: Callable[[], None] | None = None,
                 on_stage: Callable[[str], None] | None = None, spare: SpareChild | None = None) -> object:
    """Send ``request`` to a fresh child and return its answer.

    ``file`` is the user's file as given, for messages; ``prepare`` runs here while the child
    works; ``on_stage`` hears what the child is doing ("importing model.py"), on this thread;
    ``spare`` (the app's) gives a child started ahead, and starts the next one once this request
    is done.
    Raises :class:`LoadError` when the child fails, dies, or runs past ``timeout`` seconds;
    :class:`Cancelled` when ``cancel`` fired.
    """
    reader: threading.Thread | None = None
    proc = (spare.take() if spare is not None else None) or _spawn()
    if cancel is not None:
        cancel._attach(proc)
    waiting = _Waiting(file, timeout)
    try:
        write_frame(proc.stdin, request)  # stdin stays open: the child exits when it closes
        answers: queue.Queue = queue.Queue()
        with deferred():  # Ctrl-C waits for the end of prepare's imports (see interrupts.py)
            reader = threading.Thread(target=_reader, args=(proc.stdout, answers), daemon=True,
                                      name="resviz-child-reader")  # fmt: skip
            reader.start()
            if prepare is not None:
                prepare()
        waiting.start_grace()
        answer = _await_answer(answers, waiting, on_stage)
        if answer is _ENDED:
            raise _ended_error(file, waiting.stage, cancel, lambda: _wait(proc))
        return answer
    except OSError as exc:  # BrokenPipeError: it died before reading the request
        raise _ended_error(file, waiting.stage, cancel, lambda: _wait(proc), str(exc)) from None
    finally:
        if cancel is not None:
            cancel._attach(None)
        _kill(proc)  # also takes any non-daemon thread of the user's module with it
        _wait(proc)
        if reader is not None:
            reader.join(5)  # the pipe is at its end now that the child is gone
        _end(proc)
        if spare is not None:
            spare.refill()


class _Waiting:
    """What the parent knows while it waits for the child: the stage the child reported last and
    when it must be done.

    The clock (``timeout``) starts when the child is ready to run the user's code (its first
    stage): starting Python and importing torch are not the user's code's fault, and get
    :data:`_STARTUP_GRACE_S` on top."""

    def __init__(self, file: str, timeout: float | None):
        self.file = file
        self.timeout = timeout
        self.stage = f"starting Python for {file}"
        self.deadline: float | None = None
        self.started = False

    def start_grace(self) -> None:
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout + _STARTUP_GRACE_S

    def enter(self, stage: str) -> None:
        """The child reports a new stage; the first one starts the clock."""
        self.stage = stage
        if not self.started and self.timeout is not None:
            self.started, self.deadline = True, time.monotonic() + self.timeout

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def timed_out(self) -> LoadError:
        return LoadError(
            f"{self.file} did not finish within {self.timeout:g} s (resviz was {self.stage}), so resviz "
            "stopped it. Does its code loop forever or wait for something at import, in "
            "__init__ or in forward? If it is only slow, give more time with --timeout."
        )


_ENDED = object()  # the child's output ended without an answer
_POLL_S = 0.25  # how often a wait for the child looks for a Ctrl-C that never arrived as one


def _await_answer(answers: queue.Queue, waiting: _Waiting,
                  on_stage: Callable[[str], None] | None) -> object:
    """The child's answer, read off ``answers`` as it reports its stages; :data:`_ENDED` when its
    output ends first. Raises its error, or :meth:`_Waiting.timed_out` past the deadline."""
    while True:
        left = waiting.seconds_left()
        try:
            kind, payload = answers.get(timeout=_POLL_S if left is None else min(left, _POLL_S))
        except queue.Empty:
            raise_pending()  # a Ctrl-C that code we do not own swallowed (see interrupts.py)
            if waiting.seconds_left() == 0.0:
                raise waiting.timed_out() from None
            continue
        if kind == "ready":  # imports done; the user's code comes next
            continue
        if kind == "stage":
            waiting.stage = payload
            if on_stage is not None:
                on_stage(payload)
            waiting.enter(payload)
        elif kind == "ok":
            return payload
        elif kind == "error":
            raise _child_error(payload, waiting.file)
        else:  # eof
            return _ENDED


def _child_error(payload: dict, file: str) -> ResvizError:
    """The child's error as raised here: a :class:`LoadError` when it is about the user's file,
    else an internal error (with the child's traceback under ``RESVIZ_DEBUG``)."""
    if payload.get("user", True):
        return LoadError(payload["message"])
    return ResvizError(f"internal error while checking {file}: {payload['message']}"
                       + (f"\n{payload['details']}" if os.environ.get("RESVIZ_DEBUG") else ""))


def _ended_error(file: str, stage: str, cancel: CancelToken | None, exit_code: Callable[[], int],
                 detail: str = "") -> ResvizError:
    """Why the child ended without an answer: the user cancelled, or its code ended the process
    (with ``exit_code()``, waited for only then)."""
    if cancel is not None and cancel.cancelled:
        return Cancelled(_cancelled_message(file, stage))
    return LoadError(_death_message(file, stage, exit_code(), detail))


def _wait(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return proc.wait()


def _cancelled_message(file: str, stage: str) -> str:
    return f"cancelled: resviz stopped running {file} (it was {stage})."


def _death_message(file: str, stage: str, code: int, detail: str = "") -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}" + (" (a crash in native code)" if name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT") else "")
    else:
        how = f"ended the process with status {code}"
    return (
        f"{file} {how} while resviz was {stage}: its code ends the Python process running it "
        "(os._exit(), a crash in an extension, running out of memory), so it cannot be checked. "
        "resviz runs a Python file's code in a separate process, so nothing else was affected."
        + (f" ({detail})" if detail else "")
    )


# --------------------------------------------------------------------------------------------
# What the rest of resviz calls

def open_python(source: str, *, input_shape=None, kwargs: dict | None = None, timeout: float | None = None,
                cancel: CancelToken | None = None, on_stage: Callable[[str], None] | None = None,
                spare: SpareChild | None = None):  # fmt: skip
    """:func:`resviz.core.session.opened_model.open_model` for a Python file, run in a child process.

    Returns a Session whose report holds :class:`PlainModule` records and whose ``loaded`` has no
    module (``loaded.isolated``); ``loaded.rebuild`` builds the model in this process, for
    training only.
    """
    from pathlib import Path

    file, name = split_python_source(source)
    kwargs = dict(kwargs or {})
    from ..files import check_readable_file

    check_readable_file(os.path.expanduser(file), file)  # a FIFO would block the read for good
    if not os.path.isfile(os.path.expanduser(file)):  # nothing to run: say so without a child
        from ..sources import pyfile

        pyfile.build_python(file, name, kwargs=kwargs)  # raises the missing-file message
    if input_shape is not None and not isinstance(input_shape, str) and all(
        isinstance(d, int) for d in input_shape
    ):  # a shape; else typed inputs ("ids:1x16:int64", ...) or Input specs, both picklable
        input_shape = tuple(int(d) for d in input_shape)
    answer = run_in_child({"op": "open", "source": source, "input_shape": input_shape, "kwargs": kwargs},
                          file=file, timeout=timeout, cancel=cancel, prepare=_import_records,
                          on_stage=on_stage, spare=spare)  # fmt: skip
    target = answer["target"]

    from ..sources import pyfile
    from ..sources.loading import LoadedModel
    from .opened_model import Session

    def rebuild(device: str):  # in this process: only training needs the live model
        return pyfile.build_python(file, target, kwargs=kwargs, device=device).module

    loaded = LoadedModel(
        module=None, exported=None, name=answer["name"], source=source, kind="python",
        path=Path(answer["path"]), input_shape=None, rebuild=rebuild, plain_twin=None, kwargs=kwargs,
        notes=list(answer["loaded_notes"]), isolated=True,
    )  # fmt: skip
    return Session(loaded, tuple(answer["input_shape"]), answer["report"], list(answer["notes"]),
                   list(answer.get("inputs", [])))  # fmt: skip


def _import_records() -> None:
    """What unpickling the answer needs (torch, via the report's module): imported here while the
    child starts and works, rather than after."""
    from . import opened_model as session  # noqa: F401


def python_candidates(path: str, *, kwargs: dict | None = None, timeout: float | None = None,
                      cancel: CancelToken | None = None, spare: SpareChild | None = None) -> list:  # fmt: skip
    """:func:`resviz.core.sources.pyfile.python_candidates`, with the file imported in a child process."""
    return run_in_child({"op": "candidates", "path": str(path), "kwargs": dict(kwargs or {})},
                        file=str(path), timeout=timeout, cancel=cancel, spare=spare)  # fmt: skip
