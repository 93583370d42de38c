"""Graphviz: DOT export of the block graph, and ``dot`` as the layout for non-chain graphs.

The DOT text is built with the ``graphviz`` Python package, which needs no Graphviz install; only
laying out (``dot_layout``) runs the ``dot`` program.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import graphviz

from ..core.files import atomic_write_text
from .layout import Box, Layout, Metrics, Route, approx_measure, node_size
from .theme import LIGHT, SHORTCUT_DASH, Theme, category, edge_style
from .view import BlockGraph, build_view, render_state


def _q(text: str) -> str:
    # graphviz.quote escapes double quotes itself; a line break must be DOT's escape sequence
    return text.replace("\n", "\\n")


def to_dot(graph: BlockGraph, theme: Theme = LIGHT, sizes: dict | None = None) -> graphviz.Digraph:
    """The view as a Digraph: stages and expanded blocks as nested clusters, skip edges styled by
    shortcut kind, every edge labelled with its shape."""
    g = _digraph(graph, theme)
    owner, children = cluster_tree(graph)

    def add_nodes(sub: graphviz.Digraph, group_id: str | None) -> None:
        for nid, n in graph.nodes.items():
            if owner.get(nid) == group_id:
                sub.node(nid, **node_attrs(n, theme, sizes.get(nid) if sizes else None))
        for grp in children.get(group_id, []):
            with sub.subgraph(name=f"cluster_{grp.id.replace(':', '_').replace('.', '_')}") as c:
                c.attr(**_cluster_attrs(grp, theme))
                add_nodes(c, grp.id)

    add_nodes(g, None)
    for i, (e, text) in enumerate(zip(graph.edges, edge_texts(graph))):
        g.edge(e.src, e.dst, **edge_attrs(e, i, text, theme))
    for nid, n in graph.nodes.items():
        if n.skip:  # a folded block's own shortcut: a self-loop beside it
            color = theme.shortcuts.get(n.skip, theme.edge)
            g.edge(nid, nid, label=_q(n.skip_label), color=color, fontcolor=color,
                   style="dashed" if SHORTCUT_DASH.get(n.skip) else "solid", id=f"s{nid}")  # fmt: skip
    return g


def _digraph(graph: BlockGraph, theme: Theme) -> graphviz.Digraph:
    g = graphviz.Digraph(graph.title or "resviz", strict=False)
    g.attr(rankdir="TB", fontname="Helvetica", fontsize="10", nodesep="0.35", ranksep="0.3",
           bgcolor=theme.background, label=_q(f"{graph.title} · batch {graph.batch}"),
           labelloc="t")  # fmt: skip
    g.attr("node", fontname="Helvetica", fontsize="10", shape="box", style="rounded,filled",
           color=theme.node_border, fontcolor=theme.text)  # fmt: skip
    g.attr("edge", fontname="Helvetica", fontsize="8", color=theme.edge,
           fontcolor=theme.edge_label, arrowsize="0.6")  # fmt: skip
    return g


def cluster_tree(graph: BlockGraph) -> tuple[dict[str, str], dict[str | None, list]]:
    """Groups nested by name (a block frame inside its stage band): the deepest group holding each
    node, and the groups directly inside each group (``None``: at the top)."""
    groups = sorted(graph.groups, key=lambda x: x.depth)
    owner: dict[str, str] = {}
    for grp in groups:  # deeper groups come later and win
        for n in grp.nodes:
            owner[n] = grp.id
    children: dict[str | None, list] = {}
    for grp in groups:
        parent = None
        for other in groups:
            if other is not grp and other.depth < grp.depth and grp.name.startswith(other.name + "."):
                parent = other.id
        children.setdefault(parent, []).append(grp)
    return owner, children


def node_attrs(n, theme: Theme, size: tuple[float, float] | None = None) -> dict[str, str]:
    """A node's DOT attributes; ``size`` (points at 72 dpi) fixes its box to the drawing's own text
    metrics."""
    cat = category(n.type, n.kind)
    attrs = {"fillcolor": theme.kinds.get(cat, theme.kinds["other"]), "tooltip": _q(n.name)}
    if n.is_add and n.kind == "op":
        attrs.update(shape="circle", label="+", width="0.3", fixedsize="true")
    else:
        attrs["label"] = _q(f"{n.label}\n{n.detail}")
    if size is not None:
        w, h = size
        attrs.update(width=f"{w / 72:.3f}", height=f"{h / 72:.3f}", fixedsize="true")
    if cat == "io":
        attrs.update(fontcolor=theme.background, style="rounded,filled")
    if n.broken:
        attrs.update(color=theme.broken, penwidth="2", fillcolor=theme.broken_fill)
    if n.kind in ("block", "rollup"):
        # the stripe in the shortcut's colour down its left edge, as the app draws a folded block
        # (Graphviz stripes only square boxes; 6 pt wide where the box's size is known)
        share = min(0.2, 6 / size[0]) if size is not None and size[0] > 0 else 0.04
        stripe = theme.shortcuts.get(n.stripe_kind or "none", theme.node_border)
        attrs.update(style="striped", fillcolor=f"{stripe};{share:.3f}:{attrs['fillcolor']}")
    return attrs


def _cluster_attrs(grp, theme: Theme) -> dict[str, str]:
    return dict(label=_q(grp.label.replace("\n", " · ")), labeljust="l",
                style="dashed" if grp.kind == "block" else "filled",
                color=theme.broken if grp.broken else theme.block_frame,
                fillcolor=theme.stage_fills[0], fontcolor=theme.stage_text, id=grp.id)  # fmt: skip


def edge_texts(graph: BlockGraph) -> list[str]:
    """The label drawn on each edge. A tensor that fans out to several layers is labelled once:
    Graphviz would otherwise stack the same shape side by side above every branch."""
    labelled: set[tuple[str, int]] = set()
    texts = []
    for e in graph.edges:
        key = (e.src, e.value)
        texts.append("" if key in labelled and e.kind != "skip" and not e.broken else e.label)
        labelled.add(key)
    return texts


def edge_attrs(e, i: int, text: str, theme: Theme) -> dict[str, str]:
    """Edge ``i``'s DOT attributes: shortcuts coloured (and dashed) by kind; a broken add's operands
    solid and heavy, never read as the broken block's dashed frame."""
    attrs = {"label": _q(text), "id": f"e{i}", "tooltip": _q(e.label)}
    if e.kind == "skip":
        color = theme.shortcuts.get(e.shortcut or "other", theme.edge)
        attrs.update(color=color, fontcolor=color, penwidth="1.6", weight="0")
        if SHORTCUT_DASH.get(e.shortcut or "other"):
            attrs["style"] = "dashed"
    if e.broken:
        line = edge_style(theme, e.kind, e.shortcut, True)
        attrs.update(color=line.color, fontcolor=line.color, penwidth=f"{line.width:g}",
                     style="solid")  # fmt: skip
    return attrs


