"""What is on screen: the report folded to the user's expand/collapse state.

The report holds every op. A picture shows fewer things: a collapsed block is one node with its
skip arc beside it, a collapsed stage is one node, a rolled-up run of identical blocks is one
"Bottleneck × 35" node. :func:`build_view` maps every op to the node that stands for it and keeps
the data edges between different nodes, each labelled with its tensor shape. The GUI, the DOT
exporter and the layout all read this one structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.analysis.describe import short_label
from ..core.shapes import human_shape
from .text import plural

Shape = tuple[int, ...]


@dataclass
class ViewNode:
    id: str
    kind: str  # 'input' | 'output' | 'op' | 'block' | 'module' | 'rollup'
    label: str  # first line: the name
    detail: str  # second line: what it is
    name: str  # module path (or op name) for search and selection
    type: str
    ops: list[int]  # op ids this node stands for
    call: int | None = None
    block: str | None = None  # the block this node is or belongs to
    stage: str | None = None
    side: bool = False  # on a shortcut path: drawn beside the main column
    broken: bool = False  # part of a mismatch or a shape error
    error: str = ""
    skip: str | None = None  # collapsed block: kind of the shortcut drawn as a self-arc
    skip_label: str = ""  # what a folded block's shortcut does, beside its arc and in its tooltip
    # folded block or rollup: its shortcut's kind, the colour of its stripe. Set also where the skip
    # is not its arc but an edge from its caller (a tree node's projection), so it is not grey
    stripe_kind: str | None = None
    in_shape: Shape | None = None
    out_shape: Shape | None = None
    params: int = 0
    macs: int = 0
    order: int = 0  # first op id: a topological order that follows execution
    repeat: int = 1  # rollup: how many blocks it stands for
    is_add: bool = False


@dataclass
class ViewEdge:
    src: str
    dst: str
    value: int
    shape: Shape
    label: str
    kind: str = "main"  # 'main' | 'skip'
    shortcut: str | None = None  # for skip edges: identity, projection, zero-pad, ...
    broken: bool = False  # one of the two operands of a mismatched add


@dataclass
class ViewGroup:
    id: str
    kind: str  # 'stage' | 'block' | 'module'
    label: str
    name: str
    nodes: list[str] = field(default_factory=list)
    broken: bool = False
    depth: int = 0


@dataclass
class BlockGraph:
    nodes: dict[str, ViewNode]
    edges: list[ViewEdge]
    groups: list[ViewGroup]
    batch: int | None  # stated once; edge labels are C×H×W
    title: str = ""

    def node_for_op(self, op_id: int) -> ViewNode | None:
        for n in self.nodes.values():
            if op_id in n.ops:
                return n
        return None

    def node_for_name(self, name: str) -> ViewNode | None:
        """The visible node standing for a module path (a block, a layer, an op)."""
        return self.find(name)

    def find(self, name: str) -> ViewNode | None:
        """The node whose module path is ``name`` (or that contains it)."""
        best = None
        for n in self.nodes.values():
            if n.name == name:
                return n
            if name.startswith(n.name + ".") and (best is None or len(n.name) > len(best.name)):
                best = n
        return best


@dataclass
class ViewState:
    """Which modules are folded. ``None`` means the default: blocks collapsed, unless broken."""

    collapsed: set[str] | None = None
    expanded: set[str] = field(default_factory=set)
    rolled: set[str] = field(default_factory=set)  # stage paths whose repeated blocks roll up
    depth: int | None = None  # collapse every module deeper than this

    def copy(self) -> ViewState:
        return ViewState(
            None if self.collapsed is None else set(self.collapsed), set(self.expanded),
            set(self.rolled), self.depth,
        )  # fmt: skip


def shape_label(shape: Shape | None) -> str:
    if shape is None:
        return "?"
    return human_shape(shape, batch=len(shape) <= 1)


def stage_shapes(stage) -> str:
    """What a stage does to the tensor (C×H×W, as on the edges): ``64×56×56 → 128×28×28`` when
    its blocks change the shape, else the one shape it keeps."""
    out = shape_label(stage.output_shape)
    if stage.input_shape is None or stage.input_shape == stage.output_shape:
        return out
    return f"{shape_label(stage.input_shape)} → {out}"


def default_collapsed(report) -> set[str]:
    return {b.name for b in report.blocks if not b.broken and b.name != "(model)"}


COLLAPSE_CHOICES = ("blocks", "stages", "none")


def render_state(report, *, depth: int | None = None, collapse: str | None = None,
                 rollup: bool = False) -> ViewState:  # fmt: skip
    """The fold state ``resviz render`` draws, from its options; the same choices as the app's.

    ``collapse``: ``blocks`` (the default without ``depth``) draws each healthy block as one node,
    ``stages`` each healthy stage, ``none`` every layer (the default with ``depth``). A block or
    stage holding a mismatch stays open, so the mismatch is always drawn. ``rollup`` draws each
    run of three or more identical blocks as one node, as the app's "Roll up repeated blocks".
    """
    if collapse is None:
        collapse = "none" if depth is not None else "blocks"
    if collapse not in COLLAPSE_CHOICES:
        raise ValueError(f"collapse must be one of {COLLAPSE_CHOICES}, not {collapse!r}")
    collapsed: set[str] = set()
    if collapse in ("blocks", "stages") or rollup:
        collapsed |= default_collapsed(report)
    if collapse == "stages":
        broken = {b.stage for b in report.blocks if b.broken}
        collapsed |= {s.name for s in report.stages if s.name not in broken}
    rolled = {s.name for s in report.stages} if rollup else set()
    return ViewState(collapsed=collapsed, rolled=rolled, depth=depth)


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1


def build_view(report, state: ViewState | None = None) -> BlockGraph:
    """The report folded to ``state``, in phases that each return data: which collapsed blocks roll
    up, which node stands for each op, which edges carry a shortcut, the edges between nodes, the
    arcs of folded blocks, and the stage bands and block frames."""
    state = state or ViewState()
    collapsed = set(default_collapsed(report) if state.collapsed is None else state.collapsed)
    collapsed -= state.expanded
    rollup_of = rolled_up_runs(report, state.rolled, collapsed)
    nodes, op_owner = fold_ops(report, state, collapsed, rollup_of)
    skips = shortcut_edges(report)
    for n in nodes.values():
        if n.kind == "op" and n.ops and n.ops[0] in skips.side_ops:
            n.side = True
    edges = view_edges(report, op_owner, skips.kind)
    mark_folded_skips(report, nodes, op_owner)
    groups = frame_groups(report, nodes, collapsed)
    batch = report.input_shape[0] if report.input_shape else None
    return BlockGraph(nodes, edges, groups, batch, title=report.model_name)


def rolled_up_runs(report, rolled: set[str], collapsed: set[str]) -> dict[int, tuple[int, int]]:
    """Runs of three or more identical collapsed blocks in the stages of ``rolled``: every block
    call after a run's first -> (the call its rollup node is named after, how many it stands for).
    The run's first block stays a node of its own, so the reader sees one whole block."""
    rollup_of: dict[int, tuple[int, int]] = {}
    for stage in report.stages:
        if stage.name not in rolled:
            continue
        run: list = []
        for b in [report.block(n) for n in stage.blocks] + [None]:
            if b is not None and run and b.name in collapsed and _same_block(run[-1], b):
                run.append(b)
                continue
            if len(run) >= 3:
                for rb in run[1:]:
                    rollup_of[rb.call] = (run[1].call, len(run) - 1)
            run = [b] if b is not None and b.name in collapsed else []
    return rollup_of


