"""Where models come from: the MODEL argument of every command and of File → Open.

``load_model(source)`` accepts

* a zoo name (``resnet18``, ``plain_resnet56``; see :mod:`resviz.core.sources.zoo`),
* a declarative spec file (``net.toml``, ``net.json``; see :mod:`resviz.core.sources.spec`),
* a Python file, ``model.py`` or ``model.py:Name`` (see :mod:`resviz.core.sources.pyfile`),
* an archive written by ``torch.jit.save``, ``torch.export.save`` or ``torch.save`` (see
  :mod:`resviz.core.sources.archives`), recognised by content rather than extension,

and returns a :class:`LoadedModel`. Every failure is a :class:`~resviz.core.errors.ResvizError`
(mostly :class:`~resviz.core.errors.LoadError`) whose message is a short paragraph in words.
The user's files are never modified and nothing is written next to them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import LoadError, ResvizError
from ..files import check_readable_file
from ..shapes import parse_shape
from . import archives, pyfile
from .archives import READS
from .loaded import LoadedModel
from .pyfile import Candidate, python_candidates

if TYPE_CHECKING:
    pass

__all__ = [
    "Candidate",
    "LoadedModel",
    "from_module",
    "load_model",
    "parse_kwargs",
    "python_candidates",
]

_SPEC_SUFFIXES = {".toml", ".json"}
_MAX_KWARGS_CHARS = 100_000
_MAX_CLASSES = 10_000_000  # as for a spec's classes
_FILE_SUFFIXES = {".py", ".toml", ".json", ".pt", ".pth", ".pt2", ".ts", ".zip", ".ckpt", ".bin",
                  ".pkl", ".pickle", ".tar", ".safetensors", ".onnx", ".h5", ".jit"}


# --------------------------------------------------------------------------------------------
# --kwargs


def parse_kwargs(text: str | None) -> dict:
    """Parse the ``--kwargs`` JSON object; ``None`` or blank gives ``{}``.

    Bad JSON or anything but an object raises :class:`ResvizError` showing where.
    """
    if text is None or not text.strip():
        return {}
    if len(text) > _MAX_KWARGS_CHARS:
        raise ResvizError(f"--kwargs is {len(text)} characters long, past the limit of "
                          f"{_MAX_KWARGS_CHARS}; constructor arguments are a short JSON object")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ResvizError(
            "--kwargs nests arrays or objects too deeply to read; constructor arguments are a "
            "short JSON object such as '{\"num_classes\": 10}'"
        ) from None
    except json.JSONDecodeError as exc:
        line_text = text.splitlines()[exc.lineno - 1] if text.splitlines() else text
        where = f"line {exc.lineno}, column {exc.colno}" if "\n" in text.strip() else f"column {exc.colno}"
        hint = ""
        if "'" in text and '"' not in text:
            hint = " (JSON needs double quotes around names and strings: '{\"num_classes\": 10}')"
        elif exc.msg.startswith("Expecting property name"):
            hint = " (names must be in double quotes: {\"num_classes\": 10})"
        raise ResvizError(
            f"--kwargs is not valid JSON: {exc.msg} at {where}{hint}\n"
            f"    {line_text}\n    {' ' * (exc.colno - 1)}^"
        ) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise ResvizError(f"--kwargs holds a number too large to read ({str(exc).split(':')[0]}).") from None
    if not isinstance(value, dict):
        raise ResvizError(
            f"--kwargs must be a JSON object of keyword arguments such as '{{\"num_classes\": 10}}', "
            f"not a {_json_type(value)}."
        )
    return value


def _json_type(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------------
# Dispatch


def load_model(source: str | os.PathLike[str], *, kwargs: dict | None = None, trust: bool = False,
               device: str = "meta") -> LoadedModel:
    """Load the model named by ``source`` (a zoo name, spec file, Python file or archive).

    ``kwargs`` go to a Python file's class or function (and ``num_classes`` to zoo models and
    specs); ``trust`` allows unpickling whole-model ``torch.save`` files; ``device`` is where
    eager models are built ('meta' for analysis: fast and without memory).
    """
    source = os.fspath(source)
    if not isinstance(source, str) or not source.strip():
        raise LoadError(f"no model given: {READS}.")
    kwargs = dict(kwargs or {})
    device = str(device)
    _check_device(device)

    py = pyfile.split_python_source(source)
    if py is not None:
        _check_regular(py[0])
        return _load_python(source, py[0], py[1], kwargs, device)

    path = Path(os.path.expanduser(source))
    if _exists(path, source):
        _check_regular(path, source)
        if path.is_dir():
            archives.sniff(path, source)  # raises, naming model files inside
        if path.suffix.lower() in _SPEC_SUFFIXES:
            return _load_spec(source, path, kwargs, device)
        return _load_archive(source, path, kwargs, trust, device)
    if _looks_like_path(source):
        raise LoadError(_missing_message(source, path))
    return _load_zoo(source, kwargs, device)


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        raise ResvizError(f"unknown device {device!r}: expected 'meta', 'cpu', 'cuda', 'cuda:1', ...") from None
    backend = getattr(torch, kind, None) if kind in ("cuda", "mps", "xpu") else None
    if backend is not None and not backend.is_available():
        raise ResvizError(f"device {device!r} is not available here (this torch has no working {kind}).")


def _exists(path: Path, source: str) -> bool:
    """Whether there is something at ``path`` (a broken symlink counts: it gets its own message)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except PermissionError:
        raise LoadError(f"cannot read {source}: permission denied.") from None
    except (OSError, ValueError):
        return False
    return True


