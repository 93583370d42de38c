"""Fixes for spec-built nets are spec edits: said in `resviz check`, written by `--fix-spec`, and
checked by re-analysing the edited spec — for the shipped broken specs and random broken ones."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resviz.cli import main
from resviz.core.analysis.pipeline import analyze
from resviz.core.fixes.spec_edits import REMOVE, SpecEdit, apply_edits, edit_text, edits_of, fix_all
from resviz.core.session.opened_model import open_model
from resviz.core.sources.spec import build, load_spec, parse_spec

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def clean(spec, shape=None) -> bool:
    shape = tuple(shape or spec.input_shape)
    return analyze(build(spec, device="meta"), shape).ok


# The three shipped broken specs, with the edit a person would make and nothing else.
SHIPPED = {
    "broken_identity.toml": (
        [("stages[1].shortcut", "B"), ("stages[2].shortcut", "B")],
        ['shortcut = "identity"      # wrong: this stage changes the shape',
         'shortcut = "identity"      # wrong as well'],
        ['shortcut = "B"      # wrong: this stage changes the shape', 'shortcut = "B"      # wrong as well'],
    ),
    "broken_padding.toml": (
        [("stages[0].padding", None)],
        ["padding = 0                # wrong: a 3x3 conv needs padding 1 to keep the size"],
        [],
    ),
    "resnet_d_odd.toml": (
        [("stages[1].pool_ceil_mode", True), ("stages[2].pool_ceil_mode", True),
         ("stages[3].pool_ceil_mode", True)],
        ["pool_ceil_mode = false"] * 3,
        ["pool_ceil_mode = true"] * 3,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_check_says_the_fix_as_a_spec_edit(name):
    session = open_model(str(ASSETS / name))
    fields, _, _ = SHIPPED[name]
    assert session.report.mismatches
    for m in session.report.mismatches:
        assert m.fix.startswith("in the spec: ")
        assert "nn." not in m.fix  # no PyTorch code for a spec user
        assert m.code_fix and "nn." in m.code_fix or "padding=1" in m.code_fix  # kept, for reference
        assert m.spec_edits and all(e["field"] in dict(fields) for e in m.spec_edits)
    as_json = session.report.to_dict()["mismatches"]
    assert all(set(m) >= {"fix", "code_fix", "spec_edits"} for m in as_json)
    json.dumps(as_json)  # plain data


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_fix_spec_edits_the_text_surgically_and_the_result_is_clean(name, tmp_path, capsys):
    src = ASSETS / name
    out = tmp_path / "fixed.toml"
    before = src.read_text()
    assert main(["check", str(src), "--fix-spec", str(out)]) == 1  # the input is still broken
    assert src.read_text() == before  # never touched
    after = out.read_text()
    _, removed, added = SHIPPED[name]
    old_lines, new_lines = Counter(before.splitlines()), Counter(after.splitlines())
    assert old_lines - new_lines == Counter(removed)  # exactly these lines changed, nothing else
    assert new_lines - old_lines == Counter(added)
    assert after.splitlines()[:3] == before.splitlines()[:3]  # the header comments are still there
    assert main(["check", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err


def test_fix_spec_json_keeps_key_order_and_fixes(tmp_path):
    data = json.loads((ASSETS / "resnet50_like.json").read_text())
    data["stages"][2]["shortcut"] = "identity"
    src = tmp_path / "net.json"
    src.write_text(json.dumps(data, indent=2))
    out = tmp_path / "fixed.json"
    assert main(["check", str(src), "--fix-spec", str(out)]) == 1
    fixed = json.loads(out.read_text())
    assert list(fixed) == list(data) and fixed["stages"][2]["shortcut"] == "B"
    assert clean(load_spec(out))


def test_fix_spec_across_formats_and_at_the_given_input(tmp_path):
    out = tmp_path / "fixed.json"
    assert main(["check", str(ASSETS / "resnet_d_odd.toml"), "--fix-spec", str(out)]) == 1
    assert clean(load_spec(out))
    # at an even input the D net is fine: nothing to change, the spec is written as it was
    out2 = tmp_path / "same.toml"
    assert main(["check", str(ASSETS / "resnet_d_odd.toml"), "-i", "3x224x224", "--fix-spec", str(out2)]) == 0
    assert out2.read_text() == (ASSETS / "resnet_d_odd.toml").read_text()


def test_fix_spec_refuses_non_specs_and_overwriting_the_input(tmp_path, capsys):
    assert main(["check", "resnet18", "--fix-spec", str(tmp_path / "x.toml")]) == 2
    assert "needs a spec file" in capsys.readouterr().err
    src = tmp_path / "b.toml"
    src.write_text((ASSETS / "broken_identity.toml").read_text())
    assert main(["check", str(src), "--fix-spec", str(src)]) == 2
    assert "never rewrites" in capsys.readouterr().err
    assert src.read_text() == (ASSETS / "broken_identity.toml").read_text()
    assert not (tmp_path / "x.toml").exists()


def test_per_block_override_is_edited_where_it_is():
    spec = parse_spec({"input": "3x32x32", "stem": "cifar", "shortcut": "A", "stages": [
        {"blocks": 2, "width": 16}, {"blocks": 2, "width": 32, "stride": 2,
                                    "block_shortcuts": {"0": "identity"}}]})  # fmt: skip
    report = analyze(build(spec, device="meta"), spec.input_shape)
    assert [m.block for m in report.mismatches] == ["layer2.0"]
    fixed = fix_all(spec)
    assert [e.path for e in fixed.edits] == ["stages[1].block_shortcuts.0"]
    assert fixed.spec.shortcut_of_block(1, 0) == "B" and clean(fixed.spec)
    toml = 'shortcut = "A"\n[[stages]]\nblocks = 2\nwidth = 16\n[[stages]]\nblocks = 2\nwidth = 32\n' \
           'stride = 2\nblock_shortcuts = { 0 = "identity" }  # on purpose\n'  # fmt: skip
    edited = edit_text(toml, "toml", fixed.edits)
    assert edited == toml.replace('{ 0 = "identity" }', '{ 0 = "B" }')


def test_edits_round_trip_through_plain_dicts():
    for e in (SpecEdit(1, "shortcut", "B"), SpecEdit(0, "padding", REMOVE), SpecEdit(2, "shortcut", "C", block=3),
              SpecEdit(1, "pool_ceil_mode", True)):  # fmt: skip
        assert SpecEdit.from_dict(e.to_dict()) == e


# ---------------------------------------------------------------------- the class, not the example

POLICIES = st.sampled_from(["A", "B", "C", "D", "identity"])


@st.composite
def broken_specs(draw):
    n = draw(st.integers(1, 3))
    stages = []
    for i in range(n):
        blocks = draw(st.integers(1, 2))
        stage = {"blocks": blocks, "width": draw(st.sampled_from([4, 8, 16])),
                 "stride": 1 if i == 0 else draw(st.sampled_from([1, 2]))}  # fmt: skip
        if draw(st.booleans()):
            stage["shortcut"] = draw(POLICIES)
        if draw(st.integers(0, 4)) == 0:
            stage["padding"] = 0
        if draw(st.booleans()):
            stage["pool_ceil_mode"] = False
        if draw(st.integers(0, 3)) == 0:
            stage["block_shortcuts"] = {str(draw(st.integers(0, blocks - 1))): draw(POLICIES)}
        stages.append(stage)
    size = draw(st.sampled_from([31, 32, 33, 45]))
    return parse_spec({
        "input": f"3x{size}x{size}", "stem": {"kind": "cifar", "channels": draw(st.sampled_from([4, 8]))},
        "block": draw(st.sampled_from(["basic", "bottleneck", "preact"])),
        "shortcut": draw(POLICIES), "classes": 3, "stages": stages,
    })  # fmt: skip


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_specs())
def test_every_spec_mismatch_gets_a_verified_spec_edit(spec):
    report = analyze(build(spec, device="meta"), spec.input_shape)
    if report.errors or not report.complete:
        return  # a map shrunk to nothing: a shape error, not a shortcut mismatch
    fixed = fix_all(spec)
    assert fixed.remaining == []
    assert clean(fixed.spec)
    assert apply_edits(spec, fixed.edits) == fixed.spec
    if report.mismatches:
        session_fixes = [edits_of(m) for m in _spec_session(spec).report.mismatches]
        assert all(session_fixes)  # every card can say its fix as a spec edit


def _spec_session(spec):
    from resviz.core.session.opened_model import analyze_session
    from resviz.core.sources.loading import LoadedModel

    loaded = LoadedModel(module=build(spec, device="meta"), exported=None, name="x", source="x", kind="spec",
                         path=None, input_shape=spec.input_shape, rebuild=None, plain_twin=None, spec=spec)  # fmt: skip
    return analyze_session(loaded)


def test_a_fix_that_uncovers_a_cancelled_mismatch_mends_that_one_too():
    """Found by the property test: stage 1's padding 0 and stage 2's floor pooling cancelled out, so
    mending layer2.0 alone uncovered layer3.0. The offered fix is whole: all three edits, verified."""
    spec = parse_spec({
        "input": "3x33x33", "stem": {"kind": "cifar", "channels": 4}, "block": "basic", "shortcut": "A",
        "classes": 3, "stages": [
            {"blocks": 1, "width": 4, "stride": 1, "padding": 0},
            {"blocks": 1, "width": 4, "stride": 2, "padding": 0},
            {"blocks": 1, "width": 4, "stride": 2, "shortcut": "D", "padding": 1, "pool_ceil_mode": False},
        ],
    })  # fmt: skip
    report = analyze(build(spec, device="meta"), spec.input_shape)
    assert {m.block for m in report.mismatches} == {"layer1.0", "layer2.0"}
    fixed = fix_all(spec)
    assert fixed.remaining == [] and clean(fixed.spec)
    assert {e.path for e in fixed.edits} == {"stages[0].padding", "stages[1].padding", "stages[2].pool_ceil_mode"}
    layer2 = next(m for m in _spec_session(spec).report.mismatches if m.block == "layer2.0")
    assert {e.path for e in edits_of(layer2)} == {"stages[1].padding", "stages[2].pool_ceil_mode"}

