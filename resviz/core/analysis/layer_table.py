"""The per-layer table (``resviz summary``): modules down to a depth, with shapes, params, MACs.

Rows follow torchinfo's conventions — a module at the depth limit stands for everything inside it,
parameters are counted once per module, MACs per call — so the totals agree with torchinfo on conv
nets; where torchinfo miscounts (a Linear on token or channel-last input counted per batch item, a
layer taken for a conv by its name, MultiheadAttention's projections skipped) this table counts what
the layers compute (see ``rules.leaf_macs``). A module row's params include the parameters the
module holds itself (``Call.params``). torchinfo itself is not used here because it runs real compute (20x slower) and
stops at the first shape error, while this table is built from the trace and shows every layer up
to the failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grouping import call_totals


@dataclass(slots=True)
class LayerRow:
    name: str
    type: str
    depth: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    leaf: bool
    op: int | None = None  # op id for leaf rows
    call: int | None = None  # call id for module rows


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1


def layer_rows(report, depth: int | None = None) -> list[LayerRow]:
    """Rows in execution order: modules down to ``depth`` (all when None), then their layers.

    A module row's params and MACs are totals over everything it ran; a row at the depth limit
    therefore stands for its whole subtree, as in torchinfo.
    """
    ops, calls, values = report.ops, report.calls, report.values
    limit = depth if depth is not None else 10**6
    keyed: list[tuple[float, LayerRow]] = []

    def shape(vids):
        return values[vids[0]].shape if vids else None

    for c in calls:
        d = _depth(c.path)
        if 1 <= d <= limit:
            params, macs = call_totals(ops, calls, c.id)
            row = LayerRow(
                c.path, c.type, d, shape(c.inputs), shape(c.outputs), params, macs, False,
                call=c.id,
            )  # fmt: skip
            keyed.append((c.first_op - 1 + d / 1000, row))  # before its own ops, parents first
    for op in ops:
        if op.kind in ("module", "function") and _depth(op.name) <= limit:
            keyed.append((op.id, LayerRow(
                op.name, op.type, _depth(op.name), shape(op.inputs), shape(op.outputs),
                op.params, op.macs, True, op=op.id,
            )))  # fmt: skip
    keyed.sort(key=lambda r: r[0])
    return [r for _, r in keyed]


def summary_dict(report, depth: int | None = None) -> dict:
    rows = layer_rows(report, depth)
    return {
        "model": report.model_name,
        "input_shape": list(report.input_shape),
        "inputs": [i.to_dict() for i in report.inputs],
        "output_shapes": [list(s) for s in report.output_shapes],
        "total_params": report.total_params,
        "trainable_params": report.trainable_params,
        "macs": report.macs,
        "complete": report.complete,
        "layers": [
            {
                "name": r.name,
                "type": r.type,
                "depth": r.depth,
                "input_shape": None if r.input_shape is None else list(r.input_shape),
                "output_shape": None if r.output_shape is None else list(r.output_shape),
                "params": r.params,
                "macs": r.macs,
                "leaf": r.leaf,
            }
            for r in rows
        ],
    }
