"""A layout made for residual chains, and the fallback to Graphviz for other graphs.

Why not give every graph to ``dot``? Residual networks are chains with bypasses, and a layout that
knows that is faster (resnet1202's 600 blocks in a few ms, no subprocess), stable (expanding one
block moves only what is below it) and can promise what ``dot`` cannot: the main path is one
straight column and skip arcs run beside it, never across it.

The chain layout:

1. The *main path* is the longest chain of nodes from input to output that avoids shortcut-path
   nodes (the residual branch is always longer than its shortcut).
2. Nodes are placed top to bottom in execution order; a node sits below all its predecessors, main
   nodes also below the previous main node. Room is left above the first node of each stage or
   expanded block for its title.
3. Off-main nodes (projection convs, pooling shortcuts, other branches) go to side columns to the
   right; a chain of them stays in one column.
4. Main-to-main edges that skip over nodes (identity shortcuts) become arcs in lanes just right of
   the main column; overlapping arcs get different lanes.

Coordinates are in pixels with y growing downwards, as in Qt and SVG.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from .view import BlockGraph

Point = tuple[float, float]


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class Route:
    points: list[Point]
    label_pos: Point | None  # None: draw no label (the same tensor is labelled on a sibling edge)
    label_anchor: str = "left"  # where the label text starts relative to label_pos: left|right
    spline: bool = False  # points are cubic Bézier control points (Graphviz), not a polyline


@dataclass
class Layout:
    nodes: dict[str, Box]
    edges: list[Route]  # parallel to BlockGraph.edges
    groups: dict[str, Box]
    self_arcs: dict[str, Route] = field(default_factory=dict)  # folded blocks' skip arcs
    width: float = 0
    height: float = 0
    engine: str = "chain"
    main: list[str] = field(default_factory=list)
    note: str = ""  # why the engine differs from the one asked for, for the user


@dataclass
class Metrics:
    node_h: float = 40
    add_size: float = 26
    gap: float = 30  # vertical gap between nodes; holds the edge's shape label
    pad_x: float = 14
    min_w: float = 120
    lane: float = 16
    side_gap: float = 56
    stage_title: float = 58  # room above a stage whose first node also starts a block frame
    block_title: float = 8
    group_pad: float = 10
    margin: float = 24
    label_w: float = 80  # room left of the main column for edge labels
    title_line: float = 14


def approx_measure(text: str, size: float = 12) -> float:
    """Text width without a font engine: good enough for SVG/DOT and tests."""
    return len(text) * size * 0.58


def chain_layout(
    graph: BlockGraph,
    measure: Callable[[str], float] = approx_measure,
    small_measure: Callable[[str], float] | None = None,
    metrics: Metrics | None = None,
) -> Layout:
    """Lay a residual chain out in the phases below, each a function that returns data."""
    m = metrics or Metrics()
    small = small_measure or (lambda t: measure(t) * 0.85)
    nodes = graph.nodes
    topo = topology(graph)
    main = _main_path(topo.order, topo.preds, nodes)
    on_main = set(main)
    size = {n: node_size(nodes[n], measure, small, m) for n in topo.order}
    titles = group_titles(graph, on_main, topo.rank, m)
    y = place_rows(topo, on_main, size, titles, m)

    # main column: centred on x = 0
    boxes: dict[str, Box] = {}
    for n in main:
        w, h = size[n]
        boxes[n] = Box(-w / 2, y[n], w, h)
    main_half = max((size[n][0] / 2 for n in main), default=m.min_w / 2)
    arcs = arc_lanes(graph, main, boxes, small)
    self_arc_w = max((small(nodes[n].skip_label) + 30 for n in main if nodes[n].skip), default=0)

    # side columns, right of the arcs
    off = [n for n in topo.order if n not in on_main]
    side_x0 = main_half + max(arcs.count * m.lane + arcs.label_w + 12, self_arc_w) + m.side_gap
    boxes.update(side_boxes(off, topo.preds, y, size, side_x0, m))

    routes = route_edges(graph, boxes, main, arcs, m)
    right_edge = max(max((b.right for b in boxes.values()), default=0),
                     main_half + arcs.count * m.lane + arcs.label_w + 20,
                     main_half + self_arc_w)  # fmt: skip
    gutter = max((measure(line) for g in graph.groups for line in g.label.split("\n")),
                 default=0) + 16  # fmt: skip
    left_edge = -main_half - 12 - gutter
    arc_x = arc_right_ends(graph, arcs, routes, small)
    frames = group_frames(graph, boxes, titles, arc_x, (left_edge, right_edge), m)
    layout = Layout(boxes, routes, frames, self_arcs(graph, main, boxes), main=main)
    _normalise(layout, m.margin)
    return layout


# ------------------------------------------------------------------- phases


@dataclass
class Topology:
    """The graph as the layout reads it: nodes in execution order, forward edges only."""

    order: list[str]
    rank: dict[str, int]
    preds: dict[str, list[str]]


def topology(graph: BlockGraph) -> Topology:
    nodes = graph.nodes
    order = sorted(nodes, key=lambda n: (nodes[n].order, n))
    rank = {n: i for i, n in enumerate(order)}
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for e in graph.edges:
        if e.src in nodes and e.dst in nodes and rank[e.src] < rank[e.dst]:
            preds[e.dst].append(e.src)
    return Topology(order, rank, preds)


@dataclass
class Titles:
    """Room for group titles: the groups starting at each main node, the padding after each
    group's last main node, and the deepest group holding each node."""

    starts: dict[str, list]  # main node -> groups whose first main node it is, shallow first
    pad_after: dict[str, float]  # main node -> padding below it (groups ending there)
    first: dict[str, str]  # group id -> its first main node
    inner: dict[str, str]  # node -> id of the deepest group holding it
    metrics: Metrics

    def height(self, g) -> float:
        """Room above a group's first node for its title.

        Group titles sit in a gutter left of the main column, so no edge ever crosses one. A
        stage needs room above its first node only when a block frame (with its own title)
        starts there."""
        m = self.metrics
        if g.kind != "stage":
            return m.block_title + m.group_pad
        shared = any(h.kind != "stage" for h in self.starts.get(self.first.get(g.id), ()))
        return (m.stage_title if shared else 6) + m.group_pad

    def above(self, n: str) -> float:
        """Room above main node ``n`` for the titles of every group that starts at it."""
        return sum(self.height(g) for g in self.starts.get(n, ()))


