"""Fixes for spec-built nets, said as spec edits rather than PyTorch code.

A spec user cannot paste ``nn.Sequential(...)`` anywhere; what they can change is a field. For
each mismatch of a net built from a :class:`~resviz.core.sources.spec.NetSpec`, this module reads the
diagnosis (:mod:`resviz.core.analysis.diagnose`: cause, fix, culprits), maps it to the spec fields that
produce those layers — a stage's ``padding``, its ``pool_ceil_mode``, the block's shortcut policy —
and offers an edit only after re-analysing the edited spec and seeing that block come out clean
with nothing new broken. The same edits are applied to the user's file text: TOML through tomlkit,
which keeps comments, order and layout; JSON re-serialised in the file's own key order.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResvizError, SpecError
from ..sources.spec import NetSpec, StageSpec, load_spec, parse_spec

PROJECTION = "B"  # 1x1 conv + BN where the shape changes: what the diagnosis's projection is
_POLICY_WORDS = {
    "A": "zero-padding where the shape changes",
    "B": "a 1×1 conv + BN projection where the shape changes",
    "C": "a 1×1 conv + BN projection in every block",
    "D": "2×2 average pool + 1×1 conv + BN where the shape changes",
    "identity": "the identity everywhere",
    "none": "no shortcut",
}


class _Remove:
    """The value of an edit that deletes the field, so that its default applies."""

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Any = _Remove()
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StageSpec)}


@dataclass(frozen=True)
class SpecEdit:
    """One field of a stage: set to ``value``, or deleted (``REMOVE``) to take its default.

    ``block`` set: the shortcut override of that one block (``block_shortcuts``).
    """

    stage: int
    field: str  # 'shortcut' | 'padding' | 'pool_ceil_mode'
    value: Any
    block: int | None = None
    old: Any = None  # the value it replaces, for the message

    @property
    def path(self) -> str:
        if self.block is not None:
            return f"stages[{self.stage}].block_shortcuts.{self.block}"
        return f"stages[{self.stage}].{self.field}"

    def describe(self) -> str:
        if self.value is REMOVE:
            default = _DEFAULTS[self.field]
            return f"delete `{self.field} = {_toml(self.old)}` from stages[{self.stage}] (back to the default, {_toml(default)})"
        was = f" (was {_toml(self.old)})" if self.old is not None else ""
        text = f"{self.path} = {_toml(self.value)}{was}"
        if self.field == "shortcut":
            text += f": {_POLICY_WORDS[self.value]}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report (``mismatches[].spec_edits`` in ``resviz check --json``)."""
        return {"field": self.path, "value": None if self.value is REMOVE else self.value,
                "delete": self.value is REMOVE, "text": self.describe()}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpecEdit:
        m = _EDIT_PATH.fullmatch(d["field"])
        if m is None:
            raise ValueError(f"not a spec edit field: {d['field']!r}")
        stage, name, block = int(m.group(1)), m.group(2), m.group(3)
        value = REMOVE if d.get("delete") else d["value"]
        if block is not None:
            return cls(stage, "shortcut", value, block=int(block))
        return cls(stage, name, value)


_EDIT_PATH = re.compile(r"stages\[(\d+)\]\.(shortcut|padding|pool_ceil_mode|block_shortcuts)(?:\.(\d+))?")


@dataclass(frozen=True)
class SpecFix:
    """The edits that mend the mismatch in ``block``, checked by re-analysing the edited spec."""

    block: str
    edits: tuple[SpecEdit, ...]

    def describe(self) -> str:
        return "in the spec: " + "; ".join(e.describe() for e in self.edits)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


# ------------------------------------------------------------------------------ applying edits


def apply_edits(spec: NetSpec, edits: Iterable[SpecEdit]) -> NetSpec:
    """``spec`` with ``edits`` applied (a new spec; specs are immutable)."""
    stages = list(spec.stages)
    for e in edits:
        st = stages[e.stage]
        if e.block is not None:
            overrides = dict(st.block_shortcuts)
            if e.value is REMOVE:
                overrides.pop(e.block, None)
            else:
                overrides[e.block] = e.value
            stages[e.stage] = dataclasses.replace(st, block_shortcuts=tuple(sorted(overrides.items())))
        else:
            value = (None if e.field == "shortcut" else _DEFAULTS[e.field]) if e.value is REMOVE else e.value
            stages[e.stage] = dataclasses.replace(st, **{e.field: value})
    return dataclasses.replace(spec, stages=tuple(stages))


