"""The app's painting, following and tinting code split into phases that return data, each
tested alone (issue 11); and two things the user is now told or no longer shown by mistake: a
layout that fell back from Graphviz says so in the banner, and the issues panel's old content
never shows over its new cards."""

from __future__ import annotations

import importlib
import json
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("PySide6")

import torch  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from resviz.follow_cli import closing_lines, news_lines  # noqa: E402
from resviz.gui.graph.scene import node_look, text_colors  # noqa: E402
from resviz.gui.panels.inspector import class_source  # noqa: E402
from resviz.gui.training import follow  # noqa: E402
from resviz.gui.training.legends import bar_labels, bar_y  # noqa: E402
from resviz.gui.training.tint import log_range, log_values, node_tints  # noqa: E402
from resviz.render.theme import LIGHT  # noqa: E402
from resviz.render.view import ViewNode  # noqa: E402

TIMEOUT = 30_000


def node(**kw) -> ViewNode:
    return ViewNode(**{"id": "n", "kind": "op", "label": "conv", "detail": "", "name": "conv", "type": "Conv2d",
                       "ops": [], **kw})  # fmt: skip


# ---------------------------------------------------------------------------- the graph's nodes


def test_node_look_reddens_broken_nodes_and_lets_selection_then_hover_set_the_border():
    fill, border, width = node_look(LIGHT, node(), "conv", None, selected=False, hover=False)
    assert (fill.name(), border.name(), width) == (QColor(LIGHT.kinds["conv"]).name(), LIGHT.node_border, 1.2)
    fill, border, width = node_look(LIGHT, node(broken=True), "conv", None, selected=False, hover=True)
    assert (fill.name(), border.name(), width) == (LIGHT.broken_fill, LIGHT.hover, 2.4)
    tint = QColor("#123456")
    fill, border, width = node_look(LIGHT, node(broken=True), "conv", tint, selected=True, hover=True)
    assert (fill.name(), border.name(), width) == ("#123456", LIGHT.selection, 3.0)  # a tint beats red


def test_text_follows_a_tint_light_or_dark_and_a_broken_nodes_detail_is_red():
    assert [c.name() for c in text_colors(LIGHT, node(), "conv", None)] == [LIGHT.text, LIGHT.text_dim]
    assert [c.name() for c in text_colors(LIGHT, node(), "conv", QColor("#ffffff"))] == ["#111827", "#374151"]
    assert [c.name() for c in text_colors(LIGHT, node(), "conv", QColor("#000000"))] == ["#f9fafb", "#e5e7eb"]
    assert text_colors(LIGHT, node(broken=True), "conv", None)[1].name() == LIGHT.broken
    io = node(kind="input")
    assert [c.name() for c in text_colors(LIGHT, io, "io", None)] == [LIGHT.background] * 2


# ---------------------------------------------------------------------------- legends and tint


def test_depth_bar_labels_skip_ones_that_would_overlap_but_always_name_the_last_block():
    assert bar_y(0, 5, 10, 100) == 10 and bar_y(4, 5, 10, 100) == 110
    ticks = [(0, "a"), (1, "b"), (3, "c"), (4, "last")]
    got = bar_labels(ticks, 5, 0.0, 40.0, line_h=15.0)  # blocks 10 apart, labels 15 tall
    # b (at 10) would overlap a and is left out; the last (at 40) would overlap c: moved down
    assert got == [(0.0, 0.0, "a"), (30.0, 30.0, "c"), (40.0, 45.0, "last")]
    crowded = bar_labels([(0, "a"), (1, "last")], 2, 0.0, 5.0, line_h=15.0)
    assert crowded == [(0.0, 0.0, "a"), (5.0, 15.0, "last")]  # its tick stays, its label moves down


def test_tint_places_nodes_on_the_log_scale_and_faulted_ones_apart():
    logs = log_values(["a", "b", "c", "d"], [10.0, 1000.0, float("nan"), 0.0])
    assert logs == {"a": 1.0, "b": 3.0}
    assert log_range(logs) == (1.0, 3.0) and log_range({}) is None
    faulted, places = node_tints({"na": ["a"], "nab": ["a", "b"], "nc": ["c"], "nbad": ["b", "x"]}, logs,
                                 {"x"}, (1.0, 3.0))  # fmt: skip
    assert faulted == {"nbad"} and places == {"na": 0.0, "nab": 0.5}
    assert node_tints({"na": ["a"]}, {"a": 2.0}, set(), (2.0, 2.0)) == (set(), {"na": 0.0})  # one value: no span


# ---------------------------------------------------------------------------- following a run


def steps_file(steps) -> bytes:
    return b"".join(json.dumps({"step": s, "loss": 1.0}).encode() + b"\n" for s in steps)