def group_titles(graph: BlockGraph, on_main: set[str], rank: dict[str, int], m: Metrics) -> Titles:
    starts: dict[str, list] = {}
    pad_after: dict[str, float] = {}
    first_of: dict[str, str] = {}
    inner: dict[str, str] = {}
    for g in sorted(graph.groups, key=lambda g: g.depth):
        for n in g.nodes:
            inner[n] = g.id
        members = [n for n in g.nodes if n in on_main]
        if not members:
            continue
        first = min(members, key=rank.get)
        last = max(members, key=rank.get)
        first_of[g.id] = first
        starts.setdefault(first, []).append(g)
        pad_after[last] = pad_after.get(last, 0) + m.group_pad
    return Titles(starts, pad_after, first_of, inner, m)


class _Rows:
    """Vertical placement in progress: each placed node's top, and how far the main column got."""

    def __init__(self, preds, on_main, size, titles: Titles, m: Metrics):
        self.preds, self.on_main, self.size, self.titles, self.m = preds, on_main, size, titles, m
        self.y: dict[str, float] = {}
        self.last = -m.gap  # bottom of the last main node
        self.pad = 0.0  # padding owed below it (groups that ended there)

    def place(self, n: str) -> None:
        y, size, m = self.y, self.size, self.m
        top = max((y[p] + size[p][1] + m.gap for p in self.preds[n]), default=0.0)
        if n in self.on_main:
            # below its titles, or below a side node that feeds it (already inside its group)
            top = max(top, self.last + m.gap + self.pad + self.titles.above(n))
            self.pad = self.titles.pad_after.get(n, 0)
            self.last = top + size[n][1]
        else:
            g = self.titles.inner.get(n)
            first = self.titles.first
            if g in first and first[g] in y:
                top = max(top, y[first[g]])
            elif g in first:  # it feeds its group's first node (a tree's projection): inside the
                top = max(top, self.last + m.gap + self.pad + m.group_pad)  # group, after the last
        y[n] = top

    def ready(self, n: str) -> bool:
        g = self.titles.inner.get(n)
        first = self.titles.first
        return all(p in self.y for p in self.preds[n]) and (g not in first or first[g] in self.y)

    def place_ready(self, pending: list[str]) -> None:
        progress = True
        while progress:
            progress = False
            for q in list(pending):
                if self.ready(q):
                    pending.remove(q)
                    self.place(q)
                    progress = True


def _place_pending_preds(n: str, preds, pending: list[str], rows) -> None:
    for p in preds[n]:
        if p in pending:
            pending.remove(p)
            _place_pending_preds(p, preds, pending, rows)
            rows.place(p)


