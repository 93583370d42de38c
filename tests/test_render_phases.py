"""The phases of the render pipeline, each on its own: folding a report to a view, laying a chain
out, and writing DOT. Small hand-built graphs (no tracing) unless a phase reads a report."""

from __future__ import annotations

import pytest
from torch import nn

import resviz
from resviz.render import layout as lay
from resviz.render.dot import cluster_tree, edge_attrs, edge_texts, node_attrs
from resviz.render.theme import LIGHT
from resviz.render.view import (
    BlockGraph,
    ViewEdge,
    ViewGroup,
    ViewNode,
    ViewState,
    fold_ops,
    frame_groups,
    rolled_up_runs,
    shortcut_edges,
    view_edges,
)
from tests.nets import TinyResNet


def node(nid: str, order: int, kind: str = "op", side: bool = False, **kw) -> ViewNode:
    return ViewNode(id=nid, kind=kind, label=nid, detail="Conv2d(8, 8, 3)", name=kw.pop("name", nid),
                    type=kw.pop("type", "Conv2d"), ops=[order], order=order, side=side, **kw)  # fmt: skip


def edge(src: str, dst: str, value: int, skip: str | None = None, broken: bool = False) -> ViewEdge:
    return ViewEdge(src, dst, value, (1, 8, 4, 4), "8×4×4", kind="skip" if skip else "main",
                    shortcut=skip, broken=broken)  # fmt: skip


def projection_block() -> BlockGraph:
    """input → a → b → (+) → output, with the input projected beside a and b into the add."""
    nodes = [node("in", 0, "input"), node("a", 1, name="layer1.0.a"), node("b", 2, name="layer1.0.b"),
             node("proj", 3, side=True, name="layer1.0.proj"),
             node("add", 4, name="layer1.0.add", type="add", is_add=True), node("out", 5, "output")]  # fmt: skip
    edges = [edge("in", "a", 0), edge("a", "b", 1), edge("b", "add", 2), edge("in", "proj", 0, "projection"),
             edge("proj", "add", 3, "projection"), edge("add", "out", 4)]  # fmt: skip
    inside = ["a", "b", "proj", "add"]
    groups = [ViewGroup("s:layer1", "stage", "layer1\n8×4×4", "layer1", list(inside), depth=1),
              ViewGroup("b:layer1.0", "block", "layer1.0\nBlock", "layer1.0", list(inside), depth=2)]  # fmt: skip
    return BlockGraph({n.id: n for n in nodes}, edges, groups, batch=1, title="t")


def identity_chain() -> BlockGraph:
    """A straight chain whose two identity shortcuts overlap (a→c and b→d) and one that does not."""
    names = ["in", "a", "b", "c", "d", "e", "f", "out"]
    nodes = {n: node(n, i, {"in": "input", "out": "output"}.get(n, "op")) for i, n in enumerate(names)}
    edges = [edge(x, y, i) for i, (x, y) in enumerate(zip(names, names[1:]))]
    edges += [edge("a", "c", 1, "identity"), edge("b", "d", 2, "identity"), edge("d", "f", 4, "identity")]
    return BlockGraph(nodes, edges, [], batch=1)


# ------------------------------------------------------------------- chain layout


def test_topology_orders_by_execution_and_drops_backward_edges():
    g = identity_chain()
    g.edges.append(edge("d", "a", 9))  # a cycle the layout must not follow
    topo = lay.topology(g)
    assert topo.order == ["in", "a", "b", "c", "d", "e", "f", "out"]
    assert topo.preds["a"] == ["in"]
    assert topo.preds["c"] == ["b", "a"]


def test_group_titles_leave_room_for_a_stage_and_the_block_starting_with_it():
    g = projection_block()
    m = lay.Metrics()
    topo = lay.topology(g)
    main = ["in", "a", "b", "add", "out"]
    titles = lay.group_titles(g, set(main), topo.rank, m)
    assert titles.first == {"s:layer1": "a", "b:layer1.0": "a"}
    assert [x.id for x in titles.starts["a"]] == ["s:layer1", "b:layer1.0"]
    assert titles.pad_after == {"add": 2 * m.group_pad}  # both groups end at the add
    assert titles.inner["proj"] == "b:layer1.0"  # the deepest group wins
    # a stage whose first node also opens a block frame makes room for both titles
    assert titles.above("a") == (m.stage_title + m.group_pad) + (m.block_title + m.group_pad)
    alone = lay.group_titles(BlockGraph(g.nodes, g.edges, g.groups[:1], 1), set(main), topo.rank, m)
    assert alone.above("a") == 6 + m.group_pad