def _check_regular(path: str | os.PathLike[str], source: str | None = None) -> None:
    """A FIFO, device or socket given as MODEL is refused before it is opened: opening a FIFO
    waits for a writer forever, and a device such as /dev/zero never ends."""
    try:
        check_readable_file(os.path.expanduser(os.fspath(path)), source)
    except ResvizError as exc:
        raise LoadError(f"{exc} ({READS}.)") from None


def _looks_like_path(source: str) -> bool:
    if "/" in source or os.sep in source or (os.altsep and os.altsep in source):
        return True
    if source.startswith((".", "~")):
        return True
    suffix = Path(source).suffix.lower()
    return suffix in _FILE_SUFFIXES or suffix.startswith(".py:")


def _missing_message(source: str, path: Path) -> str:
    msg = f"no such file: {source}"
    parent = path.parent
    if parent.is_dir():
        try:
            siblings = [p.name for p in parent.iterdir()]
        except OSError:
            siblings = []
        close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.7)
        if close:
            msg += f" (did you mean {os.path.join(os.path.dirname(source), close[0])}?)"
    else:
        msg += f" (the directory {parent} does not exist)"
    return f"{msg}. {READS}."


# --- zoo -------------------------------------------------------------------------------------


def _num_classes(kwargs: dict, what: str) -> int | None:
    extra = sorted(set(kwargs) - {"num_classes"})
    if extra:
        raise LoadError(
            f"{what} take only num_classes in --kwargs, not {', '.join(extra)}; to change anything "
            "else, write a spec file (resviz spec) or a model.py."
        )
    value = kwargs.get("num_classes")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise LoadError(f"num_classes must be a positive integer; got {str(value)[:40]!r}.")
    if value is not None and value > _MAX_CLASSES:
        raise LoadError(f"num_classes {value:.3g} is past the limit of {_MAX_CLASSES:,} classes.")
    return value


def _load_zoo(source: str, kwargs: dict, device: str) -> LoadedModel:
    from . import spec as specmod
    from . import zoo

    try:
        entry = zoo.get(source)
    except LoadError as exc:
        near = [p for p in (f"{source}.py", f"{source}.toml", f"{source}.json") if os.path.isfile(p)]
        if near:
            raise LoadError(f"{exc} (There is a file {near[0]} here: did you mean `{near[0]}`?)") from None
        raise
    num_classes = _num_classes(kwargs, "zoo models")
    netspec = entry.spec if num_classes is None else dataclasses.replace(entry.spec, classes=num_classes)

    def rebuild(dev: str) -> nn.Module:
        return zoo.build(entry.name, device=dev, num_classes=num_classes)

    def plain_twin(dev: str) -> nn.Module:
        return specmod.build(netspec, plain=True, device=dev)

    return LoadedModel(
        module=rebuild(device), exported=None, name=entry.name, source=source, kind="zoo", path=None,
        input_shape=tuple(entry.input_shape), rebuild=rebuild, plain_twin=plain_twin, kwargs=kwargs,
        spec=netspec,
    )