def place_rows(topo: Topology, on_main: set[str], size: dict[str, tuple[float, float]],
               titles: Titles, m: Metrics) -> dict[str, float]:  # fmt: skip
    """The top of every node, in execution order. A side node waits until the first main node
    of its group is placed, so a shortcut never floats above its block's title."""
    rows = _Rows(topo.preds, on_main, size, titles, m)
    pending: list[str] = []
    for n in topo.order:
        if n not in on_main:
            pending.append(n)
        else:
            _place_pending_preds(n, topo.preds, pending, rows)  # a main node never waits for a
            rows.place(n)  # shortcut that feeds it, however many ops long (a tree's projection)
        rows.place_ready(pending)
    for q in pending:
        rows.place(q)
    return rows.y


@dataclass
class Arcs:
    """Main-to-main edges that jump over main nodes (identity shortcuts), drawn as arcs."""

    lane: dict[int, int]  # edge index -> lane (0 is nearest the main column)
    count: int  # lanes used
    label_w: float  # the widest arc label


def arc_lanes(graph: BlockGraph, main: list[str], boxes: dict[str, Box], small) -> Arcs:
    main_index = {n: i for i, n in enumerate(main)}
    arc_edges = [i for i, e in enumerate(graph.edges)
                 if e.src in main_index and e.dst in main_index
                 and main_index[e.dst] - main_index[e.src] > 1]  # fmt: skip
    lanes = _pack([(boxes[graph.edges[i].src].bottom, boxes[graph.edges[i].dst].y) for i in arc_edges])
    label_w = max((small(graph.edges[i].label) for i in arc_edges), default=0)
    return Arcs(dict(zip(arc_edges, lanes)), max(lanes, default=-1) + 1, label_w)


def side_columns(off: list[str], preds: dict[str, list[str]], y: dict[str, float],
                 size: dict[str, tuple[float, float]], m: Metrics) -> dict[str, int]:  # fmt: skip
    """The side column of each off-main node: a chain of them stays in one column, others take
    the first column free over their height."""
    col: dict[str, int] = {}
    busy: list[list[tuple[float, float]]] = []  # spans per column, in placement order

    def free(c: int, span) -> bool:
        # spans arrive roughly in y order: checking the most recent few is enough and keeps this
        # linear for resnet1202's 1200 shortcut nodes
        return all(span[1] <= a or span[0] >= b for a, b in busy[c][-4:])

    for n in off:
        span = (y[n] - m.gap / 2, y[n] + size[n][1] + m.gap / 2)
        want = [c for c in (col.get(p) for p in preds[n]) if c is not None][:1]
        choice = next((c for c in want + list(range(len(busy))) if free(c, span)), None)
        if choice is None:
            busy.append([])
            choice = len(busy) - 1
        busy[choice].append(span)
        col[n] = choice
    return col


def side_boxes(off: list[str], preds: dict[str, list[str]], y: dict[str, float],
               size: dict[str, tuple[float, float]], x0: float, m: Metrics) -> dict[str, Box]:  # fmt: skip
    """Boxes for the off-main nodes, in columns of the widest side node's width from ``x0``."""
    col = side_columns(off, preds, y, size, m)
    side_w = max((size[n][0] for n in off), default=0)
    boxes: dict[str, Box] = {}
    for n in off:
        w, h = size[n]
        cx = x0 + col[n] * (side_w + m.side_gap) + side_w / 2
        boxes[n] = Box(cx - w / 2, y[n], w, h)
    return boxes


def route_edges(graph: BlockGraph, boxes: dict[str, Box], main: list[str], arcs: Arcs,
                m: Metrics) -> list[Route]:  # fmt: skip
    """One route per edge, parallel to ``graph.edges``."""
    on_main = set(main)
    main_index = {n: i for i, n in enumerate(main)}
    routes: list[Route] = []
    for i, e in enumerate(graph.edges):
        a, b = boxes.get(e.src), boxes.get(e.dst)
        if a is None or b is None:
            routes.append(Route([], (0, 0)))
        elif i in arcs.lane:
            local = max(a.right, b.right, _max_right(boxes, main, main_index, e.src, e.dst))
            x = local + 14 + arcs.lane[i] * m.lane
            pts = [(a.cx, a.bottom), (a.cx, a.bottom + 8), (x, a.bottom + 8), (x, b.cy),
                   (b.right, b.cy)]  # fmt: skip
            gap = 10 if e.broken else 5  # a broken add's label box keeps clear of its heavy line
            routes.append(Route(pts, (x + gap, (a.bottom + b.cy) / 2), "left"))
        else:
            routes.append(_plain_route(a, b, e.src in on_main, e.dst in on_main))
    return routes


