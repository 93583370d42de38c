"""One recording API for the three tracers: :class:`TraceBuilder`.

The eager meta tracer (``eager.py``), the TorchScript interpreter (``torchscript/``) and the
torch.export tracer (``exported.py``) each walk a model their own way, and record what they see
through this one builder, the way torch.fx's ``Tracer`` records into a ``Graph``:

* ``input`` / ``value`` / ``op`` / ``function`` / ``output``: the data-flow graph (values are
  tensors, ops make them);
* ``enter`` / ``exit``: a call of a non-leaf module (the grouping skeleton); ops are recorded in
  the innermost open call (:attr:`TraceBuilder.scope`);
* ``add`` / ``elementwise``: the one policy for an add and an elementwise op whose operands do not
  fit (what is recorded, and which shape tracing goes on with);
* ``layer_shape``: a leaf layer's shape rule applied, a rule violation recorded;
* ``fail`` / ``fail_in_call``: a shape error, charged to an op or to the innermost open call;
* ``finish``: the finished :class:`~resviz.core.tracing.records.Trace`, a plain record with no
  builder state on it. Records name their module by path; the trace's one
  :class:`~resviz.core.tracing.records.ModuleIndex` finds it (in the ``root`` given to ``finish``,
  or among the stand-ins given to ``op``).

The builder owns the call stack, the failures, the add policy and the message cleaner
(:func:`clean_message`). A front-end raises :class:`TraceAborted` once it has recorded a fatal
failure, to unwind its own walk.

The add policy: past an add whose operands cannot be added, tracing goes on with the residual
branch's shape where the add is a residual add (so one trace finds every broken block), else
records the broadcast error. Which operand is the residual branch is :func:`forks.split_add`'s
answer; the analysis pass (``resviz.core.analysis.residual``) classifies every add after tracing.
An analysis that found the residual branch to be the broken path (``analysis/blame.py``) traces
again :func:`carrying_shortcut`: the shortcut's shape is then carried past that add instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from ..inputs import Input
from . import shape_rules as rules
from .forks import split_add
from .records import Call, ModuleIndex, Op, ShapeError, Trace, Value

Shape = tuple[int, ...]

# ``File "path", line N`` in a Python stack trace (torch.export's and TorchScript's source notes).
SOURCE_LINE = re.compile(r'File "([^"]+)", line (\d+)')


class TraceAborted(Exception):
    """Unwinds a front-end's walk once a fatal failure has been recorded."""


class PlainMessage(Exception):
    """A failure whose message already reads as a diagnosis (no class name put in front)."""


def clean_message(e: BaseException) -> str:
    """The first line of ``e``'s message, prefixed with its class name unless it already reads as
    a diagnosis: PyTorch's own RuntimeErrors, a shape rule's :class:`RuleError`, a
    :class:`PlainMessage`."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    if isinstance(e, (RuntimeError, rules.RuleError, PlainMessage)):
        return text
    return f"{type(e).__name__}: {text}"


_DTYPE_NAMES: dict = {}


def dtype_name(dtype) -> str:
    """``float32`` for ``torch.float32``: how records spell a dtype."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:  # every value of a trace asks: str() of a dtype is not free
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


# Adds (op id -> evidence) past which tracing carries the shortcut's shape: their residual branch
# was found to be the broken path. Context-local: a trace in another thread is unaffected.
_CARRY_SHORTCUT: ContextVar[dict[int, str] | None] = ContextVar("resviz_carry_shortcut", default=None)


@contextmanager
def carrying_shortcut(evidence: dict[int, str]) -> Iterator[None]:
    """Trace (and classify adds) with the shortcut's shape carried past the adds in ``evidence``,
    a map from add op id to what showed that the residual branch is the broken path."""
    token = _CARRY_SHORTCUT.set(dict(evidence))
    try:
        yield
    finally:
        _CARRY_SHORTCUT.reset(token)


def carried_shortcuts() -> dict[int, str]:
    """The adds past which the shortcut's shape is carried now (see :func:`carrying_shortcut`)."""
    return _CARRY_SHORTCUT.get() or {}