# --- spec files ------------------------------------------------------------------------------


def _load_spec(source: str, path: Path, kwargs: dict, device: str) -> LoadedModel:
    from . import spec as specmod

    netspec = specmod.load_spec(path)
    num_classes = _num_classes(kwargs, "spec files")
    if num_classes is not None:
        netspec = dataclasses.replace(netspec, classes=num_classes)

    def rebuild(dev: str) -> nn.Module:
        return specmod.build(netspec, device=dev)

    def plain_twin(dev: str) -> nn.Module:
        return specmod.build(netspec, plain=True, device=dev)

    return LoadedModel(
        module=rebuild(device), exported=None, name=netspec.name or path.stem, source=source,
        kind="spec", path=path.resolve(), input_shape=tuple(netspec.input_shape), rebuild=rebuild,
        plain_twin=plain_twin, kwargs=kwargs, spec=netspec,
    )


# --- Python files ----------------------------------------------------------------------------


def _load_python(source: str, file: str, name: str | None, kwargs: dict, device: str) -> LoadedModel:
    built = pyfile.build_python(file, name, kwargs=kwargs, device=device)
    return LoadedModel(
        module=built.module, exported=None, name=f"{Path(file).name}:{built.target}", source=source,
        kind="python", path=built.path, input_shape=None, rebuild=built.rebuild, plain_twin=None,
        kwargs=kwargs, notes=built.notes,
    )


# --- archives --------------------------------------------------------------------------------


def _load_archive(source: str, path: Path, kwargs: dict, trust: bool, device: str) -> LoadedModel:
    if kwargs:
        archives.sniff(path, source)  # a file that is no archive at all says so first
        raise LoadError(
            f"--kwargs cannot be applied to {source}: an archive holds a model that is already "
            "built. --kwargs is for Python files (and num_classes for zoo models and specs)."
        )
    result = archives.load_archive(path, given=source, trust=trust, device=device)
    return LoadedModel(
        module=result.module, exported=result.exported, name=path.name, source=source,
        kind=result.kind, path=path.resolve(), input_shape=result.input_shape, rebuild=result.rebuild,
        plain_twin=None, kwargs={}, notes=result.notes,
    )


# --- specs in memory (the builder) -----------------------------------------------------------


def from_spec(netspec, device: str = "meta") -> LoadedModel:
    """A spec held in memory (the app's builder) as a :class:`LoadedModel`, like a spec file."""
    from . import spec as specmod

    def rebuild(dev: str) -> nn.Module:
        return specmod.build(netspec, device=dev)

    def plain_twin(dev: str) -> nn.Module:
        return specmod.build(netspec, plain=True, device=dev)

    return LoadedModel(
        module=rebuild(device), exported=None, name=netspec.name, source=netspec.name, kind="spec",
        path=None, input_shape=tuple(netspec.input_shape), rebuild=rebuild, plain_twin=plain_twin,
        spec=netspec,
    )  # fmt: skip


# --- live modules ----------------------------------------------------------------------------


def from_module(module: nn.Module, name: str | None = None,
                input_shape: str | Sequence[int] | None = None) -> LoadedModel:
    """Wrap a module built in the same process (a notebook, a test) as a :class:`LoadedModel`.

    ``rebuild`` hands out deep copies moved to the requested device; the original is never moved.
    """
    if not isinstance(module, nn.Module):
        raise LoadError(f"expected an nn.Module, got a {type(module).__name__}")
    # typed text keeps the command line's image shorthand; a shape from Python is taken as given
    shape = None if input_shape is None else parse_shape(input_shape, batch=isinstance(input_shape, str))

    def rebuild(dev: str) -> nn.Module:
        clone = copy.deepcopy(module)
        return clone.to(torch.device(dev)) if isinstance(clone, nn.Module) else clone

    label = name or type(module).__name__
    return LoadedModel(
        module=module, exported=None, name=label, source=label, kind="live", path=None,
        input_shape=shape, rebuild=rebuild, plain_twin=None,
    )