def _plain_route(a: Box, b: Box, src_main: bool, dst_main: bool) -> Route:
    if src_main and dst_main:
        pts = [(a.cx, a.bottom), (b.cx, b.y)]
        return Route(pts, (a.cx - 7, (a.bottom + b.y) / 2), "right")
    if src_main:  # main → side: the tensor forks just below its producer
        sy = a.bottom + 8
        pts = [(a.cx, a.bottom), (a.cx, sy), (b.cx, sy), (b.cx, b.y)]
        return Route(pts, (b.cx - 6, (sy + b.y) / 2), "right")
    if dst_main:  # side → main
        pts = [(a.cx, a.bottom), (a.cx, b.cy), (b.right, b.cy)]
        return Route(pts, (a.cx - 6, (a.bottom + b.cy) / 2), "right")
    if abs(a.cx - b.cx) < 1:  # side → side, in one column
        pts = [(a.cx, a.bottom), (b.cx, b.y)]
    else:
        mid = (a.bottom + b.y) / 2
        pts = [(a.cx, a.bottom), (a.cx, mid), (b.cx, mid), (b.cx, b.y)]
    return Route(pts, (b.cx - 6, (a.bottom + b.y) / 2), "right")


def self_arcs(graph: BlockGraph, main: list[str], boxes: dict[str, Box]) -> dict[str, Route]:
    """A folded block's own shortcut: a small arc right of its box."""
    arcs: dict[str, Route] = {}
    for n in main:
        if graph.nodes[n].skip:
            bx = boxes[n]
            x = bx.right + 16
            top, bottom = bx.y + 7, bx.bottom - 7
            pts = [(bx.right, top), (x, top), (x, bottom), (bx.right, bottom)]
            arcs[n] = Route(pts, (x + 6, bx.cy), "left")
    return arcs


def arc_right_ends(graph: BlockGraph, arcs: Arcs, routes: list[Route], small) -> dict[str, float]:
    """The right end of the arcs and their labels, by the node they end at."""
    arc_x: dict[str, float] = {}
    for i in arcs.lane:
        route = routes[i]
        if route.points:
            edge = graph.edges[i]
            right = route.points[2][0]
            if route.label_pos is not None and edge.label:
                right = max(right, route.label_pos[0] + small(edge.label) + 6)
            arc_x[edge.dst] = max(arc_x.get(edge.dst, 0), right)
    return arc_x


def group_frames(graph: BlockGraph, boxes: dict[str, Box], titles: Titles, arc_x: dict[str, float],
                 edges: tuple[float, float], m: Metrics) -> dict[str, Box]:  # fmt: skip
    """Stage bands span the drawing from ``edges`` (left, right); block frames wrap their nodes.

    An arc ending inside a block frame (with its shape label) stays inside it, well clear of the
    frame line: a broken block's shortcut must never be mistaken for its frame."""
    left_edge, right_edge = edges
    frames: dict[str, Box] = {}
    for g in sorted(graph.groups, key=lambda g: g.depth):
        members = [boxes[n] for n in g.nodes if n in boxes]
        if not members:
            continue
        bottom = max(b.bottom for b in members)
        first = titles.first.get(g.id)
        if first is not None:  # the titles of this group and the groups inside it starting here
            top = boxes[first].y - sum(titles.height(h) for h in titles.starts[first]
                                       if h.depth >= g.depth)  # fmt: skip
        else:
            top = min(b.y for b in members) - titles.height(g)
        top += m.group_pad if g.kind == "stage" else m.group_pad / 2
        top = min(top, min(b.y for b in members) - m.group_pad)  # side nodes placed before its first
        if g.kind == "stage":
            x0, x1 = left_edge - 8, right_edge + 16
        else:
            x0 = min(min(b.x for b in members) - m.group_pad, left_edge + 4 + 6 * g.depth)
            x1 = max(b.right for b in members) + m.group_pad
            arcs_right = max((arc_x.get(n, 0) for n in g.nodes), default=0)
            x1 = max(x1, arcs_right + m.group_pad + 6)
        frames[g.id] = Box(x0, top, x1 - x0, bottom - top + m.group_pad)
    return frames


def node_size(node, measure, small, m: Metrics) -> tuple[float, float]:
    """Width and height of a node's box, from its two lines of text."""
    if node.is_add and node.kind == "op":
        return m.add_size + 2, m.add_size
    w = max(measure(node.label), small(node.detail), 40) + 2 * m.pad_x
    if node.skip:
        w = max(w, m.min_w)
    return max(w, m.min_w if node.kind != "op" or node.params else 90), m.node_h


