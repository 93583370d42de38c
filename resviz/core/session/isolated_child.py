"""The child process that runs a user's Python file for :mod:`resviz.core.session.isolation`.

``python -m resviz.core.session.isolated_child`` reads one request (8-byte length + pickle) on stdin,
answers on the stdout pipe it was given, and ends with ``os._exit`` (the parent kills it anyway
once the answer is read). Its own fd 1 and ``sys.stdout`` point at stderr, so the user's prints
never mix with the answer; it says what it is doing ("importing model.py") before each step, so
the parent can tell where the code hung or died. It exits when its stdin closes (the parent is
gone), even while the user's code loops.
"""

from __future__ import annotations

import inspect
import linecache
import os
import pickle
import re
import sys
import threading
import traceback

from ..tracing.plain_module import PlainModule, plain_module
from .isolation import read_exactly

_ATTRS_EXTRA = ("padding_mode",)


class _Answer:
    def __init__(self, fd: int):
        self._out = os.fdopen(fd, "wb")
        self._lock = threading.Lock()

    def send(self, kind: str, payload: object) -> None:
        self.send_pickled(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))

    def send_pickled(self, data: bytes) -> None:
        with self._lock:
            self._out.write(len(data).to_bytes(8, "big") + data)
            self._out.flush()


def _watch_parent(stdin) -> None:
    """The parent closes our stdin when it is done or gone: stop, whatever the user's code does."""
    try:
        stdin.read()
    finally:
        os._exit(3)


# --------------------------------------------------------------------------------------------
# Plain records: nothing of the user's module may reach the parent


_SOURCES: dict[type, str] = {}


def _class_source(cls: type) -> str:
    """``file.py:line`` of ``cls``'s ``class`` statement, for the Inspector.

    Found by scanning the file's lines for ``class Name``, not with ``inspect.getsourcelines``,
    which parses the whole file per class (200 ms for torch's activation.py).
    """
    if cls not in _SOURCES:
        try:
            path = inspect.getsourcefile(cls)
            pattern = re.compile(rf"^\s*class\s+{re.escape(cls.__name__)}\b")
            lines = linecache.getlines(path) if path else []
            line = next((i for i, text in enumerate(lines, 1) if pattern.match(text)), None)
            _SOURCES[cls] = f"{path}:{line}" if line else ""
        except Exception:  # noqa: BLE001 - builtins, C extensions, files gone: no source
            _SOURCES[cls] = ""
    return _SOURCES[cls]


