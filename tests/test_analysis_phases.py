"""The phases of the shortcut diagnosis and of grouping, each on its own (issue 11: a C901 function
split into phases that return data, each tested alone; the whole pipeline is tested elsewhere)."""

from __future__ import annotations

import dataclasses

from torch import nn

import resviz
from resviz.core.analysis import diagnose, grouping
from resviz.core.analysis.fix_text import conv_args, layer_code
from tests.nets import BodyShortcutBlock, Net, TinyResNet


def one_block(body: nn.Module, shortcut: nn.Module, size: int = 16, width: int = 8):
    """A one-block net's report (it quacks like the trace the phases read) and its add's paths."""
    report = resviz.analyze(Net([BodyShortcutBlock(body, shortcut)], width=width, head_in=None),
                            (1, 3, size, size), suggest_sizes=False)  # fmt: skip
    (add,) = [a for a in report.residual_adds if a.kind != "merge"]
    res_ops = [report.ops[i] for i in add.residual_ops]
    sc_ops = [report.ops[i] for i in add.shortcut_ops]
    fork = report.values[add.fork].shape
    return report, res_ops, sc_ops, fork


def test_padding_phase_names_the_unpadded_conv_and_the_padding_it_needs():
    report, res_ops, sc_ops, _ = one_block(nn.Sequential(nn.Conv2d(8, 8, 5, 1, 0)), nn.Identity())
    found = diagnose._padding_finding(report, res_ops + sc_ops)
    conv = res_ops[0]
    assert found.culprits == [conv.name]
    assert found.causes == [f"`{conv.name}` is a 5×5 conv with padding 0: it shrinks 16 to 12"]
    assert found.over == {conv.id: {"padding": 2}}
    assert not found.whole_projection
    padded = one_block(nn.Sequential(nn.Conv2d(8, 8, 5, 1, 2)), nn.Identity())
    assert diagnose._padding_finding(padded[0], padded[1]).causes == []


def test_downsampling_phase_gives_the_shortcut_conv_the_missing_stride():
    report, res_ops, sc_ops, fork = one_block(nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1)), nn.Conv2d(8, 8, 1))
    found = diagnose._downsampling_finding(report, res_ops, sc_ops, fork, {})
    assert found.over == {sc_ops[0].id: {"stride": 2}}
    assert found.culprits == [res_ops[0].name, sc_ops[0].name]
    assert "the residual branch downsamples by 2 but the shortcut by 1" in found.causes[0]
    assert not found.whole_projection  # with the stride the sizes agree


def test_downsampling_phase_removes_a_pool_the_shortcut_has_too_many_of():
    shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.AvgPool2d(2, 2), nn.Conv2d(8, 8, 1))
    body = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1))
    report, res_ops, sc_ops, fork = one_block(body, shortcut)
    found = diagnose._downsampling_finding(report, res_ops, sc_ops, fork, {})
    assert "the shortcut downsamples by 4 but the residual branch by 2" in found.causes[0]
    assert found.over == {sc_ops[1].id: {"remove": True}}  # the last strided one
    assert not found.whole_projection


def test_downsampling_phase_sets_ceil_mode_where_an_odd_size_rounds_down():
    report, res_ops, sc_ops, fork = one_block(
        nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1)), nn.AvgPool2d(2, 2), size=7)  # fmt: skip
    found = diagnose._downsampling_finding(report, res_ops, sc_ops, fork, {})
    assert found.causes == [f"`{sc_ops[0].name}` rounds 7 down to 3 while `{res_ops[0].name}` rounds up "
                            "to 4: the size entering the block is odd (7)"]  # fmt: skip
    assert found.over == {sc_ops[0].id: {"ceil_mode": True}}


def test_downsampling_phase_asks_for_a_projection_when_no_setting_makes_the_sizes_agree():
    # stride 3 against an identity: no shortcut layer can take the stride
    report, res_ops, sc_ops, fork = one_block(nn.Sequential(nn.Conv2d(8, 8, 3, 3, 1)), nn.Identity())
    found = diagnose._downsampling_finding(report, res_ops, sc_ops, fork, {})
    assert found.whole_projection and found.over == {}
    # paths that end at the same size: nothing to say
    same = one_block(nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1)), nn.Identity())
    assert diagnose._downsampling_finding(*same, {}) == diagnose._Finding()


