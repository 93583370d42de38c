"""``report.json`` of a run directory: the check report plus the trace, to redraw without the code.

``report_json(report)`` gives ``{"format": 1, "check": <exactly resviz check --json>, "graph":
{...}}``; ``graph`` holds every record of the analysis (values, ops, calls, residual adds, blocks,
stages, mismatches, errors and the totals) as plain JSON, and each layer's hyper-parameters (read
through ``report.modules``) instead of the traced ``nn.Module`` objects.
:func:`report_from_json` rebuilds a :class:`~resviz.core.analysis.pipeline.Report` from it, which the
renderer and the app draw as they draw a freshly traced one (the inspector has no module to show).
Writing needs no torch; rebuilding imports the analysis module (and so torch).
"""

from __future__ import annotations

import dataclasses

from .rundir import json_safe as _plain

REPORT_FORMAT = 1
_RECORDS = {
    "values": "Value", "ops": "Op", "calls": "Call", "residual_adds": "ResidualAdd", "blocks": "Block",
    "stages": "Stage", "mismatches": "Mismatch", "errors": "ShapeError",
}  # fmt: skip
_SCALARS = ("model_name", "input_shape", "complete", "total_params", "trainable_params", "output_shapes",
            "seconds", "suggested_sizes")  # fmt: skip


def _record(r, modules) -> dict:
    d = {f.name: _plain(getattr(r, f.name)) for f in dataclasses.fields(r)}
    if hasattr(r, "attrs") and modules.of(r) is not None:  # a layer op: its hyper-parameters
        from ..analysis.describe import hyperparams

        d["layer"] = _plain(hyperparams(r, modules))
    return d


def _stub(type_name: str, attrs: dict):
    """A layer read back from ``report.json``: its hyper-parameters, no code and no weights."""
    from ..tracing.plain_module import plain_module

    plain = {}
    for k, v in attrs.items():
        if k == "bias":
            v = True if v else None  # describe.hyperparams reads `bias is not None`
        plain[k] = tuple(v) if isinstance(v, list) else v
    return plain_module(type_name, "", plain)


def probe_blocks(report) -> list[str]:
    """Names of the blocks to probe: residual blocks, or a plain net's repeated units. Here, not in
    :mod:`~resviz.core.training.probes`, so that drawing a stored run's Training tab needs no torch."""
    names: list[str] = []
    for b in report.blocks:
        if b.name and b.name not in names:
            names.append(b.name)
    return names


def report_json(report) -> dict:
    """``{"format", "check", "graph"}`` for ``report.json`` (see the module doc)."""
    graph = {k: [_record(r, report.modules) for r in getattr(report, k)] for k in _RECORDS}
    graph.update({k: _plain(getattr(report, k)) for k in _SCALARS})
    return {"format": REPORT_FORMAT, "check": report.to_dict(), "graph": graph}


def _tuple(v):
    return tuple(_tuple(x) for x in v) if isinstance(v, list) else v


# fields stored as tuples in the records (JSON gives lists back)
_TUPLE_FIELDS = {"shape", "source", "input_shape", "output_shape", "residual_shape", "shortcut_shape"}


def report_from_json(d: dict):
    """A Report rebuilt from :func:`report_json`'s output: each layer a stand-in with its
    hyper-parameters (no code, no weights, no class source)."""
    from ..analysis.report import Report
    from ..errors import ResvizError
    from ..tracing import records

    graph = d.get("graph") if isinstance(d, dict) else None
    if not isinstance(graph, dict):
        raise ResvizError("report.json has no graph: it was written without the trace (re-run the training)")
    kw = {}
    layers = {}  # op name -> the layer's stand-in
    try:
        for key, cls_name in _RECORDS.items():
            cls = getattr(records, cls_name)
            names = {f.name for f in dataclasses.fields(cls)}
            rows = []
            for row in graph.get(key, []):
                args = {k: (_tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v)
                        for k, v in row.items() if k in names}  # fmt: skip
                if key == "ops" and isinstance(row.get("layer"), dict):
                    layers.setdefault(str(row.get("name", "")), _stub(str(row.get("type", "")), row["layer"]))
                if key == "errors":
                    args["input_shapes"] = [tuple(s) for s in args.get("input_shapes", [])]
                rows.append(cls(**args))
            kw[key] = rows
        for k in _SCALARS:
            if k in graph:
                kw[k] = graph[k]
        kw["input_shape"] = tuple(kw["input_shape"])
        kw["output_shapes"] = [tuple(s) for s in kw.get("output_shapes", [])]
        return Report(**kw, modules=records.ModuleIndex(None, layers))
    except (TypeError, KeyError, ValueError) as e:
        raise ResvizError(f"report.json: the graph cannot be read back ({type(e).__name__}: {e})") from None
