"""Importing the user's Python file as a fresh module, and keeping the process clean around it.

Why so much care: the same process imports the file again and again (the GUI reloads on every
save, the user may open another project next), so each import must see the files as they are
now — modules from the user's directory are forgotten first, sibling files included — and must
leave nothing behind: the file's directory is on ``sys.path`` only while resviz imports or builds,
no ``__pycache__`` is written into the user's directory, ``sys.argv`` looks like a plain run, and
``__name__`` is not ``"__main__"`` so script code under ``if __name__ == "__main__":`` stays idle.
A file with relative imports is imported as part of its package.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import importlib
import importlib.machinery
import keyword
import os
import re
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..errors import LoadError
from .pyfile_errors import _syntax_error_message, user_failure

# Imports and builds touch process-wide state (sys.path, sys.modules, sys.argv, the default
# device); the GUI may load from a worker thread while a reload is in flight.
_LOCK = threading.RLock()


# Told what the user's code is about to do ("importing model.py", "building model.py:Net"), so
# that the process running it can say where it was if the code never returns or ends the process.
_STAGE_LISTENERS: list[Callable[[str], None]] = []


def stage(text: str) -> None:
    for listener in _STAGE_LISTENERS:
        listener(text)


class _UserFile:
    """The user's file and how to show it in messages."""

    def __init__(self, given: str | os.PathLike[str]):
        self.given = str(given)
        self.path = Path(os.path.abspath(os.path.expanduser(self.given)))
        self.real = Path(os.path.realpath(self.path))
        self.directory = self.real.parent
        self.name = self.path.name
        self.owned = self.directory  # files under here are the user's (a package root, if any)
        self.owned_given = self.path.parent  # the same, as typed (it may go through a symlink)
        self.package: str | None = None  # the dotted module name when imported inside a package
        self.added_paths: list[str] = []  # sys.path entries to remove when done

    def display(self, filename: str | None = None) -> str:
        """The user's file as they typed it; another file of theirs relative to the working dir."""
        if filename is None or os.path.realpath(filename) == str(self.real):
            return self.given
        return _display_path(filename)

    def owns(self, filename: str | None) -> bool:
        """Whether ``filename`` is the user's file or lies in its directory (or below)."""
        if not filename or filename.startswith("<"):
            return False
        real = os.path.realpath(filename)
        return real == str(self.real) or real.startswith(str(self.owned) + os.sep)

    def ref(self, name: str) -> str:
        return f"{self.given}:{name}"


def _display_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if rel.startswith("..") else rel


@contextlib.contextmanager
def _user_code(user: _UserFile) -> Iterator[None]:
    """Run user code with its directory importable, no bytecode written and argv looking plain."""
    with _LOCK, _ctrl_c_noted():
        saved_bytecode = sys.dont_write_bytecode
        saved_argv = sys.argv
        sys.dont_write_bytecode = True
        sys.argv = [str(user.path)]
        _add_path(user, str(user.directory))
        if user.package is not None:
            _add_path(user, str(user.owned.parent))
        try:
            yield
        finally:
            for entry in user.added_paths:
                with contextlib.suppress(ValueError):
                    sys.path.remove(entry)
            user.added_paths.clear()
            sys.argv = saved_argv
            sys.dont_write_bytecode = saved_bytecode


class _CtrlC:
    """Whether Ctrl-C (SIGINT) arrived while the user's code ran: a KeyboardInterrupt without it
    was raised by the code itself (see :func:`~resviz.core.sources.pyfile_errors.user_failure`)."""

    pressed = False
    watching = False  # our handler is installed: `pressed` can be trusted


def _note_ctrl_c(signum, frame) -> None:
    _CtrlC.pressed = True
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as Python's own does


@contextlib.contextmanager
def _ctrl_c_noted() -> Iterator[None]:
    """Note a real Ctrl-C while the user's code runs. Only in the main thread (the only one that
    receives signals) and only over Python's default handler; the previous one is back after."""
    previous = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):  # fmt: skip
        _CtrlC.pressed, _CtrlC.watching = False, True
        previous = signal.signal(signal.SIGINT, _note_ctrl_c)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            _CtrlC.watching = False


def ctrl_c_pressed() -> bool:
    """Whether a KeyboardInterrupt now in flight may be the user's Ctrl-C: never off the main
    thread; on it, only when Ctrl-C was noted (or when a handler of someone else's hid it)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return _CtrlC.pressed or not _CtrlC.watching


def _add_path(user: _UserFile, entry: str) -> None:
    sys.path.insert(0, entry)
    user.added_paths.append(entry)


def _package_for(user: _UserFile, tree: ast.Module) -> tuple[Path, str] | None:
    """``(top package dir, dotted name)`` when the file uses relative imports inside a package."""
    if not any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree)):
        return None
    parts = [user.real.stem]
    top = None
    d = user.directory
    while (d / "__init__.py").is_file() and d.name.isidentifier():
        parts.insert(0, d.name)
        top = d
        d = d.parent
    if top is None or not all(p.isidentifier() for p in parts):
        return None
    return top, ".".join(parts)


def _protected_dirs() -> list[str]:
    """Directories whose modules are never purged, whatever directory the user's file is in."""
    dirs = [os.path.dirname(os.path.dirname(os.path.realpath(__file__)))]  # the resviz package
    dirs.append(os.path.dirname(os.path.realpath(torch.__file__)))
    dirs.append(os.path.dirname(os.path.realpath(os.__file__)))  # the standard library
    return dirs


# Directories user files were loaded from in this process: their modules are forgotten before
# the next load, so that opening project B after project A never imports A's blocks.py.
_USER_DIRS: dict[str, str] = {}  # resolved directory + os.sep -> as given + os.sep