class _CallOwners:
    """The node standing for each call: the outermost folded call (or rollup) on its scope chain;
    ``None`` when nothing around it is folded."""

    def __init__(self, report, state: ViewState, collapsed: set[str], rollup_of):
        self.calls, self.state, self.collapsed, self.rollup_of = (
            report.calls, state, collapsed, rollup_of)  # fmt: skip
        self.owner: dict[int, str | None] = {}

    def folded(self, call) -> bool:
        if not call.path:
            return False
        if call.path in self.collapsed:
            return True
        return self.state.depth is not None and _depth(call.path) > self.state.depth

    def __call__(self, cid: int) -> str | None:
        if cid in self.owner:
            return self.owner[cid]
        c = self.calls[cid]
        up = self(c.parent) if c.parent is not None else None
        if up is None and cid in self.rollup_of:
            up = f"r{self.rollup_of[cid][0]}"
        if up is None and self.folded(c):
            up = f"c{cid}"
        self.owner[cid] = up
        return up


def fold_ops(report, state: ViewState, collapsed: set[str],
             rollup_of: dict[int, tuple[int, int]]) -> tuple[dict[str, ViewNode], list[str]]:  # fmt: skip
    """The visible nodes, and the id of the node standing for each op (indexed by op id)."""
    broken_adds = {m.add_op: m for m in report.mismatches}
    error_ops = {e.op: e for e in report.errors if e.op is not None}
    culprits = {c for m in report.mismatches for c in m.culprits}
    block_by_call = {b.call: b for b in report.blocks}
    call_owner = _CallOwners(report, state, collapsed, rollup_of)
    enclosing = _enclosing_blocks(report)
    nodes: dict[str, ViewNode] = {}
    op_owner: list[str] = []
    for op in report.ops:
        owner = call_owner(op.scope) if report.calls else None
        if owner is None or op.kind in ("input", "output"):
            nid = f"o{op.id}"
            nodes[nid] = _op_node(report, op, nid, enclosing, broken_adds, error_ops, culprits)
        else:
            nid = owner
            if nid not in nodes:
                nodes[nid] = _folded_node(report, nid, rollup_of, block_by_call)
            _absorb(nodes[nid], op, error_ops.get(op.id))
        op_owner.append(nid)
    for c in report.calls:  # parameters a module holds itself (a layer-scale gamma) count in its node
        if c.params or c.macs:
            nid = call_owner(c.id)
            if nid in nodes:
                nodes[nid].params += c.params
                nodes[nid].macs += c.macs
    return nodes, op_owner


