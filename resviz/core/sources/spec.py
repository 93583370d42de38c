"""Declarative ResNet specs: TOML or JSON files describing stem, stages and shortcut policy.

A spec file is something users write by hand, so every field is validated and every mistake is a
:class:`SpecError` naming the file, the field as a dotted path (``stages[2].stride``), what was
found and what is allowed — never a traceback. Example::

    name = "cifar-resnet20"
    input = "3x32x32"
    block = "basic"
    shortcut = "A"

    [stem]
    kind = "cifar"

    [[stages]]
    blocks = 3
    width = 16
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResvizError, ShapeSyntaxError, SpecError
from ..files import read_bounded
from ..shapes import format_shape, parse_shape

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged separately
    import tomli as tomllib  # type: ignore[no-redef]

BLOCK_KINDS = ("basic", "bottleneck", "preact", "preact-bottleneck")
SHORTCUT_POLICIES = ("A", "B", "C", "D", "identity", "none")
STEM_KINDS = ("imagenet", "cifar")
EXPANSION = {"basic": 1, "bottleneck": 4, "preact": 1, "preact-bottleneck": 4}

_STEM_PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"channels": 64, "kernel": 7, "stride": 2, "pool": True},
    "cifar": {"channels": 16, "kernel": 3, "stride": 1, "pool": False},
}
_DEFAULT_INPUT = {"imagenet": (1, 3, 224, 224), "cifar": (1, 3, 32, 32)}
_DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 10}

_NET_FIELDS = (
    "name", "description", "input", "classes", "block", "shortcut", "groups", "width_per_group",
    "zero_init_residual", "stem", "stages",
)  # fmt: skip
_STEM_FIELDS = ("kind", "channels", "kernel", "stride", "pool", "norm")
_STAGE_FIELDS = (
    "blocks", "width", "stride", "block", "shortcut", "block_shortcuts", "padding", "pool_ceil_mode",
)  # fmt: skip

# Generous ceilings: they exist to turn a typo (blocks = 30000) into a message, not a frozen build.
_MAX_BLOCKS = 1000  # in one stage
_MAX_STAGES = 64
_MAX_TOTAL_BLOCKS = 5000  # in the whole net (resnet1202 has 600)
_MAX_CHANNELS = 65536
_MAX_FILE_BYTES = 1024 * 1024  # a spec is a few hundred bytes; this is a wrong file
_MAX_NAME = 200
_MAX_NESTING = 32  # a spec is tables of tables of scalars: three levels deep


def is_preact(block: str) -> bool:
    return block.startswith("preact")


@dataclass(frozen=True)
class StemSpec:
    """conv (kernel/stride, ``channels`` out) → BN-ReLU if ``norm`` → 3x3/2 max-pool if ``pool``."""

    kind: str = "imagenet"
    channels: int = 64
    kernel: int = 7
    stride: int = 2
    pool: bool = True
    norm: bool = True

    @classmethod
    def preset(cls, kind: str, **overrides: Any) -> StemSpec:
        return cls(kind=kind, **{**_STEM_PRESETS[kind], **overrides})


@dataclass(frozen=True)
class StageSpec:
    """``blocks`` blocks of ``width`` planes; the first has ``stride``. None inherits the net's."""

    blocks: int
    width: int
    stride: int = 1
    block: str | None = None
    shortcut: str | None = None
    padding: int = 1  # of the 3x3 convs; 0 shrinks the map and breaks the add, on purpose
    pool_ceil_mode: bool = True  # of shortcut D's AvgPool2d; False breaks at odd sizes
    # Per-block overrides of the shortcut policy, (block index, policy) sorted by index: one block
    # of a stage can differ (a builder edit, a fix) without splitting the stage in two.
    block_shortcuts: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class NetSpec:
    """A whole ResNet. ``input_shape`` is N×C×H×W; C is the stem conv's input channels."""

    name: str
    input_shape: tuple[int, ...]
    stages: tuple[StageSpec, ...]
    classes: int = 1000
    block: str = "basic"
    shortcut: str = "B"
    stem: StemSpec = field(default_factory=StemSpec)
    groups: int = 1
    width_per_group: int = 64
    zero_init_residual: bool = False
    description: str = ""  # free text; JSON has no comments, so spec files say what they show here

    def block_of(self, stage: int) -> str:
        return self.stages[stage].block or self.block

    def shortcut_of(self, stage: int) -> str:
        return self.stages[stage].shortcut or self.shortcut

    def shortcut_of_block(self, stage: int, block: int) -> str:
        """The policy of block ``block`` of stage ``stage``: its override, the stage's, the net's."""
        return dict(self.stages[stage].block_shortcuts).get(block) or self.shortcut_of(stage)

    def out_channels(self, stage: int) -> int:
        return self.stages[stage].width * EXPANSION[self.block_of(stage)]

    @property
    def depth(self) -> int:
        """Weighted layers on the main path, as papers count them: stem conv + block convs + fc."""
        convs = sum(
            s.blocks * (3 if EXPANSION[self.block_of(i)] == 4 else 2) for i, s in enumerate(self.stages)
        )
        return convs + 2

    @property
    def is_plain(self) -> bool:
        return all(self.shortcut_of(i) == "none" for i in range(len(self.stages)))

    def plain(self) -> NetSpec:
        """The plain twin: the same layers with no shortcut, no projection and no add."""
        name = self.name if self.is_plain else f"plain_{self.name}"
        stages = tuple(dataclasses.replace(s, shortcut=None, block_shortcuts=()) for s in self.stages)
        return dataclasses.replace(self, name=name, shortcut="none", stages=stages)


