"""Which path of a mismatched residual add is the broken one.

By default the residual branch's shape is taken as the intended one: a stage transition whose
shortcut does not project is the common mistake, and tracing carries on with the residual branch.
But a person reading a broken block also looks at what comes after it: when a bottleneck's last
conv makes 128 channels where its identity shortcut and the next block's first conv both have 256,
the conv is the broken layer, not the shortcut. resviz checks this the same way, on the network
itself: it traces again carrying the shortcut's shape past the add, and if the layers after the
block then run further before anything breaks than with the residual branch's shape, the residual
branch is the broken path (:attr:`ResidualAdd.intended` becomes ``'shortcut'``). Nothing after the
add is then blamed for the one broken layer.

Only adds whose operands differ in one feature axis that one layer of the residual branch declares
(a conv's ``out_channels``, a Linear's ``out_features``, in any layout: NCHW, channel-last,
tokens) are questioned: that layer is then the culprit, and its width is what the fix changes.
"""

from __future__ import annotations

import math

from ..tracing.records import ModuleIndex, Op, ResidualAdd
from .describe import hyperparams
from .residual import carrying_shortcut, find_residual_adds

MAX_RETRACES = 8  # questioned adds per analysis: each costs one more trace, only on broken nets


def trace_blaming(tracer):
    """``tracer()``'s trace, re-traced where a residual branch proves to be the broken path.

    Returns the trace and the map (add op id -> evidence) to analyse it under
    (:func:`~resviz.core.analysis.residual.carrying_shortcut`).
    """
    trace = tracer()
    evidence: dict[int, str] = {}
    if not _has_unequal_add(trace):
        return trace, evidence
    last = -1
    for _ in range(MAX_RETRACES):
        with carrying_shortcut(evidence):
            adds = find_residual_adds(trace)
        add = next((a for a in adds if a.op > last and _questionable(trace, a)), None)
        if add is None:
            break
        last = add.op
        before, why = _first_problem_after(trace, adds, add.op)
        if before == math.inf:
            continue  # nothing after the add contradicts the residual branch
        trial = {**evidence, add.op: why}
        with carrying_shortcut(trial):
            other = tracer()
            after, _ = _first_problem_after(other, find_residual_adds(other), add.op)
        if after > before:
            trace, evidence = other, trial
    return trace, evidence


def _has_unequal_add(trace) -> bool:
    values, ops = trace.values, trace.ops
    for i in trace.candidate_adds:
        a, b = ops[i].inputs[:2]
        if values[a].shape != values[b].shape:
            return True
    return False


def _questionable(trace, add: ResidualAdd) -> bool:
    if add.shapes_match or add.kind == "merge" or add.intended != "residual":
        return False
    diff = feature_difference(trace, add)
    if diff is None:
        return False
    axis, res_width, _ = diff
    return feature_setter(trace, add.residual_ops, add.residual, res_width) is not None


def _first_problem_after(trace, adds: list[ResidualAdd], op_id: int) -> tuple[float, str]:
    """Position (op id) and description of the first error or mismatch after the add ``op_id``."""
    best: tuple[float, str] = (math.inf, "")
    for e in trace.errors:
        pos = e.op if e.op is not None else len(trace.ops)
        if op_id < pos < best[0]:
            best = (pos, f"`{e.module}`: {e.message}")
    for a in adds:
        if op_id < a.op < best[0] and not a.shapes_match:
            best = (a.op, f"the add of `{a.block}` would not match")
    if best[0] == math.inf and not trace.complete:
        best = (len(trace.ops), "tracing stops")
    return best


def feature_difference(trace, add: ResidualAdd) -> tuple[int, int, int] | None:
    """(axis, residual width, shortcut width) when the operands differ in exactly one non-batch
    axis; None otherwise."""
    r = trace.values[add.residual].shape
    s = trace.values[add.shortcut].shape
    if len(r) != len(s) or len(r) < 2:
        return None
    diff = [i for i in range(1, len(r)) if r[i] != s[i]]
    if len(diff) != 1:
        return None
    return diff[0], r[diff[0]], s[diff[0]]


def declared_width(op: Op, modules: ModuleIndex) -> int | None:
    """The output width a layer declares: a conv's out_channels, a Linear's out_features."""
    if op.kind != "module":
        return None
    hp = hyperparams(op, modules)
    w = hp.get("out_channels", hp.get("out_features"))
    return w if isinstance(w, int) else None


def feature_setter(trace, path: list[int], operand: int, width: int) -> Op | None:
    """The layer of ``path`` that gives ``operand`` its width ``width``: walking back from the
    operand through layers that keep that width (norms, activations, permutes, dropout), the first
    one that declares an output width, if it declares ``width``."""
    on_path = set(path)
    values, ops = trace.values, trace.ops
    v = operand
    while True:
        p = values[v].producer
        if p is None or p not in on_path or width not in values[v].shape:
            return None
        op = ops[p]
        declared = declared_width(op, trace.modules)
        if declared is not None:
            return op if declared == width else None
        v = next((i for i in op.inputs if values[i].producer in on_path), None)
        if v is None:
            return None


def absorb_branch_errors(trace, add: ResidualAdd, mismatch, errors: list) -> list:
    """Errors inside a broken residual branch caused by its wrong width (a layer-scale ``gamma *
    x`` of the right width) belong to the mismatch: said in its cause, not reported again."""
    if add.intended != "shortcut":
        return errors
    branch = set(add.residual_ops)
    absorbed = [e for e in errors if e.op in branch and not e.fatal]
    if not absorbed:
        return errors
    names = ", ".join(f"`{e.module}`" for e in absorbed)
    mismatch.cause += f"; {names} fails on the same wrong width until it is fixed"
    return [e for e in errors if e not in absorbed]