def _max_right(boxes, main, main_index, src, dst) -> float:
    """Rightmost edge of the main nodes an arc passes (those between its ends)."""
    lo, hi = main_index[src], main_index[dst]
    return max((boxes[n].right for n in main[lo : hi + 1]), default=0.0)


def _main_path(order: list[str], preds: dict[str, list[str]], nodes) -> list[str]:
    """Longest chain of non-shortcut nodes ending at the output (execution order breaks ties)."""
    rank = {n: i for i, n in enumerate(order)}
    best: dict[str, int] = {}
    back: dict[str, str | None] = {}
    for n in order:
        if nodes[n].side:
            continue
        cands = [p for p in preds[n] if p in best]
        if cands:
            p = max(cands, key=lambda q: (best[q], rank[q]))
            best[n], back[n] = best[p] + 1, p
        else:
            best[n], back[n] = 1, None
    if not best:
        return []
    outputs = [n for n in order if nodes[n].kind == "output" and n in best]
    end = outputs[-1] if outputs else max(best, key=lambda n: (best[n], rank[n]))
    path = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = back[cur]
    path.reverse()
    return path


def _pack(intervals: list[tuple[float, float]]) -> list[int]:
    """Greedy interval colouring: overlapping intervals get different lanes."""
    lanes_end: list[float] = []
    out = [0] * len(intervals)
    for i in sorted(range(len(intervals)), key=lambda i: intervals[i][0]):
        a, b = intervals[i]
        for lane, end in enumerate(lanes_end):
            if a >= end - 1e-6:
                lanes_end[lane] = b
                out[i] = lane
                break
        else:
            lanes_end.append(b)
            out[i] = len(lanes_end) - 1
    return out


def _normalise(layout: Layout, margin: float) -> None:
    xs, ys = [], []
    for b in list(layout.nodes.values()) + list(layout.groups.values()):
        xs += [b.x, b.right]
        ys += [b.y, b.bottom]
    for r in list(layout.edges) + list(layout.self_arcs.values()):
        for p in r.points:
            xs.append(p[0])
            ys.append(p[1])
    if not xs:
        return
    dx, dy = margin - min(xs), margin - min(ys)
    for b in list(layout.nodes.values()) + list(layout.groups.values()):
        b.x += dx
        b.y += dy
    for r in list(layout.edges) + list(layout.self_arcs.values()):
        r.points = [(x + dx, y + dy) for x, y in r.points]
        if r.label_pos is not None:
            r.label_pos = (r.label_pos[0] + dx, r.label_pos[1] + dy)
    layout.width = max(xs) + dx + margin + 60
    layout.height = max(ys) + dy + margin


def is_chain_like(graph: BlockGraph, layout: Layout) -> bool:
    """A residual chain: everything off the main path lies on a shortcut of a residual add.

    Parallel branches that are not shortcuts (Inception-style, U-Net decoders, multi-head outputs)
    are drawn better by Graphviz.
    """
    main = set(layout.main)
    return all(graph.nodes[n].side for n in layout.nodes if n not in main)


def dot_available() -> bool:
    return shutil.which("dot") is not None


NO_DOT = "Graphviz's `dot` program is not installed (or not on PATH)"


def auto_layout(graph: BlockGraph, measure=approx_measure, small_measure=None,
                engine: str = "auto") -> Layout:  # fmt: skip
    """Chain layout for residual chains; Graphviz ``dot`` for other graphs when installed.

    When ``dot`` was wanted but could not be used, the layout's ``note`` says so and why."""
    if engine not in ("dot", "auto"):
        return chain_layout(graph, measure, small_measure)
    chain = chain_layout(graph, measure, small_measure) if engine == "auto" else None
    wanted = engine == "dot" or not is_chain_like(graph, chain)
    if not wanted:
        return chain
    note = ""
    if dot_available():
        from .dot import DotFailed, dot_layout

        try:
            return dot_layout(graph, measure, small_measure)
        except DotFailed as e:  # a Graphviz failure must not cost the user the picture
            note = f"Graphviz's `dot` failed ({e})"
    else:
        note = NO_DOT
    layout = chain or chain_layout(graph, measure, small_measure)
    if engine == "dot":
        layout.note = f"{note}: drew with resviz's built-in chain layout instead"
    else:
        layout.note = (f"this graph has branches that are not shortcuts, which Graphviz lays out "
                       f"better, but {note}: drew with resviz's built-in chain layout")  # fmt: skip
    return layout