def _absorb(node: ViewNode, op, error) -> None:
    """A folded node takes in one more op: its parameters, MACs and any error at it."""
    node.ops.append(op.id)
    node.params += op.params
    node.macs += op.macs
    if error is not None:
        node.broken = True
        node.error = error.message


@dataclass
class ShortcutEdges:
    kind: dict[tuple[int, int], str]  # (value, consuming op) -> shortcut kind, for skip edges
    side_ops: set[int]  # ops on a shortcut path: drawn beside the main column


def shortcut_edges(report) -> ShortcutEdges:
    """Which edges carry a shortcut: into a shortcut-path op, or the shortcut operand into its add."""
    ops = report.ops
    kind: dict[tuple[int, int], str] = {}
    side_ops: set[int] = set()
    for add in report.residual_adds:
        if add.kind == "merge":  # branches of a split inside a block: their ops stay in the
            kind[(add.shortcut, add.op)] = add.kind  # column, the edge into the add says merge
            continue
        path_vals = {add.fork} | {v for i in add.shortcut_ops for v in ops[i].outputs}
        for i in add.shortcut_ops:
            side_ops.add(i)
            for v in ops[i].inputs:
                if v in path_vals:
                    kind[(v, i)] = add.kind
        kind[(add.shortcut, add.op)] = add.kind
    return ShortcutEdges(kind, side_ops)


def view_edges(report, op_owner: list[str], skip_kind: dict[tuple[int, int], str]) -> list[ViewEdge]:
    """The data edges between different nodes, one per (source, destination, tensor), each
    labelled with its shape; the operands of a mismatched add are broken."""
    values = report.values
    broken_adds = {m.add_op for m in report.mismatches}
    edges: list[ViewEdge] = []
    seen: set[tuple[str, str, int]] = set()
    for op in report.ops:
        dst = op_owner[op.id]
        for v in op.inputs:
            p = values[v].producer
            src = op_owner[p] if p is not None else dst
            key = (src, dst, v)
            if src == dst or key in seen:
                continue
            seen.add(key)
            kind = skip_kind.get((v, op.id))
            edges.append(ViewEdge(
                src, dst, v, values[v].shape, shape_label(values[v].shape),
                kind="skip" if kind else "main", shortcut=kind, broken=op.id in broken_adds,
            ))  # fmt: skip
    return edges