def _plain_value(value: object, depth: int = 0) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value if type(value) in (bool, int, float, str, type(None)) else _builtin(value)
    if depth < 6 and isinstance(value, (tuple, list)):
        items = [_plain_value(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if depth < 6 and isinstance(value, dict):
        return {str(k): _plain_value(v, depth + 1) for k, v in value.items()}
    return repr(value)


def _builtin(value: object) -> object:
    """An int/float/str subclass (an IntEnum, a numpy scalar wrapper) as the plain builtin."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return repr(value)


def _plain_module(module: object, cache: dict[int, PlainModule]) -> PlainModule | None:
    if module is None:
        return None
    key = id(module)
    if key not in cache:
        from ..analysis.describe import _ATTRS

        attrs: dict = {}
        for name in (*_ATTRS, *_ATTRS_EXTRA):
            try:
                if hasattr(module, name):
                    attrs[name] = _plain_value(getattr(module, name))
            except Exception:  # noqa: BLE001 - a property of the user's that raises
                continue
        if hasattr(module, "bias"):
            attrs["bias"] = True if getattr(module, "bias", None) is not None else None
        cache[key] = plain_module(type(module).__name__, _class_source(type(module)), attrs)
    return cache[key]


def plain_report(report):
    """``report`` with its modules (the live model) swapped for a :class:`PlainModule` per module
    op and call path, attrs made plain: nothing of the user's module is left to pickle."""
    cache: dict[int, PlainModule] = {}
    report.modules = report.modules.plain(report.ops, report.calls, lambda m: _plain_module(m, cache))
    for op in report.ops:
        op.attrs = _plain_value(op.attrs)
    report.__dict__.pop("graph", None)  # a cached networkx graph: rebuilt on demand in the parent
    return report


# --------------------------------------------------------------------------------------------
# Requests


def _open(request: dict) -> dict:
    from ..sources import pyfile
    from ..sources.loading import load_model
    from ..sources.pyfile_errors import user_failure
    from ..sources.pyfile_import import _UserFile, stage
    from .opened_model import analyze_session, resolve_input

    source = request["source"]
    file, _ = pyfile.split_python_source(source)
    loaded = load_model(source, kwargs=request["kwargs"])
    shape, _ = resolve_input(loaded, request["input_shape"])
    doing = f"tracing {file}:{loaded.name.rpartition(':')[2]} at {'x'.join(map(str, shape))}"
    stage(doing)
    try:
        session = analyze_session(loaded, request["input_shape"])
    except Exception:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit, ... from the user's forward; user_failure turns it into a LoadError naming their line
        raise user_failure(exc, _UserFile(file), doing) from None
    return {
        "report": plain_report(session.report),
        "input_shape": tuple(session.input_shape),
        "inputs": list(session.inputs),
        "notes": list(session.notes),
        "loaded_notes": list(loaded.notes),
        "name": loaded.name,
        "target": loaded.name.rpartition(":")[2],
        "path": str(loaded.path),
    }


def _candidates(request: dict) -> list:
    from ..sources.pyfile import python_candidates

    return python_candidates(request["path"], kwargs=request["kwargs"])


_OPS = {"open": _open, "candidates": _candidates}


def _warm_up() -> None:
    """Trace a small zoo model once: torch's and resviz's first-call costs (lazy imports, meta
    kernels, dispatch caches) are then paid before the user's request comes."""
    from ..analysis.pipeline import analyze
    from ..sources.zoo import build

    try:
        analyze(build("resnet20"), (1, 3, 32, 32))
    except Exception as exc:  # noqa: BLE001 - a warm-up only: the spare child stays usable, and a zoo model that fails to trace is a resviz bug, said on stderr
        print(f"resviz: warming up the child process failed ({type(exc).__name__}: {exc}); "
              "this is a bug in resviz", file=sys.stderr)


def main() -> None:
    answer = _Answer(os.dup(1))
    os.dup2(2, 1)  # fd 1 (and so sys.stdout and print) now writes to stderr
    # what every request needs, imported before the request comes: a spare child started ahead
    # (the app's) has it ready; for a one-off check the request simply waits in the pipe
    from . import opened_model as session  # noqa: F401

    if "--warm-up" in sys.argv:  # a spare: nothing waits for it yet, so pay torch's first calls now
        _warm_up()
    answer.send("ready", None)
    stdin = sys.stdin.buffer
    header = read_exactly(stdin, 8)
    if header is None:
        os._exit(3)
    request = pickle.loads(read_exactly(stdin, int.from_bytes(header, "big")) or b"")  # from our parent
    threading.Thread(target=_watch_parent, args=(stdin,), daemon=True, name="resviz-watch-parent").start()

    from ..errors import ResvizError
    from ..sources import pyfile_errors, pyfile_import

    pyfile_errors.IN_CHILD = True
    pyfile_import._STAGE_LISTENERS.append(lambda text: answer.send("stage", text))
    try:
        result = _OPS[request["op"]](request)
        reply = pickle.dumps(("ok", result), protocol=pickle.HIGHEST_PROTOCOL)
    except ResvizError as exc:
        reply = pickle.dumps(("error", {"message": str(exc), "user": True}))
    except BaseException as exc:  # noqa: BLE001 - a bug in resviz, or user code outside a known step
        reply = pickle.dumps(("error", {"message": f"{type(exc).__name__}: {exc}", "user": False,
                                        "details": traceback.format_exc()}))  # fmt: skip
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the user may have replaced or closed them
            pass
    answer.send_pickled(reply)
    os._exit(0)


if __name__ == "__main__":
    main()
