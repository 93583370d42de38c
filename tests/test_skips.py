"""Skips that reach their add as forward arguments, and adds inside a block that are not its skip."""

from __future__ import annotations

import torch

import resviz
from tests.nets_wild import Outer, Res2Net, TextEncoder, TreeNet


def test_a_skip_made_by_the_caller_is_found_at_the_add():
    report = resviz.analyze(Outer(), (1, 8, 16, 16))
    (add,) = report.residual_adds
    assert add.block == "inner" and add.kind == "projection"
    assert report.ops[add.shortcut_ops[0]].name == "proj"
    assert [b.name for b in report.blocks] == ["inner"] and report.ok


def test_transformer_output_hidden_input_tensor_layers_are_blocks():
    report = resviz.analyze(TextEncoder(), (1, 5, 16))
    assert [(b.name, b.shortcut) for b in report.blocks] == [
        ("layer.0", "identity"), ("layer.1", "identity"), ("layer.2", "identity")]  # fmt: skip
    for add in report.residual_adds:  # the add itself sits in the layer's `output` module
        assert report.ops[add.op].name == f"{add.block}.output.add"


def test_tree_nodes_keep_the_skip_their_tree_hands_them():
    report = resviz.analyze(TreeNet(), (1, 3, 16, 16))
    assert [(b.name, b.shortcut) for b in report.blocks] == [
        ("level1.tree1", "projection"), ("level1.tree2", "identity"),
        ("level2.tree1", "identity"), ("level2.tree2", "identity")]  # fmt: skip
    add = report.residual_adds[0]
    assert [report.ops[i].name for i in add.shortcut_ops] == ["level1.downsample", "level1.project"]
    assert report.ok


def test_a_broken_skip_passed_as_an_argument_is_reported_at_its_block():
    model = TreeNet(project_out=12)  # the tree's projection makes 12 channels, tree1 16
    with torch.no_grad():
        try:
            model(torch.randn(1, 3, 16, 16))
            raise AssertionError("eager should fail")
        except RuntimeError:
            pass
    report = resviz.analyze(model, (1, 3, 16, 16), suggest_sizes=False)
    (m,) = report.mismatches
    assert m.block == "level1.tree1" and m.culprits == ["level1.project"]
    assert report.complete  # carried on past it


def test_hierarchical_split_adds_are_merges_and_the_shortcut_is_still_classified():
    report = resviz.analyze(Res2Net(), (1, 3, 16, 16))
    assert [(b.name, b.shortcut) for b in report.blocks] == [
        ("layer1.0", "projection"), ("layer1.1", "identity")]  # fmt: skip
    kinds = [a.kind for a in report.residual_adds]
    assert kinds.count("merge") == 4 and kinds.count("identity") == 1
    # the merges belong to their block
    assert all(len(b.adds) == 3 for b in report.blocks)
    assert report.ok


def test_an_opened_res2net_block_draws_its_merges_in_the_column_and_its_skip_beside_it():
    from resviz.render.layout import chain_layout
    from resviz.render.view import ViewState, build_view

    report = resviz.analyze(Res2Net(), (1, 3, 16, 16))
    graph = build_view(report, ViewState(collapsed=set()))
    lay = chain_layout(graph)  # the split feeding both paths of a merge once broke the layout
    kinds = [e.shortcut for e in graph.edges if e.kind == "skip"]
    assert kinds.count("merge") == 4 and "identity" in kinds and "projection" in kinds
    split = next(n for n in graph.nodes.values() if n.name == "layer1.0.split")
    assert split.id in lay.main  # the split stays in the main column


def test_a_folded_tree_node_gets_its_callers_projection_as_an_edge_not_a_second_arc():
    from resviz.render.layout import chain_layout
    from resviz.render.view import ViewState, build_view

    report = resviz.analyze(TreeNet(), (1, 3, 16, 16))
    graph = build_view(report, ViewState())  # blocks folded
    chain_layout(graph)  # a two-op shortcut outside a folded block once broke the layout
    tree1 = next(n for n in graph.nodes.values() if n.name == "level1.tree1")
    assert tree1.skip is None  # its shortcut is the drawn edge from level1.project
    assert any(e.kind == "skip" and e.dst == tree1.id for e in graph.edges)
    tree2 = next(n for n in graph.nodes.values() if n.name == "level1.tree2")
    assert tree2.skip == "identity"


def test_a_folded_tree_node_stripes_in_its_shortcut_colour_though_its_skip_is_an_edge():
    from resviz.render.dot import node_attrs, to_dot
    from resviz.render.theme import LIGHT
    from resviz.render.view import ViewState, build_view

    report = resviz.analyze(TreeNet(), (1, 3, 16, 16))
    graph = build_view(report, ViewState())  # blocks folded
    for block in report.blocks:  # every folded block's stripe names its own shortcut kind
        node = next(n for n in graph.nodes.values() if n.name == block.name)
        assert node.stripe_kind == block.shortcut
    tree1 = next(n for n in graph.nodes.values() if n.name == "level1.tree1")
    assert tree1.stripe_kind == "projection" and tree1.skip is None  # coloured, and drawn once
    assert "conv 1×1" in tree1.skip_label  # the tooltip still says what the shortcut does
    attrs = node_attrs(tree1, LIGHT)
    assert attrs["style"] == "striped"
    assert attrs["fillcolor"].startswith(LIGHT.shortcuts["projection"] + ";")
    dot = to_dot(graph).source
    assert f"{tree1.id} -> {tree1.id}" not in dot  # no self-loop beside it: the projection is an edge
    assert sum(f"-> {tree1.id} " in line and LIGHT.shortcuts["projection"] in line
               for line in dot.splitlines()) == 1  # fmt: skip