def edit_text(text: str, fmt: str, edits: Iterable[SpecEdit]) -> str:
    """The spec file's text with ``edits`` made: TOML surgically (comments and order kept), JSON
    re-serialised in the file's key order."""
    if fmt == "toml":
        import tomlkit

        doc = tomlkit.parse(text)
        _edit_data(doc, edits, tomlkit.inline_table)
        return tomlkit.dumps(doc)
    data = json.loads(text)
    _edit_data(data, edits, dict)
    indent = _json_indent(text)
    return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"


def _json_indent(text: str) -> int | None:
    m = re.search(r"\n( +)\S", text)
    return len(m.group(1)) if m else None


def _edit_data(data, edits: Iterable[SpecEdit], new_table) -> None:
    stages = data["stages"]
    for e in edits:
        table = stages[e.stage]
        if e.block is not None:
            key = "block_shortcuts"
            if key not in table:
                table[key] = new_table()
            overrides = table[key]
            existing = [k for k in overrides if str(k).strip() == str(e.block)]
            for k in existing[1:] if e.value is not REMOVE else existing:
                del overrides[k]
            if e.value is not REMOVE:
                overrides[existing[0] if existing else str(e.block)] = e.value  # in place: keeps layout
            if not overrides:
                del table[key]
        elif e.value is REMOVE:
            if e.field in table:
                del table[e.field]
        else:
            table[e.field] = e.value


# ------------------------------------------------------------------------ deriving edits


_BLOCK_NAME = re.compile(r"^layer(\d+)\.(\d+)$")


def block_position(spec: NetSpec, block: str) -> tuple[int, int] | None:
    """``"layer2.0"`` → (stage 1, block 0) in a net built from ``spec``; None for anything else."""
    m = _BLOCK_NAME.match(block)
    if not m:
        return None
    i, j = int(m.group(1)) - 1, int(m.group(2))
    if 0 <= i < len(spec.stages) and 0 <= j < spec.stages[i].blocks:
        return i, j
    return None


def _shortcut_edit(spec: NetSpec, i: int, j: int, policy: str) -> SpecEdit:
    """Give block (i, j) ``policy`` where its current policy comes from: its own override, else
    its stage (whose other blocks take the same policy; B only projects where the shape changes)."""
    st = spec.stages[i]
    overrides = dict(st.block_shortcuts)
    if j in overrides:
        return SpecEdit(i, "shortcut", policy, block=j, old=overrides[j])
    return SpecEdit(i, "shortcut", policy, old=st.shortcut if st.shortcut is not None else None)


def candidate_edits(spec: NetSpec, mismatch) -> list[list[SpecEdit]]:
    """Edit sets worth trying for ``mismatch``, most specific first, read from its diagnosis."""
    pos = block_position(spec, mismatch.block)
    if pos is None:
        return []
    i, j = pos
    st = spec.stages[i]
    said = f"{mismatch.cause}\n{mismatch.fix}"
    policy = spec.shortcut_of_block(i, j)
    padding = SpecEdit(i, "padding", REMOVE, old=st.padding) if st.padding != 1 else None
    ceil = SpecEdit(i, "pool_ceil_mode", True, old=False) if not st.pool_ceil_mode and policy == "D" else None
    projection = _shortcut_edit(spec, i, j, PROJECTION) if policy != PROJECTION and policy != "none" else None

    named: list[SpecEdit] = []
    if padding is not None and "padding" in said:
        named.append(padding)
    if ceil is not None and ("ceil_mode" in said or "rounds" in said):
        named.append(ceil)
    if projection is not None and (
        "nn.Sequential(" in mismatch.fix or "projection" in said or "identity" in said
        or "zero-pad" in said or "channels" in said
    ):  # fmt: skip
        named.append(projection)
    everything = [e for e in (padding, ceil, projection) if e is not None]
    sets = [[e] for e in named] + [named, everything]
    out: list[list[SpecEdit]] = []
    for s in sets:
        if s and s not in out:
            out.append(s)
    return out


