"""The network builder's model, headless: an editable spec with validation, undo and files.

The builder edits a *draft*: the plain data of a spec file (``spec_to_dict`` form), which may be
invalid while the user types. Every edit goes through :meth:`SpecBuilder.set_field` (or a stage
operation), is one undo step (typing into one field merges into one step, as Qt's undo stack
merges commands), and is validated at once: each field gets the reason it is wrong, in the spec
parser's own words, so the builder and spec files can never disagree about what is valid. Whoever
shows the builder subscribes to its events; nothing here knows about Qt.

Field paths are the spec's dotted paths: ``block``, ``input``, ``stem.kind``, ``stages[1].width``,
``stages[1].block_shortcuts.0`` (one block's shortcut policy; ``None`` removes the override).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResvizError, SpecError
from ..sources.spec import _STEM_PRESETS, NetSpec, is_preact, load_spec, parse_spec, spec_to_dict

_DEFAULT_INPUT = {"imagenet": "1x3x224x224", "cifar": "1x3x32x32"}
_DEFAULT_CLASSES = {"imagenet": 1000, "cifar": 10}
_INT_FIELDS = re.compile(r"^(classes|groups|width_per_group|stem\.(channels|kernel|stride)|"
                         r"stages\[\d+\]\.(blocks|width|stride|padding))$")  # fmt: skip
_PATH_PART = re.compile(r"([A-Za-z_]+)(?:\[(\d+)\])?")
_MAX_ROUNDS = 64  # fields checked per validation; a spec has far fewer


@dataclass(frozen=True)
class BuilderEvent:
    """What changed: ``kind`` is 'edit', 'undo', 'redo', 'new', 'open' or 'save'."""

    kind: str
    path: str | None = None
    label: str = ""


@dataclass
class _Step:
    label: str
    before: dict
    after: dict
    merge_key: str | None  # consecutive edits of this field fold into this step


def empty_draft() -> dict:
    """An empty net: a CIFAR stem and no stages yet (the user adds them)."""
    return {"name": "my-resnet", "input": _DEFAULT_INPUT["cifar"], "classes": 10, "block": "basic",
            "shortcut": "B", "stem": {"kind": "cifar"}, "stages": []}  # fmt: skip


def draft_of(spec: NetSpec) -> dict:
    """A spec as builder data. The stem keeps only what differs from its preset, so changing the
    stem kind or the block kind (pre-activation stems have no BN) brings the right defaults."""
    data = spec_to_dict(spec)
    for key, default in (("zero_init_residual", False), ("groups", 1), ("width_per_group", 64)):
        if data.get(key) == default:
            del data[key]
    stem = data["stem"]
    preset = dict(_STEM_PRESETS[spec.stem.kind], norm=not is_preact(spec.block_of(0)))
    data["stem"] = {"kind": stem["kind"]} | {k: v for k, v in stem.items() if k in preset and preset[k] != v}
    return data


def field_errors(draft: dict) -> tuple[dict[str, str], NetSpec | None]:
    """Every field that is wrong, with the reason; and the spec when there is none.

    The spec parser stops at the first problem, so each wrong field is set aside (its key removed,
    or a neutral value for a required one) and the rest parsed again, until it parses.
    """
    data = copy.deepcopy(draft)
    errors: dict[str, str] = {}
    for _ in range(_MAX_ROUNDS):
        try:
            spec = parse_spec(data)
            return errors, (spec if not errors else None)
        except SpecError as e:
            fld = e.field or ""
            if fld in errors or not _set_aside(data, fld):
                errors.setdefault(fld, _reason(e))
                return errors, None
            errors[fld] = _reason(e)
    return errors, None


def _reason(e: SpecError) -> str:
    prefix = "<spec>: " + (f"field '{e.field}': " if e.field else "")
    text = str(e)
    return text[len(prefix) :] if text.startswith(prefix) else text


def _set_aside(data: dict, fld: str) -> bool:
    """Make field ``fld`` valid (default or neutral value) so that later fields can be checked."""
    if fld in ("", "stages"):
        return False
    parent, key = _locate(data, fld, create=False)
    if parent is None:
        return False
    if re.fullmatch(r"stages\[\d+\]\.(blocks|width)", fld):
        parent[key] = 1 if key == "blocks" else 64
        return True
    if isinstance(parent, dict) and key in parent:
        del parent[key]
        return True
    return False


def _locate(data: dict, path: str, create: bool) -> tuple[Any, Any]:
    """The container holding ``path``'s value and its key (``None, None`` where there is none)."""
    parts = path.split(".")
    node: Any = data
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        slot = _slot(node, part, last=last, create=create)
        if slot is None:
            return None, None
        if last:
            return slot
        container, key = slot
        node = container.get(key) if isinstance(container, dict) else container[key]
    return None, None


