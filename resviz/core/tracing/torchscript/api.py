"""The public entry point, :func:`trace_script_module`: sets up the trace (input op, the model's
call), runs the ScriptModule's ``forward`` through the interpreter, and closes the trace whatever
happened — shape problems never raise, they are in ``trace.errors``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from ..eager import Trace
from ..records import Call
from .common import _T, _Abort, _clean, _flat_tensors
from .interp import _Interp
from .layers import module_rule_by_name
from .leaves import _Mod


def _forward_args(sm, x: _T) -> list | str:
    """``[x]`` plus the defaults of any further arguments of ``forward``; a message if one has
    no default."""
    try:
        arguments = sm._c._get_method("forward").schema.arguments[1:]
    except Exception:
        return [x]
    if not arguments:
        return "forward takes no input"
    args: list = [x]
    for a in arguments[1:]:
        if not a.has_default_value():
            n = len(arguments)
            return (
                f"forward takes {n} inputs ({', '.join(b.name for b in arguments)}); resviz "
                f"traces models with one input tensor"
            )
        args.append(a.default_value)
    return args


# Compiled graphs per ScriptModule: analysing the same archive at another size compiles nothing.
_GRAPH_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trace_script_module(sm, input_shape: Sequence[int], *, dtype=torch.float32) -> Trace:
    """Trace a ``torch.jit.ScriptModule`` for an input of ``input_shape``; never raises for shape
    problems (they land in ``trace.errors``; ``trace.complete`` says whether it ran to the end)."""
    trace = Trace(input_shape, dtype=dtype)
    try:
        cache = _GRAPH_CACHE.setdefault(sm, {})
    except TypeError:
        cache = {}
    interp = _Interp(trace, cache)
    root = _Mod(sm._c, sm, "")
    inp = trace._add_op("input", "input", "Input", [])
    x = _T(tuple(trace.input_shape), dtype)
    inp.outputs = [interp._new_value(x, inp.id)]
    out = None
    cid = 0
    trace.calls.append(Call(0, "", root.type, None, [x.vid], first_op=len(trace.ops), module=sm))
    trace._stack.append(cid)
    try:
        args = _forward_args(sm, x)
        if isinstance(args, str):
            trace._error("(model)", None, root.type, args, [x.shape], fatal=True)
            raise _Abort
        if root.leaf and module_rule_by_name(root.type, root.qualname) is not None:
            out = interp.call_leaf(root, "forward", args)  # a single layer
        else:  # a model, or a frozen one (its layers inlined): record its ops one by one
            out = interp.run_method(root, "forward", args)
        trace.calls[0].outputs = [interp._vid(o) for o in _flat_tensors(out, [])]
        trace.complete = True
    except _Abort:
        out = None
    except Exception as e:  # the interpreter itself could not follow the graph
        trace._fatal_outside_ops(_clean(e))
        out = None
    finally:
        trace._close_open_calls()
    if out is not None:
        outs = _flat_tensors(out, [])
        trace.output_values = [interp._vid(o) for o in outs]
        o = trace._add_op("output", "output", "Output", list(trace.output_values))
        o.scope = 0
    return trace