def _analyse(spec: NetSpec, input_shape):
    from ..analysis.pipeline import analyze
    from ..sources.spec import build

    try:
        model = build(dataclasses.replace(spec, input_shape=tuple(input_shape)), device="meta")
    except (ValueError, RuntimeError):
        return None
    return analyze(model, tuple(input_shape), name=spec.name)


def _problems(report) -> tuple[set[str], int]:
    return {m.block for m in report.mismatches}, len(report.errors) + (0 if report.complete else 1)


def fix_for(spec: NetSpec, report, mismatch, cache: dict | None = None, *, follow: int = 1) -> SpecFix | None:
    """The verified spec edits that mend ``mismatch`` (found in ``report`` of ``spec``), or None.

    Verified means: the edited spec, re-analysed at the report's input, has no mismatch in that
    block, no mismatch in a block that was clean, and no more shape errors than before. An edit
    can mend its block and uncover a mismatch further on that two errors had been cancelling (a
    stage's padding fixed, the next stage's pooling now rounds differently): then the uncovered
    blocks' own verified edits are added (``follow`` levels deep), so the fix offered is whole.
    """
    before_blocks, before_errors = _problems(report)
    cache = {} if cache is None else cache  # edits → re-analysis: one stage's blocks share them
    for edits in candidate_edits(spec, mismatch):
        after = _analysed(spec, edits, report.input_shape, cache)
        if after is None:
            continue
        blocks, errors = _problems(after)
        if mismatch.block in blocks or errors > before_errors:
            continue
        if blocks <= before_blocks:
            return SpecFix(mismatch.block, tuple(edits))
        if follow > 0:
            whole = _with_uncovered_fixes(spec, edits, after, blocks - before_blocks, follow)
            final = None if whole is None else _analysed(spec, whole, report.input_shape, cache)
            if final is not None:
                blocks, errors = _problems(final)
                if mismatch.block not in blocks and blocks <= before_blocks and errors <= before_errors:
                    return SpecFix(mismatch.block, tuple(whole))
    return None


def _analysed(spec: NetSpec, edits: list[SpecEdit], input_shape, cache: dict):
    key = tuple(edits)
    if key not in cache:
        cache[key] = _analyse(apply_edits(spec, edits), input_shape)
    return cache[key]


def _with_uncovered_fixes(spec: NetSpec, edits: list[SpecEdit], after, uncovered: set[str],
                          follow: int) -> list[SpecEdit] | None:  # fmt: skip
    """``edits`` plus the verified edits of each block they uncovered (in ``after``, the report of
    the edited spec), or None when one of those blocks has none."""
    edited = apply_edits(spec, edits)
    whole = list(edits)
    for m in after.mismatches:
        if m.block not in uncovered:
            continue
        more = fix_for(edited, after, m, follow=follow - 1)
        if more is None:
            return None
        whole += [e for e in more.edits if all(e.path != w.path for w in whole)]
    return whole


def attach_spec_fixes(spec: NetSpec, report) -> None:
    """Say each mismatch's fix as a spec edit: ``fix`` becomes the edit, the PyTorch code moves to
    ``code_fix`` and the edits themselves to ``spec_edits``. Mismatches without a verified edit
    keep their code fix."""
    cache: dict = {}
    for m in report.mismatches:
        if m.spec_edits or m.code_fix:
            continue  # done already
        m.code_fix = m.fix
        fix = fix_for(spec, report, m, cache)
        if fix is not None:
            m.fix = fix.describe()
            m.spec_edits = [e.to_dict() for e in fix.edits]
            # the title and place of the fix now read as the spec edit too
            m.fix_title = "Edit the spec: " + ", ".join(e.path for e in fix.edits)
            m.fix_where = "the spec file: " + ", ".join(e.path for e in fix.edits)