def test_rows_keep_the_main_column_in_order_and_a_shortcut_beside_its_block():
    g = projection_block()
    m = lay.Metrics()
    topo = lay.topology(g)
    main = lay._main_path(topo.order, topo.preds, g.nodes)
    assert main == ["in", "a", "b", "add", "out"]  # the projection is a shortcut: off the main path
    size = {n: (120.0, m.node_h) for n in topo.order}
    titles = lay.group_titles(g, set(main), topo.rank, m)
    y = lay.place_rows(topo, set(main), size, titles, m)
    tops = [y[n] for n in main]
    assert all(b >= a + m.node_h + m.gap for a, b in zip(tops, tops[1:]))
    assert y["a"] >= m.node_h + m.gap + titles.above("a")  # the titles fit above the block
    assert y["proj"] == y["a"]  # level with its block's first node, not above its title


def test_side_columns_keep_a_chain_together_and_split_overlaps():
    m = lay.Metrics()
    size = {n: (100.0, m.node_h) for n in "pqrs"}
    y = {"p": 0.0, "q": 70.0, "r": 10.0, "s": 200.0}
    preds = {"p": [], "q": ["p"], "r": [], "s": []}
    col = lay.side_columns(["p", "q", "r", "s"], preds, y, size, m)
    assert col["q"] == col["p"]  # a chain of side nodes stays in one column
    assert col["r"] != col["p"]  # overlapping p: a column of its own
    assert col["s"] == 0  # clear of everything: back to the first column


def test_overlapping_identity_arcs_get_their_own_lanes():
    g = identity_chain()
    m = lay.Metrics()
    main = list(g.nodes)
    boxes = {n: lay.Box(-60, 70.0 * i, 120, m.node_h) for i, n in enumerate(main)}
    arcs = lay.arc_lanes(g, main, boxes, lay.approx_measure)
    skips = [i for i, e in enumerate(g.edges) if e.kind == "skip"]
    assert sorted(arcs.lane) == skips
    a_c, b_d, d_f = (arcs.lane[i] for i in skips)
    assert a_c != b_d and d_f == a_c and arcs.count == 2
    assert arcs.label_w == lay.approx_measure("8×4×4")
    routes = lay.route_edges(g, boxes, main, arcs, m)
    arc = routes[skips[1]]
    assert arc.points[0] == (0, boxes["b"].bottom) and arc.points[-1] == (60, boxes["d"].cy)
    assert arc.points[2][0] == 60 + 14 + m.lane  # second lane, right of the column
    assert routes[0].points == [(0, boxes["in"].bottom), (0, boxes["a"].y)]  # straight down


def test_chain_layout_frames_hold_their_nodes_and_arcs():
    g = projection_block()
    out = lay.chain_layout(g)
    frame, band = out.groups["b:layer1.0"], out.groups["s:layer1"]
    for n in ("a", "b", "proj", "add"):
        box = out.nodes[n]
        assert frame.x < box.x and box.right < frame.right and frame.y < box.y and box.bottom < frame.bottom
    assert band.x < frame.x and frame.right < band.right
    route = out.edges[4]  # proj → add: into the add's right side
    assert route.points[-1] == (out.nodes["add"].right, out.nodes["add"].cy)


# ------------------------------------------------------------------- folding a report


@pytest.fixture(scope="module")
def tiny():
    return resviz.analyze(TinyResNet(widths=(8, 16), blocks=4), (1, 3, 16, 16), suggest_sizes=False)


@pytest.fixture(scope="module")
def tiny_broken():
    return resviz.analyze(TinyResNet(widths=(8, 16), blocks=1, broken=True), (1, 3, 16, 16),
                          suggest_sizes=False)  # fmt: skip


def test_rolled_up_runs_name_each_run_after_its_second_block(tiny):
    blocks = {b.name: b for b in tiny.blocks}
    collapsed = set(blocks)
    rollup = rolled_up_runs(tiny, {"layer1"}, collapsed)
    calls = [blocks[f"layer1.{i}"].call for i in range(4)]
    assert rollup == {c: (calls[1], 3) for c in calls[1:]}  # layer1.0 stays a node of its own
    assert rolled_up_runs(tiny, set(), collapsed) == {}
    # layer2.0 changes the shape, so the run is layer2.1..3: its first stays, two roll up
    calls = [blocks[f"layer2.{i}"].call for i in range(4)]
    assert rolled_up_runs(tiny, {"layer2"}, collapsed) == {c: (calls[2], 2) for c in calls[2:]}


