"""``analyze(model, input_shape) -> Report``: the passes that turn a trace into answers.

Passes, in order: trace (a front-end of ``resviz.core.tracing``, again where a residual branch
proves to be the broken path: ``blame.py``) → residual adds (``residual.py``) → blocks and stages
(``grouping.py``) → mismatch explanations (``diagnose.py``) → optional sweep of input sizes for
size-dependent failures. Each writes plain records; :class:`Report` only holds and serialises them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ResvizError
from ..gcpause import gc_paused
from ..inputs import Input, resolve_inputs
from ..tracing.dispatch import is_exported_program, is_script_module, trace_any
from ..tracing.eager import trace_module
from ..tracing.records import (
    Trace,
)
from . import grouping
from .blame import absorb_branch_errors, trace_blaming
from .diagnose import explain
from .report import Report
from .residual import carrying_shortcut, find_residual_adds

# Square sizes users commonly feed image models; tried when a failure depends on the input size.
COMMON_SIZES = (32, 64, 96, 112, 128, 160, 192, 224, 256, 288, 299, 320, 384, 448, 512)


def analyze(
    model: nn.Module,
    input_shape: Sequence[int] | str | None = None,
    *,
    inputs=None,
    dtype=None,
    name: str | None = None,
    suggest_sizes: bool = True,
    size_budget_s: float = 1.5,
) -> Report:
    """Trace ``model`` and report blocks, shapes, mismatches and errors.

    The input is ``input_shape`` (taken exactly as given: ``(1, 16, 100)`` is 3-D) of ``dtype``
    (float32 unless given), or ``inputs``: example tensors (only shapes and dtypes are used), a
    sequence of them for several positional arguments, a mapping for keyword arguments, or
    :class:`~resviz.core.inputs.Input` specs. See :mod:`resviz.core.inputs`.

    The model is not modified: not its device, mode, parameters, buffers, plain attributes or
    hooks. Shape problems never raise; they are in ``report.mismatches`` and ``report.errors``.
    """
    if not isinstance(model, nn.Module):
        raise ResvizError(f"expected a torch.nn.Module, got {type(model).__name__}")
    specs = resolve_inputs(input_shape, inputs, dtype)
    return _analyze(model, specs, name or type(model).__name__, archive=False,
                    suggest_sizes=suggest_sizes, size_budget_s=size_budget_s)  # fmt: skip


def analyze_any(obj, input_shape=None, *, inputs=None, dtype=None, name: str | None = None,
                suggest_sizes: bool = True, size_budget_s: float = 1.5) -> Report:  # fmt: skip
    """Like :func:`analyze`, for anything resviz can load: an eager module, a TorchScript module or
    a ``torch.export`` program (those two take one float input)."""
    if not (is_script_module(obj) or is_exported_program(obj)):
        return analyze(obj, input_shape, inputs=inputs, dtype=dtype, name=name,
                       suggest_sizes=suggest_sizes, size_budget_s=size_budget_s)  # fmt: skip
    specs = resolve_inputs(input_shape, inputs, dtype)
    if len(specs) != 1 or specs[0].name or specs[0].dtype != torch.float32:
        raise ResvizError(
            "TorchScript and torch.export archives are traced with one positional float32 input; "
            f"got {', '.join(i.describe() for i in specs)}"
        )
    return _analyze(obj, specs, name or "model", archive=True, suggest_sizes=suggest_sizes,
                    size_budget_s=size_budget_s)  # fmt: skip


def _analyze(obj, specs: list[Input], name: str, *, archive: bool, suggest_sizes: bool,
             size_budget_s: float) -> Report:  # fmt: skip
    """The pipeline, for an eager module or (``archive``) a TorchScript module or torch.export
    program: trace (again where a residual branch proves to be the broken path), the analysis
    passes, then hints and the input sizes that work."""
    t0 = time.perf_counter()
    if archive:
        tracer, first = trace_any, (lambda: trace_any(obj, specs[0].shape))
    else:
        tracer, first = trace_module, (lambda: trace_module(obj, inputs=specs))
    with gc_paused():
        trace, evidence = trace_blaming(first)
        with carrying_shortcut(evidence):
            report = build_report(trace, None if archive else obj, name)
        if archive:
            report.total_params, report.trainable_params = _archive_params(obj)
        else:  # an archive takes float inputs only: no integer hint for it
            _hint_integer_inputs(report)
        if suggest_sizes and not report.ok and _one_image(specs):
            _suggest_sizes(obj, report, size_budget_s, tracer=tracer)
    report.seconds = time.perf_counter() - t0
    return report


def _archive_params(obj) -> tuple[int, int]:
    """(total, trainable) parameters of a TorchScript module or a torch.export program."""
    if is_exported_program(obj):
        names = set(obj.graph_signature.parameters)
        params = [v for k, v in obj.state_dict.items() if k in names]
    else:
        params = list(obj.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _one_image(specs: list[Input]) -> bool:
    return len(specs) == 1 and len(specs[0].shape) == 4 and specs[0].dtype.is_floating_point


def _hint_integer_inputs(report: Report) -> None:
    """A float input stopped at a layer that looks up integer indices (an Embedding): say how to
    give integer inputs rather than leave PyTorch's "expected Long" message alone."""
    if report.complete or not report.inputs or not report.inputs[0].dtype.is_floating_point:
        return
    fatal = next((e for e in report.errors if e.fatal), None)
    op = report.op_named(fatal.module) if fatal else None
    if op is None or op.attrs.get("layer") != "embedding":
        return
    shape = report.inputs[0].shape
    fatal.suggestion = (
        f"{op.name} ({op.type}) looks up integer indices, and the input was "
        f"{str(report.inputs[0].dtype).removeprefix('torch.')}: give integer inputs, e.g. "
        f"--input {'x'.join(map(str, shape))}:int64 on the command line, or from Python "
        f"analyze(model, {shape!r}, dtype=torch.int64)"
    )


