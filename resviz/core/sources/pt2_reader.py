"""Reading a ``torch.export.save`` archive without running anything the file names.

``torch.export.load`` unpickles with ``weights_only=False`` wherever the archive says a payload is
pickled (weights, constants, the sample inputs when the restricted loader refuses them), loads
AOTInductor shared libraries and hands symbolic-shape strings to ``sympy.sympify``, which
evaluates them as Python. Any of these runs code chosen by whoever wrote the file.

resviz needs the graph and the shapes, not the weights, so an archive that is not trusted is read
here instead, with torch's own deserializer fed only what is safe:

* weights and tensor constants stored raw become meta tensors of their recorded size, stride and
  dtype (nothing is read);
* weights, constants and sample inputs stored as pickles are read with ``torch.load(...,
  weights_only=True)`` onto the meta device; sample inputs the restricted loader refuses are
  dropped (the graph records the exported input shape anyway), anything else refused is an error
  that points at ``--trust``;
* custom and opaque object constants (arbitrary pickles) and compiled AOTInductor code are never
  loaded;
* every symbolic-shape expression must be plain arithmetic on shape symbols before sympy sees it.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator

import torch

from ..errors import LoadError, NeedsTrust

__all__ = ["load_export_untrusted"]

_MODEL = "model"  # the program torch.export.load returns
_MAX_MEMBER_BYTES = 1 << 30  # a program's JSON or a pickled part; weights stored raw are never read
_TRUST = "Pass --trust to load it with torch.export.load, only for a file you trust."


def _needs_trust(reason: str, path=None) -> NeedsTrust:
    """Refused without trust: ``reason`` for the app, with the --trust advice for the command line."""
    return NeedsTrust(f"{reason} {_TRUST}", reason, None if path is None else str(path))


def load_export_untrusted(path, name: str) -> tuple[object, list[str]]:
    """The ``ExportedProgram`` in ``path`` with meta-tensor weights, and notes for the user."""
    try:
        from torch._export.serde import schema
        from torch._export.serde.serialize import (
            ExportedProgramDeserializer,
            _dict_to_dataclass,
        )
    except ImportError:  # torch moved its private deserializer: refuse rather than load unsafely
        raise _needs_trust(
            f"{name} is a torch.export archive, and this torch ({torch.__version__}) gives resviz no "
            f"way to read one without unpickling what it holds.", path
        ) from None
    notes: list[str] = []
    with zipfile.ZipFile(path) as zf:
        reader = _Archive(zf, name)
        if reader.has("serialized_exported_program.json"):
            reason = (
                f"{name} is a torch.export archive in the format of torch 2.7 and older, which is "
                f"read by unpickling its parts. Re-save it with this torch's torch.export.save"
            )
            raise NeedsTrust(
                f"{reason}, or pass --trust to load it as it is (only for a file you trust).",
                f"{reason}, or trust the file to load it as it is.", str(path),
            )
        program_bytes = reader.read(f"models/{_MODEL}.json")
        try:
            doc = json.loads(program_bytes)
        except (ValueError, RecursionError) as exc:
            raise LoadError(f"{name}: its program (models/{_MODEL}.json) is not valid JSON ({exc}).") from None
        _check_expressions(doc, name)
        state_dict = _payloads(reader, "weights", notes)
        constants = _payloads(reader, "constants", notes)
        example_inputs = _sample_inputs(reader, notes)
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, doc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = ExportedProgramDeserializer().deserialize(
                serialized, state_dict, constants, example_inputs
            )
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's deserializer fed a damaged or newer program raises anything; the user gets a LoadError naming the file and the error
        raise LoadError(
            f"{name} is a torch.export archive (torch.export.save) but torch {torch.__version__} could "
            f"not read its program: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return program, notes


class _Archive:
    """A pt2 zip, whose members all sit under one root folder (the archive's stem)."""

    def __init__(self, zf: zipfile.ZipFile, name: str):
        self.zf = zf
        self.name = name
        names = zf.namelist()
        root = next((n[: -len("archive_format")] for n in names if n.endswith("archive_format")), None)
        if root is None:
            root = next((n[: -len("serialized_exported_program.json")] for n in names
                         if n.endswith("serialized_exported_program.json")), "")  # fmt: skip
        self.root = root
        self.names = {n[len(root):] for n in names if n.startswith(root)}

    def has(self, member: str) -> bool:
        return member in self.names

    def read(self, member: str) -> bytes:
        if member not in self.names:
            raise LoadError(f"{self.name} is not a complete torch.export archive: it has no {member}.")
        size = self.zf.getinfo(self.root + member).file_size  # zipfile holds a member to this size
        if size > _MAX_MEMBER_BYTES:
            raise LoadError(
                f"{self.name}: its {member} inflates to {size:,} bytes, past the limit of "
                f"{_MAX_MEMBER_BYTES:,} bytes for one part of an archive resviz reads."
            )
        try:
            return self.zf.read(self.root + member)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise LoadError(f"{self.name}: cannot read {member} from the archive ({exc}).") from None


# --- symbolic shapes ---------------------------------------------------------------------------

# torch writes shape expressions as sympy reprs: "Symbol('s31', positive=True, integer=True)",
# "Add(Mul(Integer(2), Symbol('s0', ...)), Integer(1))", "FloorDiv(s0, 2)". sympy.sympify evaluates
# them as Python with builtins in scope, so only that grammar may pass: calls of sympy's and torch's
# shape functions, shape-symbol names, keyword assumptions, numbers and arithmetic.
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_+\-*/%(), .<>=!]*$")
_QUOTED_NAME = re.compile(r"'(?:[A-Za-z_][A-Za-z_0-9]*|[0-9][0-9.]*(?:e[+-]?[0-9]+)?)'")  # 's0', '1.5'
_WORD = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)\s*(\(|=(?!=))?")
_SYMBOL = re.compile(r"^[a-z]{1,4}\d+$")  # s0, u3, zf1, zuf2: torch's shape symbols
_CALLS = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "floor", "ceiling", "sqrt", "Piecewise", "ExprCondPair", "Add", "Mul",
    "Pow", "Symbol", "Dummy", "Integer", "Rational", "Float", "Tuple",
}  # fmt: skip
_CONSTANTS = {
    "oo", "zoo", "nan", "True", "False", "true", "false", "E", "pi", "S", "Half", "One", "Zero",
    "NegativeOne", "Infinity", "NegativeInfinity", "ComplexInfinity", "NaN", "BooleanTrue",
    "BooleanFalse",
}  # fmt: skip
_POWERS = ("Pow", "**", "PowByNatural", "FloatPow")