class TraceBuilder:
    """Records one forward pass. ``values``, ``ops``, ``calls`` and ``errors`` are the records so
    far, for a front-end (and :mod:`~resviz.core.tracing.forks`) to read; only the builder's methods
    write them."""

    __slots__ = ("input_shape", "dtype", "device", "inputs", "values", "ops", "calls", "errors",
                 "_candidate_adds", "_stack", "_names", "_output_values", "_stand_ins")  # fmt: skip

    def __init__(
        self, input_shape: Sequence[int], *, dtype=torch.float32, device: str | torch.device = "meta",
        inputs: Sequence[Input] | None = None,
    ):  # fmt: skip
        self.input_shape = tuple(input_shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.inputs: list[Input] = list(inputs) if inputs is not None else [Input(self.input_shape, dtype)]
        self.values: list[Value] = []
        self.ops: list[Op] = []
        self.calls: list[Call] = []
        self.errors: list[ShapeError] = []
        self._candidate_adds: list[int] = []
        self._stack: list[int] = []
        self._names: dict[tuple[int, str], int] = {}
        self._output_values: list[int] = []
        self._stand_ins: dict[str, Any] = {}  # path -> what reads like the layer (no live module)

    # ------------------------------------------------------------------ where we are

    @property
    def scope(self) -> int:
        """The innermost open call (0, the model, when none is open)."""
        return self._stack[-1] if self._stack else 0

    @property
    def open_call(self) -> Call | None:
        """The innermost open call, or None."""
        return self.calls[self._stack[-1]] if self._stack else None

    @property
    def depth(self) -> int:
        """How many calls are open."""
        return len(self._stack)

    # ------------------------------------------------------------------ the graph

    def value(self, shape: Sequence[int], dtype, producer: int | None = None) -> int:
        """A new tensor value made by op ``producer`` (None: a parameter, buffer or constant)."""
        values = self.values
        vid = len(values)
        values.append(Value(vid, tuple(shape), dtype_name(dtype), producer))
        return vid

    def input(self, name: str = "input") -> Op:
        """An input op; its outputs are the values :meth:`value` makes with it as producer."""
        return self.op("input", name, "Input", [])

    def op(
        self, kind: str, name: str, type_: str, inputs: list[int], *, params: int = 0,
        source: tuple[str, int] | None = None, stand_in: Any = None, call_index: int = 0,
    ) -> Op:  # fmt: skip
        """An op in the innermost open call; the caller fills in ``op.outputs`` (with :meth:`value`).

        ``stand_in``: for a module op whose layer the model cannot give back by path (an archive's
        layer), an object that reads like it (its hyper-parameters as attributes)."""
        stack, ops = self._stack, self.ops
        op = Op(  # positionally, in the record's field order: every op of a trace is made here
            len(ops), kind, name, type_, stack[-1] if stack else 0, inputs, [], params, 0, {},
            call_index, source,
        )  # fmt: skip
        ops.append(op)
        if stand_in is not None:
            self._stand_ins[name] = stand_in
        return op

    def function(self, fname: str, inputs: list[int], *, source: tuple[str, int] | None = None) -> Op:
        """A functional op, named in its call as torch.fx names nodes: ``layer1.0.add``, then
        ``layer1.0.add_1``..."""
        return self.op("function", self.function_name(fname), fname, inputs, source=source)

    def function_name(self, fname: str) -> str:
        """The qualified name the next functional op ``fname`` in this call gets."""
        scope = self.scope
        key = (scope, fname)
        n = self._names.get(key, 0)
        self._names[key] = n + 1
        base = fname if n == 0 else f"{fname}_{n}"
        path = self.calls[scope].path if self.calls else ""
        return f"{path}.{base}" if path else base

    def output(self, values: list[int]) -> Op:
        """The model's outputs: an 'output' op at the model's level."""
        self._output_values = list(values)
        op = self.op("output", "output", "Output", list(values))
        op.scope = 0
        return op

    def adopt_outside_inputs(self, op: Op) -> None:
        """Make the values ``op`` takes from before an open call inputs of that call (a front-end
        that sees no call arguments, only ops: torch.export's flat graph). The model's own call is
        left as it is."""
        values = self.values
        for cid in self._stack[1:]:
            call = self.calls[cid]
            for v in op.inputs:
                p = values[v].producer
                if p is not None and p < call.first_op and v not in call.inputs:
                    call.inputs.append(v)

    # ------------------------------------------------------------------ calls

    def enter(self, path: str, type_: str, inputs: list[int], *, params: int = 0) -> int:
        """Open a call of a non-leaf module (``path`` '' for the model itself); returns its id."""
        cid = len(self.calls)
        parent = self._stack[-1] if self._stack else None
        self.calls.append(Call(cid, path, type_, parent, inputs, first_op=len(self.ops), params=params))
        self._stack.append(cid)
        return cid

    def exit(self, cid: int, outputs: list[int] | None = None, *, params: int | None = None,
             macs: int | None = None) -> None:  # fmt: skip
        """Close call ``cid`` (the innermost open one) after the ops recorded so far."""
        call = self.calls[cid]
        if outputs is not None:
            call.outputs = outputs
        if params is not None:
            call.params = params
        if macs is not None:
            call.macs = macs
        call.last_op = len(self.ops) - 1
        self._stack.pop()

    def exit_all(self) -> None:
        """Close every open call (after an abort), so every call has a valid op range."""
        while self._stack:
            self.calls[self._stack.pop()].last_op = len(self.ops) - 1

    def set_call_outputs(self, cid: int, outputs: list[int]) -> None:
        self.calls[cid].outputs = list(outputs)

    # ------------------------------------------------------------------ failures

    def fail(self, name: str, op: int | None, type_: str, message: str, shapes: Iterable = (),
             *, fatal: bool = False) -> None:  # fmt: skip
        """A shape error charged to ``name`` (an op's name, or a module path)."""
        self.errors.append(ShapeError(name, op, type_, message, list(shapes), fatal))

    def fail_in_call(self, message: str, *, type_: str | None = None, shapes: Iterable = ()) -> None:
        """A fatal failure in the model's own code, outside any op: charged to the innermost open
        call ('(model)' for the model itself)."""
        call = self.open_call
        where = call.path if call and call.path else "(model)"
        if type_ is None:
            type_ = call.type if call else ""
        self.fail(where, None, type_, message, shapes, fatal=True)

    def layer_shape(self, rule, module, in_shape: Shape, op: Op) -> Shape | None:
        """A leaf layer's output shape by its rule. A rule error is recorded against the layer and
        tracing goes on with the shape the layer would have produced; None: there is none, stop."""
        try:
            return rule(module, in_shape)
        except rules.RuleError as e:
            self.fail(op.name, op.id, op.type, str(e), [in_shape], fatal=e.continue_shape is None)
            return e.continue_shape

    # ------------------------------------------------------------------ the add policy

    def add(self, op: Op, sa: Shape, sb: Shape, *, traced: tuple[bool, bool], distinct: bool,
            inplace: bool) -> Shape:  # fmt: skip
        """The shape tracing goes on with past the add ``op`` (already recorded with its operands
        of shapes ``sa`` and ``sb``; ``traced``: which operands are traced tensors, ``distinct``:
        they are not one tensor added to itself).

        An add of two distinct traced tensors is a candidate residual add (the analysis decides).
        Where the operands cannot be added: at a residual add, the residual branch's shape (the
        shortcut's, if :func:`carrying_shortcut` says so for this add), nothing recorded (the
        analysis reports the mismatch); at any other add, the broadcast error is recorded and
        tracing goes on with the traced operand's shape.
        """
        both = traced[0] and traced[1] and distinct and len(op.inputs) == 2
        if both:
            self._candidate_adds.append(op.id)
        shape = rules.broadcast(sa, sb)
        if shape is not None and not (inplace and shape != sa):
            return shape
        if both and self._stack:
            split = split_add(self, op.id, self._stack[-1])
            if split is not None:
                carried = split.shortcut if op.id in carried_shortcuts() else split.residual
                return self.values[carried].shape
        self.fail(op.name, op.id, "add", rules.binary_error("add", sa, sb, shape), [sa, sb])
        return sa if traced[0] else sb

    def elementwise(self, op: Op, fname: str, sa: Shape, sb: Shape, *, inplace: bool) -> Shape:
        """The shape tracing goes on with past an elementwise op other than an add: the broadcast
        shape; where the operands do not fit, the error is recorded and tracing goes on with the
        data's shape, not a parameter's (``self.gamma * x`` with a layer-scale gamma of the old
        width goes on with x's shape), else the first operand's."""
        shape = rules.broadcast(sa, sb)
        if shape is not None and not (inplace and shape != sa):
            return shape
        self.fail(op.name, op.id, fname, rules.binary_error(fname, sa, sb, shape), [sa, sb])
        if inplace:
            return sa
        vals = [self.values[v] for v in op.inputs[:2]]
        if len(vals) == 2 and (vals[0].producer is None) != (vals[1].producer is None):
            return vals[1].shape if vals[0].producer is None else vals[0].shape
        return sa

    # ------------------------------------------------------------------ the record

    def finish(self, *, complete: bool, root: Any = None) -> Trace:
        """The finished trace (``complete``: the forward ran to the end). Open calls are closed.
        ``root``: the traced model, where its modules can be found by path (eager, TorchScript)."""
        self.exit_all()
        return Trace(
            input_shape=self.input_shape, inputs=self.inputs, dtype=self.dtype, device=self.device,
            values=self.values, ops=self.ops, calls=self.calls, errors=self.errors,
            candidate_adds=self._candidate_adds, complete=complete,
            output_values=self._output_values, modules=ModuleIndex(root, self._stand_ins),
        )  # fmt: skip