# ---------------------------------------------------------------------------------------- building


def build(spec: NetSpec, *, plain: bool = False, device: str | torch.device | None = None) -> nn.Module:
    """Build the model (its plain twin with ``plain=True``) on ``device`` (default: torch's)."""
    from .blocks import ResNet

    if plain:
        spec = spec.plain()
    if device is None:
        return ResNet(spec)
    with torch.device(device):
        return ResNet(spec)


# ----------------------------------------------------------------------------------- serialising


def spec_to_dict(spec: NetSpec) -> dict[str, Any]:
    """A plain dict (JSON/TOML-ready) that :func:`parse_spec` turns back into an equal spec."""
    stages = []
    for s in spec.stages:
        d: dict[str, Any] = {"blocks": s.blocks, "width": s.width, "stride": s.stride}
        if s.block is not None:
            d["block"] = s.block
        if s.shortcut is not None:
            d["shortcut"] = s.shortcut
        if s.block_shortcuts:
            d["block_shortcuts"] = {str(j): policy for j, policy in s.block_shortcuts}
        if s.padding != 1:
            d["padding"] = s.padding
        if not s.pool_ceil_mode:
            d["pool_ceil_mode"] = False
        stages.append(d)
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    return out | {
        "input": format_shape(spec.input_shape),
        "classes": spec.classes,
        "block": spec.block,
        "shortcut": spec.shortcut,
        "groups": spec.groups,
        "width_per_group": spec.width_per_group,
        "zero_init_residual": spec.zero_init_residual,
        "stem": dataclasses.asdict(spec.stem),
        "stages": stages,
    }


# -------------------------------------------------------------------------------------- loading


