"""Recording the aten ops of a graph into the :class:`~resviz.core.tracing.eager.Trace`, as the eager
tracer records functional ops: one 'function' op per aten call on a traced tensor, with value ids
for its inputs and outputs, named and scoped like ``Trace.call_function`` names them.

Adds and the other elementwise binary ops get the eager tracer's special handling: a mismatch
is recorded and tracing goes on (with the residual branch's shape at a residual add), where any
other op that cannot be evaluated ends the trace. ``add_shape`` is shared with ``export_trace.py``.
"""

from __future__ import annotations

import torch

from ...analysis.residual import analyse_add, carried_shape
from .. import shape_rules as rules
from ..eager import Trace, _dtype_name, binary_continue_shape
from ..records import Op, Value
from .aten import aten_eval
from .common import _T, _TENSORS, Shape, _Abort, _clean, _flat_tensors, _has_tensor, _Quiet, _shape_of

_BINARY_NAMES = frozenset({"sub", "mul", "div", "true_divide", "sub_", "mul_", "div_"})


def add_shape(trace: Trace, op: Op, sa: Shape, sb: Shape, traced: tuple[bool, bool],
              distinct: bool, inplace: bool) -> Shape:  # fmt: skip
    """The eager tracer's handling of an add (``Trace._call_add``) for an op already recorded with
    its operands: register a candidate residual add, and where the operands disagree decide which
    is the residual branch (tracing goes on with its shape) or record a broadcast error.

    Not ``Trace._call_add`` itself, because the two differ where it matters: the eager tracer
    keeps its decision in ``trace.online_adds`` (here ``residual.py`` decides again on the whole
    graph), and there a constant tensor counts as traced once recorded, here only a :class:`_T`.
    """
    both = traced[0] and traced[1] and distinct and len(op.inputs) == 2
    if both:
        trace.candidate_adds.append(op.id)
    shape = rules.broadcast(sa, sb)
    bad = shape is None or (inplace and shape != sa)
    out_shape = shape
    decided = False
    if sa != sb and both and trace._stack:
        res = analyse_add(trace, op.id, trace._stack[-1])
        if res is not None:
            decided = True
            if bad:
                out_shape = carried_shape(trace, res)
    if bad and not decided:
        trace._error(op.name, op.id, "add", rules.binary_error("add", sa, sb, shape), [sa, sb])
        out_shape = sa if traced[0] else sb
    return out_shape


class _Recorder:
    """The interpreter's aten ops and trace records (a mixin of ``interp._Interp``); it uses
    ``self.trace``, ``self.quiet`` and the interpreter's ``_pyop`` and ``_fail``."""

    def _aten(self, node, env):
        vals = [env[i] for i in node.ins]
        if node.value is not None and not _has_tensor(vals):
            return self._pyop(node, env)  # aten::add.int and friends on Python numbers
        args = vals[: node.argn]
        kwargs = dict(zip(node.kwn, vals[node.argn :])) if node.kwn else {}
        if self.quiet:
            try:
                out = aten_eval(node.opo, args, kwargs, node.base)
            except (_Abort, _Quiet):
                raise
            except rules.RuleError as e:  # it names the layer already, as the other front-ends say it
                raise _Quiet(str(e)) from None
            except Exception as e:
                raise _Quiet(f"{node.base}: {_clean(e)}") from None
        else:
            out = self._record_aten(node, args, kwargs)
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    def _record_aten(self, node, args, kwargs):
        tensors = _flat_tensors((args, kwargs), [])
        if not any(isinstance(t, _T) for t in tensors):
            try:
                return aten_eval(node.opo, args, kwargs, node.base)
            except Exception as e:
                self._fail(f"{node.base}: {_clean(e)}")
        base = node.base
        if base in ("add", "add_") and len(args) >= 2:
            return self._record_add(node, args, base == "add_")
        if base in _BINARY_NAMES and len(args) >= 2:
            return self._record_binary(node, args, kwargs, base)
        try:
            out = aten_eval(node.opo, args, kwargs, base)
        except Exception as e:
            op = self._record(base, tensors, node.source)
            msg = str(e) if isinstance(e, rules.RuleError) else _clean(e)
            self.trace._error(op.name, op.id, base, msg, [_shape_of(t) for t in tensors], True)
            raise _Abort from None
        outs = _flat_tensors(out, [])
        if not outs:
            return out
        if len(outs) == 1 and outs[0] is tensors[0] and not base.endswith("_"):
            return out  # a no-op such as .contiguous() on a contiguous tensor
        op = self._record(base, tensors, node.source)
        op.outputs = [self._new_value(t, op.id) for t in outs]
        return out

    def _record_binary(self, node, args, kwargs, base):
        a, b = args[0], args[1]
        sa = _shape_of(a) if isinstance(a, _TENSORS) else ()
        sb = _shape_of(b) if isinstance(b, _TENSORS) else ()
        tensors = [t for t in (a, b) if isinstance(t, _TENSORS)]
        inplace = base.endswith("_")
        op = self._record(base, tensors, node.source)
        shape = rules.broadcast(sa, sb)
        if shape is None or (inplace and shape != sa):
            self.trace._error(op.name, op.id, base, rules.binary_error(base, sa, sb, shape), [sa, sb])
            shape = sa if inplace else binary_continue_shape(self.trace, op, sa, sb)
        out = self._result(a, b, shape, inplace)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _record_add(self, node, args, inplace):
        a, b = args[0], args[1]
        sa = _shape_of(a) if isinstance(a, _TENSORS) else ()
        sb = _shape_of(b) if isinstance(b, _TENSORS) else ()
        tensors = [x for x in (a, b) if isinstance(x, _TENSORS)]
        op = self._record("add", tensors, node.source)
        traced = (isinstance(a, _T), isinstance(b, _T))
        out_shape = add_shape(self.trace, op, sa, sb, traced, a is not b, inplace)
        out = self._result(a, b, out_shape, inplace and out_shape == sa)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _result(self, a, b, shape, inplace):
        if inplace and isinstance(a, _T):
            return a
        if isinstance(a, _TENSORS) and isinstance(b, _TENSORS):
            dtype = torch.promote_types(a.dtype, b.dtype)
        else:
            dtype = a.dtype if isinstance(a, _TENSORS) else b.dtype
        return _T(shape, dtype)

    # ------------------------------------------------------------------ trace records

    def _vid(self, t) -> int:
        if isinstance(t, _T):
            if t.vid is None:
                self._new_value(t, None)
            return t.vid
        vid = self.const_vids.get(id(t))
        if vid is None:
            tr = self.trace
            vid = len(tr.values)
            tr.values.append(Value(vid, tuple(t.shape), _dtype_name(t.dtype), None))
            self.const_vids[id(t)] = vid
            self.keep.append(t)
        return vid

    def _new_value(self, t: _T, producer: int | None) -> int:
        tr = self.trace
        vid = len(tr.values)
        tr.values.append(Value(vid, t.shape, _dtype_name(t.dtype), producer))
        t.vid = vid
        return vid

    def _record(self, fname: str, tensors, source) -> Op:
        # scalars that tracing turned into constant tensors (`x * 2`) are not inputs
        inputs = [self._vid(t) for t in tensors if isinstance(t, _T) or t.dim() or t.is_meta]
        return self.trace._add_op("function", self.trace._function_name(fname), fname, inputs,
                                  source=source)  # fmt: skip

    def _as_output(self, t, op_id: int) -> int:
        if not isinstance(t, _T):
            t = _T(tuple(t.shape), t.dtype)
        return self._new_value(t, op_id)
