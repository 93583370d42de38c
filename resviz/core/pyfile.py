"""Importing a user's Python file and building the model it defines.

``resviz check model.py`` and ``resviz check model.py:ResNet`` land here. The file is imported as
a fresh module every time (so a reload after an edit sees the edit, in sibling files too), with its
directory on ``sys.path`` only while resviz is importing or building, without ever writing into
the user's directory (no ``__pycache__``), and with ``__name__`` set to something other than
``"__main__"`` so that script code under ``if __name__ == "__main__":`` does not run.

Whatever goes wrong in the user's code becomes a :class:`~resviz.core.errors.LoadError` whose
message is a short paragraph pointing at the user's file and line, never a traceback.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import importlib
import importlib.machinery
import inspect
import keyword
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import LoadError

__all__ = [
    "Candidate",
    "PyBuild",
    "build_python",
    "python_candidates",
    "split_python_source",
]

# Imports and builds touch process-wide state (sys.path, sys.modules, sys.argv, the default
# device); the GUI may load from a worker thread while a reload is in flight.
_LOCK = threading.RLock()

_PY_SOURCE = re.compile(r"^(?P<path>.+\.py)(?::(?P<name>[^:/\\]*))?$")
_PY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

_MAX_MESSAGE_LINES = 12


@dataclass(frozen=True)
class Candidate:
    """Something in a Python file that could build the model."""

    name: str
    kind: str  # 'class' | 'function'
    signature: str  # the parameter list as written, e.g. "(block, num_blocks, num_classes=10)"
    builds_without_args: bool  # every parameter has a default or is given in --kwargs
    line: int


@dataclass
class PyBuild:
    """What :func:`build_python` hands back to :mod:`resviz.core.loading`."""

    module: nn.Module
    target: str  # the name of the class or function used (or the module-level instance)
    path: Path  # resolved path of the user's file
    rebuild: Callable[[str], nn.Module]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The MODEL argument


def split_python_source(source: str) -> tuple[str, str | None] | None:
    """``"nets/model.py:ResNet"`` → ``("nets/model.py", "ResNet")``; ``"model.py"`` → ``("model.py", None)``.

    Returns ``None`` when ``source`` does not name a Python file.
    """
    m = _PY_SOURCE.match(source)
    if not m:
        return None
    return m.group("path"), m.group("name") or None


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


# --------------------------------------------------------------------------------------------
# Importing


@contextlib.contextmanager
def _user_code(user: _UserFile) -> Iterator[None]:
    """Run user code with its directory importable, no bytecode written and argv looking plain."""
    with _LOCK:
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
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LoadError(
            f"{user.given} line {line} is not valid UTF-8 text (byte {raw[exc.start]:#04x}): "
            "is this really a Python file?"
        ) from None
    try:
        tree = ast.parse(text, filename=str(user.real))
        code = compile(tree, str(user.real), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise LoadError(_syntax_error_message(exc, user, text)) from None
    except ValueError as exc:  # e.g. source code string cannot contain null bytes
        raise LoadError(f"{user.given} cannot be compiled: {exc}.") from None

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
        except SystemExit as exc:
            raise LoadError(_system_exit_message(exc, user)) from None
        except Exception as exc:
            raise LoadError(_explain(exc, user, doing=f"while importing the package {parent}")) from None
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
    try:
        exec(code, module.__dict__)
    except SystemExit as exc:
        sys.modules.pop(name, None)
        raise LoadError(_system_exit_message(exc, user)) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LoadError(_explain(exc, user, doing=f"while importing {user.given}")) from None
    return module, tree, text


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


# --------------------------------------------------------------------------------------------
# Candidates


def _top_level_defs(tree: ast.Module) -> list[ast.ClassDef | ast.FunctionDef]:
    """Classes and functions defined at module level, including under ``if``/``try`` blocks."""
    found: list[ast.ClassDef | ast.FunctionDef] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                found.append(node)
            elif isinstance(node, ast.If):
                if _is_main_guard(node):
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def _is_main_guard(node: ast.If) -> bool:
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _returns_value(node: ast.FunctionDef) -> bool:
    """Whether a function body has ``return <something>`` (outside nested functions) and no yield."""
    stack: list[ast.AST] = list(node.body)
    returns = False
    while stack:
        item = stack.pop()
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(item, (ast.Yield, ast.YieldFrom)):
            return False
        if isinstance(item, ast.Return) and item.value is not None:
            if not (isinstance(item.value, ast.Constant) and item.value.value is None):
                returns = True
        stack.extend(ast.iter_child_nodes(item))
    return returns


def _annotation_excludes(func: Callable, module: types.ModuleType) -> bool:
    """True when a function's return annotation names a class that is clearly not an nn.Module."""
    ann = getattr(func, "__annotations__", {}).get("return", inspect.Signature.empty)
    if ann is inspect.Signature.empty:
        return False
    if isinstance(ann, str):
        try:
            ann = eval(ann, dict(vars(module)))  # noqa: S307 - the user's own file, already executed
        except Exception:
            return False
    if ann is None:
        return True
    return isinstance(ann, type) and not issubclass(ann, nn.Module)