def _safe_expression(expr: str) -> bool:
    if len(expr) > 4000 or "__" in expr:
        return False
    plain = _QUOTED_NAME.sub("s0", expr)  # Symbol('s0'), Float('1.5', precision=53): quoted text
    if not _EXPR_CHARS.match(plain):
        return False
    unquoted = plain
    plain = re.sub(r"(?<![A-Za-z_0-9])(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", "0", plain)  # numbers
    if "." in plain:  # a dot outside a number: attribute access
        return False
    for word, follow in _WORD.findall(plain):
        if follow == "(":
            ok = word in _CALLS
        elif follow:  # a keyword argument: an assumption such as positive=True
            ok = word.isidentifier() and word.islower()
        else:
            ok = word in _CONSTANTS or _SYMBOL.match(word) is not None
        if not ok:
            return False
    powers = sum(plain.count(p) for p in _POWERS)
    if powers > 1:  # nested powers of literals would never finish
        return False
    return powers == 0 or all(int(n) <= 1024 for n in re.findall(r"\d+", unquoted))


def _expressions(node, depth: int = 0) -> Iterator[str]:
    if depth > 200:
        raise RecursionError
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value, depth + 1)


def _check_expressions(doc, name: str) -> None:
    try:
        exprs = list(_expressions(doc))
    except RecursionError:
        raise LoadError(f"{name}: its program is nested too deeply to be a torch.export program.") from None
    for expr in exprs:
        if not _safe_expression(expr):
            shown = expr if len(expr) <= 80 else expr[:77] + "..."
            raise _needs_trust(
                f"{name} is a torch.export archive whose program holds a shape expression that is not "
                f"arithmetic on shape symbols ({shown!r}); torch would evaluate it as Python code, so "
                f"resviz does not."
            )


# --- weights, constants and sample inputs -----------------------------------------------------


def _restricted_load(data: bytes, what: str, reader: _Archive):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="meta", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the restricted loader refuses or fails on a crafted pickle with anything; the user is told why and that trusting the file would load it
        raise _needs_trust(
            f"{reader.name} is a torch.export archive whose {what} is a pickle that the restricted "
            f"loader refuses ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
            f"unpickling it fully could run code the file names.", reader.zf.filename
        ) from None


