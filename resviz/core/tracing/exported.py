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
from collections.abc import Sequence
from typing import Any

import torch
from torch.fx.node import map_arg

from . import shape_rules as rules
from .builder import SOURCE_LINE, TraceAborted, TraceBuilder, clean_message
from .records import Op, Trace
from .torchscript import (
    LAYER_CALL_OPS,
    TENSOR_TYPES,
    TracedTensor,
    aten_eval,
    hyper_from_aten,
    hyper_object,
    leaf_macs,
    module_rule_by_name,
    shape_of,
)

__all__ = ["trace_exported"]

_SKIP_PREFIXES = ("_assert", "sym_constrain_range", "_functional_assert", "_print")
# A leaf layer's principal op in an exported graph: the layer ops of every graph form, and the
# decomposed forms torch.export writes (a linear as addmm, a batch norm's functional kernels).
_LAYER_OPS = LAYER_CALL_OPS | {
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "_adaptive_avg_pool2d", "addmm",
    "_native_batch_norm_legit_no_training", "native_batch_norm",
}  # fmt: skip


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
    found = SOURCE_LINE.findall(text)
    return (found[-1][0], int(found[-1][1])) if found else None


def _val_shape(val) -> tuple[int, ...]:
    out = []
    for d in val.shape:
        try:
            out.append(int(d))
        except (TypeError, ValueError, RuntimeError):  # a symbolic size without a value: its hint
            hint = getattr(getattr(d, "node", None), "hint", None)
            out.append(int(hint) if hint is not None else -1)
    return tuple(out)


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


class _Signature:
    """What the program's signature and graph say before any node is walked."""

    def __init__(self, ep):
        sig = ep.graph_signature
        graph = ep.graph
        self.user_inputs, self.params, owners = _read_inputs(sig, ep.state_dict)
        self.own_params = _own_params(self.params)
        self.placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
        self.user_outputs = _user_outputs(graph, sig)
        first = self.placeholders[self.user_inputs[0]].meta.get("val") if self.user_inputs else None
        first = first if isinstance(first, torch.Tensor) else None
        self.exported_shape = _val_shape(first) if first is not None else None
        self.dtype = first.dtype if first is not None else torch.float32
        self.parents = _parent_paths(graph, owners)
        self.root_type = _root_type(graph)


def _read_inputs(sig, state) -> tuple[list[str], dict[str, int], set[str]]:
    """(user input names, parameter sizes by qualified name, paths of modules owning a state)."""
    user_inputs: list[str] = []
    params: dict[str, int] = {}
    owners: set[str] = set()
    for spec in sig.input_specs:
        name = spec.arg.name if hasattr(spec.arg, "name") else str(spec.arg)
        kind = spec.kind.name
        if kind == "USER_INPUT":
            user_inputs.append(name)
        elif spec.target is not None:
            owners.add(spec.target.rsplit(".", 1)[0] if "." in spec.target else "")
            if kind == "PARAMETER" and spec.target in state:
                params[spec.target] = state[spec.target].numel()
    return user_inputs, params, owners


def _own_params(params: dict[str, int]) -> dict[str, int]:
    """Parameters each module holds itself, by module path."""
    own: dict[str, int] = {}
    for k, n in params.items():
        owner = k.rsplit(".", 1)[0] if "." in k else ""
        own[owner] = own.get(owner, 0) + n
    return own


def _user_outputs(graph, sig) -> list:
    """The model's output nodes (buffer mutations a training-mode batch norm returns are not)."""
    out_node = next((n for n in graph.nodes if n.op == "output"), None)
    if out_node is None:
        return []
    outs = out_node.args[0] if out_node.args else ()
    outs = outs if isinstance(outs, (list, tuple)) else (outs,)
    specs = list(sig.output_specs)
    found: list = []
    for i, a in enumerate(outs):
        kind = specs[i].kind.name if i < len(specs) else "USER_OUTPUT"
        if kind == "USER_OUTPUT":
            found.extend(_flat_nodes(a))
    return found


def _parent_paths(graph, owners: set[str]) -> set[str]:
    """Module paths that have children (and so are not leaves)."""
    paths: set[str] = set()
    for n in graph.nodes:
        for path, _ in (n.meta.get("nn_module_stack") or {}).values():
            paths.add(path)
    parents: set[str] = set()
    for p in paths | owners:
        parts = p.split(".")
        for i in range(1, len(parts)):
            parents.add(".".join(parts[:i]))
    return parents