def _signature(obj: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _missing_and_unexpected(sig: inspect.Signature | None, kwargs: dict) -> tuple[list[str], list[str]]:
    """Parameters still needed after ``kwargs``, and ``kwargs`` keys the callable does not accept."""
    if sig is None:
        return [], []
    params = sig.parameters.values()
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and (
            p.kind is inspect.Parameter.POSITIONAL_ONLY
            or (p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and p.name not in kwargs)
        )
    ]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        unexpected: list[str] = []
    else:
        accepted = {
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        unexpected = [k for k in kwargs if k not in accepted]
    return missing, unexpected


@dataclass
class _Found:
    candidate: Candidate
    obj: object
    node: ast.ClassDef | ast.FunctionDef


def _find_candidates(module: types.ModuleType, tree: ast.Module, kwargs: dict) -> list[_Found]:
    found: list[_Found] = []
    seen: set[str] = set()
    for node in _top_level_defs(tree):
        if node.name in seen:
            continue
        obj = module.__dict__.get(node.name)
        if obj is None:
            continue
        if isinstance(node, ast.ClassDef):
            if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
                continue
            if obj.__module__ != module.__name__:
                continue
            kind = "class"
        else:
            if node.name.startswith("_") or not inspect.isfunction(obj):
                continue
            if obj.__module__ != module.__name__:
                continue
            if not _returns_value(node) or _annotation_excludes(obj, module):
                continue
            kind = "function"
        seen.add(node.name)
        sig = _signature(obj)
        missing, unexpected = _missing_and_unexpected(sig, kwargs)
        cand = Candidate(
            name=node.name,
            kind=kind,
            signature=str(sig) if sig is not None else "(...)",
            builds_without_args=sig is not None and not missing and not unexpected,
            line=node.lineno,
        )
        found.append(_Found(cand, obj, node))
    found.sort(key=lambda f: f.candidate.line)
    return found


def _names_used(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.Name):
            names.add(item.id)
        elif isinstance(item, ast.Attribute):
            names.add(item.attr)
    return names


def _pick(found: list[_Found]) -> _Found | None:
    """The one candidate that builds without arguments, if there is exactly one.

    When several build without arguments, the ones used by another candidate (a block used by the
    network, a class its factory function calls) are set aside; if exactly one is left, it is the
    model.
    """
    ready = [f for f in found if f.candidate.builds_without_args]
    if len(ready) == 1:
        return ready[0]
    if len(ready) < 2:
        return None
    used: set[str] = set()
    for f in found:
        used |= _names_used(f.node) - {f.candidate.name}
    top = [f for f in ready if f.candidate.name not in used]
    return top[0] if len(top) == 1 else None


def python_candidates(path: str | os.PathLike[str], *, kwargs: dict | None = None) -> list[Candidate]:
    """The nn.Module subclasses and model-building functions defined in a Python file.

    The file is imported (fresh) to tell nn.Module subclasses apart; functions count when they are
    public and return a value. ``builds_without_args`` takes ``kwargs`` (the ``--kwargs`` JSON)
    into account. Raises :class:`LoadError` when the file cannot be imported.
    """
    user = _UserFile(path)
    with _user_code(user):
        module, tree, _ = _import_user_file(user)
        return [f.candidate for f in _find_candidates(module, tree, dict(kwargs or {}))]


def _format_candidates(found: list[_Found]) -> str:
    rows = [(f"{f.candidate.name}{f.candidate.signature}", f"line {f.candidate.line}, {f.candidate.kind}")
            for f in found]
    width = min(max(len(r[0]) for r in rows), 70)
    return "\n".join(f"    {sig:<{width}}  {where}" for sig, where in rows)


def _kwargs_example(names: list[str], classes: list[str] = ()) -> str:
    """``--kwargs '{"block": "BasicBlock", "num_blocks": ...}'``: block classes named when known."""
    blocks = [c for c in classes if "block" in c.lower() or "bottleneck" in c.lower()] or list(classes)
    values = {n: f'"{blocks[0]}"' for n in names if blocks and "block" in n.lower() and not n.startswith("num")}
    body = ", ".join(f'"{n}": {values.get(n, "...")}' for n in names)
    return "--kwargs '{" + body + "}'"


def _choose_message(user: _UserFile, found: list[_Found], module: types.ModuleType, kwargs: dict) -> str:
    if not found:
        imported = sorted(
            name
            for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ != module.__name__
            and not obj.__module__.startswith("torch.")
        )
        msg = (
            f"{user.given} defines no nn.Module subclass and no function that returns a model, so "
            "there is nothing to build."
        )
        if imported:
            examples = ", ".join(f"`{user.ref(n)}`" for n in imported[:3])
            msg += (
                " Classes imported into it are not picked automatically; name one after a colon, "
                f"e.g. {examples}."
            )
        return msg
    ready = [f for f in found if f.candidate.builds_without_args]
    others = [f for f in found if not f.candidate.builds_without_args]
    parts: list[str] = []
    if ready:
        parts.append(
            f"{user.given} defines several models that build without arguments, so resviz cannot "
            "tell which one you mean:\n" + _format_candidates(ready)
        )
        if others:
            parts.append("and these need arguments:\n" + _format_candidates(others))
    else:
        given = " with the given --kwargs" if kwargs else ""
        parts.append(
            f"none of the models defined in {user.given} builds without arguments{given}:\n"
            + _format_candidates(others)
        )
    examples: list[str] = []
    if ready:
        examples.append(f"`resviz check {user.ref(ready[0].candidate.name)}`")
    if others:
        used: set[str] = set()  # names used inside classes: blocks, as opposed to whole nets
        for f in found:
            if f.candidate.kind == "class":
                used |= _names_used(f.node) - {f.candidate.name}
        # the outermost model: not used by another class, and defined last (after its blocks)
        f = sorted(others, key=lambda f: (f.candidate.name in used, -f.candidate.line))[0]
        missing, _ = _missing_and_unexpected(_signature(f.obj), kwargs)
        classes = [c.candidate.name for c in found if c.candidate.kind == "class" and c is not f]
        examples.append(f"`resviz check {user.ref(f.candidate.name)} {_kwargs_example(missing, classes)}`")
    parts.append("Name the one to build after a colon, e.g. " + " or ".join(examples) + ".")
    return "\n".join(parts)


def _resolve(module: types.ModuleType, tree: ast.Module, user: _UserFile, name: str | None,
             kwargs: dict) -> tuple[str, object]:
    if name is None:
        found = _find_candidates(module, tree, kwargs)
        chosen = _pick(found)
        if chosen is None:
            raise LoadError(_choose_message(user, found, module, kwargs))
        return chosen.candidate.name, chosen.obj
    obj: object = module
    for part in name.split("."):
        if not hasattr(obj, part):
            found = _find_candidates(module, tree, kwargs)
            names = [f.candidate.name for f in found]
            close = difflib.get_close_matches(part, names or list(vars(module)), n=1)
            msg = f"{user.given} has no '{name}'"
            if close:
                msg += f" (did you mean '{close[0]}'?)"
            msg += "."
            if found:
                msg += " It defines:\n" + _format_candidates(found)
            raise LoadError(msg)
        obj = getattr(obj, part)
    return name, obj


# --------------------------------------------------------------------------------------------
# Building


def _call(factory: Callable[..., object], kwargs: dict, device: str) -> object:
    with torch.device(device):
        return factory(**kwargs)


def _build_once(user: _UserFile, target: str, obj: object, kwargs: dict, device: str,
                notes: list[str]) -> nn.Module:
    """Build (or copy) the model on ``device``; falls back to the CPU when the meta device fails."""
    if isinstance(obj, nn.Module):  # `model.py:model` names an instance made at import time
        import copy

        return copy.deepcopy(obj).to(device) if device != "cpu" else copy.deepcopy(obj)
    factory: Callable[..., object] = obj  # type: ignore[assignment]
    try:
        result = _call(factory, kwargs, device)
    except SystemExit as exc:
        raise LoadError(_system_exit_message(exc, user)) from None
    except Exception as first:
        if device == "cpu":
            raise LoadError(_explain(first, user, doing=f"while building {user.ref(target)}")) from None
        try:
            result = _call(factory, kwargs, "cpu")
        except SystemExit as exc:
            raise LoadError(_system_exit_message(exc, user)) from None
        except Exception as exc:
            raise LoadError(_explain(exc, user, doing=f"while building {user.ref(target)}")) from None
        notes.append(
            f"{user.ref(target)} could not be built on the {device} device "
            f"({type(first).__name__}: {_first_line(str(first))}), so it was built on the CPU"
        )
        if device != "meta" and isinstance(result, nn.Module):
            try:
                result = result.to(device)
            except Exception as exc:
                raise LoadError(
                    f"{user.ref(target)} was built on the CPU but cannot be moved to {device}: "
                    f"{type(exc).__name__}: {_first_line(str(exc))}"
                ) from None
    if not isinstance(result, nn.Module):
        kind = "function" if inspect.isfunction(obj) else "callable"
        raise LoadError(
            f"{user.ref(target)} is a {kind} that returned {_describe_value(result)}, not an "
            "nn.Module: it must return the model (e.g. `return ResNet(...)`)."
        )
    return result


def _describe_value(value: object) -> str:
    if value is None:
        return "None (is a `return` missing?)"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)) and any(isinstance(v, nn.Module) for v in value):
        return f"a {type(value).__name__} holding a model (return only the model)"
    kind = f"{type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _check_callable(user: _UserFile, target: str, obj: object, kwargs: dict, line: int | None,
                    classes: list[str]) -> None:
    """Say in words when ``obj`` cannot be called with ``kwargs`` (missing or unknown arguments)."""
    if isinstance(obj, nn.Module):
        if kwargs:
            raise LoadError(
                f"{user.ref(target)} is a model instance created when the file is imported, so "
                "--kwargs cannot be applied to it; name its class or a function instead."
            )
        return
    if isinstance(obj, type) and not issubclass(obj, nn.Module):
        raise LoadError(
            f"{user.ref(target)} is a class that is not an nn.Module subclass; name a model class "
            "or a function that returns a model."
        )
    if not callable(obj):
        raise LoadError(
            f"{user.ref(target)} is {_describe_value(obj)}, not an nn.Module class or a function "
            "that returns one."
        )
    sig = _signature(obj)
    missing, unexpected = _missing_and_unexpected(sig, kwargs)
    where = f" ({user.given} line {line})" if line else ""
    shown = f"{target}{sig}" if sig is not None else target
    if unexpected:
        accepted = [
            p.name
            for p in (sig.parameters.values() if sig else [])
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        raise LoadError(
            f"{user.ref(target)} does not accept the argument{'s' if len(unexpected) > 1 else ''} "
            f"{', '.join(unexpected)} given in --kwargs; it takes {shown}{where}"
            + (f" (accepted names: {', '.join(accepted)})." if accepted else ".")
        )
    if missing:
        others = [c for c in classes if c != target]
        raise LoadError(_missing_args_message(user, target, shown + where, missing, others))


def _missing_args_message(user: _UserFile, target: str, shown: str, missing: list[str],
                          classes: list[str]) -> str:
    plural = "s" if len(missing) > 1 else ""
    msg = (
        f"{user.ref(target)} needs {len(missing)} argument{plural} that {'were' if plural else 'was'} "
        f"not given: {', '.join(missing)}. Its signature is {shown}.\n"
        f"Pass {'them' if plural else 'it'} as JSON with --kwargs, e.g.\n"
        f"    resviz check {user.ref(target)} {_kwargs_example(missing, classes)}\n"
        f"A class or function of {user.name} can be given by its name as a string; for anything "
        f"else JSON cannot express, add a function to {user.name} that returns the model "
        f"(`def resnet18(): return {target}(...)`) and check `{user.ref('resnet18')}`."
    )
    return msg


def _resolve_kwarg_names(user: _UserFile, module: types.ModuleType, kwargs: dict,
                         notes: list[str]) -> dict:
    """``{"block": "BasicBlock"}`` → the class BasicBlock of the user's module.

    JSON cannot hold a class, so a string that names a class or function the user's module defines
    or imports stands for that object. Each substitution is noted.
    """
    out = dict(kwargs)
    for key, value in kwargs.items():
        if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
            continue
        obj = vars(module).get(value)
        if isinstance(obj, type) or inspect.isfunction(obj):
            out[key] = obj
            notes.append(f'--kwargs: "{key}": "{value}" was taken as the {"class" if isinstance(obj, type) else "function"} {value} of {user.name}')
    return out


def build_python(source_path: str, name: str | None, *, kwargs: dict | None = None,
                 device: str = "meta") -> PyBuild:
    """Import ``source_path`` fresh and build ``name`` (or the one obvious candidate) on ``device``."""
    kwargs = dict(kwargs or {})
    user = _UserFile(source_path)
    notes: list[str] = []
    if name is not None and not _PY_NAME.match(name):
        raise LoadError(
            f"'{name}' after {user.given}: is not a Python name: after the colon give the class or "
            f"function that builds the model, e.g. `{user.ref('ResNet')}`."
        )
    with _user_code(user):
        module, tree, _ = _import_user_file(user)
        target, obj = _resolve(module, tree, user, name, kwargs)
        found = _find_candidates(module, tree, kwargs)
        lines = {node.name: node.lineno for node in _top_level_defs(tree)}
        classes = [f.candidate.name for f in found if f.candidate.kind == "class"]
        _check_callable(user, target, obj, kwargs, lines.get(target), classes)
        call_kwargs = _resolve_kwarg_names(user, module, kwargs, notes)
        model = _build_once(user, target, obj, call_kwargs, device, notes)

    def rebuild(dev: str) -> nn.Module:
        with _user_code(user):
            return _build_once(user, target, obj, call_kwargs, dev, [])

    return PyBuild(module=model, target=target, path=user.real, rebuild=rebuild, notes=notes)


# --------------------------------------------------------------------------------------------
# Explaining errors in words


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _clip(text: str) -> str:
    lines = text.strip().splitlines()
    if len(lines) > _MAX_MESSAGE_LINES:
        lines = [*lines[:_MAX_MESSAGE_LINES], "    ..."]
    text = "\n".join(lines)
    return text if len(text) < 1500 else text[:1500] + " ..."


def _source_line(filename: str, lineno: int) -> str:
    try:
        with open(filename, encoding="utf-8-sig", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if i == lineno:
                    return line.rstrip("\n")
    except OSError:
        pass
    return ""


def _syntax_error_message(exc: SyntaxError, user: _UserFile, text: str | None = None) -> str:
    filename = exc.filename or str(user.real)
    where = user.display(filename)
    line = exc.lineno or 0
    col = exc.offset or 0
    kind = "indentation error" if isinstance(exc, IndentationError) else "syntax error"
    if isinstance(exc, TabError):
        kind = "tab error"
    position = f":{line}:{col}" if line and col else f":{line}" if line else ""
    msg = f"{where}{position}: {kind}: {exc.msg}"
    src = exc.text
    if src is None and line:
        src = _source_line(filename, line)
    if src:
        src = src.rstrip("\n")
        stripped = src.lstrip()
        indent = len(src) - len(stripped)
        msg += "\n    " + stripped
        if col > 0:
            end = exc.end_offset if getattr(exc, "end_offset", None) and (exc.end_lineno == exc.lineno) else None
            width = max(1, (end - col) if end and end > col else 1)
            caret_col = max(0, col - 1 - indent)
            msg += "\n    " + " " * caret_col + "^" * min(width, max(1, len(stripped) - caret_col))
    return msg


def _system_exit_message(exc: SystemExit, user: _UserFile) -> str:
    frame = _user_frame(exc, user)
    where = f"{user.display(frame[0])}:{frame[1]}" if frame else user.given
    return (
        f"{where} exits the program (SystemExit {exc.code!r}) while resviz imports or builds it. "
        "Code that runs as a script (argument parsing, training loops, sys.exit) belongs under "
        '`if __name__ == "__main__":`, which resviz does not run.'
    )


def _frames(exc: BaseException) -> list[tuple[types.FrameType, int]]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return out


def _user_frame(exc: BaseException, user: _UserFile) -> tuple[str, int, str, types.FrameType] | None:
    """The innermost frame in the user's file or directory: (filename, line, qualname, frame)."""
    for frame, lineno in reversed(_frames(exc)):
        filename = frame.f_code.co_filename
        if user.owns(filename):
            code = frame.f_code
            qualname = getattr(code, "co_qualname", code.co_name)
            return filename, lineno, qualname, frame
    return None


def _enclosing_class(qualname: str) -> str | None:
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    return parts[-2] if len(parts) >= 2 else None


# torch's wrappers that every call passes through under `with torch.device(...)`: never the culprit
_PASS_THROUGH = ("torch/utils/_device.py", "torch/overrides.py", "torch/_tensor.py")


def _raised_in(exc: BaseException, user: _UserFile) -> str:
    """' (raised in Conv2d.__init__, torch/nn/modules/conv.py)' when the error came from library code."""
    frames = [
        (f, n) for f, n in _frames(exc)
        if not f.f_code.co_filename.replace(os.sep, "/").endswith(_PASS_THROUGH)
    ]
    if not frames:
        return ""
    frame, _ = frames[-1]
    filename = frame.f_code.co_filename
    if user.owns(filename):
        return ""
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    short = filename.replace(os.sep, "/")
    for marker in ("site-packages/", "dist-packages/", "lib/python"):
        if marker in short:
            short = short.split(marker, 1)[1]
            break
    if os.path.realpath(filename).startswith(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))):
        return ""
    return f" (raised in {qualname}, {short})"


