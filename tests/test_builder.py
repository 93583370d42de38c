"""The builder's headless model: edits, per-field validation, undo/redo, events, dirty, files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from resviz.core.analysis.pipeline import analyze
from resviz.core.design.spec_editor import SpecBuilder, draft_of, field_errors
from resviz.core.errors import ResvizError, SpecError
from resviz.core.fixes.spec_edits import fix_all
from resviz.core.sources import zoo
from resviz.core.sources.spec import build, load_spec, parse_spec

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@pytest.fixture
def events():
    return []


def builder_with(events, draft=None) -> SpecBuilder:
    b = SpecBuilder(draft)
    b.subscribe(events.append)
    return b


def test_an_empty_net_says_it_needs_a_stage_and_grows_into_a_valid_one(events):
    b = builder_with(events)
    assert not b.valid and "stages" in b.errors and "at least one stage" in b.errors["stages"]
    b.add_stage()
    b.add_stage()
    assert b.valid and b.errors == {}
    assert [(s.width, s.stride) for s in b.spec.stages] == [(16, 1), (32, 2)]  # CIFAR stem: 16 wide
    assert [e.kind for e in events] == ["edit", "edit"] and b.dirty


def test_every_wrong_field_gets_its_own_reason_and_good_fields_stay_good():
    b = SpecBuilder(draft_of(zoo.get("resnet20").spec))
    b.set_field("stages[1].width", "12a")
    b.set_field("classes", 0)
    b.set_field("input", "3x")
    b.set_field("groups", 4)  # basic blocks take no groups
    errs = b.errors
    assert set(errs) == {"stages[1].width", "classes", "input", "groups"}
    assert "expected an integer" in errs["stages[1].width"] and "'12a'" in errs["stages[1].width"]
    assert "bottleneck" in errs["groups"]
    assert not b.valid and b.spec is None
    assert b.last_valid_spec is not None and b.last_valid_spec.name == "resnet20"  # still drawable
    b.set_field("stages[1].width", " 48 ")  # typed text for a number field is read as the number
    assert "stages[1].width" not in b.errors and b.value("stages[1].width") == 48


def test_the_builder_and_spec_files_agree_on_validity():
    for draft in ({"stages": [{"blocks": 1001, "width": 8}]}, {"stages": [{"blocks": 1, "width": 8, "stride": 9}]},
                  {"block": "preact", "width_per_group": 32, "stages": [{"blocks": 1, "width": 8}]}):  # fmt: skip
        errs, spec = field_errors(draft)
        with pytest.raises(SpecError) as info:
            parse_spec(draft)
        assert spec is None and info.value.field in errs


def test_undo_redo_every_edit_and_typing_into_one_field_is_one_step(events):
    b = builder_with(events, draft_of(zoo.get("resnet18").spec))
    for text in ("1", "12", "128"):  # keystrokes
        b.set_field("stages[0].width", text)
    b.end_merge()
    b.set_field("stages[0].width", 96)
    b.add_stage()
    b.move_stage(4, 0)
    b.remove_stage(1)
    b.set_field("stages[0].shortcut", "C")
    history = []
    while b.can_undo:
        history.append(b.draft)
        b.undo()
    assert b.draft == draft_of(zoo.get("resnet18").spec) and not b.dirty
    assert len(history) == 6  # the three keystrokes were one step
    for expected in reversed(history):
        b.redo()
        assert b.draft == expected
    assert not b.can_redo
    b.undo()
    b.set_field("block", "bottleneck")  # a new edit drops the redo branch
    assert not b.can_redo
    assert Counter(e.kind for e in events) == Counter({"edit": 9, "undo": 7, "redo": 6})


def test_changing_the_stem_brings_its_defaults_and_a_block_change_fixes_groups():
    b = SpecBuilder(draft_of(zoo.get("resnext50_32x4d").spec))
    b.set_field("block", "basic")
    assert b.valid and (b.spec.groups, b.spec.width_per_group) == (1, 64)
    b.set_field("stem.kind", "cifar")
    assert b.spec.stem.kernel == 3 and not b.spec.stem.pool
    assert b.spec.input_shape == (1, 3, 32, 32) and b.spec.classes == 10
    b.undo()
    assert b.spec.stem.kernel == 7 and b.spec.input_shape == (1, 3, 224, 224)


def test_per_block_shortcut_and_an_identity_on_a_stride_2_block_is_a_mismatch_a_fix_mends():
    b = SpecBuilder(draft_of(zoo.get("resnet20").spec))
    b.set_field("stages[1].block_shortcuts.0", "identity")
    report = analyze(build(b.spec, device="meta"), b.spec.input_shape)
    assert [m.block for m in report.mismatches] == ["layer2.0"]
    b.apply_spec_edits(fix_all(b.spec).edits, "fix layer2.0")
    assert analyze(build(b.spec, device="meta"), b.spec.input_shape).ok
    assert b.value("stages[1].block_shortcuts") == {"0": "B"}
    b.undo()
    assert b.spec.shortcut_of_block(1, 0) == "identity"
    b.set_field("stages[1].block_shortcuts.0", None)
    assert "block_shortcuts" not in b.value("stages[1]")


def test_save_is_atomic_keeps_comments_and_dirty_follows_the_saved_state(tmp_path, events):
    src = tmp_path / "net.toml"
    src.write_text((ASSETS / "broken_identity.toml").read_text())
    b = builder_with(events)
    b.open(src)
    assert not b.dirty and b.shown("stem.kind") == "cifar" and b.shown("stages[1].shortcut") == "identity"
    b.set_field("stages[1].shortcut", "B")
    b.set_field("classes", 100)
    assert b.dirty
    b.save()
    text = src.read_text()
    before = (ASSETS / "broken_identity.toml").read_text()
    assert Counter(before.splitlines()) - Counter(text.splitlines()) == Counter(
        ['shortcut = "identity"      # wrong: this stage changes the shape', "classes = 10"]
    )
    assert load_spec(src).classes == 100 and not b.dirty
    assert [p.name for p in tmp_path.iterdir()] == ["net.toml"]  # no temporary left behind
    b.undo()
    assert b.dirty
    b.redo()
    assert not b.dirty
    assert events[-3:][0].kind == "save"


def test_save_refuses_an_invalid_draft_and_as_json(tmp_path):
    b = SpecBuilder(draft_of(zoo.get("resnet20").spec))
    with pytest.raises(ResvizError, match="Save As"):
        b.save()
    b.set_field("stages[0].blocks", -1)
    with pytest.raises(ResvizError, match=r"stages\[0\].blocks"):
        b.save(tmp_path / "x.toml")
    assert not (tmp_path / "x.toml").exists()
    b.undo()
    out = b.save(tmp_path / "x.json")
    assert load_spec(out) == parse_spec(json.loads(out.read_text()), path=out)
    assert load_spec(out).stages == zoo.get("resnet20").spec.stages


def test_open_a_broken_file_leaves_the_builder_as_it_was(tmp_path):
    b = SpecBuilder(draft_of(zoo.get("resnet20").spec))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stages]]\nblocks = 2\nwidht = 3\n")
    with pytest.raises(SpecError, match="widht"):
        b.open(bad)
    assert b.valid and b.spec.name == "resnet20"