def test_sampling_plan_phases_find_the_head_the_spacing_and_each_step(monkeypatch):
    monkeypatch.setattr(follow, "TAIL", 2)
    mm = steps_file(range(0, 200, 2))
    head_end = follow._head_end(mm)
    assert mm[head_end:].count(b"\n") == 2  # the last TAIL lines are left to the poll
    assert follow._head_end(steps_file([0, 1])) is None
    assert follow._even_steps(mm, head_end) == (0, 2, 98)
    assert follow._even_steps(mm, head_end, every=4) is None  # 2-spaced steps are not every 4
    uneven = steps_file([0, 2, 5, 6, 7])  # the head ends at step 5: not a multiple of 2 from 0
    assert follow._even_steps(uneven, follow._head_end(uneven)) is None
    assert [follow._stride_for(n, 10) for n in (10, 11, 40, 41)] == [1, 2, 4, 8]
    avg = head_end / 98
    a, b = follow._line_of_step(mm, 120, 60, 0, avg, 2, head_end)
    assert json.loads(mm[a:b])["step"] == 120
    plan, stride, end = follow._plan(mm, 10)
    assert stride == 16 and end == head_end and plan.count == 98
    assert [json.loads(mm[a:b])["step"] for a, b in plan] == list(range(0, 196, 32))


def test_follow_says_new_events_and_faults_once_and_how_it_ended():
    events = [{"kind": "note", "message": "hi"}, {"kind": "stepped"}, {"kind": "error", "message": "boom"}]
    store = SimpleNamespace(faults=[{"step": 3, "message": ""}, {"step": 9, "message": "nan"}], count=12)
    run = SimpleNamespace(new_events=lambda: events, store=store, meta={"message": "done"},
                          state=SimpleNamespace(value="finished"), reader=SimpleNamespace(skipped=2))  # fmt: skip
    lines, shown = news_lines(run, 1)
    assert lines == ["note: hi", "error: boom", "fault at step 9: nan"] and shown == 2
    assert closing_lines(run, once=False) == ["run finished: 12 steps read; done",
                                              "note: 2 unreadable lines skipped (a crash mid-write)"]  # fmt: skip
    assert closing_lines(run, once=True)[0] == "12 steps read; the run is finished"


# ---------------------------------------------------------------------------- panels


def test_a_class_whose_file_no_longer_parses_has_no_source_place(tmp_path, monkeypatch):
    (tmp_path / "gone_odd.py").write_text("class Odd:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("gone_odd")
    (tmp_path / "gone_odd.py").write_text("class Odd(:\n    pass\n")  # edited since: not Python now
    try:
        assert class_source(mod.Odd) == ""
    finally:
        sys.modules.pop("gone_odd", None)


def test_issue_cards_replace_the_old_content_at_once(qtbot):
    import resviz
    from resviz.gui.panels.issues import QtIssuesPanel
    from tests.nets import TinyResNet

    panel = QtIssuesPanel()
    qtbot.addWidget(panel)
    panel.show()
    old = [w for w in panel.widget().findChildren(QLabel) if w.text() == "No model loaded."]
    assert old and old[0].isVisible()
    panel.set_report(resviz.analyze(TinyResNet(broken=True), (1, 3, 32, 32), suggest_sizes=False))
    # no event loop turn yet (deleteLater has not run): the old label must not paint over the cards
    assert not old[0].isVisible() and len(panel.cards) == 2


def test_the_window_says_when_graphviz_was_wanted_but_the_built_in_layout_drew(qtbot, monkeypatch):
    import torch
    from torch import nn

    from resviz.gui.window.main_window import QtMainWindow
    from resviz.render import layout as layout_mod

    class Branches(nn.Module):  # parallel branches that are not shortcuts: Graphviz's kind of graph
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    monkeypatch.setattr(layout_mod, "dot_available", lambda: False)
    win = QtMainWindow()
    qtbot.addWidget(win)
    win.show()
    try:
        win.open_module(Branches(), (1, 3, 8, 8), name="Branches")
        qtbot.waitUntil(lambda: win.is_idle() and win.document.drawn is not None, timeout=TIMEOUT)
        assert win.document.drawn.layout.engine == "chain"
        assert "Graphviz's `dot` program is not installed" in win.banner.text()
        assert "built-in chain layout" in win.banner.text()
    finally:
        win.close()


# ---------------------------------------------------------------------------- inspector


class _InspectedBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def test_the_inspector_finds_a_live_models_layer_and_block_class_by_path(qtbot):
    """Records name their module; the report finds it in the live model for the Inspector."""
    import inspect

    import resviz
    from resviz.gui.panels.inspector import QtInspector
    from resviz.render.view import build_view, render_state

    model = torch.nn.Sequential(_InspectedBlock(), _InspectedBlock())
    report = resviz.analyze(model, (1, 4, 6, 6))
    panel = QtInspector()
    qtbot.addWidget(panel)
    panel.set_report(report)
    panel.show_node(build_view(report, render_state(report)).node_for_name("0"))  # a folded block
    where = f"{__file__}:{inspect.getsourcelines(_InspectedBlock)[1]}"
    qtbot.waitUntil(lambda: where in panel.text(), timeout=TIMEOUT)
    panel.show_node(build_view(report, render_state(report, collapse="none")).node_for_name("1.conv"))
    assert "out_channels = 4" in panel.text() and "kernel_size = 3" in panel.text()
    qtbot.waitUntil(lambda: "conv.py:" in panel.text(), timeout=TIMEOUT)  # torch's Conv2d
