"""Group the trace into model → stage → block → layer.

A block is a module that owns a residual add (a skip). An add that only merges branches of a split
inside a block (Res2Net's hierarchical ``sp + spx[i]``, kind ``merge``) is listed with the block
that contains it but neither makes a block nor counts towards its shortcut kind. A network without any (a plain twin, a VGG) still
has repeated units worth treating as blocks — the plain twin's ``BasicBlock`` calls — so there the
blocks are the non-leaf calls that sit in a container (Sequential/ModuleList) next to siblings of
the same class. A stage is a module whose direct children include blocks (torchvision's layer1..4).
"""

from __future__ import annotations

from itertools import islice

from ..tracing.records import Block, Call, ResidualAdd, Stage

_CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}


def group(trace, adds: list[ResidualAdd]) -> tuple[list[Block], list[Stage]]:
    calls = trace.calls
    if not calls:
        return [], []
    by_call: dict[int, list[int]] = {}
    merge_adds: list[int] = []
    for i, add in enumerate(adds):
        if add.kind == "merge":
            merge_adds.append(i)
        else:
            by_call.setdefault(add.call, []).append(i)
    block_calls = sorted(by_call) if by_call else _repeated_units(calls)
    merges: dict[int, list[int]] = {}
    for i in merge_adds:
        owner = _enclosing(calls, adds[i].call, by_call)
        if owner is not None:
            merges.setdefault(owner, []).append(i)
    blocks: list[Block] = []
    stage_of: dict[int, int] = {}
    for cid in block_calls:
        call = calls[cid]
        parent = call.parent
        if parent is not None and parent != 0 and parent not in block_calls:
            stage_of[cid] = parent
        kinds = [adds[i].kind for i in by_call.get(cid, [])]
        shortcut = "+".join(dict.fromkeys(kinds)) if kinds else "none"
        ops = list(range(call.first_op, call.last_op + 1))
        params, macs = call_totals(trace.ops, calls, cid)
        blocks.append(
            Block(
                name=call.path or "(model)", type=call.type, call=cid,
                stage=calls[stage_of[cid]].path if cid in stage_of else None,
                index=len(blocks), input_shape=_shape(trace, call.inputs),
                output_shape=_shape(trace, call.outputs), shortcut=shortcut,
                adds=sorted(by_call.get(cid, []) + merges[cid]) if cid in merges else by_call.get(cid, []),
                params=params, macs=macs, ops=ops,
            )  # fmt: skip
        )
    stages: list[Stage] = []
    seen: dict[int, Stage] = {}
    for b in blocks:
        sid = stage_of.get(b.call)
        if sid is None:
            continue
        if sid not in seen:
            c = calls[sid]
            seen[sid] = Stage(
                c.path, c.type, [], _shape(trace, c.inputs), _shape(trace, c.outputs)
            )
            stages.append(seen[sid])
        seen[sid].blocks.append(b.name)
    return blocks, stages


def _enclosing(calls: list[Call], cid: int | None, blocks: dict[int, list[int]]) -> int | None:
    """The innermost block call that contains call ``cid`` (itself included)."""
    while cid is not None and cid not in blocks:
        cid = calls[cid].parent
    return cid


def call_totals(ops, calls: list[Call], cid: int) -> tuple[int, int]:
    """(parameters, MACs) of one call and everything inside it: its ops, plus the parameters its
    modules use directly (``Call.params``, ``Call.macs``). Equals ``sum(p.numel() for p in module.parameters())``
    at a module's first call."""
    call = calls[cid]
    span = ops[call.first_op : call.last_op + 1]
    params = sum(o.params for o in span) + call.params
    macs = sum(o.macs for o in span) + call.macs
    inside = {cid}
    for c in islice(calls, cid + 1, None):  # recorded depth first: descendants come next, together
        if c.parent not in inside:
            break
        inside.add(c.id)
        params += c.params
        macs += c.macs
    return params, macs


def _shape(trace, vids: list[int]):
    return trace.values[vids[0]].shape if vids else None


def _repeated_units(calls: list[Call]) -> list[int]:
    siblings: dict[int, list[Call]] = {}
    for c in calls:
        if c.parent is not None:
            siblings.setdefault(c.parent, []).append(c)
    out = []
    for parent, kids in siblings.items():
        if calls[parent].type not in _CONTAINERS:
            continue
        types = [k.type for k in kids]
        for k in kids:
            if k.type not in _CONTAINERS and types.count(k.type) > 1:
                out.append(k.id)
    return sorted(out)
