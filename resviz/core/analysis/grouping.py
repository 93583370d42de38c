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
    by_call, merge_adds = adds_by_call(adds)
    block_calls = sorted(by_call) if by_call else _repeated_units(calls)
    merges = merges_by_block(calls, adds, merge_adds, by_call)
    stage_of = stage_parents(calls, block_calls)
    blocks = [_block(trace, cid, index, adds, by_call, merges, stage_of) for index, cid in enumerate(block_calls)]
    return blocks, _stages(trace, blocks, stage_of)


def adds_by_call(adds: list[ResidualAdd]) -> tuple[dict[int, list[int]], list[int]]:
    """The skip adds (indices into ``adds``) by the call that owns each, and the ``merge`` adds
    apart: they join branches inside a block and make no block of their own."""
    by_call: dict[int, list[int]] = {}
    merge_adds: list[int] = []
    for i, add in enumerate(adds):
        if add.kind == "merge":
            merge_adds.append(i)
        else:
            by_call.setdefault(add.call, []).append(i)
    return by_call, merge_adds


def merges_by_block(calls: list[Call], adds: list[ResidualAdd], merge_adds: list[int],
                    by_call: dict[int, list[int]]) -> dict[int, list[int]]:  # fmt: skip
    """Each merge add under the innermost block call that contains it (one outside every block
    is listed nowhere)."""
    merges: dict[int, list[int]] = {}
    for i in merge_adds:
        owner = _enclosing(calls, adds[i].call, by_call)
        if owner is not None:
            merges.setdefault(owner, []).append(i)
    return merges


def stage_parents(calls: list[Call], block_calls: list[int]) -> dict[int, int]:
    """Block call -> its stage's call: the block's parent, unless that is the model or a block."""
    stage_of: dict[int, int] = {}
    for cid in block_calls:
        parent = calls[cid].parent
        if parent is not None and parent != 0 and parent not in block_calls:
            stage_of[cid] = parent
    return stage_of


def _block(trace, cid: int, index: int, adds: list[ResidualAdd], by_call: dict[int, list[int]],
           merges: dict[int, list[int]], stage_of: dict[int, int]) -> Block:  # fmt: skip
    calls = trace.calls
    call = calls[cid]
    kinds = [adds[i].kind for i in by_call.get(cid, [])]
    shortcut = "+".join(dict.fromkeys(kinds)) if kinds else "none"
    params, macs = call_totals(trace.ops, calls, cid)
    return Block(
        name=call.path or "(model)", type=call.type, call=cid,
        stage=calls[stage_of[cid]].path if cid in stage_of else None,
        index=index, input_shape=_shape(trace, call.inputs),
        output_shape=_shape(trace, call.outputs), shortcut=shortcut,
        adds=sorted(by_call.get(cid, []) + merges[cid]) if cid in merges else by_call.get(cid, []),
        params=params, macs=macs, ops=list(range(call.first_op, call.last_op + 1)),
    )  # fmt: skip


def _stages(trace, blocks: list[Block], stage_of: dict[int, int]) -> list[Stage]:
    """The stages that hold blocks, in the order their first block comes."""
    stages: list[Stage] = []
    seen: dict[int, Stage] = {}
    for b in blocks:
        sid = stage_of.get(b.call)
        if sid is None:
            continue
        if sid not in seen:
            c = trace.calls[sid]
            seen[sid] = Stage(c.path, c.type, [], _shape(trace, c.inputs), _shape(trace, c.outputs))
            stages.append(seen[sid])
        seen[sid].blocks.append(b.name)
    return stages


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
