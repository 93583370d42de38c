"""One entry point for every kind of model resviz can trace: each front-end records the same
:class:`~resviz.core.tracing.records.Trace`, so residual adds, blocks, diagnosis and drawing work unchanged.

* an eager ``nn.Module``: its own forward on meta tensors (``eager.py``);
* a TorchScript module (``torch.jit.script`` / ``torch.jit.trace``, as ``torch.jit.load`` returns
  it): its method graphs interpreted (``torchscript/``);
* a ``torch.export`` program (``torch.export.export`` / ``torch.export.load``): its aten graph
  grouped by module calls (``exported.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ResvizError
from ..shapes import parse_shape
from .records import Trace


def is_script_module(obj) -> bool:
    return isinstance(obj, torch.jit.ScriptModule)


def is_exported_program(obj) -> bool:
    ep = getattr(getattr(torch, "export", None), "ExportedProgram", None)
    return (ep is not None and isinstance(obj, ep)) or type(obj).__name__ == "ExportedProgram"


def trace_any(obj, input_shape: Sequence[int] | str | None) -> Trace:
    """Trace ``obj`` for an input of ``input_shape`` with the front-end that fits it.

    Shape problems never raise (they are in ``trace.errors``); an object resviz cannot trace
    raises :class:`ResvizError`. ``input_shape`` may be None only for an exported program, which
    then uses the shape it was exported with.
    """
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    if is_exported_program(obj):
        from .exported import trace_exported

        return trace_exported(obj, None if shape is None else tuple(shape))
    if shape is None:
        raise ResvizError("an input shape is needed to trace this model")
    if is_script_module(obj):
        from .torchscript import trace_script_module

        return trace_script_module(obj, tuple(shape))
    if isinstance(obj, torch.jit.ScriptFunction):
        raise ResvizError(
            "this is a TorchScript function, not a module: resviz traces modules "
            "(torch.jit.script of an nn.Module, or torch.jit.trace of one)"
        )
    if isinstance(obj, nn.Module):
        from .eager import trace_module

        return trace_module(obj, tuple(shape))
    raise ResvizError(
        f"cannot trace a {type(obj).__name__}: expected an nn.Module, a TorchScript module or a "
        "torch.export program"
    )