def load_spec(path: str | Path) -> NetSpec:
    """Read a ``.toml`` or ``.json`` spec (other extensions: sniffed) and validate it."""
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise SpecError(where, None, "no such file")
    if p.is_dir():
        raise SpecError(where, None, "is a directory; expected a .toml or .json spec file")
    try:
        raw = read_bounded(p, _MAX_FILE_BYTES, "a spec file")
    except OSError as e:
        raise SpecError(where, None, f"cannot be read: {e.strerror or e}") from None
    except ResvizError as e:
        raise SpecError(None, None, str(e)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(
            where, None, f"is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save the spec as UTF-8", line=line,
        ) from None  # fmt: skip
    if not text.strip():
        raise SpecError(where, None, "is empty; expected a ResNet spec with at least one [[stages]] table")

    suffix = p.suffix.lower()
    fmt = "json" if suffix == ".json" else "toml" if suffix == ".toml" else _sniff(text)
    data = _parse_json(text, where) if fmt == "json" else _parse_toml(text, where)
    return _parse(data, _Checker(where, text if fmt == "toml" else None))


def _sniff(text: str) -> str:
    return "json" if text.lstrip().startswith(("{", "[")) else "toml"


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _too_deep(text: str) -> bool:
    """Whether brackets nest deeper than any spec does (the parsers recurse on them and would
    overflow Python's stack on a few thousand levels). Brackets inside strings count too, which
    only makes the check stricter for a file no spec resembles."""
    brackets = _NOT_BRACKET.sub("", text)  # in C: the loop below sees brackets only
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > _MAX_NESTING:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _number_error(where: str, fmt: str, e: Exception) -> SpecError:
    # Python refuses to convert integers of over 4300 digits; no spec field takes anything near
    digits = re.search(r"has (\d+) digits", str(e))
    size = f"a {digits.group(1)}-digit number" if digits else "a number too large to read"
    return SpecError(where, None, f"the {fmt} holds {size}; no spec field takes a number that large")


def _parse_toml(text: str, where: str) -> dict:
    if _too_deep(text):
        raise SpecError(where, None, f"arrays or tables nest more than {_MAX_NESTING} levels deep; "
                        "a spec is a few flat tables")
    try:
        return tomllib.loads(text)
    except ValueError as e:
        if not isinstance(e, tomllib.TOMLDecodeError):
            raise _number_error(where, "TOML", e) from None
        raise _toml_syntax(e, where, text) from None
    except RecursionError:
        raise SpecError(where, None, "arrays or tables nest too deeply; a spec is a few flat tables") from None


def _toml_syntax(e: Exception, where: str, text: str) -> SpecError:
    msg = str(e)
    m = _TOML_POS.search(msg)
    line = int(m.group(1)) if m else getattr(e, "lineno", None)
    return _syntax_error(where, "TOML", msg, line, text)


def _parse_json(text: str, where: str) -> dict:
    if _too_deep(text):
        raise SpecError(where, None, f"arrays or objects nest more than {_MAX_NESTING} levels deep; "
                        "a spec is a few flat tables")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _syntax_error(
            where, "JSON", f"{e.msg} (at line {e.lineno}, column {e.colno})", e.lineno, text
        ) from None
    except ValueError as e:
        raise _number_error(where, "JSON", e) from None
    except RecursionError:
        raise SpecError(where, None, "arrays or objects nest too deeply; a spec is a few flat tables") from None
    if not isinstance(data, dict):
        raise SpecError(where, None, f"expected a JSON object at the top level; got {_type_name(data)}")
    return data


def _syntax_error(where: str, fmt: str, msg: str, line: int | None, text: str) -> SpecError:
    quoted = ""
    if line is not None:
        lines = text.splitlines()
        if 0 < line <= len(lines) and lines[line - 1].strip():
            quoted = f"; the line reads: {lines[line - 1].strip()!r}"
    return SpecError(where, None, f"{fmt} syntax error: {msg}{quoted}", line=line)


# ------------------------------------------------------------------------------------ validating


_MISSING = object()


class _Checker:
    """Field readers that raise SpecError with the file, the dotted field path and its line."""

    def __init__(self, path: str | None, text: str | None):
        self.path = path
        self.text = text

    def error(self, fld: str | None, message: str) -> SpecError:
        line = None
        if self.text and fld:
            # A missing field has no line of its own; its table's header is the next best place.
            line = _toml_line(self.text, fld) or _toml_line(self.text, fld.rpartition(".")[0] or fld)
        return SpecError(self.path, fld, message, line)

    def keys(self, table: dict, allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                fld = f"{where}.{key}" if where else str(key)
                msg = f"unknown field {key!r}; allowed fields{' of ' + where if where else ''}: {', '.join(allowed)}"
                raise self.error(fld, msg + _did_you_mean(str(key), allowed))

    def get(self, table: dict, key: str, fld: str, default: Any) -> Any:
        value = table.get(key, default)
        if value is _MISSING:
            raise self.error(fld, "missing required field")
        return value

    def integer(
        self, table: dict, key: str, fld: str, default: Any = _MISSING, lo: int = 1, hi: int | None = None
    ):
        value = self.get(table, key, fld, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(fld, f"expected an integer; got {_show(value)}")
        if value < lo or (hi is not None and value > hi):
            rng = f"from {lo} to {hi}" if hi is not None else f"≥ {lo}"
            raise self.error(fld, f"expected an integer {rng}; got {value}")
        return value

    def boolean(self, table: dict, key: str, fld: str, default: Any = _MISSING) -> bool:
        value = self.get(table, key, fld, default)
        if not isinstance(value, bool):
            raise self.error(fld, f"expected true or false; got {_show(value)}")
        return value

    def string(self, table: dict, key: str, fld: str, default: Any = _MISSING) -> str:
        value = self.get(table, key, fld, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(fld, f"expected a non-empty string; got {_show(value)}")
        return value.strip()

    def choice(self, table: dict, key: str, fld: str, choices: tuple[str, ...], default: Any = _MISSING):
        value = self.get(table, key, fld, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(fld, f"expected one of {', '.join(choices)}; got {_show(value)}")
        # Forgive case and '_' for '-' ("a", "Preact_Bottleneck"): they cannot be anything else.
        canon = {c.lower().replace("_", "-"): c for c in choices}
        found = canon.get(value.strip().lower().replace("_", "-"))
        if found is None:
            raise self.error(
                fld, f"expected one of {', '.join(choices)}; got {value!r}" + _did_you_mean(value, choices)
            )
        return found


def parse_spec(data: dict, *, path: str | Path | None = None) -> NetSpec:
    """Validate a spec already read into a dict (from TOML, JSON or code) and return it.

    ``path`` only names the file in messages and gives the default ``name`` (its stem).
    """
    return _parse(data, _Checker(str(path) if path is not None else None, None))


def _parse(data: dict, c: _Checker) -> NetSpec:
    where = c.path
    if not isinstance(data, dict):
        raise c.error(None, f"expected a table of fields at the top level; got {_show(data)}")
    c.keys(data, _NET_FIELDS, "")

    default_name = Path(where).stem if where else "resnet"
    name = c.string(data, "name", "name", default_name)
    if len(name) > _MAX_NAME:
        raise c.error("name", f"is {len(name)} characters long, past the limit of {_MAX_NAME}; a name is a title")
    if any(_is_control(ch) for ch in name):
        raise c.error("name", f"contains control characters ({name.encode('unicode_escape').decode()[:60]}); "
                      "a name is printed and shown as a title, so it must be plain text")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise c.error("description", f"expected a string; got {_show(description)}")
    block = c.choice(data, "block", "block", BLOCK_KINDS, "basic")
    shortcut = c.choice(data, "shortcut", "shortcut", SHORTCUT_POLICIES, "B")
    groups = c.integer(data, "groups", "groups", 1, hi=_MAX_CHANNELS)
    width_per_group = c.integer(data, "width_per_group", "width_per_group", 64, hi=_MAX_CHANNELS)
    zero_init = c.boolean(data, "zero_init_residual", "zero_init_residual", False)

    stages = _parse_stages(c, data)
    stem = _parse_stem(c, data, first_block=stages[0].block or block)

    if "input" in data:
        input_shape = _parse_input(c, data["input"])
    else:
        input_shape = _DEFAULT_INPUT[stem.kind]
    classes = c.integer(data, "classes", "classes", _DEFAULT_CLASSES[stem.kind], hi=10_000_000)

    spec = NetSpec(
        name=name, input_shape=input_shape, stages=stages, classes=classes, block=block,
        shortcut=shortcut, stem=stem, groups=groups, width_per_group=width_per_group,
        zero_init_residual=zero_init, description=description,
    )  # fmt: skip
    _check_blocks(c, spec)
    return spec


def _parse_stages(c: _Checker, data: dict) -> tuple[StageSpec, ...]:
    if "stages" not in data:
        raise c.error(
            "stages", "missing required field: a spec needs at least one stage, e.g. "
            "[[stages]] with blocks = 2 and width = 64",
        )  # fmt: skip
    raw = data["stages"]
    if isinstance(raw, dict):
        raise c.error("stages", "expected an array of tables; write each stage as [[stages]], not [stages]")
    if not isinstance(raw, (list, tuple)):
        raise c.error("stages", f"expected an array of tables ([[stages]]); got {_show(raw)}")
    if not raw:
        raise c.error("stages", "expected at least one stage; got an empty list")
    if len(raw) > _MAX_STAGES:
        raise c.error("stages", f"{len(raw)} stages is past the limit of {_MAX_STAGES} stages per net")
    stages = []
    for i, st in enumerate(raw):
        w = f"stages[{i}]"
        if not isinstance(st, dict):
            raise c.error(w, f"expected a table with blocks, width and stride; got {_show(st)}")
        c.keys(st, _STAGE_FIELDS, w)
        blocks = c.integer(st, "blocks", f"{w}.blocks", hi=_MAX_BLOCKS)
        stages.append(
            StageSpec(
                blocks=blocks,
                width=c.integer(st, "width", f"{w}.width", hi=_MAX_CHANNELS),
                stride=c.integer(st, "stride", f"{w}.stride", 1, hi=4),
                block=c.choice(st, "block", f"{w}.block", BLOCK_KINDS, None),
                shortcut=c.choice(st, "shortcut", f"{w}.shortcut", SHORTCUT_POLICIES, None),
                block_shortcuts=_parse_block_shortcuts(c, st.get("block_shortcuts"), w, blocks),
                padding=c.integer(st, "padding", f"{w}.padding", 1, lo=0, hi=3),
                pool_ceil_mode=c.boolean(st, "pool_ceil_mode", f"{w}.pool_ceil_mode", True),
            )
        )
    total = sum(st.blocks for st in stages)
    if total > _MAX_TOTAL_BLOCKS:
        raise c.error(
            "stages", f"{total} blocks in all is past the limit of {_MAX_TOTAL_BLOCKS} blocks per net "
            f"(the stages have {_count_list([st.blocks for st in stages])} blocks)",
        )  # fmt: skip
    return tuple(stages)


def _parse_block_shortcuts(c: _Checker, raw: Any, w: str, blocks: int) -> tuple[tuple[int, str], ...]:
    """``block_shortcuts = { 0 = "B" }``: block index (as TOML/JSON keys are strings) → policy."""
    fld = f"{w}.block_shortcuts"
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise c.error(fld, f'expected a table of block index → policy, e.g. {{ 0 = "B" }}; got {_show(raw)}')
    out: dict[int, str] = {}
    for key in raw:
        text = str(key).strip()
        if not text.isdigit() or int(text) >= blocks:
            raise c.error(fld, f"expected block indexes from 0 to {blocks - 1} (the stage has "
                          f"{blocks} blocks); got {key!r}")  # fmt: skip
        out[int(text)] = c.choice(raw, key, f"{fld}.{text}", SHORTCUT_POLICIES)
    return tuple(sorted(out.items()))


def _count_list(counts: list[int]) -> str:
    shown = ", ".join(str(n) for n in counts[:8])
    return shown + (f", ... ({len(counts)} stages)" if len(counts) > 8 else "")


def _parse_stem(c: _Checker, data: dict, first_block: str) -> StemSpec:
    raw = data.get("stem", {})
    if isinstance(raw, str):  # `stem = "cifar"`: the preset alone
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise c.error(
            "stem", f'expected a table ([stem] with kind = "imagenet" or "cifar"); got {_show(raw)}'
        )
    c.keys(raw, _STEM_FIELDS, "stem")
    kind = c.choice(raw, "kind", "stem.kind", STEM_KINDS, "imagenet")
    preset = _STEM_PRESETS[kind]
    return StemSpec(
        kind=kind,
        channels=c.integer(raw, "channels", "stem.channels", preset["channels"], hi=_MAX_CHANNELS),
        kernel=c.integer(raw, "kernel", "stem.kernel", preset["kernel"], hi=15),
        stride=c.integer(raw, "stride", "stem.stride", preset["stride"], hi=4),
        pool=c.boolean(raw, "pool", "stem.pool", preset["pool"]),
        # Pre-activation blocks normalise their own input, so their stem is a bare conv by default.
        norm=c.boolean(raw, "norm", "stem.norm", not is_preact(first_block)),
    )


def _parse_input(c: _Checker, value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
            raise c.error("input", f"expected a list of integers such as [3, 224, 224]; got {_show(value)}")
    elif not isinstance(value, str):
        raise c.error("input", f'expected a shape such as "3x224x224"; got {_show(value)}')
    try:
        shape = parse_shape(value)
    except ShapeSyntaxError as e:
        raise c.error("input", str(e)) from None
    if len(shape) != 4:
        raise c.error("input", f"expected C×H×W or N×C×H×W (an image batch); got {format_shape(shape)}")
    return shape


def _check_blocks(c: _Checker, spec: NetSpec) -> None:
    """Checks that need a stage's effective block kind (its own or the net's)."""
    for i, stage in enumerate(spec.stages):
        block = spec.block_of(i)
        w = f"stages[{i}]"
        if block in ("basic", "preact") and (spec.groups != 1 or spec.width_per_group != 64):
            raise c.error(
                "groups" if spec.groups != 1 else "width_per_group",
                f"grouped or wider convs need bottleneck blocks, but {w} uses {block!r} blocks "
                f"(groups = {spec.groups}, width_per_group = {spec.width_per_group}); basic blocks "
                "take groups = 1 and width_per_group = 64, as in torchvision",
            )
        if EXPANSION[block] == 4 and int(stage.width * (spec.width_per_group / 64.0)) < 1:
            raise c.error(
                f"{w}.width", f"width {stage.width} with width_per_group = {spec.width_per_group} "
                f"gives int({stage.width} * {spec.width_per_group} / 64) = 0 channels per group",
            )  # fmt: skip


# ------------------------------------------------------------------------------------- messages


def _is_control(ch: str) -> bool:
    return ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_type_name(value)})"


def _did_you_mean(value: str, choices: tuple[str, ...]) -> str:
    lowered = {ch.lower(): ch for ch in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f" — did you mean {lowered[close[0]]!r}?" if close else ""


_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_\-\"'.]+)\s*\]")
_FIELD = re.compile(r"(stem|stages)(?:\[(\d+)\])?(?:\.([\w-]+))?|([\w-]+)")


def _toml_line(text: str, fld: str) -> int | None:
    """Best-effort line of ``fld`` ("stages[2].stride", "stem.kind", "block") in a TOML text.

    tomllib reports no positions for values, but a spec is a few flat tables, so following the
    headers is enough; anything unusual (inline tables, dotted keys) just gives no line.
    """
    m = _FIELD.fullmatch(fld)
    if not m:
        return None
    table, index, key = m.group(1), m.group(2), m.group(3)
    if m.group(4):
        key = m.group(4)
    want = (table, int(index) if index is not None else None)
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=") if key else None
    current: tuple[str | None, int | None] = (None, None)
    n_stages = -1
    for n, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h:
            name = h.group(2).strip("\"'")
            if h.group(1) and name == "stages":
                n_stages += 1
                current = ("stages", n_stages)
            else:
                current = (name, None)
            if key_re is None and current[0] == table and want[1] in (None, current[1]):
                return n
        elif key_re is None:
            if current == (None, None) and re.match(rf"^\s*{table}\s*=", line):
                return n
        elif current == want and key_re.match(line):
            return n
    return None
