"""Layouts: residual chains get the chain layout; other graphs use dot when it is installed and
still get a complete picture when it is not."""

from __future__ import annotations

import torch
from torch import nn

import resviz
from resviz.core.sources import zoo
from resviz.render import layout as layout_mod
from resviz.render.layout import auto_layout, chain_layout
from resviz.render.view import ViewState, build_view


class Inception(nn.Module):
    """Four parallel branches concatenated: not a chain."""

    def __init__(self, c=8):
        super().__init__()
        self.b1 = nn.Conv2d(c, c, 1)
        self.b2 = nn.Sequential(nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def _overlaps(boxes) -> int:
    items = list(boxes.values())
    n = 0
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if a.x < b.right and b.x < a.right and a.y < b.bottom and b.y < a.bottom:
                n += 1
    return n


def test_chain_layout_keeps_the_main_path_straight_and_skips_beside_it():
    report = resviz.analyze(zoo.build("resnet18"), (1, 3, 224, 224))
    graph = build_view(report, ViewState(collapsed=set()))
    lay = chain_layout(graph)
    xs = {round(lay.nodes[n].cx) for n in lay.main}
    assert len(xs) == 1  # one straight column
    main_right = max(lay.nodes[n].right for n in lay.main)
    main_left = min(lay.nodes[n].x for n in lay.main)
    for edge, route in zip(graph.edges, lay.edges):
        if edge.kind == "skip":  # shortcuts run to the right of the main column, never across it
            assert all(x >= min(lay.nodes[edge.src].cx, main_right) - 1 for x, _ in route.points[1:-1])
            assert all(x > main_left for x, _ in route.points)
    assert _overlaps(lay.nodes) == 0


def test_non_chain_graph_without_dot_still_gets_a_full_layout(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Inception(8), Inception(32))
    report = resviz.analyze(model, (1, 3, 16, 16))
    assert report.ok
    graph = build_view(report, ViewState(collapsed=set()))
    assert not layout_mod.is_chain_like(graph, chain_layout(graph))
    monkeypatch.setattr(layout_mod, "dot_available", lambda: False)
    lay = auto_layout(graph)
    assert lay.engine == "chain"
    assert set(lay.nodes) == set(graph.nodes)
    assert all(len(r.points) >= 2 for r in lay.edges)
    assert _overlaps(lay.nodes) == 0


def test_non_chain_graph_uses_dot_when_installed():
    if not layout_mod.dot_available():
        import pytest

        pytest.skip("Graphviz is not installed")
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), Inception(32), Inception(128))
    report = resviz.analyze(model, (1, 3, 16, 16))
    graph = build_view(report, ViewState(collapsed=set()))  # the branches in view
    lay = auto_layout(graph)
    assert lay.engine == "dot"
    assert set(lay.nodes) == set(graph.nodes)
    # and residual nets stay on the chain layout even with dot installed
    resnet = resviz.analyze(zoo.build("resnet50"), (1, 3, 224, 224))
    assert auto_layout(build_view(resnet, ViewState(collapsed=set()))).engine == "chain"


def _inception_view():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Inception(8))
    report = resviz.analyze(model, (1, 3, 8, 8), suggest_sizes=False)
    return build_view(report, ViewState(collapsed=set()))


def test_a_failing_dot_costs_the_picture_nothing_and_is_said(monkeypatch):
    import subprocess

    import graphviz

    def crash(*args, **kwargs):
        raise graphviz.CalledProcessError(1, ["dot"], stderr=b"syntax error in line 1")

    monkeypatch.setattr(layout_mod, "dot_available", lambda: True)
    monkeypatch.setattr(graphviz.Digraph, "pipe", crash)
    lay = auto_layout(_inception_view())
    assert lay.engine == "chain" and lay.nodes
    assert lay.note.startswith("this graph has branches that are not shortcuts")
    assert "Graphviz's `dot` failed (CalledProcessError:" in lay.note
    assert isinstance(graphviz.CalledProcessError(1, "dot"), subprocess.CalledProcessError)


def test_a_bug_reading_dots_output_is_not_hidden_behind_the_fallback(monkeypatch):
    import pytest

    from resviz.render import dot as dot_mod

    def bug(*args, **kwargs):
        raise KeyError("pos")

    monkeypatch.setattr(layout_mod, "dot_available", lambda: True)
    monkeypatch.setattr(dot_mod, "_run_dot", lambda g: {"bb": "0,0,10,10", "objects": [], "edges": [{}]})
    monkeypatch.setattr(dot_mod, "_spline_points", bug)
    with pytest.raises(KeyError):
        auto_layout(_inception_view(), engine="dot")


def _stage_bands_hold_their_nodes(graph, lay) -> None:
    stages = [g for g in graph.groups if g.kind == "stage"]
    for g in stages:
        band = lay.groups[g.id]
        for n in g.nodes:
            if n in lay.nodes:
                box = lay.nodes[n]
                assert band.y <= box.y and box.bottom <= band.bottom, (g.id, graph.nodes[n].name)
    spans = sorted((lay.groups[g.id].y, lay.groups[g.id].bottom) for g in stages)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # bands never overlap


def test_every_stage_band_holds_all_its_nodes_even_a_projection_made_before_its_first_block():
    """A tree level projects its input before its first block uses it (DLA): that projection is the
    level's, so it is drawn inside the level's band, not above it; no two bands overlap."""
    from tests.nets_wild import TreeNet

    for model, shape in [(TreeNet(), (1, 3, 16, 16)), (TreeNet(project_out=16), (1, 3, 16, 16)),
                         (zoo.build("resnet18"), (1, 3, 64, 64))]:  # fmt: skip
        report = resviz.analyze(model, shape)
        for state in (ViewState(), ViewState(collapsed=set())):  # blocks folded (the app's start), open
            graph = build_view(report, state)
            _stage_bands_hold_their_nodes(graph, chain_layout(graph))
