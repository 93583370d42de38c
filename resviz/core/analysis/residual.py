"""Which adds are residual adds, and which operand is the shortcut.

A residual add is an add whose two operands both derive from one value (the *fork*) through
different paths. Walking the data-flow graph backwards from each operand — first only through ops
made during the call that performed the add, then, when both operands come in as arguments
(``inner(x, proj(x))``), through the enclosing calls in turn — gives each operand's ancestry; the
latest value both share is the fork (the block input, or for a pre-activation block with a
projection, the pre-activated input). The operand reached through fewer ops is the shortcut; the
other is the residual branch F(x). The block that owns the skip is the innermost call that made the
whole residual branch: the shortcut may be handed in by its caller (a tree node's ``residual``, a
transformer's ``output(hidden, input_tensor)``).

An add with a parameter or a constant (a positional embedding, a bias) has one operand that no op
made from the block's input, so it is not residual. An add whose two paths leave the fork through
one split (Res2Net's ``sp + spx[i]``) merges branches inside a block: kind ``merge``, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..tracing.records import Op, ResidualAdd

# Adds (op id -> evidence) past which tracing carries the shortcut's shape: their residual branch
# was found to be the broken path (``blame.py``). Context-local: a trace in another thread is
# unaffected.
_CARRY_SHORTCUT: ContextVar[dict[int, str] | None] = ContextVar("resviz_carry_shortcut", default=None)


@contextmanager
def carrying_shortcut(evidence: dict[int, str]) -> Iterator[None]:
    """Trace (and classify adds) with the shortcut's shape carried past the adds in ``evidence``,
    a map from add op id to what showed that the residual branch is the broken path."""
    token = _CARRY_SHORTCUT.set(dict(evidence))
    try:
        yield
    finally:
        _CARRY_SHORTCUT.reset(token)


def _mark_intended(add: ResidualAdd, carry: dict[int, str] | None = None) -> ResidualAdd:
    if carry is None:
        carry = _CARRY_SHORTCUT.get()
    if carry and add.op in carry:
        add.intended, add.evidence = "shortcut", carry[add.op]
    return add


def carried_shape(trace, add: ResidualAdd):
    """The shape tracing goes on with past a mismatched residual add (every front-end asks this)."""
    return trace.values[_mark_intended(add).intended_value].shape


_SHORTCUT_HINTS = ("shortcut", "downsample", "skip", "proj", "identity")


def _ancestry(trace, vid: int, first_op: int) -> tuple[set[int], set[int]]:
    """Values and ops reachable backwards from ``vid`` without leaving the current call."""
    values, ops = {vid}, set()
    stack = [vid]
    tvalues, tops = trace.values, trace.ops
    while stack:
        p = tvalues[stack.pop()].producer
        if p is None or p < first_op or p in ops:
            continue
        ops.add(p)
        for i in tops[p].inputs:
            if i not in values:
                values.add(i)
                stack.append(i)
    return values, ops


def _produced_by_call(trace, vid: int, first_op: int) -> bool:
    p = trace.values[vid].producer
    return p is not None and p >= first_op


def analyse_add(trace, op_id: int, call_id: int) -> ResidualAdd | None:
    """Classify the add ``op_id`` made inside call ``call_id``; None if it is not residual.

    The fork is looked for first inside the call that made the add, then in each enclosing call in
    turn: a skip handed in as a forward argument (``inner(x, proj(x))``, a transformer's
    ``output(hidden, input_tensor)``, a tree node's ``residual``) meets its residual branch only in
    the caller. Widening happens only when both operands reach the call's inputs, so an add of a
    parameter or a constant stays a plain add without walking the whole graph.
    """
    op = trace.ops[op_id]
    if len(op.inputs) != 2 or op.inputs[0] == op.inputs[1]:
        return None
    a, b = op.inputs
    cid: int | None = call_id
    chain: list[int] = []
    while cid is not None:
        call = trace.calls[cid]
        chain.append(cid)
        first = call.first_op
        vals_a, ops_a = _ancestry(trace, a, first)
        vals_b, ops_b = _ancestry(trace, b, first)
        fork = _fork(trace, vals_a & vals_b, call)
        if fork is not None:
            break
        if not (_reaches_inputs(trace, vals_a, first) and _reaches_inputs(trace, vals_b, first)):
            return None
        cid = call.parent
    else:
        return None
    _, ops_fork = _ancestry(trace, fork, first)
    path_a = sorted(ops_a - ops_fork)
    path_b = sorted(ops_b - ops_fork)
    if _is_shortcut_first(trace, path_a, path_b):
        sc, sc_path, res, res_path = a, path_a, b, path_b
    else:
        sc, sc_path, res, res_path = b, path_b, a, path_a
    owner = _owner(trace, chain, res_path)
    if _is_merge(trace, fork, sc_path, res_path):
        kind, detail = "merge", "merge of split branches: " + _path_text(trace, sc_path)
    else:
        kind, detail = classify_shortcut(trace, [trace.ops[i] for i in sc_path], fork, sc)
    return ResidualAdd(
        op=op_id, block=trace.calls[owner].path, call=owner, fork=fork, shortcut=sc, residual=res,
        shortcut_ops=sc_path, residual_ops=res_path, kind=kind, detail=detail,
        shapes_match=trace.values[a].shape == trace.values[b].shape, source=op.source,
    )  # fmt: skip


def _fork(trace, common: set[int], call) -> int | None:
    """The latest value both operands share that comes from ``call``'s inputs or was made in it
    (a parameter or a constant has no producer and is not reached from the call's input)."""
    if not common:
        return None
    first = call.first_op
    inputs = set(call.inputs)
    rooted = [v for v in common if v in inputs or _produced_by_call(trace, v, first)]
    if not rooted:
        return None

    def order(v: int) -> int:
        p = trace.values[v].producer
        return -1 if p is None or p < first else p

    return max(rooted, key=order)


def _reaches_inputs(trace, values: set[int], first_op: int) -> bool:
    """Does an operand's ancestry leave the call through a value made before it (an input)?"""
    for v in values:
        p = trace.values[v].producer
        if p is not None and p < first_op:
            return True
    return False


def _owner(trace, chain: list[int], res_path: list[int]) -> int:
    """The block that owns the skip: the innermost call, from the one that made the add outwards,
    that made the whole residual branch (the shortcut may be handed in by its caller)."""
    start = min(res_path) if res_path else None
    for cid in chain:
        if start is None or trace.calls[cid].first_op <= start:
            return cid
    return chain[-1]


_SPLITS = frozenset({"split", "chunk", "unbind", "tensor_split", "split_with_sizes", "narrow",
                     "getitem", "slice"})  # fmt: skip


def _is_merge(trace, fork: int, sc_path: list[int], res_path: list[int]) -> bool:
    """An add that merges branches of one split (Res2Net's hierarchical ``sp + spx[i]``) rather
    than a skip: both paths leave the fork through the same op (one split with many outputs), or
    the shorter path starts by taking a part of the fork's channels."""
    if not sc_path:
        return False
    if not set(sc_path).isdisjoint(res_path):
        return True
    first = trace.ops[sc_path[0]]
    if first.type not in _SPLITS or fork not in first.inputs or not first.outputs:
        return False
    s_in = trace.values[fork].shape
    s_out = trace.values[first.outputs[0]].shape
    return len(s_in) == len(s_out) >= 2 and s_out[1] < s_in[1] and s_out[2:] == s_in[2:]


def _path_text(trace, path: list[int]) -> str:
    from .describe import short_label

    return " → ".join(short_label(trace.ops[i]) for i in path) or "identity"


def _is_shortcut_first(trace, path_a: list[int], path_b: list[int]) -> bool:
    """Is operand a the shortcut? Fewer ops wins, then fewer parameters, then names."""
    if len(path_a) != len(path_b):
        return len(path_a) < len(path_b)
    pa = sum(trace.ops[i].params for i in path_a)
    pb = sum(trace.ops[i].params for i in path_b)
    if pa != pb:
        return pa < pb

    def hinted(path):
        return any(h in trace.ops[i].name.lower() for i in path for h in _SHORTCUT_HINTS)

    if hinted(path_a) != hinted(path_b):
        return hinted(path_a)
    return False  # `out + identity`: by convention the second operand is the shortcut


def _projects(op: Op) -> bool:
    """A layer that can project a shortcut: a conv or a linear layer by what it does (the tracer's
    ``layer`` attribute), whatever its class is called."""
    return op.attrs.get("layer") in ("conv", "linear")


def classify_shortcut(trace, ops: list[Op], fork: int, operand: int) -> tuple[str, str]:
    """Kind of shortcut from what its path does to the shape, and a one-line description."""
    if not ops:
        return "identity", "identity"
    from .describe import short_label

    prefix = _common_prefix([o.name for o in ops if o.kind == "module"])
    parts = " → ".join(short_label(o) for o in ops)
    detail = f"{prefix}: {parts}" if prefix else parts
    if any(o.kind == "module" and o.params and _projects(o) for o in ops):
        return "projection", detail
    if any(o.params for o in ops):
        return "other", detail
    s_in = trace.values[fork].shape
    s_out = trace.values[operand].shape
    if len(s_in) >= 2 and len(s_out) >= 2:
        if s_out[1] > s_in[1]:
            return "zero-pad", detail
        if s_out[1] == s_in[1] and s_out[2:] != s_in[2:]:
            return "pool", detail
        if s_out == s_in and all(_is_passthrough(o) for o in ops):
            return "identity", detail
    return "other", detail


_PASSTHROUGH = {"Identity", "Dropout", "Dropout2d", "contiguous", "clone", "dropout"}


def _is_passthrough(op: Op) -> bool:
    return op.type in _PASSTHROUGH or bool(op.attrs.get("passthrough"))


def common_module_path(names: list[str]) -> str:
    """Longest dotted prefix shared by all ``names`` ('' when they share none)."""
    parts = [n.split(".") for n in names]
    out = []
    for segs in zip(*parts):
        if len(set(segs)) != 1:
            break
        out.append(segs[0])
    return ".".join(out)


def _common_prefix(names: list[str]) -> str:
    """The module a shortcut's layers live in: their shared path, or a lone layer's parent."""
    if len(names) == 1:
        parts = names[0].split(".")
        return ".".join(parts[:-1]) if len(parts) > 1 else names[0]
    return common_module_path(names) if names else ""


def find_residual_adds(trace) -> list[ResidualAdd]:
    """Classify every candidate add of the trace (reusing the ones decided while tracing)."""
    found: list[ResidualAdd] = []
    counts: dict[tuple, int] = {}
    carry = _CARRY_SHORTCUT.get() or {}
    for op_id in trace.candidate_adds:
        op = trace.ops[op_id]
        res = trace.online_adds.get(op_id) or analyse_add(trace, op_id, op.scope)
        if res is None:
            continue
        _mark_intended(res, carry)
        key = (res.call, res.source)
        res.ordinal = counts.get(key, 0)
        counts[key] = res.ordinal + 1
        found.append(res)
    return found