def _purge_user_modules(user: _UserFile) -> None:
    """Forget modules imported from the user's directory, so edits to sibling files are seen."""
    _USER_DIRS[str(user.owned) + os.sep] = str(user.owned_given) + os.sep
    prefixes = tuple(_USER_DIRS)
    quick = prefixes + tuple(_USER_DIRS.values())
    protected = [d + os.sep for d in _protected_dirs()]
    for name, mod in list(sys.modules.items()):
        filename = getattr(mod, "__file__", None)
        if not isinstance(filename, str) or name == "__main__" or name.split(".")[0] == "resviz":
            continue
        if os.path.isabs(filename) and not filename.startswith(quick):
            continue  # the common case, decided without touching the disk
        real = os.path.realpath(filename)
        if not real.startswith(prefixes) or any(real.startswith(p) for p in protected):
            continue
        parts = Path(real).parts
        if "site-packages" in parts or "dist-packages" in parts:
            continue
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def _module_name(user: _UserFile) -> str:
    """The name the user's file is imported under.

    Its own stem (``model`` for ``model.py``) when that name is free, so that classes get a
    sensible ``__module__``, sibling files can ``import model`` and pickling works when run from
    the project directory; a private name when the stem would shadow a real module (``torch.py``).
    """
    stem = user.path.stem
    private = "_resviz_user_" + re.sub(r"\W", "_", stem)
    if not stem.isidentifier() or keyword.iskeyword(stem) or stem.startswith("__"):
        return private
    if stem in sys.modules or stem in sys.builtin_module_names:
        return private
    if stem in getattr(sys, "stdlib_module_names", ()):
        return private
    directory = str(user.directory)
    others = [p for p in sys.path if p and os.path.realpath(p) != directory]
    try:
        spec = importlib.machinery.PathFinder.find_spec(stem, others)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        return private
    return stem


def _import_user_file(user: _UserFile) -> tuple[types.ModuleType, ast.Module, str]:
    """Import the user's file as a fresh module. Must be called inside :func:`_user_code`."""
    text = _read_source(user)
    tree, code = _compile_source(user, text)
    module = _fresh_module(user, tree)
    stage(f"importing {user.given}")
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - the user's code can raise anything (SystemExit, GeneratorExit, ...); user_failure turns it into a LoadError naming their line, and re-raises a real Ctrl-C
        sys.modules.pop(module.__name__, None)
        raise user_failure(exc, user, f"importing {user.given}") from None
    return module, tree, text


def _read_source(user: _UserFile) -> str:
    """The text of the user's file; a :class:`LoadError` in words when it cannot be read or is
    not UTF-8."""
    try:
        if user.path.is_dir():
            raise LoadError(f"{user.given} is a directory, not a Python file.")
        raw = user.path.read_bytes()
    except FileNotFoundError:
        raise LoadError(_missing_file_message(user)) from None
    except PermissionError:
        raise LoadError(f"cannot read {user.given}: permission denied.") from None
    except OSError as exc:
        raise LoadError(f"cannot read {user.given}: {exc.strerror or exc}.") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LoadError(
            f"{user.given} line {line} is not valid UTF-8 text (byte {raw[exc.start]:#04x}): "
            "is this really a Python file?"
        ) from None


def _compile_source(user: _UserFile, text: str) -> tuple[ast.Module, types.CodeType]:
    """The file's syntax tree and code object; a syntax error becomes a :class:`LoadError` that
    points at the line."""
    try:
        tree = ast.parse(text, filename=str(user.real))
        return tree, compile(tree, str(user.real), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise LoadError(_syntax_error_message(exc, user, text)) from None
    except ValueError as exc:  # e.g. source code string cannot contain null bytes
        raise LoadError(f"{user.given} cannot be compiled: {exc}.") from None


def _fresh_module(user: _UserFile, tree: ast.Module) -> types.ModuleType:
    """The empty module the file's code will run in, registered in ``sys.modules``: inside its
    package (whose ``__init__`` files are imported first) when it uses relative imports."""
    package = _package_for(user, tree)
    if package is not None:
        top, user.package = package
        levels = len(user.directory.parts) - len(top.parts)
        user.owned, user.owned_given = top, user.path.parents[levels]
        _add_path(user, str(top.parent))
    _purge_user_modules(user)
    if user.package is not None:
        name = user.package
        parent = name.rpartition(".")[0]
        try:
            importlib.import_module(parent)  # runs the packages' __init__.py files
        except BaseException as exc:  # noqa: BLE001 - the user's __init__.py can raise anything; user_failure turns it into a LoadError naming their line, and re-raises a real Ctrl-C
            raise user_failure(exc, user, f"importing the package {parent}") from None
    else:
        name = _module_name(user)
    module = types.ModuleType(name)
    module.__file__ = str(user.real)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, origin=str(user.real))
    if user.package is not None:
        module.__package__ = name.rpartition(".")[0]
    module.__spec__.has_location = True
    module.__builtins__ = builtins
    sys.modules[name] = module
    return module


def _missing_file_message(user: _UserFile) -> str:
    msg = f"no such file: {user.given}"
    parent = user.path.parent
    if parent.is_dir():
        siblings = [p.name for p in parent.iterdir() if p.suffix == ".py"]
        close = difflib.get_close_matches(user.name, siblings, n=1)
        if close:
            msg += f" (did you mean {os.path.join(os.path.dirname(user.given), close[0])}?)"
    else:
        msg += f" (there is no directory {_display_path(str(parent))})"
    return msg + "."