def test_fold_ops_gives_every_op_one_node_and_a_folded_block_its_parameters(tiny):
    state = ViewState(collapsed={"layer1.0"})
    nodes, owner = fold_ops(tiny, state, {"layer1.0"}, {})
    assert len(owner) == len(tiny.ops) and set(owner) == set(nodes)
    block = next(n for n in nodes.values() if n.kind == "block")
    assert block.name == "layer1.0"
    assert block.params == sum(tiny.ops[i].params for i in block.ops) == tiny.block("layer1.0").params
    assert all(owner[i] == block.id for i in block.ops)
    inputs = [n for n in nodes.values() if n.kind == "input"]
    assert len(inputs) == 1 and inputs[0].ops == [0]


def test_shortcut_edges_and_a_broken_adds_operands(tiny, tiny_broken):
    skips = shortcut_edges(tiny)
    projection = next(a for a in tiny.residual_adds if a.kind == "projection")
    assert set(projection.shortcut_ops) <= skips.side_ops
    assert skips.kind[(projection.shortcut, projection.op)] == "projection"
    nodes, owner = fold_ops(tiny_broken, ViewState(collapsed=set()), set(), {})
    edges = view_edges(tiny_broken, owner, shortcut_edges(tiny_broken).kind)
    bad = tiny_broken.mismatches[0].add_op
    into_bad = [e for e in edges if e.dst == owner[bad]]
    assert len(into_bad) == 2 and all(e.broken for e in into_bad)
    assert not any(e.broken for e in edges if e.dst != owner[bad])
    assert len({(e.src, e.dst, e.value) for e in edges}) == len(edges)  # no edge twice


def test_frame_groups_band_stages_and_frame_open_blocks_only(tiny_broken):
    broken = tiny_broken.mismatches[0].block
    collapsed = {b.name for b in tiny_broken.blocks if b.name != broken}
    nodes, _ = fold_ops(tiny_broken, ViewState(collapsed=collapsed), collapsed, {})
    groups = {g.id: g for g in frame_groups(tiny_broken, nodes, collapsed)}
    assert {g for g in groups if g.startswith("b:")} == {f"b:{broken}"}  # a folded block: no frame
    assert groups[f"b:{broken}"].broken
    assert {g for g in groups if g.startswith("s:")} == {f"s:{s.name}" for s in tiny_broken.stages}
    frame = groups[f"b:{broken}"]
    assert frame.nodes and all(nodes[n].name.startswith(broken + ".") for n in frame.nodes)


# ------------------------------------------------------------------- DOT


def test_cluster_tree_nests_a_block_frame_in_its_stage_band():
    owner, children = cluster_tree(projection_block())
    assert owner["a"] == "b:layer1.0" and "in" not in owner
    assert [g.id for g in children[None]] == ["s:layer1"]
    assert [g.id for g in children["s:layer1"]] == ["b:layer1.0"]


def test_a_fanned_out_tensor_is_labelled_once_but_a_shortcut_always():
    g = projection_block()
    g.edges.append(edge("in", "b", 0))  # the input feeds a second layer
    assert edge_texts(g) == ["8×4×4", "8×4×4", "8×4×4", "8×4×4", "8×4×4", "8×4×4", ""]


def test_node_and_edge_attributes():
    g = projection_block()
    add = node_attrs(g.nodes["add"], LIGHT)
    assert add["shape"] == "circle" and add["label"] == "+"
    sized = node_attrs(g.nodes["a"], LIGHT, (144.0, 36.0))
    assert (sized["width"], sized["height"], sized["fixedsize"]) == ("2.000", "0.500", "true")
    assert sized["label"] == "a\\nConv2d(8, 8, 3)"
    skip = edge_attrs(g.edges[3], 3, "8×4×4", LIGHT)
    assert skip["color"] == LIGHT.shortcuts["projection"] and skip["weight"] == "0" and skip["id"] == "e3"
    broken = edge_attrs(edge("b", "add", 2, "identity", broken=True), 2, "8×4×4", LIGHT)
    assert broken["style"] == "solid" and broken["color"] == LIGHT.broken


def test_module_without_stages_still_folds_and_lays_out():
    report = resviz.analyze(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (2, 4), suggest_sizes=False)
    from resviz.render.view import build_view

    out = lay.chain_layout(build_view(report))
    assert out.main[0].startswith("o") and len(out.nodes) == 4
