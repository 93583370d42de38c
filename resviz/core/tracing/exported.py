"""Trace a ``torch.export`` program (``torch.export.export`` / ``torch.export.load``) into the same
:class:`~resviz.core.tracing.eager.Trace` the eager tracer records.

An exported graph is already a flat list of aten calls, each knowing the module calls it was made
in (``node.meta['nn_module_stack']``: module paths and classes, one key per call) and its output's
fake tensor (``node.meta['val']``). So:

* consecutive nodes made inside the same call of a *leaf* layer (no children, or a layer with a
  shape rule: Conv2d, BatchNorm2d, ReLU, Linear...) become ONE 'module' op with that layer's path
  and class — a batch norm may be several aten nodes, a decomposed linear a transpose and an addmm;
* every other node becomes a 'function' op in the scope of its innermost module call;
* a :class:`Call` is opened for each distinct non-leaf module call (its key in the stack), with as
  inputs the values it consumed from outside and as outputs the values used after it;
* parameters, buffers and constants are graph inputs, not traced values (a functional op that
  uses one gets a value without producer, as under the eager tracer).

Shapes are read from ``meta['val']`` when the input shape is the exported one. For another input
shape they are propagated again — the eager tracer's layer rules for leaf layers (hyper-parameters
read off the aten call: stride, padding, kernel from the weight), aten-level rules or meta tensors
for the rest — with residual mismatches and other failures recorded as the eager tracer records
them. A program exported with static shapes may have sizes baked into its ops (a ``view`` to
``[1, 512]``); at another batch size that shows as a :class:`ShapeError` naming the op.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch.fx.node import map_arg

from . import shape_rules as rules
from .eager import Trace
from .records import Call, Op, Value
from .torchscript import (
    _T,
    _TENSORS,
    _shape_of,
    add_shape,
    aten_eval,
    hyper_from_aten,
    hyper_object,
    leaf_macs,
    module_rule_by_name,
)

__all__ = ["trace_exported"]

_SOURCE = re.compile(r'File "([^"]+)", line (\d+)')
_SKIP_PREFIXES = ("_assert", "sym_constrain_range", "_functional_assert", "_print")
_LAYER_OPS = frozenset(
    {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
     "conv_transpose2d", "conv_transpose3d", "max_pool1d", "max_pool2d", "max_pool3d",
     "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
     "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "adaptive_max_pool2d",
     "linear", "addmm", "batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
     "flatten"}
)  # fmt: skip


class _Abort(Exception):
    pass


def _class_name(t) -> str:
    if isinstance(t, type):
        return t.__name__
    return str(t).rsplit(".", 1)[-1].strip("'>")


def _op_base(target) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return target._opname
    return getattr(target, "__name__", str(target))


def _normalize(target, args, kwargs) -> tuple[list, dict]:
    """Positional arguments in schema order, defaults filled in; kwarg-only ones in kwargs."""
    try:
        schema = target._schema
    except AttributeError:
        return list(args), dict(kwargs)
    pos, kw = [], {}
    for i, a in enumerate(schema.arguments):
        if a.kwarg_only:
            if a.name in kwargs:
                kw[a.name] = kwargs[a.name]
            continue
        if i < len(args):
            pos.append(args[i])
        elif a.name in kwargs:
            pos.append(kwargs[a.name])
        elif a.has_default_value():
            pos.append(a.default_value)
        else:
            pos.append(None)
    return pos, kw


def _source(node) -> tuple[str, int] | None:
    text = node.meta.get("stack_trace")
    if not text:
        return None
    found = _SOURCE.findall(text)
    return (found[-1][0], int(found[-1][1])) if found else None


def _val_shape(val) -> tuple[int, ...]:
    out = []
    for d in val.shape:
        try:
            out.append(int(d))
        except Exception:
            hint = getattr(getattr(d, "node", None), "hint", None)
            out.append(int(hint) if hint is not None else -1)
    return tuple(out)


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _clean(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    if isinstance(e, (RuntimeError, rules.RuleError)):
        return text
    return f"{type(e).__name__}: {text}"


class _Group:
    """The nodes of one call of a leaf layer."""

    __slots__ = ("key", "path", "type", "qualname", "scope", "nodes")

    def __init__(self, key, path, type_, qualname, scope):
        self.key = key
        self.path = path
        self.type = type_
        self.qualname = qualname
        self.scope = scope
        self.nodes: list = []


class _ExportTracer:
    def __init__(self, ep, input_shape: Sequence[int] | None):
        self.ep = ep
        self.graph = ep.graph
        sig = ep.graph_signature
        params: dict[str, int] = {}
        owners: set[str] = set()
        self.user_inputs: list[str] = []
        state = ep.state_dict
        for spec in sig.input_specs:
            name = spec.arg.name if hasattr(spec.arg, "name") else str(spec.arg)
            kind = spec.kind.name
            if kind == "USER_INPUT":
                self.user_inputs.append(name)
            elif spec.target is not None:
                owners.add(spec.target.rsplit(".", 1)[0] if "." in spec.target else "")
                if kind == "PARAMETER" and spec.target in state:
                    params[spec.target] = state[spec.target].numel()
        self.params = params
        self.own_params: dict[str, int] = {}
        for k, n in params.items():
            owner = k.rsplit(".", 1)[0] if "." in k else ""
            self.own_params[owner] = self.own_params.get(owner, 0) + n
        self.placeholders = {n.name: n for n in self.graph.nodes if n.op == "placeholder"}
        # the model's outputs (buffer mutations a training-mode batch norm returns are not)
        self.user_outputs: list = []
        out_node = next((n for n in self.graph.nodes if n.op == "output"), None)
        if out_node is not None:
            outs = out_node.args[0] if out_node.args else ()
            outs = outs if isinstance(outs, (list, tuple)) else (outs,)
            specs = list(sig.output_specs)
            for i, a in enumerate(outs):
                kind = specs[i].kind.name if i < len(specs) else "USER_OUTPUT"
                if kind == "USER_OUTPUT":
                    self.user_outputs.extend(_flat_nodes(a))
        self.user_output_set = set(self.user_outputs)
        exported = None
        if self.user_inputs:
            val = self.placeholders[self.user_inputs[0]].meta.get("val")
            if isinstance(val, torch.Tensor):
                exported = _val_shape(val)
        self.exported_shape = exported
        shape = tuple(input_shape) if input_shape is not None else exported
        if shape is None:
            shape = ()
        self.propagate = exported is None or shape != exported or -1 in exported
        self.dtype = torch.float32
        if self.user_inputs:
            val = self.placeholders[self.user_inputs[0]].meta.get("val")
            if isinstance(val, torch.Tensor):
                self.dtype = val.dtype
        self.trace = Trace(shape, dtype=self.dtype)
        # which module paths have children (and so are not leaves)
        paths: set[str] = set()
        for n in self.graph.nodes:
            for path, _ in (n.meta.get("nn_module_stack") or {}).values():
                paths.add(path)
        parents: set[str] = set()
        for p in paths | owners:
            parts = p.split(".")
            for i in range(1, len(parts)):
                parents.add(".".join(parts[:i]))
        self.parents = parents
        # tracing state
        self.vid: dict[Any, int] = {}  # fx node -> value id
        self.env: dict[Any, Any] = {}  # propagation: fx node -> value
        self.traced: set = set()  # fx nodes that carry a traced tensor
        self.const_vid: dict[Any, int] = {}
        self.open: list[tuple[str, int]] = []  # (stack key, call id) of open non-leaf calls
        self.module_calls: dict[str, int] = {}
        self.entered: set[str] = set()  # non-leaf module paths already called
        self.root_type = "Model"
        self._done: set = set()  # getitem nodes already given their value

    # ------------------------------------------------------------------ helpers

    def is_leaf(self, path: str, type_name: str, qualname: str) -> bool:
        return path not in self.parents or module_rule_by_name(type_name, qualname) is not None

    def _new_value(self, shape, dtype, producer) -> int:
        t = self.trace
        vid = len(t.values)
        t.values.append(Value(vid, tuple(shape), _dtype_name(dtype), producer))
        return vid

    def _const_value(self, node) -> int:
        """A value without producer for a parameter, buffer or constant used by a function op."""
        vid = self.const_vid.get(node)
        if vid is None:
            val = node.meta.get("val") if hasattr(node, "meta") else None
            if val is None and node in self.env and isinstance(self.env[node], _TENSORS):
                val = self.env[node]
            shape = _shape_of(val) if isinstance(val, _TENSORS) else ()
            dtype = val.dtype if isinstance(val, _TENSORS) else torch.float32
            vid = self.const_vid[node] = self._new_value(shape, dtype, None)
        return vid

    def _stack_of(self, node) -> list[tuple[str, str, str, str]]:
        """(call key, module path, class name, qualified class name) from outermost to innermost,
        the model itself left out."""
        stack = node.meta.get("nn_module_stack") or {}
        out = []
        for key, (path, ty) in stack.items():
            qual = f"{ty.__module__}.{ty.__qualname__}" if isinstance(ty, type) else str(ty)
            if path == "":
                self.root_type = _class_name(ty)
                continue
            out.append((key, path, _class_name(ty), qual))
        return out

    # ------------------------------------------------------------------ calls

    def _add_op(self, kind, name, type_, inputs, **kw) -> Op:
        """Record an op; values it takes from before an open call are that call's inputs (the
        residual analysis reads them while tracing, to find where a block's two paths fork)."""
        t = self.trace
        op = t._add_op(kind, name, type_, inputs, **kw)
        for cid in t._stack[1:]:
            call = t.calls[cid]
            for v in inputs:
                p = t.values[v].producer
                if p is not None and p < call.first_op and v not in call.inputs:
                    call.inputs.append(v)
        return op

    def _enter_scope(self, entries: list[tuple[str, str, str, str]]) -> None:
        i = 0
        while i < len(self.open) and i < len(entries) and self.open[i][0] == entries[i][0]:
            i += 1
        t = self.trace
        while len(self.open) > i:
            _, cid = self.open.pop()
            t.calls[cid].last_op = len(t.ops) - 1
            t._stack.pop()
        for key, path, type_name, _ in entries[i:]:
            cid = len(t.calls)
            # parameters the module holds itself (a layer-scale gamma), at its first call
            own = self.own_params.get(path, 0) if path not in self.entered else 0
            self.entered.add(path)
            t.calls.append(Call(cid, path, type_name, t._stack[-1], [], first_op=len(t.ops), params=own))
            t._stack.append(cid)
            self.open.append((key, cid))

    def _close_all(self) -> None:
        self._enter_scope([])

    # ------------------------------------------------------------------ shapes

    def _arg_values(self, node):
        """The node's arguments as interpreter values (propagation) or fake tensors (exported)."""
        if self.propagate:
            return map_arg(node.args, self._env), map_arg(node.kwargs, self._env)
        return map_arg(node.args, _meta_val), map_arg(node.kwargs, _meta_val)

    def _env(self, n):
        if n in self.env:
            return self.env[n]
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor):  # parameter, buffer or constant
            v = torch.empty(_val_shape(val), dtype=val.dtype, device="meta")
        else:
            v = val
        self.env[n] = v
        return v

    def _evaluate(self, node):
        """Propagate one node; raises on failure."""
        args, kwargs = self._arg_values(node)
        target = node.target
        if target is operator.getitem:
            return args[0][args[1]]
        if isinstance(target, torch._ops.OpOverload):
            pos, kw = _normalize(target, args, kwargs)
            return aten_eval(target, pos, kw)
        if callable(target):
            return target(*args, **kwargs)
        raise RuntimeError(f"cannot evaluate {target}")

    def _shape_dtype(self, node, index=None):
        if self.propagate:
            v = self.env.get(node)
        else:
            v = node.meta.get("val")
        if index is not None and isinstance(v, (list, tuple)):
            v = v[index]
        if isinstance(v, _T):
            return v.shape, v.dtype
        if isinstance(v, torch.Tensor):
            return _val_shape(v), v.dtype
        return None

    # ------------------------------------------------------------------ ops

    def _inputs_of(self, nodes: list, *, with_consts: bool) -> list[int]:
        """Values the nodes consume from outside them, in order; parameters and constants only
        for functional ops (a layer's own weights are not inputs of its module op)."""
        inside = set(nodes)
        out: list[int] = []
        seen: set = set()
        for n in nodes:
            for a in n.all_input_nodes:
                if a in inside or a in seen:
                    continue
                seen.add(a)
                if a in self.vid:
                    out.append(self.vid[a])
                elif with_consts and isinstance(a.meta.get("val"), torch.Tensor):
                    out.append(self._const_value(a))
        return out

    def _set_outputs(self, op: Op, nodes: list) -> None:
        """A value for each node of ``nodes`` used after them (the last one if none is)."""
        inside = set(nodes)
        outs = [n for n in nodes if self._used_outside(n, inside)] or nodes[-1:]
        for n in outs:
            sd = self._shape_dtype(n)
            if sd is not None:
                self.vid[n] = self._new_value(sd[0], sd[1], op.id)
                self.traced.add(n)
                op.outputs.append(self.vid[n])
            else:
                op.outputs.extend(self._tuple_outputs(n, op, inside))

    def _used_outside(self, n, inside) -> bool:
        if n in self.user_output_set:
            return True
        return any(u not in inside and u.op != "output" for u in n.users)

    def _tuple_outputs(self, node, op: Op, inside=()) -> list[int]:
        """Values for a node returning several tensors; its getitem users map onto them."""
        val = self.env.get(node) if self.propagate else node.meta.get("val")
        if not isinstance(val, (list, tuple)):
            return []
        vids: list[int | None] = []
        for i, v in enumerate(val):
            sd = self._shape_dtype(node, i) if isinstance(v, _TENSORS) else None
            vids.append(self._new_value(sd[0], sd[1], op.id) if sd is not None else None)
        for u in node.users:
            if u in inside or u.target is not operator.getitem or not isinstance(u.args[1], int):
                continue
            vid = vids[u.args[1]] if u.args[1] < len(vids) else None
            if vid is not None:
                self.vid[u] = vid
                self.traced.add(u)
                if self.propagate:
                    self.env[u] = val[u.args[1]]
            self._done.add(u)
        return [v for v in vids if v is not None]

    def _leaf(self, group: _Group) -> None:
        t = self.trace
        self._enter_scope(group.scope)
        n_call = self.module_calls.get(group.path, 0)
        self.module_calls[group.path] = n_call + 1
        params, weights = self._params(group.path)
        inputs = self._inputs_of(group.nodes, with_consts=False)
        hyper_attrs, _ = self._hyper(group)
        hyper = hyper_object(group.type, hyper_attrs or {})
        op = self._add_op(
            "module", group.path, group.type, inputs, params=params if n_call == 0 else 0,
            module=hyper, call_index=n_call,
        )  # fmt: skip
        # what the layer does (its aten ops) decides its kind; torch.nn's own class names next
        kind = rules.kind_of_ops(_op_base(n.target) for n in group.nodes if n.op == "call_function")
        if kind == "other":
            kind = rules.layer_kind_of_class_name(group.type)
        op.attrs["layer"] = kind
        if self.propagate:
            self._propagate_leaf(group, op, hyper_attrs, hyper)
        self._set_outputs(op, group.nodes)
        if weights and op.outputs:
            op.macs = leaf_macs(kind, weights, t.values[op.outputs[0]].shape)

    def _propagate_leaf(self, group: _Group, op: Op, attrs, hyper) -> None:
        t = self.trace
        rule = module_rule_by_name(group.type, group.qualname)
        inside = set(group.nodes)
        outs = [n for n in group.nodes if self._used_outside(n, inside)]
        ins = [a for n in group.nodes for a in n.all_input_nodes if a in self.traced]
        if rule is rules.POOL_RULE and attrs and attrs.get("return_indices"):
            rule = None
        if rule is not None and attrs is not None and len(outs) == 1 and len(set(ins)) == 1:
            x = self.env[ins[0]]
            try:
                try:
                    out_shape = rule(hyper, x.shape)
                except rules.RuleError as e:
                    fatal = e.continue_shape is None
                    t._error(group.path, op.id, op.type, str(e), [x.shape], fatal)
                    if fatal:
                        raise _Abort from None
                    out_shape = e.continue_shape
            except AttributeError:
                pass  # the rule wanted an attribute the graph does not show: run the nodes
            else:
                self.env[outs[0]] = _T(out_shape, x.dtype)
                return
        for n in group.nodes:
            try:
                self.env[n] = self._evaluate(n)
            except Exception as e:
                shapes = [self.env[a].shape for a in dict.fromkeys(ins) if isinstance(self.env.get(a), _T)]
                msg = str(e) if isinstance(e, rules.RuleError) else _clean(e)
                t._error(group.path, op.id, op.type, msg, shapes, True)
                raise _Abort from None

    def _hyper(self, group: _Group):
        for n in group.nodes:
            base = _op_base(n.target)
            if base in _LAYER_OPS or base.endswith("_") or base in ("relu", "dropout"):
                args, kwargs = self._arg_values(n)
                pos, _ = _normalize(n.target, args, kwargs)
                attrs = hyper_from_aten(base, pos, base.endswith("_"))
                if attrs is not None:
                    return attrs, n
        return None, None

    def _params(self, path: str) -> tuple[int, int]:
        if path in self.parents:  # a layer with a rule but children: all its parameters
            prefix = path + "."
            params = sum(n for k, n in self.params.items() if k.startswith(prefix))
        else:
            params = self.own_params.get(path, 0)
        weights = self.params.get(f"{path}.weight", 0) + self.params.get(f"{path}.bias", 0)
        return params, weights

    def _function(self, node, scope) -> None:
        t = self.trace
        tensor_ins = [a for a in node.all_input_nodes if a in self.traced]
        if self.propagate and not tensor_ins:
            try:
                self.env[node] = self._evaluate(node)
            except Exception as e:
                self._enter_scope(scope)
                where = t.calls[t._stack[-1]].path or "(model)"
                t._error(where, None, _op_base(node.target), _clean(e), [], True)
                raise _Abort from None
            return
        if not tensor_ins:
            return  # parameters and constants only: not traced
        self._enter_scope(scope)
        base = _op_base(node.target)
        fname = "add" if base in ("add", "add_") else base
        inputs = self._inputs_of([node], with_consts=True)
        op = self._add_op("function", t._function_name(fname), fname, inputs, source=_source(node))
        if fname == "add" and len(node.args) >= 2:
            self._add(node, op, base == "add_")
            return
        if self.propagate:
            try:
                self.env[node] = self._evaluate(node)
            except Exception as e:
                shapes = [t.values[v].shape for v in inputs]
                msg = str(e) if isinstance(e, rules.RuleError) else _clean(e)
                t._error(op.name, op.id, fname, msg, shapes, True)
                raise _Abort from None
        sd = self._shape_dtype(node)
        if sd is not None:
            self.vid[node] = self._new_value(sd[0], sd[1], op.id)
            self.traced.add(node)
            op.outputs = [self.vid[node]]
        else:
            op.outputs = self._tuple_outputs(node, op)

    def _add(self, node, op: Op, inplace: bool) -> None:
        a, b = node.args[0], node.args[1]
        is_node = (isinstance(a, torch.fx.Node), isinstance(b, torch.fx.Node))
        traced = (is_node[0] and a in self.traced, is_node[1] and b in self.traced)
        if self.propagate:
            va = self._env(a) if is_node[0] else a
            vb = self._env(b) if is_node[1] else b
            sa = _shape_of(va) if isinstance(va, _TENSORS) else ()
            sb = _shape_of(vb) if isinstance(vb, _TENSORS) else ()
            out_shape = add_shape(self.trace, op, sa, sb, traced, a is not b, inplace)
            ref = va if isinstance(va, _TENSORS) else vb
            dtype = ref.dtype
            if isinstance(va, _TENSORS) and isinstance(vb, _TENSORS):
                dtype = torch.promote_types(va.dtype, vb.dtype)
            self.env[node] = _T(out_shape, dtype)
        else:
            sda = self._shape_dtype(a) if is_node[0] else None
            sdb = self._shape_dtype(b) if is_node[1] else None
            sa = sda[0] if sda else ()
            sb = sdb[0] if sdb else ()
            add_shape(self.trace, op, sa, sb, traced, a is not b, inplace)
        sd = self._shape_dtype(node)
        self.vid[node] = self._new_value(sd[0], sd[1], op.id)
        self.traced.add(node)
        op.outputs = [self.vid[node]]

    # ------------------------------------------------------------------ the walk

    def run(self) -> Trace:
        t = self.trace
        inp = t._add_op("input", "input", "Input", [])
        for i, name in enumerate(self.user_inputs):
            node = self.placeholders[name]
            if i == 0:
                shape, dtype = t.input_shape, self.dtype
            else:
                val = node.meta.get("val")
                shape, dtype = _val_shape(val), val.dtype
            vid = self._new_value(shape, dtype, inp.id)
            inp.outputs.append(vid)
            self.vid[node] = vid
            self.traced.add(node)
            if self.propagate:
                self.env[node] = _T(tuple(shape), dtype, vid)
        t.calls.append(Call(0, "", "Model", None, list(inp.outputs), first_op=len(t.ops),
                            params=self.own_params.get("", 0)))  # fmt: skip
        t._stack.append(0)

        group: _Group | None = None
        out_node = None
        try:
            for node in self.graph.nodes:
                if node.op == "output":
                    out_node = node
                    continue
                if node.op != "call_function" or node in self._done:
                    continue
                base = _op_base(node.target)
                if base.startswith(_SKIP_PREFIXES):
                    continue
                entries = self._stack_of(node)
                if group is not None and node.target is operator.getitem and \
                        node.args[0] in group.nodes:  # fmt: skip
                    group.nodes.append(node)
                    continue
                leaf = None
                if entries and self.is_leaf(*entries[-1][1:]):
                    leaf = entries[-1]
                    entries = entries[:-1]
                if group is not None and (leaf is None or leaf[0] != group.key):
                    self._leaf(group)
                    group = None
                if leaf is not None:
                    if group is None:
                        group = _Group(*leaf, entries)
                    group.nodes.append(node)
                    continue
                self._function(node, entries)
            if group is not None:
                self._leaf(group)
                group = None
            t.complete = True
        except _Abort:
            pass
        except Exception as e:  # something this front-end cannot follow
            scope = t.calls[t._stack[-1]] if t._stack else None
            where = scope.path if scope and scope.path else "(model)"
            t._error(where, None, scope.type if scope else "", _clean(e), [], True)
        self._close_all()
        if self.propagate and self.exported_shape is not None:
            was = rules.fmt_shape(self.exported_shape)
            for e in t.errors:
                if e.fatal and not e.suggestion:
                    e.suggestion = (
                        f"the program was exported for input {was}; sizes recorded in its graph "
                        f"may hold for that input only (export with dynamic shapes, or analyse at "
                        f"{was})"
                    )
        t.calls[0].type = self.root_type
        t.calls[0].last_op = len(t.ops) - 1
        t._stack.clear()
        if t.complete and out_node is not None:
            outs = [self.vid[a] for a in self.user_outputs if a in self.vid]
            t.output_values = outs
            t.calls[0].outputs = list(outs)
            o = t._add_op("output", "output", "Output", list(outs))
            o.scope = 0
        self._call_edges()
        return t

    def _call_edges(self) -> None:
        """Outputs of the non-leaf calls: values made inside and used after them."""
        t = self.trace
        users: dict[int, list[int]] = {}
        for op in t.ops:
            for v in op.inputs:
                users.setdefault(v, []).append(op.id)
        for call in t.calls[1:]:
            first, last = call.first_op, call.last_op
            outs: list[int] = []
            for op in t.ops[first : last + 1]:
                for v in op.outputs:
                    if any(u > last for u in users.get(v, ())):
                        outs.append(v)
            if not outs and last >= first and t.ops[last].outputs:
                outs = [t.ops[last].outputs[-1]]  # nothing used after it: the trace stopped here
            call.outputs = outs


def _flat_nodes(obj) -> list:
    if isinstance(obj, torch.fx.Node):
        return [obj]
    if isinstance(obj, (list, tuple)):
        out = []
        for o in obj:
            out.extend(_flat_nodes(o))
        return out
    if isinstance(obj, dict):
        out = []
        for o in obj.values():
            out.extend(_flat_nodes(o))
        return out
    return []


def _meta_val(n):
    return n.meta.get("val")


def trace_exported(ep, input_shape: Sequence[int] | None = None) -> Trace:
    """Trace a ``torch.export.ExportedProgram``; never raises for shape problems.

    ``input_shape`` defaults to the shape the program was exported with; any other shape is
    propagated again, and what does not fit lands in ``trace.errors``.
    """
    tracer = _ExportTracer(ep, input_shape)
    return tracer.run()