def mark_folded_skips(report, nodes: dict[str, ViewNode], op_owner: list[str]) -> None:
    """A folded block (or rollup) keeps its own skip connection, drawn as an arc beside it, and
    its stripe takes the shortcut's colour. A skip handed in by the caller (a tree's projection) is
    already drawn as an edge into the node: it colours the stripe but draws no second arc."""
    for add in report.residual_adds:
        n = nodes[op_owner[add.op]]
        if add.kind == "merge":  # a branch merge inside the block, not its skip
            continue
        if not (n.kind == "rollup" or (n.kind == "block" and add.block == n.name)):
            continue
        if n.stripe_kind is None:  # the first skip, as the block's own shortcut kind names it
            n.stripe_kind = add.kind
            n.skip_label = _skip_label(report, add)
        if n.skip is None and all(op_owner[i] == op_owner[add.op] for i in add.shortcut_ops):
            n.skip = add.kind
            n.skip_label = _skip_label(report, add)


def _skip_label(report, add) -> str:
    """Short text beside a folded block's arc: what the shortcut does to the tensor."""
    if add.kind == "identity":
        return "identity"
    fork = report.values[add.fork].shape
    out = report.values[add.shortcut].shape
    if add.kind in ("zero-pad", "pool") and len(fork) >= 3 and len(out) >= 3:
        bits = []
        if fork[2] != out[2] and out[2]:
            bits.append(f"/{round(fork[2] / out[2])}")
        if fork[1] != out[1]:
            bits.append(f"{fork[1]}→{out[1]} ch")
        return f"{add.kind} " + " ".join(bits) if bits else add.kind
    ops = [report.ops[i] for i in add.shortcut_ops]
    convs = [o for o in ops if o.kind == "module" and o.params and o.type.startswith(("Conv", "Linear"))]
    if convs:
        text = " + ".join(short_label(o, report.modules).replace("Conv2d ", "conv ") for o in convs[:2])
        if any(o.type.startswith("BatchNorm") for o in ops):
            text += " + BN"
        return text
    return f"{add.kind}: " + " + ".join(short_label(o, report.modules) for o in ops[:2])


def _same_block(a, b) -> bool:
    return (
        a.type == b.type and a.shortcut == b.shortcut and a.input_shape == b.input_shape
        and a.output_shape == b.output_shape and a.params == b.params and not a.broken
        and not b.broken
    )  # fmt: skip


def _op_node(report, op, nid, enclosing, broken_adds, error_ops, culprits) -> ViewNode:
    values = report.values
    ins = [values[v].shape for v in op.inputs]
    outs = [values[v].shape for v in op.outputs]
    block = enclosing.get(op.scope) if report.calls else None
    if op.kind == "input":
        label, detail = "input", shape_label(outs[0]) if outs else ""
    elif op.kind == "output":
        label, detail = "output", ", ".join(shape_label(s) for s in ins)
    else:
        local = op.name
        if block and op.name.startswith(block.name + "."):
            local = op.name[len(block.name) + 1 :]
        label = local + (f" #{op.call_index + 1}" if op.call_index else "")
        detail = short_label(op, report.modules) if op.kind == "module" else f"{op.type}()"
    mm = broken_adds.get(op.id)
    err = error_ops.get(op.id)
    n = ViewNode(
        id=nid, kind=op.kind if op.kind in ("input", "output") else "op", label=label,
        detail=detail, name=op.name, type=op.type, ops=[op.id],
        block=block.name if block else None, stage=block.stage if block else None,
        broken=mm is not None or err is not None or op.name in culprits,
        error=err.message if err else "", in_shape=ins[0] if ins else None,
        out_shape=outs[0] if outs else None, params=op.params, macs=op.macs, order=op.id,
        is_add=op.type == "add",
    )  # fmt: skip
    if mm is not None:
        n.error = f"residual {shape_label(mm.residual_shape)} ≠ shortcut {shape_label(mm.shortcut_shape)}"
    return n