def write_dot(report, path, *, depth: int | None = None, collapse: str | None = None,
              rollup: bool = False) -> Path:  # fmt: skip
    """Write the view ``resviz render`` draws with these folds as a .dot file, atomically."""
    state = render_state(report, depth=depth, collapse=collapse, rollup=rollup)
    text = to_dot(build_view(report, state)).source
    return atomic_write_text(path, text)


def dot_layout(graph: BlockGraph, measure=approx_measure, small_measure=None) -> Layout:
    """Positions from Graphviz ``dot`` (for graphs that are not residual chains)."""
    m = Metrics()
    small = small_measure or (lambda t: measure(t) * 0.85)
    sizes = {nid: node_size(n, measure, small, m) for nid, n in graph.nodes.items()}
    g = to_dot(graph, sizes=sizes)
    g.attr(fontsize="14")  # cluster titles: room for the drawing's own title font
    data = _run_dot(g)
    bb = [float(v) for v in data["bb"].split(",")]
    height = bb[3]

    def pt(s: str) -> tuple[float, float]:
        x, y = s.split(",")[:2]
        return float(x), height - float(y)

    nodes: dict[str, Box] = {}
    groups: dict[str, Box] = {}
    gvid_name: dict[int, str] = {}
    for obj in data.get("objects", []):
        name = obj.get("name", "")
        if "nodes" in obj or name.startswith("cluster_"):
            if "bb" in obj:
                x0, y0, x1, y1 = (float(v) for v in obj["bb"].split(","))
                gid = obj.get("id") or name
                groups[gid] = Box(x0, height - y1, x1 - x0, y1 - y0)
            continue
        gvid_name[obj["_gvid"]] = name
        if name in graph.nodes and "pos" in obj:
            cx, cy = pt(obj["pos"])
            w, h = float(obj["width"]) * 72, float(obj["height"]) * 72
            nodes[name] = Box(cx - w / 2, cy - h / 2, w, h)
    routes: list[Route] = [Route([], (0, 0)) for _ in graph.edges]
    self_arcs: dict[str, Route] = {}
    for e in data.get("edges", []):
        eid = e.get("id", "")
        pts, end = _spline_points(e.get("pos", ""), pt)
        lp = pt(e["lp"]) if "lp" in e else None  # None: this edge carries no label
        route = Route(_sample(pts) + ([end] if end else []), lp, "left")
        if eid.startswith("e") and eid[1:].isdigit():
            routes[int(eid[1:])] = route
        elif eid.startswith("s"):
            self_arcs[eid[1:]] = route
    layout = Layout(nodes, routes, groups, self_arcs, width=bb[2] + 40, height=height + 40,
                    engine="dot")  # fmt: skip
    return layout


class DotFailed(RuntimeError):
    """Graphviz's ``dot`` could not lay the graph out: not runnable, failed, or wrote output that is
    not JSON. (A failure reading good output is resviz's bug and is not one of these.)"""


def _run_dot(g: graphviz.Digraph) -> dict:
    try:
        return json.loads(g.pipe(format="json", engine="dot").decode("utf-8"))
    except (graphviz.ExecutableNotFound, subprocess.CalledProcessError, OSError, ValueError) as e:
        # ValueError: output that is not UTF-8 or not JSON (UnicodeDecodeError, JSONDecodeError)
        raise DotFailed(f"{type(e).__name__}: {e}") from e


def _spline_points(pos: str, pt):
    end = None
    pts = []
    for tok in pos.split():
        if tok.startswith("e,"):
            end = pt(tok[2:])
        elif tok.startswith("s,"):
            continue
        else:
            pts.append(pt(tok))
    return pts, end


def _sample(ctrl: list[tuple[float, float]], steps: int = 6) -> list[tuple[float, float]]:
    """Cubic Bézier pieces (3n+1 control points) → a polyline."""
    if len(ctrl) < 4:
        return ctrl
    out = [ctrl[0]]
    for i in range(0, len(ctrl) - 3, 3):
        p0, p1, p2, p3 = ctrl[i : i + 4]
        for k in range(1, steps + 1):
            t = k / steps
            a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            out.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
                        a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))  # fmt: skip
    return out
