"""``resviz render`` on deep nets: folds as in the app, files every reader opens, honest notes."""

from __future__ import annotations

import pytest

import resviz
from resviz.cli import main
from resviz.core.sources import zoo
from resviz.render import layout as layout_mod
from resviz.render import pages
from resviz.render.layout import chain_layout
from resviz.render.view import build_view, render_state


@pytest.fixture(scope="module")
def resnet110():
    return resviz.analyze(zoo.build("resnet110"), (1, 3, 32, 32))  # 54 blocks, 3 stages


@pytest.fixture(scope="module")
def broken():
    from resviz.core.session.opened_model import open_model

    return open_model("assets/broken_identity.toml").report


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------- folds (headless)


def test_collapse_and_rollup_draw_what_the_app_would(resnet110):
    blocks = build_view(resnet110, render_state(resnet110))
    assert sum(n.kind == "block" for n in blocks.nodes.values()) == 54
    stages = build_view(resnet110, render_state(resnet110, collapse="stages"))
    assert sorted(n.name for n in stages.nodes.values() if n.kind == "module") == [
        "layer1", "layer2", "layer3"]  # fmt: skip
    assert not any(n.kind == "block" for n in stages.nodes.values())
    rolled = build_view(resnet110, render_state(resnet110, rollup=True))
    rollups = [n for n in rolled.nodes.values() if n.kind == "rollup"]
    assert len(rollups) == 3 and sum(n.repeat for n in rollups) == 17 + 16 + 16  # after a first
    every = build_view(resnet110, render_state(resnet110, depth=10))
    assert not any(n.kind in ("block", "module") for n in every.nodes.values())


def test_collapsing_stages_keeps_a_mismatch_in_view(broken):
    graph = build_view(broken, render_state(broken, collapse="stages"))
    folded = {n.name for n in graph.nodes.values() if n.kind == "module"}
    assert folded == {"layer1"}  # layer2 and layer3 hold the mismatches: drawn open
    assert any(n.broken and n.is_add for n in graph.nodes.values())


# ------------------------------------------------------------------- cutting (headless)


def test_cuts_never_pass_through_a_node_or_a_label(resnet110):
    graph = build_view(resnet110, render_state(resnet110, collapse="none"))
    lay = chain_layout(graph)
    blocked = pages.obstacles(lay)
    spans = pages.cut_spans(0, lay.height, 700, blocked)
    assert len(spans) > 5
    assert spans[0][0] == 0 and spans[-1][1] == lay.height
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, nothing lost
    for a, b in spans:
        assert b - a <= 700
    for _, cut in spans[:-1]:
        for box in lay.nodes.values():
            assert not box.y < cut < box.bottom


def test_an_obstacle_taller_than_a_span_is_kept_whole():
    spans = pages.cut_spans(0, 1000, 100, [(50, 400)])
    assert (50, 400) in spans or any(a <= 50 and b >= 400 for a, b in spans)
    assert spans[-1][1] == 1000


def test_a_tall_png_is_laid_out_in_columns_that_fit_the_limits(resnet110):
    graph = build_view(resnet110, render_state(resnet110))
    lay = chain_layout(graph)
    plan = pages.plan_png(lay, 0, 0, lay.width, lay.height)
    assert len(plan.sheets[0].spans) == 1  # small enough: one column at 2 px/pt
    tall = lay.height * 20  # as if the net were 20 times deeper
    plan = pages.plan_png(lay, 0, 0, lay.width, tall)
    sheet = plan.sheets[0]
    assert len(sheet.spans) > 1 and plan.scale >= pages.MIN_SCALE
    w, h = sheet.width * plan.scale, sheet.height * plan.scale
    assert max(w, h) <= pages.PNG_MAX_SIDE and w * h * 4 <= pages.PNG_MAX_BYTES
    assert 0.3 < w / h < 3  # columns make a roughly square picture, not a sliver


def test_a_png_no_reader_opens_is_refused_with_the_fix(resnet110):
    graph = build_view(resnet110, render_state(resnet110))
    lay = chain_layout(graph)
    with pytest.raises(pages.PictureTooBig) as e:
        pages.plan_png(lay, 0, 0, 20_000, 200_000, what="resnet110 drawn this way")
    msg = str(e.value)
    assert "resnet110" in msg and "256 MB" in msg and "--rollup" in msg and "--collapse" in msg