def edits_of(mismatch) -> list[SpecEdit]:
    """The :class:`SpecEdit` list :func:`attach_spec_fixes` stored on ``mismatch`` (maybe empty)."""
    return [SpecEdit.from_dict(d) for d in getattr(mismatch, "spec_edits", None) or []]


@dataclass
class FixedSpec:
    spec: NetSpec
    edits: list[SpecEdit]
    remaining: list[str]  # blocks still mismatched (no verified edit found)


def fix_all(spec: NetSpec, input_shape=None, *, rounds: int = 4) -> FixedSpec:
    """Edit ``spec`` until it analyses clean at ``input_shape`` (default: its own), or no verified
    edit is left to make. A later block can only be judged once an earlier one is mended, hence
    rounds."""
    shape = tuple(input_shape or spec.input_shape)
    edits: list[SpecEdit] = []
    current = spec
    report = _analyse(current, shape)
    for _ in range(rounds):
        if report is None or not report.mismatches:
            break
        new: list[SpecEdit] = []
        cache: dict = {}
        for m in report.mismatches:
            fix = fix_for(current, report, m, cache)
            if fix is None:
                continue
            for e in fix.edits:
                if all(e.path != n.path for n in new):
                    new.append(e)
        if not new:
            break
        current = apply_edits(current, new)
        edits += new
        report = _analyse(current, shape)
    remaining = [m.block for m in report.mismatches] if report is not None else []
    return FixedSpec(current, _merge(edits), remaining)


def _merge(edits: list[SpecEdit]) -> list[SpecEdit]:
    """One edit per field: the last value, described against the first old value."""
    out: dict[str, SpecEdit] = {}
    for e in edits:
        first = out.get(e.path)
        out[e.path] = dataclasses.replace(e, old=first.old) if first is not None else e
    return list(out.values())


# ------------------------------------------------------------------------------ the file


def fix_spec_file(source: str | Path, out: str | Path, input_shape=None) -> FixedSpec:
    """Write ``source``'s spec, corrected, to ``out`` (atomically); ``source`` is never touched.

    Same format in and out: the user's text is edited (TOML keeps comments and order). Otherwise
    the corrected spec is written out in ``out``'s format. Raises ResvizError when ``out`` is the
    input file or the edited text does not read back as the corrected spec.
    """
    from ..files import atomic_write_text
    from ..sources.spec import spec_to_dict

    src, dst = Path(source), Path(out)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ResvizError(f"--fix-spec {out}: that is the spec being checked; resviz never "
                          "rewrites its input, so name another file")  # fmt: skip
    spec = load_spec(src)
    fixed = fix_all(spec, input_shape)
    fmt_in = _format(src, src.read_text(encoding="utf-8-sig"))
    fmt_out = "json" if dst.suffix.lower() == ".json" else "toml" if dst.suffix.lower() == ".toml" else fmt_in
    if fmt_out == fmt_in:
        text = edit_text(src.read_text(encoding="utf-8-sig"), fmt_in, fixed.edits)
    elif fmt_out == "json":
        text = json.dumps(spec_to_dict(fixed.spec), indent=2) + "\n"
    else:
        import tomlkit

        text = tomlkit.dumps(spec_to_dict(fixed.spec))
    check = _read_back(text, fmt_out, dst)
    if dataclasses.replace(check, name=fixed.spec.name) != fixed.spec:
        raise ResvizError(f"--fix-spec: the edited {src.name} does not read back as the corrected spec; "
                          "nothing written")  # fmt: skip
    atomic_write_text(dst, text)
    return fixed


def _format(path: Path, text: str) -> str:
    if path.suffix.lower() in (".json", ".toml"):
        return path.suffix.lower()[1:]
    return "json" if text.lstrip().startswith("{") else "toml"


def _read_back(text: str, fmt: str, where: Path) -> NetSpec:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    data = json.loads(text) if fmt == "json" else tomllib.loads(text)
    try:
        return parse_spec(data, path=where)
    except SpecError as e:
        raise ResvizError(
            f"--fix-spec: the corrected spec does not validate ({e}); nothing written"
        ) from None
