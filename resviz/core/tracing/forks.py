"""Where an add's two operands split, and which of the two came the short way.

This is the one question about residual adds that tracing itself must answer: past an add whose
operands disagree, tracing goes on with the residual branch's shape (``TraceBuilder.add``), so it
has to know, there and then, which operand is the residual branch. Everything else about the add
(the block that owns it, a merge of split branches, the kind of shortcut, its wording) is analysis
(``resviz.core.analysis.residual``), which builds on :func:`split_add` after tracing.

Walking the data-flow graph backwards from each operand — first only through ops made during the
call that performed the add, then, when both operands come in as arguments (``inner(x, proj(x))``),
through the enclosing calls in turn — gives each operand's ancestry; the latest value both share is
the *fork*. The operand reached through fewer ops is the shortcut; the other is the residual branch.
An add with a parameter or a constant (a positional embedding, a bias) has one operand that no op
made from the call's input, so it has no fork.

Only what a trace records so far is read (values, ops, calls: ``trace`` may be a finished
:class:`~resviz.core.tracing.records.Trace` or a :class:`~resviz.core.tracing.builder.TraceBuilder`
mid-trace): the walk goes backwards only, so the answer mid-trace and after it is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

_SHORTCUT_HINTS = ("shortcut", "downsample", "skip", "proj", "identity")


@dataclass(slots=True)
class Split:
    """An add's two operands traced back to the value where their paths part."""

    fork: int  # the value both paths start from
    shortcut: int  # value id of the shortcut operand
    residual: int  # value id of the residual-branch operand
    shortcut_ops: list[int]  # ops between fork and shortcut operand, in order
    residual_ops: list[int]  # ops between fork and residual operand, in order
    chain: list[int]  # call ids looked in, from the one that made the add outwards


def ancestry(trace, vid: int, first_op: int) -> tuple[set[int], set[int]]:
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


def split_add(trace, op_id: int, call_id: int) -> Split | None:
    """The fork and the two paths of the add ``op_id`` made inside call ``call_id``; None when its
    operands share no value made by or handed to the calls around it (not a residual add).

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
        vals_a, ops_a = ancestry(trace, a, first)
        vals_b, ops_b = ancestry(trace, b, first)
        fork = _fork(trace, vals_a & vals_b, call)
        if fork is not None:
            break
        if not (_reaches_inputs(trace, vals_a, first) and _reaches_inputs(trace, vals_b, first)):
            return None
        cid = call.parent
    else:
        return None
    _, ops_fork = ancestry(trace, fork, first)
    path_a = sorted(ops_a - ops_fork)
    path_b = sorted(ops_b - ops_fork)
    if is_shortcut_first(trace, path_a, path_b):
        return Split(fork, a, b, path_a, path_b, chain)
    return Split(fork, b, a, path_b, path_a, chain)


def _produced_by_call(trace, vid: int, first_op: int) -> bool:
    p = trace.values[vid].producer
    return p is not None and p >= first_op


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


def is_shortcut_first(trace, path_a: list[int], path_b: list[int]) -> bool:
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
