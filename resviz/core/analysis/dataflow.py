"""The data-flow graph as networkx: what graph algorithms and exporters consume."""

from __future__ import annotations

import networkx as nx


def to_networkx(report) -> nx.MultiDiGraph:
    """Nodes are op ids (leaf-module calls and functional ops); each edge is one tensor.

    Node attributes: name, kind, type, scope (module path of the owning call), params, macs,
    input_shapes, output_shapes. Edge attributes: value (id), shape, and ``skip=True`` with
    ``shortcut`` (its kind) on the edge that carries a residual add's shortcut operand.
    """
    g = nx.MultiDiGraph()
    calls = report.calls
    values = report.values
    for op in report.ops:
        g.add_node(
            op.id, name=op.name, kind=op.kind, type=op.type,
            scope=calls[op.scope].path if calls else "", params=op.params, macs=op.macs,
            input_shapes=[values[v].shape for v in op.inputs],
            output_shapes=[values[v].shape for v in op.outputs],
        )  # fmt: skip
    skip_edges = {(a.shortcut, a.op): a.kind for a in report.residual_adds}
    for op in report.ops:
        for v in op.inputs:
            src = values[v].producer
            if src is None:
                continue
            kind = skip_edges.get((v, op.id))
            attrs = {"value": v, "shape": values[v].shape}
            if kind is not None:
                attrs.update(skip=True, shortcut=kind)
            g.add_edge(src, op.id, **attrs)
    return g