def test_channel_phase_corrects_a_projection_or_asks_for_one():
    report, res_ops, sc_ops, _ = one_block(nn.Sequential(nn.Conv2d(8, 12, 3, 1, 1)), nn.Conv2d(8, 4, 1))
    found = diagnose._channel_finding(report, res_ops, sc_ops, 12, 4)
    assert found.over == {sc_ops[0].id: {"out_channels": 12}} and not found.whole_projection
    assert found.causes == [f"the projection `{sc_ops[0].name}` outputs 4 channels but the residual "
                            "branch outputs 12"]  # fmt: skip
    report, res_ops, sc_ops, _ = one_block(nn.Sequential(nn.Conv2d(8, 12, 3, 1, 1)), nn.Identity())
    found = diagnose._channel_finding(report, res_ops, sc_ops, 12, 8)
    assert found.whole_projection and found.culprits == [res_ops[0].name]
    assert diagnose._channel_finding(report, res_ops, sc_ops, 8, 8) == diagnose._Finding()


def test_findings_chain_in_order_and_merge_settings_without_changing_either():
    first = diagnose._Finding(["a"], ["x"], {1: {"padding": 1}})
    later = diagnose._Finding(["b"], ["y"], {1: {"ceil_mode": True}, 2: {"stride": 2}}, True)
    both = first.then(later)
    assert both == diagnose._Finding(["a", "b"], ["x", "y"],
                                     {1: {"padding": 1, "ceil_mode": True}, 2: {"stride": 2}}, True)  # fmt: skip
    assert first.over == {1: {"padding": 1}} and first.causes == ["a"]  # untouched


def test_layers_fix_replaces_the_shortcut_settings_by_a_whole_projection():
    report, res_ops, sc_ops, fork = one_block(nn.Sequential(nn.Conv2d(8, 8, 3, 3, 1)), nn.Identity())
    add = next(a for a in report.residual_adds if a.kind != "merge")
    found = diagnose._Finding(["c"], [], {res_ops[0].id: {"padding": 1}}, whole_projection=True)
    fix = diagnose._layers_fix(report, add, res_ops, sc_ops, found, 8, 8, 2)
    assert fix.splitlines() == [
        "blocks.0.shortcut: nn.Sequential(nn.Conv2d(8, 8, kernel_size=1, stride=3, bias=False), nn.BatchNorm2d(8))",
        f"{res_ops[0].name}: padding=1",
    ]


def test_conv_args_leave_defaults_out_and_drop_groups_that_cannot_split_the_width():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4)
    assert conv_args(conv, 12) == ["8", "12", "kernel_size=3", "stride=2", "padding=1", "groups=4", "bias=True"]
    assert conv_args(conv, 10) == ["8", "10", "kernel_size=3", "stride=2", "padding=1", "bias=True"]
    assert conv_args(nn.Conv1d(4, 4, 1, bias=False), 6) == ["4", "6", "kernel_size=1", "bias=False"]
    assert layer_code(nn.Conv2d(3, 8, (3, 5)), 4) == "nn.Conv2d(3, 4, kernel_size=(3, 5), bias=True)"


def test_grouping_phases_find_blocks_their_stages_and_merge_adds():
    report = resviz.analyze(TinyResNet(widths=(8, 16), blocks=2), (1, 3, 16, 16), suggest_sizes=False)
    by_call, merge_adds = grouping.adds_by_call(report.residual_adds)
    assert merge_adds == [] and sorted(i for v in by_call.values() for i in v) == list(range(len(report.residual_adds)))
    stage_of = grouping.stage_parents(report.calls, sorted(by_call))
    stages = {report.calls[c].path: report.calls[s].path for c, s in stage_of.items()}
    assert stages == {b.name: b.stage for b in report.blocks}
    assert set(stages.values()) == {"layer1", "layer2"}
    # a merge add belongs to the innermost block around it; one outside every block to none
    merge = dataclasses.replace(report.residual_adds[0], kind="merge")
    adds = [*report.residual_adds, merge]
    assert grouping.merges_by_block(report.calls, adds, [len(adds) - 1], by_call) == {merge.call: [len(adds) - 1]}
    assert grouping.merges_by_block(report.calls, adds, [len(adds) - 1], {}) == {}