def test_a_pdf_taller_than_a_page_is_paged(resnet110):
    graph = build_view(resnet110, render_state(resnet110))
    lay = chain_layout(graph)
    assert len(pages.plan_pdf(lay, 0, 0, lay.width, lay.height).sheets) == 1
    plan = pages.plan_pdf(lay, 0, 0, lay.width, 60_000)
    assert len(plan.sheets) > 1
    assert all(s.height * plan.scale <= pages.PDF_MAX_PAGE for s in plan.sheets)
    assert sum(s.height for s in plan.sheets) == pytest.approx(60_000)


# ------------------------------------------------------------------- the command


def test_render_png_past_the_limits_comes_out_in_readable_columns(capsys, tmp_path, monkeypatch):
    from PySide6.QtGui import QImageReader

    monkeypatch.setattr(pages, "PNG_MAX_SIDE", 1500)  # resnet20 is ~2,000 px tall: must fold
    out = tmp_path / "g.png"
    code, _, err = run(capsys, "render", "resnet20", "-o", str(out))
    assert code == 0, err
    reader = QImageReader(str(out))
    size = reader.size()
    assert max(size.width(), size.height()) <= 1500
    assert size.width() > size.height() / 3  # columns side by side
    assert not reader.read().isNull()  # Qt's own reader opens it


def test_render_refuses_an_unreadable_png_before_writing(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "PNG_MAX_BYTES", 100_000)
    out = tmp_path / "g.png"
    code, _, err = run(capsys, "render", "resnet20", "-o", str(out))
    assert code == 2
    assert "--rollup" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left


def test_render_pdf_taller_than_a_page_has_several_pages(capsys, tmp_path, monkeypatch):
    import re

    monkeypatch.setattr(pages, "PDF_MAX_PAGE", 600.0)
    out = tmp_path / "g.pdf"
    code, _, err = run(capsys, "render", "resnet20", "-o", str(out))
    assert code == 0, err
    boxes = re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", out.read_bytes())
    assert len(boxes) > 1
    assert all(float(h) <= 600 for _, h in boxes)


def test_render_dot_layout_without_graphviz_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(layout_mod, "dot_available", lambda: False)
    code, _, err = run(capsys, "render", "resnet20", "-o", str(tmp_path / "g.svg"), "--layout", "dot")
    assert code == 0
    assert "note:" in err and "Graphviz" in err and "built-in" in err


def test_render_rollup_and_collapse_reach_the_dot_file(capsys, tmp_path):
    out = tmp_path / "g.dot"
    code, _, err = run(capsys, "render", "resnet110", "-o", str(out), "--rollup")
    assert code == 0, err
    assert "BasicBlock × 17" in out.read_text()
    code, _, err = run(capsys, "render", "resnet110", "-o", str(out), "--collapse", "stages")
    assert code == 0, err
    text = out.read_text()
    assert "18 blocks" in text and "layer1.0" not in text


# ------------------------------------------------------------------- the picture of a mismatch


def test_a_broken_shortcut_is_unmistakable_beside_its_block_frame(broken):
    from resviz.render.layout import approx_measure
    from resviz.render.theme import DARK, LIGHT, edge_style, frame_style

    graph = build_view(broken)  # broken blocks open, in their red dashed frames
    lay = chain_layout(graph)
    seen = 0
    for edge, route in zip(graph.edges, lay.edges):
        if not (edge.broken and edge.kind == "skip"):
            continue
        seen += 1
        frame = lay.groups[f"b:{graph.nodes[edge.dst].block}"]
        line_x = route.points[2][0]  # the arc's vertical run beside the block
        assert frame.x < line_x < frame.right - 40  # inside its frame, far from the frame line
        lx, ly = route.label_pos
        assert lx >= line_x + 8  # the shape label clear of the line...
        assert lx + approx_measure(edge.label) * 0.85 + 4 <= frame.right  # ...and of the frame
        assert frame.y < ly < frame.bottom
    assert seen == 2
    for theme in (LIGHT, DARK):  # a different stroke from the frame, not only a different place
        line, box = edge_style(theme, "skip", "identity", True), frame_style(theme, True)
        assert line.dash is None and box.dash is not None
        assert line.width >= 2 * box.width and line.halo


def test_a_stage_that_changes_the_shape_is_labelled_with_the_range(broken, resnet110):
    labels = {g.name: g.label for g in build_view(resnet110).groups if g.kind == "stage"}
    assert labels["layer1"].split("\n")[1] == "16×32×32"
    assert labels["layer2"].split("\n")[1] == "16×32×32 → 32×16×16"
    assert labels["layer3"].split("\n")[2] == "18 blocks"
