"""Recording the aten ops of a graph through the trace's :class:`~resviz.core.tracing.builder.TraceBuilder`,
as the eager tracer records functional ops: one 'function' op per aten call on a traced tensor,
with value ids for its inputs and outputs, named and scoped by the builder.

Adds and the other elementwise binary ops follow the builder's one policy (``TraceBuilder.add``,
``TraceBuilder.elementwise``): a mismatch is recorded and tracing goes on (with the residual
branch's shape at a residual add), where any other op that cannot be evaluated ends the trace.
"""

from __future__ import annotations

import torch

from .. import shape_rules as rules
from ..builder import TraceAborted, clean_message
from ..records import Op
from .aten import aten_eval
from .common import TENSOR_TYPES, QuietFailure, TracedTensor, flat_tensors, has_tensor, shape_of

_BINARY_NAMES = frozenset({"sub", "mul", "div", "true_divide", "sub_", "mul_", "div_"})


class AtenRecorder:
    """The interpreter's aten ops and trace records (a mixin of ``interp.Interpreter``); it uses
    ``self.builder``, ``self.quiet`` and the interpreter's ``_pyop`` and ``_fail``."""

    def _aten(self, node, env):
        vals = [env[i] for i in node.ins]
        if node.value is not None and not has_tensor(vals):
            return self._pyop(node, env)  # aten::add.int and friends on Python numbers
        args = vals[: node.argn]
        kwargs = dict(zip(node.kwn, vals[node.argn :])) if node.kwn else {}
        if self.quiet:
            out = self._aten_quietly(node, args, kwargs)
        else:
            out = self._record_aten(node, args, kwargs)
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    def _aten_quietly(self, node, args, kwargs):
        try:
            return aten_eval(node.opo, args, kwargs, node.base)
        except (TraceAborted, QuietFailure):
            raise
        except rules.RuleError as e:  # it names the layer already, as the other front-ends say it
            raise QuietFailure(str(e)) from None
        except Exception as e:  # noqa: BLE001 - inside a leaf layer run quietly: the leaf records this as its fatal ShapeError
            raise QuietFailure(f"{node.base}: {clean_message(e)}") from None

    def _record_aten(self, node, args, kwargs):
        tensors = flat_tensors((args, kwargs), [])
        if not any(isinstance(t, TracedTensor) for t in tensors):
            try:
                return aten_eval(node.opo, args, kwargs, node.base)
            except Exception as e:  # noqa: BLE001 - a failure on constants only is the model's own: recorded as a fatal ShapeError on its call
                self._fail(f"{node.base}: {clean_message(e)}")
        base = node.base
        if base in ("add", "add_") and len(args) >= 2:
            return self._record_add(node, args, base == "add_")
        if base in _BINARY_NAMES and len(args) >= 2:
            return self._record_binary(node, args, base)
        try:
            out = aten_eval(node.opo, args, kwargs, base)
        except Exception as e:  # noqa: BLE001 - the op's own failure is the diagnosis: recorded as a fatal ShapeError
            op = self._record(base, tensors, node.source)
            shapes = [shape_of(t) for t in tensors]
            self.builder.fail(op.name, op.id, base, clean_message(e), shapes, fatal=True)
            raise TraceAborted from None
        outs = flat_tensors(out, [])
        if not outs:
            return out
        if len(outs) == 1 and outs[0] is tensors[0] and not base.endswith("_"):
            return out  # a no-op such as .contiguous() on a contiguous tensor
        op = self._record(base, tensors, node.source)
        op.outputs = [self._new_value(t, op.id) for t in outs]
        return out

    def _record_binary(self, node, args, base):
        a, b = args[0], args[1]
        sa = shape_of(a) if isinstance(a, TENSOR_TYPES) else ()
        sb = shape_of(b) if isinstance(b, TENSOR_TYPES) else ()
        tensors = [t for t in (a, b) if isinstance(t, TENSOR_TYPES)]
        inplace = base.endswith("_")
        op = self._record(base, tensors, node.source)
        shape = self.builder.elementwise(op, base, sa, sb, inplace=inplace)
        out = self._result(a, b, shape, inplace)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _record_add(self, node, args, inplace):
        a, b = args[0], args[1]
        sa = shape_of(a) if isinstance(a, TENSOR_TYPES) else ()
        sb = shape_of(b) if isinstance(b, TENSOR_TYPES) else ()
        tensors = [x for x in (a, b) if isinstance(x, TENSOR_TYPES)]
        op = self._record("add", tensors, node.source)
        traced = (isinstance(a, TracedTensor), isinstance(b, TracedTensor))
        out_shape = self.builder.add(op, sa, sb, traced=traced, distinct=a is not b, inplace=inplace)
        out = self._result(a, b, out_shape, inplace and out_shape == sa)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _result(self, a, b, shape, inplace):
        if inplace and isinstance(a, TracedTensor):
            return a
        if isinstance(a, TENSOR_TYPES) and isinstance(b, TENSOR_TYPES):
            dtype = torch.promote_types(a.dtype, b.dtype)
        else:
            dtype = a.dtype if isinstance(a, TENSOR_TYPES) else b.dtype
        return TracedTensor(shape, dtype)

    # ------------------------------------------------------------------ trace records

    def _vid(self, t) -> int:
        if isinstance(t, TracedTensor):
            if t.vid is None:
                self._new_value(t, None)
            return t.vid
        vid = self.const_vids.get(id(t))
        if vid is None:
            vid = self.builder.value(tuple(t.shape), t.dtype, None)
            self.const_vids[id(t)] = vid
            self.keep.append(t)
        return vid

    def _new_value(self, t: TracedTensor, producer: int | None) -> int:
        t.vid = self.builder.value(t.shape, t.dtype, producer)
        return t.vid

    def _record(self, fname: str, tensors, source) -> Op:
        # scalars that tracing turned into constant tensors (`x * 2`) are not inputs
        inputs = [self._vid(t) for t in tensors if isinstance(t, TracedTensor) or t.dim() or t.is_meta]
        return self.builder.function(fname, inputs, source=source)

    def _as_output(self, t, op_id: int) -> int:
        if not isinstance(t, TracedTensor):
            t = TracedTensor(tuple(t.shape), t.dtype)
        return self._new_value(t, op_id)
