"""Building the model a user's Python file defines: ``resviz check model.py`` and
``resviz check model.py:ResNet`` land here.

This module finds the candidates (the nn.Module subclasses and model-building functions the file
defines), picks the one obvious model or says in words which to name, checks the ``--kwargs``
against its signature, and builds it on the requested device. The file itself is imported by
:mod:`~resviz.core.sources.pyfile_import` (fresh every time, leaving ``sys.path`` and the user's
directory as they were); whatever goes wrong in the user's code becomes a
:class:`~resviz.core.errors.LoadError` whose message :mod:`~resviz.core.sources.pyfile_errors` words as
a short paragraph pointing at the user's file and line, never a traceback.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import LoadError
from .pyfile_errors import _first_line, _kwargs_example, user_failure
from .pyfile_import import _import_user_file, _user_code, _UserFile, stage
from .python_source import split_python_source

__all__ = [
    "Candidate",
    "PyBuild",
    "build_python",
    "python_candidates",
    "split_python_source",
]

_PY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Candidate:
    """Something in a Python file that could build the model."""

    name: str
    kind: str  # 'class' | 'function'
    signature: str  # the parameter list as written, e.g. "(block, num_blocks, num_classes=10)"
    builds_without_args: bool  # every parameter has a default or is given in --kwargs
    line: int
    used_by: tuple[str, ...] = ()  # the other candidates whose code names this one: it is their part


def preferred_candidate(candidates: list[Candidate]) -> int | None:
    """Index of the candidate to offer first: the network, never one of its parts. The last one
    that builds without arguments and is no other candidate's part (``used_by``; the network tends
    to come after its blocks), else the last that builds without arguments; None if none does."""
    ready = [i for i, c in enumerate(candidates) if c.builds_without_args]
    whole = [i for i in ready if not candidates[i].used_by]
    return (whole or ready or [None])[-1]


@dataclass
class PyBuild:
    """What :func:`build_python` hands back to :mod:`resviz.core.sources.loading`."""

    module: nn.Module
    target: str  # the name of the class or function used (or the module-level instance)
    path: Path  # resolved path of the user's file
    rebuild: Callable[[str], nn.Module]
    notes: list[str] = field(default_factory=list)


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
        except Exception:  # noqa: BLE001 - an annotation's text can name anything and raise anything when evaluated; unknown means the function stays in the list of candidates the user sees
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
        obj = module.__dict__.get(node.name)
        kind = None if node.name in seen or obj is None else _candidate_kind(node, obj, module)
        if kind is None:
            continue
        seen.add(node.name)
        found.append(_Found(_candidate(node, obj, kind, kwargs), obj, node))
    found.sort(key=lambda f: f.candidate.line)
    return _with_users(found)


def _candidate_kind(node: ast.ClassDef | ast.FunctionDef, obj: object, module: types.ModuleType) -> str | None:
    """'class' for an nn.Module subclass defined in the file, 'function' for a public function
    defined there that returns something that may be a model; None for anything else."""
    if isinstance(node, ast.ClassDef):
        is_model = isinstance(obj, type) and issubclass(obj, nn.Module)
        return "class" if is_model and obj.__module__ == module.__name__ else None
    if node.name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != module.__name__:
        return None
    if not _returns_value(node) or _annotation_excludes(obj, module):
        return None
    return "function"


def _candidate(node: ast.ClassDef | ast.FunctionDef, obj: object, kind: str, kwargs: dict) -> Candidate:
    sig = _signature(obj)
    missing, unexpected = _missing_and_unexpected(sig, kwargs)
    return Candidate(
        name=node.name,
        kind=kind,
        signature=str(sig) if sig is not None else "(...)",
        builds_without_args=sig is not None and not missing and not unexpected,
        line=node.lineno,
    )


def _with_users(found: list[_Found]) -> list[_Found]:
    """Each candidate's ``used_by``: the other candidates whose code names it."""
    used = {id(f): _names_used(f.node) - {f.candidate.name} for f in found}
    for f in found:
        users = tuple(g.candidate.name for g in found if g is not f and f.candidate.name in used[id(g)])
        f.candidate = replace(f.candidate, used_by=users)
    return found


def _names_used(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.Name):
            names.add(item.id)
        elif isinstance(item, ast.Attribute):
            names.add(item.attr)
    return names