def _meta_tensor(tensor_meta, is_param: bool):
    from torch._export.serde.serialize import deserialize_scalar_type

    sizes = [_int(s) for s in tensor_meta.sizes]
    strides = [_int(s) for s in tensor_meta.strides]
    dtype = deserialize_scalar_type(tensor_meta.dtype)
    tensor = torch.empty_strided(sizes, strides, dtype=dtype, device="meta")
    if is_param:
        return torch.nn.Parameter(tensor, requires_grad=bool(tensor_meta.requires_grad))
    return tensor


def _int(sym) -> int:
    value = getattr(sym, "as_int", None)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise ValueError(f"a weight size that is not a whole number: {sym!r}")
    return value


def _payloads(reader: _Archive, kind: str, notes: list[str]) -> dict:
    """Weights (``kind='weights'``) or constants, as meta tensors or restricted unpickles."""
    legacy = f"data/{kind}/{_MODEL}.pt"
    if reader.has(legacy):
        return _legacy_payloads(reader, kind, legacy)
    config = _payload_config(reader, kind)
    if config is None:
        return {}
    return {fqn: _payload(reader, kind, fqn, meta) for fqn, meta in config.config.items()}


def _legacy_payloads(reader: _Archive, kind: str, member: str) -> dict:
    """The dict of tensors of torch 2.7's single ``data/<kind>/model.pt`` pickle."""
    loaded = _restricted_load(reader.read(member), f"{kind} file ({member})", reader)
    if not isinstance(loaded, dict):
        raise LoadError(f"{reader.name}: its {kind} file ({member}) does not hold a dict of tensors.")
    return loaded


def _payload_config(reader: _Archive, kind: str):
    """The archive's list of ``kind`` payloads (a ``PayloadConfig``); None for no constants."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import _dict_to_dataclass

    config_name = f"data/{kind}/{_MODEL}_{kind}_config.json"
    if not reader.has(config_name):
        if kind == "constants":
            return None
        raise LoadError(f"{reader.name} is not a complete torch.export archive: it has no {config_name}.")
    try:
        return _dict_to_dataclass(schema.PayloadConfig, json.loads(reader.read(config_name)))
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise LoadError(f"{reader.name}: {config_name} is not a valid payload list ({exc}).") from None


def _payload(reader: _Archive, kind: str, fqn: str, meta):
    """One weight or constant: a restricted unpickle of a tensor, or a meta tensor of the
    recorded shape. A constant that is a pickled Python object needs trust."""
    member = f"data/{kind}/{meta.path_name}"
    one = kind[:-1]
    if kind == "constants" and not meta.path_name.startswith("tensor"):
        raise _needs_trust(
            f"{reader.name} is a torch.export archive whose constant {fqn} is a pickled Python "
            f"object ({member}); loading it could run code the file names.", reader.zf.filename
        )
    if meta.use_pickle:
        value = _restricted_load(reader.read(member), f"{one} {fqn} ({member})", reader)
        if not isinstance(value, torch.Tensor):
            raise LoadError(
                f"{reader.name}: its {one} {fqn} ({member}) holds a {type(value).__name__}, not a tensor."
            )
        return value
    if meta.tensor_meta is None:
        raise LoadError(f"{reader.name}: its {one} {fqn} has no recorded shape.")
    try:
        return _meta_tensor(meta.tensor_meta, bool(meta.is_param) and kind == "weights")
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise LoadError(f"{reader.name}: its {one} {fqn} has an unreadable shape ({exc}).") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def _sample_inputs(reader: _Archive, notes: list[str]):
    member = f"data/sample_inputs/{_MODEL}.pt"
    if not reader.has(member):
        return None
    data = reader.read(member)
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = torch.load(io.BytesIO(data), map_location="meta", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - sample inputs are optional and may be a crafted pickle; the note below says they were skipped and why
        value, why = None, f": {type(exc).__name__}: {_first_line(exc)}"
    else:
        why = ""
    if not isinstance(value, tuple):
        notes.append(
            f"{reader.name}: its sample inputs are not plain tensors (the restricted loader refused "
            f"them{why}), so they were not loaded; the input shape comes from the program's graph."
        )
        return None
    return value