def _enclosing_blocks(report) -> dict:
    """Call id -> innermost block around it (calls are recorded parents first)."""
    blocks = {b.call: b for b in report.blocks}
    out: dict = {}
    for c in report.calls:
        if c.id in blocks:
            out[c.id] = blocks[c.id]
        elif c.parent is not None and c.parent in out:
            out[c.id] = out[c.parent]
    return out


def _folded_node(report, nid, rollup_of, block_by_call) -> ViewNode:
    calls, values = report.calls, report.values
    cid = int(nid[1:])
    call = calls[cid]
    block = block_by_call.get(cid)
    ins = [values[v].shape for v in call.inputs]
    outs = [values[v].shape for v in call.outputs]
    if nid.startswith("r"):
        count = next(n for first, n in rollup_of.values() if first == cid)
        last = None
        for other, (first, _n) in rollup_of.items():
            if first == cid:
                last = other if last is None or other > last else last
        last_path = calls[last].path if last is not None else call.path
        return ViewNode(
            id=nid, kind="rollup", label=f"{call.path} … {last_path.rsplit('.', 1)[-1]}",
            detail=f"{call.type} × {count}", name=call.path, type=call.type, ops=[], call=cid,
            block=call.path, stage=block.stage if block else None,
            in_shape=ins[0] if ins else None, out_shape=outs[0] if outs else None,
            order=call.first_op, repeat=count,
        )  # fmt: skip
    if block is not None:
        detail = f"{call.type} · {block.shortcut}" if block.shortcut != "none" else call.type
        n = ViewNode(
            id=nid, kind="block", label=call.path, detail=detail, name=call.path,
            type=call.type, ops=[], call=cid, block=call.path, stage=block.stage,
            broken=block.broken, in_shape=ins[0] if ins else None,
            out_shape=outs[0] if outs else None, order=call.first_op,
        )  # fmt: skip
        if block.broken:
            mm = next((m for m in report.mismatches if m.block == block.name), None)
            if mm:
                n.error = (
                    f"residual {shape_label(mm.residual_shape)} ≠ shortcut "
                    f"{shape_label(mm.shortcut_shape)}"
                )
        return n
    nblocks = sum(1 for b in report.blocks if b.stage == call.path)
    detail = f"{call.type} · {nblocks} blocks" if nblocks else call.type
    return ViewNode(
        id=nid, kind="module", label=call.path, detail=detail, name=call.path, type=call.type,
        ops=[], call=cid, in_shape=ins[0] if ins else None, out_shape=outs[0] if outs else None,
        order=call.first_op,
    )  # fmt: skip


def frame_groups(report, nodes: dict[str, ViewNode], collapsed: set[str]) -> list[ViewGroup]:
    """Bands for stages and frames for expanded blocks, listing the visible nodes inside."""
    groups: list[ViewGroup] = []
    by_name: dict[str, ViewGroup] = {}
    for s in report.stages:
        if s.name in collapsed:
            continue
        g = ViewGroup(
            f"s:{s.name}", "stage",
            f"{s.name}\n{stage_shapes(s)}\n{plural(len(s.blocks), 'block')}",
            s.name, depth=_depth(s.name),
        )  # fmt: skip
        groups.append(g)
        by_name[s.name] = g
    for b in report.blocks:
        if b.name in collapsed or b.name == "(model)":
            continue
        g = ViewGroup(f"b:{b.name}", "block", f"{b.name}\n{b.type} · {b.shortcut}", b.name,
                      broken=b.broken, depth=_depth(b.name))  # fmt: skip
        groups.append(g)
        by_name[b.name] = g
    for n in nodes.values():  # every group whose module path is a prefix of the node's
        parts = n.name.split(".")
        for i in range(1, len(parts) + 1):
            g = by_name.get(".".join(parts[:i]))
            if g is not None:
                g.nodes.append(n.id)
    return [g for g in groups if g.nodes]
