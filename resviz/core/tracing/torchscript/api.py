"""The public entry point, :func:`trace_script_module`: sets up the trace (input op, the model's
call), runs the ScriptModule's ``forward`` through the interpreter, and closes the trace whatever
happened — shape problems never raise, they are in ``trace.errors``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from ..builder import TraceAborted, TraceBuilder, clean_message
from ..records import Trace
from .common import TracedTensor, flat_tensors
from .interp import Interpreter
from .layers import module_rule_by_name
from .leaves import Submodule


def _forward_args(sm, x: TracedTensor) -> list | str:
    """``[x]`` plus the defaults of any further arguments of ``forward``; a message if one has
    no default."""
    try:
        arguments = sm._c._get_method("forward").schema.arguments[1:]
    except (AttributeError, RuntimeError):  # no readable schema: call forward with the input alone
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
    builder = TraceBuilder(input_shape, dtype=dtype)
    try:
        cache = _GRAPH_CACHE.setdefault(sm, {})
    except TypeError:  # a module that cannot be weakly referenced: compile for this trace only
        cache = {}
    interp = Interpreter(builder, cache)
    root = Submodule(sm._c, sm, "")
    inp = builder.input()
    x = TracedTensor(tuple(builder.input_shape), dtype)
    inp.outputs = [interp._new_value(x, inp.id)]
    builder.enter("", root.type, [x.vid])
    out = None
    complete = False
    try:
        out = _run_forward(interp, sm, root, x)
        complete = True
    except TraceAborted:
        out = None
    except Exception as e:  # noqa: BLE001 - the interpreter could not follow the graph: recorded as a fatal ShapeError the user sees
        builder.fail_in_call(clean_message(e))
        out = None
    finally:
        builder.exit_all()
    if out is not None:
        builder.output([interp._vid(o) for o in flat_tensors(out, [])])
    return builder.finish(complete=complete, root=sm)  # Submodule.child walks sm._modules too


def _run_forward(interp: Interpreter, sm, root: Submodule, x: TracedTensor):
    """The model's forward interpreted; its outputs set on the model's call."""
    builder = interp.builder
    args = _forward_args(sm, x)
    if isinstance(args, str):
        builder.fail("(model)", None, root.type, args, [x.shape], fatal=True)
        raise TraceAborted
    if root.leaf and module_rule_by_name(root.type, root.qualname) is not None:
        out = interp.call_leaf(root, "forward", args)  # a single layer
    else:  # a model, or a frozen one (its layers inlined): record its ops one by one
        out = interp.run_method(root, "forward", args)
    builder.set_call_outputs(0, [interp._vid(o) for o in flat_tensors(out, [])])
    return out