def _slot(node: Any, part: str, *, last: bool, create: bool) -> tuple[Any, Any] | None:
    """The container and key one part of a path (``stages[2]``, ``stem``, ``1``) names in
    ``node``; None where there is none. A table on the way to the last part is made when
    ``create``."""
    if isinstance(node, dict) and part.isdigit():
        return node, part  # block_shortcuts keys are strings, as in TOML and JSON
    m = _PATH_PART.fullmatch(part)
    if m is None or not isinstance(node, dict):
        return None
    name, index = m.group(1), m.group(2)
    if index is not None:
        seq = node.get(name)
        if not isinstance(seq, list) or int(index) >= len(seq):
            return None
        return seq, int(index)
    if not last and not isinstance(node.get(name), dict):
        if not create:
            return None
        node[name] = {}
    return node, name


def _coerce(path: str, value: Any) -> Any:
    """Typed text for a number field becomes the number; anything else stays for the parser to
    reject with its reason ("expected an integer; got '12a'")."""
    if isinstance(value, str) and _INT_FIELDS.match(path):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
    return value


class SpecBuilder:
    """The editable spec behind the builder panel (see the module docstring)."""

    def __init__(self, draft: dict | None = None):
        self._listeners: list[Callable[[BuilderEvent], None]] = []
        self._reset(draft if draft is not None else empty_draft(), path=None, text=None, kind="new")

    # ------------------------------------------------------------------ state

    @property
    def draft(self) -> dict:
        """The current data (a copy: edit through the builder, so undo sees every change)."""
        return copy.deepcopy(self._draft)

    @property
    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    @property
    def valid(self) -> bool:
        return self._spec is not None

    @property
    def spec(self) -> NetSpec | None:
        """The spec the draft describes, or None while a field is wrong."""
        return self._spec

    @property
    def last_valid_spec(self) -> NetSpec | None:
        """The most recent spec the draft described (to keep drawing while a field is wrong)."""
        return self._last_valid

    @property
    def dirty(self) -> bool:
        """Whether the draft differs from what was last opened or saved."""
        return self._draft != self._saved

    @property
    def path(self) -> Path | None:
        return self._path

    def value(self, path: str, default: Any = None) -> Any:
        parent, key = _locate(self._draft, path, create=False)
        if parent is None:
            return default
        if isinstance(parent, list):
            return copy.deepcopy(parent[key])
        return copy.deepcopy(parent.get(key, default))

    def shown(self, path: str) -> Any:
        """What a field shows: the value written, else its default in the (last valid) spec."""
        parent, key = _locate(self._draft, path, create=False)
        if parent is not None and (isinstance(parent, list) or key in parent):
            return self.value(path)
        spec = self._spec or self._last_valid
        if spec is None:
            return None
        if path == "stem.kind":
            return spec.stem.kind
        full = spec_to_dict(spec)
        parent, key = _locate(full, path, create=False)
        if parent is not None and (isinstance(parent, list) or key in parent):
            return parent[key]
        m = re.fullmatch(r"stages\[(\d+)\]\.(shortcut|block|padding|pool_ceil_mode)", path)
        if m and int(m.group(1)) < len(spec.stages):
            st = spec.stages[int(m.group(1))]
            return {"shortcut": st.shortcut, "block": st.block, "padding": st.padding,
                    "pool_ceil_mode": st.pool_ceil_mode}[m.group(2)]  # fmt: skip
        return None

    def stage_count(self) -> int:
        return len(self._draft.get("stages") or [])

    def subscribe(self, listener: Callable[[BuilderEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` after every change; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # ------------------------------------------------------------------ edits

    def set_field(self, path: str, value: Any, *, merge: bool = True) -> None:
        """Set field ``path`` to ``value`` (``None``: remove it, so its default applies)."""
        value = _coerce(path, value)
        if self.value(path) == value and value is not None:
            return
        if path == "stem.kind":
            self._edit(f"stem: {value}", lambda d: self._change_stem(d, value), merge_key=None, path=path)
            return
        if path == "block":
            self._edit(f"block: {value}", lambda d: self._change_block(d, value), merge_key=None, path=path)
            return

        def change(d: dict) -> None:
            parent, key = _locate(d, path, create=True)
            if parent is None:
                raise ResvizError(f"the builder has no field {path!r}")
            if value is None:
                if isinstance(parent, dict):
                    parent.pop(key, None)
                    if path.count(".") >= 2 and not parent:  # an empty block_shortcuts table
                        grand, gkey = _locate(d, path.rpartition(".")[0], create=False)
                        if grand is not None:
                            grand.pop(gkey, None)
            else:
                parent[key] = value

        self._edit(f"{path} = {value!r}", change, merge_key=path if merge else None, path=path)

    def add_stage(self, index: int | None = None) -> int:
        """Add a stage (at the end by default): twice the width of the one before, stride 2."""
        stages = self._draft.get("stages") or []
        i = len(stages) if index is None else max(0, min(index, len(stages)))
        if stages:
            prev = stages[max(0, i - 1)]
            width = prev.get("width", 64) * 2 if isinstance(prev.get("width"), int) else 64
            new = {"blocks": 2, "width": min(width, 65536), "stride": 2}
        else:
            stem = self._draft.get("stem") or {}
            kind = stem.get("kind", "imagenet") if isinstance(stem, dict) else "imagenet"
            channels = _STEM_PRESETS.get(kind, _STEM_PRESETS["imagenet"])["channels"]
            new = {"blocks": 2, "width": stem.get("channels", channels) if isinstance(stem, dict) else channels,
                   "stride": 1}  # fmt: skip

        def change(d: dict) -> None:
            d.setdefault("stages", []).insert(i, new)

        self._edit(f"add stage {i + 1}", change, merge_key=None, path=f"stages[{i}]")
        return i

    def remove_stage(self, index: int) -> None:
        if not 0 <= index < self.stage_count():
            raise ResvizError(f"there is no stage {index + 1} to remove")
        self._edit(f"remove stage {index + 1}", lambda d: d["stages"].pop(index), merge_key=None,
                   path=f"stages[{index}]")  # fmt: skip

    def move_stage(self, index: int, to: int) -> None:
        n = self.stage_count()
        if not (0 <= index < n and 0 <= to < n) or index == to:
            return

        def change(d: dict) -> None:
            d["stages"].insert(to, d["stages"].pop(index))

        self._edit(f"move stage {index + 1} to {to + 1}", change, merge_key=None, path=f"stages[{to}]")

    def apply_spec_edits(self, edits, label: str = "apply fix") -> None:
        """Apply :class:`~resviz.core.fixes.spec_edits.SpecEdit` s (a fix) as one undoable step."""
        from ..fixes.spec_edits import REMOVE

        edits = list(edits)

        def change(d: dict) -> None:
            for e in edits:
                table = d["stages"][e.stage]
                if e.block is not None:
                    overrides = table.setdefault("block_shortcuts", {})
                    if e.value is REMOVE:
                        overrides.pop(str(e.block), None)
                    else:
                        overrides[str(e.block)] = e.value
                    if not overrides:
                        del table["block_shortcuts"]
                elif e.value is REMOVE:
                    table.pop(e.field, None)
                else:
                    table[e.field] = e.value

        self._edit(label, change, merge_key=None, path=edits[0].path if edits else None)

    # ------------------------------------------------------------------ undo

    @property
    def can_undo(self) -> bool:
        return self._index > 0

    @property
    def can_redo(self) -> bool:
        return self._index < len(self._steps)

    def undo_label(self) -> str:
        return self._steps[self._index - 1].label if self.can_undo else ""

    def redo_label(self) -> str:
        return self._steps[self._index].label if self.can_redo else ""

    def undo(self) -> bool:
        if not self.can_undo:
            return False
        self._index -= 1
        step = self._steps[self._index]
        self._set_draft(step.before)
        self._emit(BuilderEvent("undo", None, step.label))
        return True

    def redo(self) -> bool:
        if not self.can_redo:
            return False
        step = self._steps[self._index]
        self._index += 1
        self._set_draft(step.after)
        self._emit(BuilderEvent("redo", None, step.label))
        return True

    def end_merge(self) -> None:
        """The user left the field: the next edit of it is a new undo step."""
        if self._steps and self._index == len(self._steps):
            self._steps[-1].merge_key = None

    # ------------------------------------------------------------------ files

    def new(self, draft: dict | None = None) -> None:
        """Start over from ``draft`` (default: an empty net); not dirty until edited."""
        self._reset(copy.deepcopy(draft) if draft is not None else empty_draft(), None, None, "new")

    def new_from_spec(self, spec: NetSpec) -> None:
        """Start from a spec (a zoo entry): its data, no file yet."""
        self._reset(draft_of(spec), None, None, "new")

    def open(self, path: str | Path) -> None:
        """Read a spec file; a SpecError (naming file, line, field) leaves the builder as it was."""
        path = Path(path)
        load_spec(path)  # validates, with the file's own line numbers in any message
        text = path.read_text(encoding="utf-8-sig")
        # the file's own data, not a normalised copy: saving then changes only what was edited
        data = json.loads(text) if text.lstrip().startswith("{") else _tomllib().loads(text)
        self._reset(data, path, text, "open")

    def save(self, path: str | Path | None = None) -> Path:
        """Write the spec (atomically) to ``path`` or to the file it came from.

        A TOML file opened in the builder keeps its comments and layout where its fields survive;
        JSON is written in the draft's key order. Refused (ResvizError) while a field is wrong.
        """
        from ..files import atomic_write_text

        target = Path(path) if path is not None else self._path
        if target is None:
            raise ResvizError("no file to save to yet: choose one (Save As)")
        if self._spec is None:
            first = next(iter(self._errors.items()), ("", "invalid"))
            raise ResvizError(f"cannot save {target.name}: field '{first[0]}' is wrong: {first[1]}")
        fmt = "json" if target.suffix.lower() == ".json" else "toml"
        data = self._saveable()
        if fmt == "json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            text = _toml_text(data, self._text if self._is_toml_source() else None)
        atomic_write_text(target, text)
        self._path, self._text, self._saved = (
            target,
            text if fmt == "toml" else None,
            copy.deepcopy(self._draft),
        )
        self._emit(BuilderEvent("save", str(target)))
        return target

    # ------------------------------------------------------------------ internals

    def _is_toml_source(self) -> bool:
        return self._text is not None and self._path is not None and self._path.suffix.lower() != ".json"

    def _saveable(self) -> dict:
        data = copy.deepcopy(self._draft)
        if isinstance(data.get("stem"), dict) and list(data["stem"]) == ["kind"]:
            data["stem"] = {"kind": data["stem"]["kind"]}
        return data

    def _reset(self, draft: dict, path: Path | None, text: str | None, kind: str) -> None:
        self._draft = draft
        self._saved = copy.deepcopy(draft)
        self._path = path
        self._text = text
        self._steps: list[_Step] = []
        self._index = 0
        self._last_valid: NetSpec | None = None
        self._validate()
        self._emit(BuilderEvent(kind, str(path) if path else None))

    def _edit(
        self, label: str, change: Callable[[dict], None], merge_key: str | None, path: str | None
    ) -> None:
        before = copy.deepcopy(self._draft)
        after = copy.deepcopy(self._draft)
        change(after)
        if after == before:
            return
        del self._steps[self._index :]
        top = self._steps[-1] if self._steps else None
        if merge_key is not None and top is not None and top.merge_key == merge_key:
            top.after, top.label = after, label
        else:
            self._steps.append(_Step(label, before, after, merge_key))
        self._index = len(self._steps)
        self._set_draft(after)
        self._emit(BuilderEvent("edit", path, label))

    def _set_draft(self, draft: dict) -> None:
        self._draft = copy.deepcopy(draft)
        self._validate()

    def _validate(self) -> None:
        self._errors, self._spec = field_errors(self._draft)
        if self._spec is not None:
            self._last_valid = self._spec

    def _emit(self, event: BuilderEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    @staticmethod
    def _change_stem(d: dict, kind: Any) -> None:
        stem = d.get("stem") or {}
        old = (
            stem if isinstance(stem, str) else stem.get("kind", "imagenet") if isinstance(stem, dict) else ""
        )
        old = str(old).strip().lower()
        d["stem"] = {"kind": kind}
        if kind in _DEFAULT_INPUT and old in _DEFAULT_INPUT:
            # the input and classes follow the stem while they are the old stem's defaults
            if d.get("input") in (_DEFAULT_INPUT[old], _DEFAULT_INPUT[old][2:]):
                d["input"] = _DEFAULT_INPUT[kind]
            if d.get("classes") == _DEFAULT_CLASSES[old]:
                d["classes"] = _DEFAULT_CLASSES[kind]

    @staticmethod
    def _change_block(d: dict, kind: Any) -> None:
        d["block"] = kind
        if kind in ("basic", "preact"):  # basic blocks take no groups or wider convs (torchvision)
            d["groups"], d["width_per_group"] = 1, 64


def _tomllib():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib


def _toml_text(data: dict, original: str | None) -> str:
    """TOML for ``data``; with ``original``, that text updated in place so comments stay."""
    import tomlkit

    if original is None:
        return tomlkit.dumps(data)
    try:
        doc = tomlkit.parse(original)
    except tomlkit.exceptions.TOMLKitError:  # TOML that tomllib read but tomlkit cannot: written fresh
        return tomlkit.dumps(data)
    _merge_into(doc, data)
    return tomlkit.dumps(doc)


def _merge_into(table, data: dict) -> None:
    """Make tomlkit ``table`` hold ``data``, touching only what differs (comments survive)."""
    import tomlkit

    for key in [k for k in table if k not in data]:
        del table[key]
    for key, value in data.items():
        old = table.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            _merge_into(old, value)
        elif isinstance(value, list) and isinstance(old, list) and all(isinstance(v, dict) for v in value) \
                and all(isinstance(v, dict) for v in old):  # fmt: skip
            for i, item in enumerate(value):
                if i < len(old):
                    _merge_into(old[i], item)
                else:
                    old.append(tomlkit.item(item) if not isinstance(old, tomlkit.items.AoT) else item)
            while len(old) > len(value):
                del old[len(value)]
        elif old != value:
            table[key] = value
    return None