def _root_type(graph) -> str:
    """The model's class name, as the module stacks of its nodes give it ('Model' if none does)."""
    for n in graph.nodes:
        for path, ty in (n.meta.get("nn_module_stack") or {}).values():
            if path == "":
                return _class_name(ty)
    return "Model"


class _ExportTracer:
    def __init__(self, ep, input_shape: Sequence[int] | None):
        self.graph = ep.graph
        sig = _Signature(ep)
        self.user_inputs, self.params, self.own_params = sig.user_inputs, sig.params, sig.own_params
        self.placeholders, self.parents, self.root_type = sig.placeholders, sig.parents, sig.root_type
        self.user_outputs = sig.user_outputs
        self.user_output_set = set(sig.user_outputs)
        self.exported_shape = exported = sig.exported_shape
        shape = tuple(input_shape) if input_shape is not None else exported
        shape = () if shape is None else shape
        self.propagate = exported is None or shape != exported or -1 in exported
        self.dtype = sig.dtype
        self.builder = TraceBuilder(shape, dtype=self.dtype)
        # tracing state
        self.vid: dict[Any, int] = {}  # fx node -> value id
        self.env: dict[Any, Any] = {}  # propagation: fx node -> value
        self.traced: set = set()  # fx nodes that carry a traced tensor
        self.const_vid: dict[Any, int] = {}
        self.open: list[tuple[str, int]] = []  # (stack key, call id) of open non-leaf calls
        self.module_calls: dict[str, int] = {}
        self.entered: set[str] = set()  # non-leaf module paths already called
        self._done: set = set()  # getitem nodes already given their value
        self._has_output = False  # the walk reached the graph's output node

    # ------------------------------------------------------------------ helpers

    def is_leaf(self, path: str, type_name: str, qualname: str) -> bool:
        return path not in self.parents or module_rule_by_name(type_name, qualname) is not None

    def _new_value(self, shape, dtype, producer) -> int:
        return self.builder.value(shape, dtype, producer)

    def _const_value(self, node) -> int:
        """A value without producer for a parameter, buffer or constant used by a function op."""
        vid = self.const_vid.get(node)
        if vid is None:
            val = node.meta.get("val") if hasattr(node, "meta") else None
            if val is None and node in self.env and isinstance(self.env[node], TENSOR_TYPES):
                val = self.env[node]
            shape = shape_of(val) if isinstance(val, TENSOR_TYPES) else ()
            dtype = val.dtype if isinstance(val, TENSOR_TYPES) else torch.float32
            vid = self.const_vid[node] = self._new_value(shape, dtype, None)
        return vid

    def _stack_of(self, node) -> list[tuple[str, str, str, str]]:
        """(call key, module path, class name, qualified class name) from outermost to innermost,
        the model itself left out."""
        stack = node.meta.get("nn_module_stack") or {}
        out = []
        for key, (path, ty) in stack.items():
            if path == "":
                continue
            qual = f"{ty.__module__}.{ty.__qualname__}" if isinstance(ty, type) else str(ty)
            out.append((key, path, _class_name(ty), qual))
        return out

    # ------------------------------------------------------------------ calls

    def _op(self, kind, name, type_, inputs, **kw) -> Op:
        """Record an op; values it takes from before an open call are that call's inputs (the
        residual analysis reads them, to find where a block's two paths fork)."""
        op = self.builder.op(kind, name, type_, inputs, **kw)
        self.builder.adopt_outside_inputs(op)
        return op

    def _enter_scope(self, entries: list[tuple[str, str, str, str]]) -> None:
        i = 0
        while i < len(self.open) and i < len(entries) and self.open[i][0] == entries[i][0]:
            i += 1
        while len(self.open) > i:
            _, cid = self.open.pop()
            self.builder.exit(cid)
        for key, path, type_name, _ in entries[i:]:
            # parameters the module holds itself (a layer-scale gamma), at its first call
            own = self.own_params.get(path, 0) if path not in self.entered else 0
            self.entered.add(path)
            self.open.append((key, self.builder.enter(path, type_name, [], params=own)))

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
        if isinstance(v, TracedTensor):
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
            sd = self._shape_dtype(node, i) if isinstance(v, TENSOR_TYPES) else None
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
        self._enter_scope(group.scope)
        n_call = self.module_calls.get(group.path, 0)
        self.module_calls[group.path] = n_call + 1
        params, weights = self._params(group.path)
        inputs = self._inputs_of(group.nodes, with_consts=False)
        hyper_attrs, _ = self._hyper(group)
        hyper = hyper_object(group.type, hyper_attrs or {})
        op = self._op(
            "module", group.path, group.type, inputs, params=params if n_call == 0 else 0,
            stand_in=hyper, call_index=n_call,
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
            op.macs = leaf_macs(kind, weights, self.builder.values[op.outputs[0]].shape)

    def _propagate_leaf(self, group: _Group, op: Op, attrs, hyper) -> None:
        rule = module_rule_by_name(group.type, group.qualname)
        inside = set(group.nodes)
        outs = [n for n in group.nodes if self._used_outside(n, inside)]
        ins = [a for n in group.nodes for a in n.all_input_nodes if a in self.traced]
        if rule is rules.POOL_RULE and attrs and attrs.get("return_indices"):
            rule = None
        if rule is not None and attrs is not None and len(outs) == 1 and len(set(ins)) == 1:
            x = self.env[ins[0]]
            try:
                out_shape = self.builder.layer_shape(rule, hyper, x.shape, op)
            except AttributeError:
                pass  # the rule wanted an attribute the graph does not show: run the nodes
            else:
                if out_shape is None:
                    raise TraceAborted
                self.env[outs[0]] = TracedTensor(out_shape, x.dtype)
                return
        for n in group.nodes:
            try:
                self.env[n] = self._evaluate(n)
            except Exception as e:  # noqa: BLE001 - the layer's own failure is the diagnosis: recorded as a fatal ShapeError
                shapes = [self.env[a].shape for a in dict.fromkeys(ins) if isinstance(self.env.get(a), TracedTensor)]
                self.builder.fail(group.path, op.id, op.type, clean_message(e), shapes, fatal=True)
                raise TraceAborted from None

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
        tensor_ins = [a for a in node.all_input_nodes if a in self.traced]
        if self.propagate and not tensor_ins:
            try:
                self.env[node] = self._evaluate(node)
            except Exception as e:  # noqa: BLE001 - a failure on constants only is the model's own: recorded as a fatal ShapeError on its call
                self._enter_scope(scope)
                self.builder.fail_in_call(clean_message(e), type_=_op_base(node.target))
                raise TraceAborted from None
            return
        if not tensor_ins:
            return  # parameters and constants only: not traced
        self._enter_scope(scope)
        base = _op_base(node.target)
        fname = "add" if base in ("add", "add_") else base
        inputs = self._inputs_of([node], with_consts=True)
        op = self._op("function", self.builder.function_name(fname), fname, inputs, source=_source(node))
        if fname == "add" and len(node.args) >= 2:
            self._add(node, op, base == "add_")
            return
        if self.propagate:
            try:
                self.env[node] = self._evaluate(node)
            except Exception as e:  # noqa: BLE001 - the op's own failure is the diagnosis: recorded as a fatal ShapeError
                shapes = [self.builder.values[v].shape for v in inputs]
                self.builder.fail(op.name, op.id, fname, clean_message(e), shapes, fatal=True)
                raise TraceAborted from None
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
            sa = shape_of(va) if isinstance(va, TENSOR_TYPES) else ()
            sb = shape_of(vb) if isinstance(vb, TENSOR_TYPES) else ()
            out_shape = self.builder.add(op, sa, sb, traced=traced, distinct=a is not b, inplace=inplace)
            ref = va if isinstance(va, TENSOR_TYPES) else vb
            dtype = ref.dtype
            if isinstance(va, TENSOR_TYPES) and isinstance(vb, TENSOR_TYPES):
                dtype = torch.promote_types(va.dtype, vb.dtype)
            self.env[node] = TracedTensor(out_shape, dtype)
        else:
            sda = self._shape_dtype(a) if is_node[0] else None
            sdb = self._shape_dtype(b) if is_node[1] else None
            sa = sda[0] if sda else ()
            sb = sdb[0] if sdb else ()
            self.builder.add(op, sa, sb, traced=traced, distinct=a is not b, inplace=inplace)
        sd = self._shape_dtype(node)
        self.vid[node] = self._new_value(sd[0], sd[1], op.id)
        self.traced.add(node)
        op.outputs = [self.vid[node]]

    # ------------------------------------------------------------------ the walk

    def run(self) -> Trace:
        inp = self._record_inputs()
        self.builder.enter("", self.root_type, list(inp.outputs), params=self.own_params.get("", 0))
        complete = False
        try:
            self._walk()
            complete = True
        except TraceAborted:
            pass
        except Exception as e:  # noqa: BLE001 - a graph this front-end cannot follow: recorded as a fatal ShapeError the user sees
            self.builder.fail_in_call(clean_message(e))
        self._enter_scope([])  # close the open module calls
        self.builder.exit(0)
        if self.propagate and self.exported_shape is not None:
            self._suggest_exported_shape()
        if complete and self._has_output:
            outs = [self.vid[a] for a in self.user_outputs if a in self.vid]
            self.builder.set_call_outputs(0, outs)
            self.builder.output(outs)
        self._call_edges()
        return self.builder.finish(complete=complete)

    def _record_inputs(self) -> Op:
        inp = self.builder.input()
        for i, name in enumerate(self.user_inputs):
            node = self.placeholders[name]
            if i == 0:
                shape, dtype = self.builder.input_shape, self.dtype
            else:
                val = node.meta.get("val")
                shape, dtype = _val_shape(val), val.dtype
            vid = self._new_value(shape, dtype, inp.id)
            inp.outputs.append(vid)
            self.vid[node] = vid
            self.traced.add(node)
            if self.propagate:
                self.env[node] = TracedTensor(tuple(shape), dtype, vid)
        return inp

    def _walk(self) -> None:
        """Every node in order: a leaf layer's nodes grouped into one module op, the rest function
        ops in their module call."""
        group: _Group | None = None
        for node in self.graph.nodes:
            if node.op == "output":
                self._has_output = True
            elif self._is_recorded(node):
                group = self._step(node, group)
        if group is not None:
            self._leaf(group)

    def _is_recorded(self, node) -> bool:
        """A call the trace shows (not an assertion, not a getitem already given its value)."""
        if node.op != "call_function" or node in self._done:
            return False
        return not _op_base(node.target).startswith(_SKIP_PREFIXES)

    def _step(self, node, group: _Group | None) -> _Group | None:
        """Record ``node`` as a function op, or gather it into the leaf layer call it belongs to;
        returns the leaf layer call being gathered now (recorded once its last node is seen)."""
        if group is not None and node.target is operator.getitem and node.args[0] in group.nodes:
            group.nodes.append(node)
            return group
        entries = self._stack_of(node)
        leaf = None
        if entries and self.is_leaf(*entries[-1][1:]):
            leaf, entries = entries[-1], entries[:-1]
        if group is not None and (leaf is None or leaf[0] != group.key):
            self._leaf(group)
            group = None
        if leaf is None:
            self._function(node, entries)
            return None
        if group is None:
            group = _Group(*leaf, entries)
        group.nodes.append(node)
        return group

    def _suggest_exported_shape(self) -> None:
        was = rules.fmt_shape(self.exported_shape)
        for e in self.builder.errors:
            if e.fatal and not e.suggestion:
                e.suggestion = (
                    f"the program was exported for input {was}; sizes recorded in its graph "
                    f"may hold for that input only (export with dynamic shapes, or analyse at "
                    f"{was})"
                )

    def _call_edges(self) -> None:
        """Outputs of the non-leaf calls: values made inside and used after them."""
        ops, calls = self.builder.ops, self.builder.calls
        users: dict[int, list[int]] = {}
        for op in ops:
            for v in op.inputs:
                users.setdefault(v, []).append(op.id)
        for call in calls[1:]:
            first, last = call.first_op, call.last_op
            outs: list[int] = []
            for op in ops[first : last + 1]:
                for v in op.outputs:
                    if any(u > last for u in users.get(v, ())):
                        outs.append(v)
            if not outs and last >= first and ops[last].outputs:
                outs = [ops[last].outputs[-1]]  # nothing used after it: the trace stopped here
            self.builder.set_call_outputs(call.id, outs)


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