def build_report(trace: Trace, model: nn.Module | None, name: str) -> Report:
    adds = find_residual_adds(trace)
    blocks, stages = grouping.group(trace, adds)
    mismatches = []
    errors = list(trace.errors)
    for i, add in enumerate(adds):
        if not add.shapes_match:
            mismatches.append(explain(trace, add))
            errors = absorb_branch_errors(trace, add, mismatches[-1], errors)
            for b in blocks:
                if i in b.adds:
                    b.broken = True
    total, trainable = _count_params(model)
    return Report(
        model_name=name, input_shape=trace.input_shape, values=trace.values, ops=trace.ops,
        calls=trace.calls, residual_adds=adds, blocks=blocks, stages=stages,
        mismatches=mismatches, errors=errors, complete=trace.complete,
        total_params=total, trainable_params=trainable,
        output_shapes=[trace.values[v].shape for v in trace.output_values],
        inputs=list(getattr(trace, "inputs", [])), modules=trace.modules,
    )  # fmt: skip


def _count_params(model: nn.Module | None) -> tuple[int, int]:
    if model is None:
        return 0, 0
    total = trainable = 0
    for p in model.parameters():  # parameters() already counts a shared tensor once
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


def _suggest_sizes(model, report: Report, budget_s: float, tracer=trace_module) -> None:
    """Re-trace at common square sizes; say which sizes work, globally and per broken block."""
    n, c, _, _ = report.input_shape
    good = _sizes_that_work(model, report, budget_s, tracer)
    report.suggested_sizes = good
    # Only a size at which the whole net traces clean "works", for every broken block alike: a
    # trace that stopped early never reached the block, so its absence there says nothing.
    for m in report.mismatches:
        m.input_sizes = list(good)
    if good:
        sizes = ", ".join(str(s) for s in good[:6])
        for e in report.errors:
            e.suggestion = f"the model runs at input sizes {sizes} (as {n}x{c}xSxS)"


def _sizes_that_work(model, report: Report, budget_s: float, tracer) -> list[int]:
    """The common square sizes (other than the report's) at which the whole net traces clean,
    tried in order until ``budget_s`` seconds have passed or trying fails."""
    n, c, h, w = report.input_shape
    start = time.perf_counter()
    good: list[int] = []
    for size in COMMON_SIZES:
        if (size, size) == (h, w):
            continue
        if time.perf_counter() - start > budget_s:
            break
        verdict = _traces_clean(model, report, tracer, size)
        if verdict is None:
            break
        if verdict:
            good.append(size)
    return good


def _traces_clean(model, report: Report, tracer, size: int) -> bool | None:
    """Does the whole net trace clean at ``size``×``size``? None: trying failed (a bug, warned)."""
    n, c = report.input_shape[:2]
    try:
        trace = tracer(model, (n, c, size, size))
    except ResvizError:  # the model cannot be traced at this size: it does not work there
        return False
    except Exception as e:  # noqa: BLE001 - a bug: say so, and keep the report the user asked for
        warnings.warn(
            f"resviz: trying input size {size}×{size} for {report.model_name} failed "
            f"({type(e).__name__}: {e}); this is a bug in resviz, please report it. The report "
            "is complete, with the sizes found to work before it.",
            RuntimeWarning, stacklevel=4,
        )  # fmt: skip
        return None
    return build_report(trace, None, report.model_name).ok
