"""Which adds are residual adds, and what kind of shortcut each has: the analysis pass run on a
finished trace (:func:`find_residual_adds`).

Where an add's operands fork and which one came the short way is
:func:`resviz.core.tracing.forks.split_add` (tracing itself needs that answer to go on past a
mismatched add); this module decides the rest: the block that owns the skip, merges, the kind.

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

from ..tracing.builder import carried_shortcuts, carrying_shortcut
from ..tracing.forks import split_add
from ..tracing.records import Op, ResidualAdd

__all__ = ["analyse_add", "carrying_shortcut", "classify_shortcut", "common_module_path", "find_residual_adds"]


def _mark_intended(add: ResidualAdd, carry: dict[int, str]) -> ResidualAdd:
    if add.op in carry:
        add.intended, add.evidence = "shortcut", carry[add.op]
    return add


def analyse_add(trace, op_id: int, call_id: int) -> ResidualAdd | None:
    """Classify the add ``op_id`` made inside call ``call_id``; None if it is not residual.

    Where the operands fork and which one is the shortcut is :func:`~resviz.core.tracing.forks.split_add`'s
    answer (tracing needs it too, to go on past a mismatch); here the add gets its block, its kind
    and its description.
    """
    split = split_add(trace, op_id, call_id)
    if split is None:
        return None
    op = trace.ops[op_id]
    fork, sc, sc_path, res_path = split.fork, split.shortcut, split.shortcut_ops, split.residual_ops
    owner = _owner(trace, split.chain, res_path)
    if _is_merge(trace, fork, sc_path, res_path):
        kind, detail = "merge", "merge of split branches: " + _path_text(trace, sc_path)
    else:
        kind, detail = classify_shortcut(trace, [trace.ops[i] for i in sc_path], fork, sc)
    a, b = op.inputs
    return ResidualAdd(
        op=op_id, block=trace.calls[owner].path, call=owner, fork=fork, shortcut=sc,
        residual=split.residual, shortcut_ops=sc_path, residual_ops=res_path, kind=kind, detail=detail,
        shapes_match=trace.values[a].shape == trace.values[b].shape, source=op.source,
    )  # fmt: skip


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

    return " → ".join(short_label(trace.ops[i], trace.modules) for i in path) or "identity"


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
    parts = " → ".join(short_label(o, trace.modules) for o in ops)
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
    """The analysis pass: classify every candidate add of the trace."""
    found: list[ResidualAdd] = []
    counts: dict[tuple, int] = {}
    carry = carried_shortcuts()
    for op_id in trace.candidate_adds:
        res = analyse_add(trace, op_id, trace.ops[op_id].scope)
        if res is None:
            continue
        _mark_intended(res, carry)
        key = (res.call, res.source)
        res.ordinal = counts.get(key, 0)
        counts[key] = res.ordinal + 1
        found.append(res)
    return found