_SUPER_CALL = re.compile(r"super\(\s*([A-Za-z_][\w.]*)\s*,")
_UNINITIALISED = re.compile(
    r"'(\w+)' object has no attribute '(_parameters|_buffers|_modules|_non_persistent_buffers_set|"
    r"training|_forward_hooks|_forward_pre_hooks|_backward_hooks|_state_dict_hooks|"
    r"_load_state_dict_pre_hooks|_is_full_backward_hook)'"
)
_MISSING_ARGS = re.compile(r"(\S+)\(\) missing (\d+) required (?:positional|keyword-only) arguments?: (.*)")


def _explain(exc: BaseException, user: _UserFile, *, doing: str) -> str:
    """One short paragraph about ``exc`` that points at the user's own code."""
    if isinstance(exc, SyntaxError):  # raised while importing a sibling file
        return _syntax_error_message(exc, user)
    if isinstance(exc, LoadError):
        return str(exc)
    frame = _user_frame(exc, user)
    if frame is None:
        return _explain_without_frame(exc, user, doing)
    filename, lineno, qualname, frame_obj = frame
    where = f"{user.display(filename)}:{lineno}"
    scope = "at module level" if qualname == "<module>" else f"in {qualname}"
    code_line = _source_line(filename, lineno).strip()
    shown = f"\n    {code_line}" if code_line else ""
    message = str(exc)
    cls = _enclosing_class(qualname)

    # super(OtherBlock, self).__init__() inside the wrong class
    m = _SUPER_CALL.search(code_line)
    if m and (
        (isinstance(exc, TypeError) and "super(type, obj)" in message)
        or (isinstance(exc, NameError) and getattr(exc, "name", None) == m.group(1))
    ):
        named = m.group(1)
        inside = f"inside class {cls}" if cls else f"in {qualname}"
        if isinstance(exc, NameError):
            problem = f"names the class {named}, which does not exist in {user.display(filename)}"
        else:
            problem = f"names the class {named}, but it is {inside}"
        fix_class = f"super({cls}, self).__init__()" if cls else None
        return (
            f"{where} {scope}: `super({named}, self)` {problem}. super() must name the class it is "
            f"written in{f' ({cls})' if cls else ''}; this happens when a block is copied from another "
            f"one and renamed. Write `super().__init__()`"
            + (f" (or `{fix_class}`)" if fix_class else "")
            + f" instead.{shown}"
        )

    # Forgetting super().__init__()
    if isinstance(exc, AttributeError) and (
        "before Module.__init__() call" in message or _UNINITIALISED.search(message)
    ):
        owner = cls or "the class"
        return (
            f"{where} {scope}: nn.Module.__init__() has not run yet when this line uses the module "
            f"({message}). Add `super().__init__()` as the first line of {owner}.__init__.{shown}"
        )

    if isinstance(exc, ModuleNotFoundError) and _is_import(code_line):
        return _module_not_found_message(exc, user, filename, lineno, code_line)
    if isinstance(exc, ImportError) and "no known parent package" in message:
        base = os.path.basename(filename)
        return (
            f"{user.display(filename)} line {lineno} uses a relative import, which works only inside "
            f"a package: add an empty __init__.py next to {base}, or import without the leading "
            f"dot (e.g. `from blocks import ...`).{shown}"
        )
    if isinstance(exc, ImportError) and not isinstance(exc, ModuleNotFoundError) and _is_import(code_line):
        return (
            f"{user.display(filename)} line {lineno}: {_import_error_text(exc)}.{shown}"
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (
            f"{where} {scope} imports {exc.name}, which is not installed in this environment "
            f"(pip install {exc.name.split('.')[0]}).{shown}"
        )

    if isinstance(exc, NameError):
        name = getattr(exc, "name", None) or _name_from_message(message)
        hint = ""
        if name:
            pool = set(frame_obj.f_locals) | set(frame_obj.f_globals) | set(dir(builtins))
            close = difflib.get_close_matches(name, sorted(pool), n=1)
            if close:
                hint = f" (did you mean '{close[0]}'?)"
            what = f"the name '{name}' is not defined{hint}"
        else:
            what = message
        return f"{where} {scope}: {what} (NameError).{shown}"

    if isinstance(exc, RecursionError):
        counts: dict[tuple[str, int], int] = {}
        for f, n in _frames(exc):
            if user.owns(f.f_code.co_filename):
                key = (f.f_code.co_filename, n)
                counts[key] = counts.get(key, 0) + 1
        if counts:
            (rfile, rline), times = max(counts.items(), key=lambda kv: kv[1])
            if times > 10:
                rcode = _source_line(rfile, rline).strip()
                return (
                    f"{user.display(rfile)}:{rline}: endless recursion (RecursionError): this line "
                    f"runs again before it finishes, {times} times deep, so building never ends "
                    f"(does a class create an instance of itself?).\n    {rcode}"
                )

    if isinstance(exc, TypeError):
        mm = _MISSING_ARGS.search(message)
        if mm:
            return (
                f"{where} {scope}: {mm.group(1)}() is called without {mm.group(2)} required "
                f"argument{'s' if mm.group(2) != '1' else ''} ({mm.group(3)}).{shown}"
            )

    return (
        f"{where} {scope}: {type(exc).__name__}: {_clip(message)}{_raised_in(exc, user)}"
        f"{_reached_from(exc, user, filename, qualname)}{shown}"
    )


def _reached_from(exc: BaseException, user: _UserFile, filename: str, qualname: str) -> str:
    """'; reached while importing model.py, from line 47: test()' for import-time calls."""
    if qualname == "<module>" and os.path.realpath(filename) == str(user.real):
        return ""
    for frame, lineno in _frames(exc):
        code = frame.f_code
        if os.path.realpath(code.co_filename) == str(user.real) and code.co_name == "<module>":
            line = _source_line(code.co_filename, lineno).strip()
            return f"; reached while importing {user.name}, from line {lineno}" + (f": {line}" if line else "")
    return ""


def _explain_without_frame(exc: BaseException, user: _UserFile, doing: str) -> str:
    message = str(exc)
    mm = _MISSING_ARGS.search(message)
    if isinstance(exc, TypeError) and mm:
        names = re.findall(r"'(\w+)'", mm.group(3))
        return (
            f"{doing}: {mm.group(1)}() needs {mm.group(2)} argument{'s' if mm.group(2) != '1' else ''} "
            f"that {'were' if mm.group(2) != '1' else 'was'} not given: {', '.join(names)}. Pass them "
            f"with {_kwargs_example(names)}."
        )
    return f"{user.given}: {doing}: {type(exc).__name__}: {_clip(message)}{_raised_in(exc, user)}"


def _is_import(code_line: str) -> bool:
    return bool(re.match(r"(from\s+\S+\s+)?import\s", code_line))


def _name_from_message(message: str) -> str | None:
    m = re.search(r"name '(\w+)' is not defined", message)
    return m.group(1) if m else None


def _import_error_text(exc: ImportError) -> str:
    text = _first_line(str(exc))
    text = re.sub(r" \((/[^)]*|[A-Za-z]:\\[^)]*)\)$", "", text)  # drop the module's absolute path
    m = re.search(r"cannot import name '(\w+)' from '([\w.]+)'", text)
    if m:
        mod = sys.modules.get(m.group(2))
        if mod is not None:
            close = difflib.get_close_matches(m.group(1), [n for n in dir(mod) if not n.startswith("_")], n=1)
            if close:
                text += f" (did you mean '{close[0]}'?)"
    return text


def _module_not_found_message(exc: ModuleNotFoundError, user: _UserFile, filename: str, lineno: int,
                              code_line: str) -> str:
    missing = exc.name or _first_line(str(exc))
    top = missing.split(".")[0]
    where = f"{user.display(filename)} line {lineno}"
    directory = os.path.dirname(os.path.realpath(filename))
    if os.path.exists(os.path.join(directory, top + ".py")) or os.path.isdir(os.path.join(directory, top)):
        msg = (
            f"{where} imports {missing}, which was not found: {top} next to "
            f"{os.path.basename(filename)} has no module {missing.split('.', 1)[-1]}."
        )
    else:
        msg = f"{where} imports {missing}, which is not installed in this environment."
        if top == "torchvision":
            msg += (
                " resviz does not need torchvision: its zoo has torchvision's ResNets (try "
                "`resviz check resnet18`), or install torchvision (pip install torchvision)."
            )
        else:
            msg += (
                f" Install it (pip install {top}), or if it is a file of yours, put {top}.py next to "
                f"{os.path.basename(filename)}."
            )
    return f"{msg}\n    {code_line}"