def _pick(found: list[_Found]) -> tuple[_Found | None, str]:
    """The one candidate that builds without arguments, if there is exactly one, and why; else
    ``(None, "")``, or ``(None, part)`` when the one candidate is a part of a bigger model.

    When several build without arguments, the ones used by another candidate (a block used by the
    network, a class its factory function calls) are set aside; if exactly one is left, it is the
    model. A candidate used by one that needs arguments is a part of a bigger model, never taken
    for the model: :func:`_part_message` says so.
    """
    ready = [f for f in found if f.candidate.builds_without_args]
    if len(ready) == 1:
        chosen, why = ready[0], "the only model in the file that builds without arguments"
    elif len(ready) < 2:
        return None, ""
    else:
        top = [f for f in ready if not f.candidate.used_by]
        if len(top) != 1:
            return None, ""
        chosen = top[0]
        parts = [f.candidate.name for f in ready if f is not chosen]
        why = (f"the one model that builds without arguments and is not a part of another "
               f"({', '.join(parts)} {'is' if len(parts) == 1 else 'are'} used by the others)")
    if _bigger_models(chosen, found):
        return None, chosen.candidate.name
    return chosen, why


def _bigger_models(part: _Found, found: list[_Found]) -> list[_Found]:
    """The candidates that need arguments and use ``part``: the models it is a part of."""
    return [f for f in found if not f.candidate.builds_without_args and f.candidate.name in part.candidate.used_by]


def _part_message(user: _UserFile, part: _Found, bigger: list[_Found], found: list[_Found],
                  kwargs: dict) -> str:
    """Refusing to check a block in place of the network that uses it (and needs arguments)."""
    name = part.candidate.name
    whole = sorted(bigger, key=lambda f: -f.candidate.line)[0]  # the outermost: defined last
    missing, _ = _missing_and_unexpected(_signature(whole.obj), kwargs)
    classes = [f.candidate.name for f in found if f.candidate.kind == "class" and f is not whole]
    users = ", ".join(f.candidate.name for f in bigger)
    given = " with the given --kwargs" if kwargs else ""
    return (
        f"{user.given}: the only model that builds without arguments{given} is {name}, and it is "
        f"used by {users}, which needs arguments: {name} looks like a part of the network, so "
        f"resviz does not check it in place of the whole. The file defines:\n"
        + _format_candidates(found)
        + f"\nName the one to check after a colon: "
        f"`resviz check {user.ref(whole.candidate.name)} {_kwargs_example(missing, classes)}` for "
        f"the network, or `resviz check {user.ref(name)}` for the {part.candidate.kind} on its own."
    )


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
             kwargs: dict, notes: list[str]) -> tuple[str, object]:
    if name is None:
        found = _find_candidates(module, tree, kwargs)
        chosen, why = _pick(found)
        if chosen is None:
            part = next((f for f in found if f.candidate.name == why), None)
            if part is not None:
                raise LoadError(_part_message(user, part, _bigger_models(part, found), found, kwargs))
            raise LoadError(_choose_message(user, found, module, kwargs))
        other = next((f for f in found if f is not chosen), None)
        if other is not None:
            notes.append(
                f"{user.given}: checked {chosen.candidate.name} (line {chosen.candidate.line}), "
                f"{why}; name another after a colon, e.g. `{user.ref(other.candidate.name)}`"
            )
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
    doing = f"building {user.ref(target)}"
    stage(doing)
    try:
        result = _call(factory, kwargs, device)
    except Exception as first:  # noqa: BLE001 - the user's code can raise anything; on the meta device it is retried on the CPU (with a note saying why), else reported by user_failure
        if device == "cpu":
            raise user_failure(first, user, doing) from None
        try:
            result = _call(factory, kwargs, "cpu")
        except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit, ...: user_failure reports it (and re-raises a real Ctrl-C)
            raise user_failure(exc, user, doing) from None
        notes.append(
            f"{user.ref(target)} could not be built on the {device} device "
            f"({type(first).__name__}: {_first_line(str(first))}), so it was built on the CPU"
        )
        if device != "meta" and isinstance(result, nn.Module):
            try:
                result = result.to(device)
            except Exception as exc:  # noqa: BLE001 - the user's module's .to() can raise anything; the LoadError says it was built but cannot be moved
                raise LoadError(
                    f"{user.ref(target)} was built on the CPU but cannot be moved to {device}: "
                    f"{type(exc).__name__}: {_first_line(str(exc))}"
                ) from None
    except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit, ...: user_failure reports it (and re-raises a real Ctrl-C)
        raise user_failure(exc, user, doing) from None
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
        target, obj = _resolve(module, tree, user, name, kwargs, notes)
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
