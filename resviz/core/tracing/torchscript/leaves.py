"""The ScriptModule's submodules as the interpreter sees them, and leaf layers: a call of a layer
with no children (or with a shape rule) is ONE 'module' op, as under the eager tracer.

Why a leaf is not simply interpreted: its graph is a handful of aten calls that would each become
an op, where the eager tracer — and the report built from either trace — shows one ``Conv2d``
with its parameters, MACs, hyper-parameters and PyTorch-worded shape errors. So a leaf whose
hyper-parameters can be read (``layers.py``) gets the eager tracer's rule; any other leaf has its
inlined graph interpreted quietly, recording nothing inside it, and only its outputs are kept.
"""

from __future__ import annotations

from typing import Any

from .. import shape_rules as rules
from ..builder import TraceAborted
from ..eager import leaf_params
from ..shape_rules import layer_kind, layer_kind_of_class_name, leaf_macs
from .common import TracedTensor, flat_tensors, shape_of
from .layers import hyper_from_aten, hyper_object, module_rule_by_name, plain_value, scan_layer_graph


class Submodule:
    """One submodule of the ScriptModule, as the interpreter sees it."""

    __slots__ = ("c", "py", "path", "type", "qualname", "leaf", "children", "cache", "overlay",
                 "ncalls", "info")  # fmt: skip

    def __init__(self, c, py, path: str):
        self.c = c
        self.py = py
        self.path = path
        t = c._type()
        self.qualname = t.qualified_name()
        self.type = t.name()
        names = list(py._modules.keys()) if py is not None else []
        self.leaf = not names or module_rule_by_name(self.type, self.qualname) is not None
        self.children: dict[str, Submodule] = {}
        self.cache: dict[str, Any] = {}
        self.overlay: dict[str, Any] = {}
        self.ncalls = 0
        self.info: _LeafInfo | None = None

    def child(self, name: str, c) -> Submodule:
        m = self.children.get(name)
        if m is None:
            py = None
            if self.py is not None:
                try:
                    py = self.py._modules[name]
                except KeyError:
                    py = None
            m = self.children[name] = Submodule(c, py, f"{self.path}.{name}" if self.path else name)
        return m


class _LeafInfo:
    """What recording a leaf's calls needs, worked out once per submodule (``eager._LeafInfo``'s
    counterpart): parameter counts, the shape rule if it can run, and the attributes it reads."""

    __slots__ = ("params", "weights", "rule", "hyper", "inplace", "kind")

    def __init__(self, params, weights, rule, hyper, inplace, kind):
        self.kind = kind
        self.params = params
        self.weights = weights
        self.rule = rule
        self.hyper = hyper
        self.inplace = inplace


class LeafLayers:
    """The interpreter's leaf-layer calls (a mixin of ``interp.Interpreter``); it uses ``self.builder``,
    ``self.graphs``, ``self.hypers`` and the interpreter's value records and quiet runs."""

    def _leaf_info(self, mod: Submodule) -> _LeafInfo:
        info = mod.info
        if info is not None:
            return info
        params, weights = leaf_params(mod.py) if mod.py is not None else (0, 0)
        rule = module_rule_by_name(mod.type, mod.qualname)
        attrs = self._hyper_attrs(mod, rule)
        hyper = None
        if attrs is not None:
            hyper = hyper_object(mod.type, attrs)
        if attrs is None or (rule is not None and not rule.can_run(attrs)):
            rule = None
        inplace = bool(attrs.get("inplace")) if attrs else False
        kind = layer_kind(mod.py) if mod.py is not None else "other"
        if kind == "other":  # a compiled module is no instance of its class: go by torch.nn's names
            kind = layer_kind_of_class_name(mod.type)
        info = mod.info = _LeafInfo(params, weights, rule, hyper, inplace, kind)
        return info

    def _hyper_attrs(self, mod: Submodule, rule) -> dict | None:
        """Attributes from the module's constants (scripted) or its graph (traced)."""
        names = rule.reads if rule is not None else ()
        attrs = self.hypers.get(mod.qualname)
        if attrs is None:
            attrs = {}
            c = mod.c
            for name in names:
                if c.hasattr(name):
                    try:
                        attrs[name] = plain_value(c.getattr(name))
                    except (AttributeError, RuntimeError):  # not readable from Python: the graph says
                        pass
            self.hypers[mod.qualname] = attrs
        attrs = dict(attrs)
        if names and (not rule.needs_met(attrs) or (rule is rules.SAME_RULE and "inplace" not in attrs)):
            derived = self._hyper_from_graph(mod)
            if derived is not None:
                attrs = {**derived, **attrs}
        if mod.c.hasattr("bias") and ("in_channels" in attrs or "in_features" in attrs):
            try:
                attrs["bias"] = True if mod.c.getattr("bias") is not None else None
            except (AttributeError, RuntimeError):  # not readable: the layer is shown without it
                pass
        return attrs

    def _hyper_from_graph(self, mod: Submodule) -> dict | None:
        """A traced layer keeps no constants: read them off its aten call's constant arguments."""
        key = ("layer-call", mod.qualname)
        spec = self.graphs.get(key)
        if spec is None:
            try:
                spec = scan_layer_graph(mod.c._get_method("forward").graph)
            except RuntimeError:  # no forward graph to read: the layer's graph is interpreted instead
                spec = None
            self.graphs[key] = spec = spec or False
        if not spec:
            return None
        base, argspec = spec
        args = []
        for kind, v in argspec:
            if kind == "attr":
                try:
                    v = mod.c.getattr(v)
                except (AttributeError, RuntimeError):  # the layer's graph is interpreted instead
                    return None
            args.append(v)
        return hyper_from_aten(base, args, base.endswith("_"))

    def call_leaf(self, mod: Submodule, method: str, args: list):
        t = self.builder
        info = self._leaf_info(mod)
        in_tensors = flat_tensors(args, [])
        inputs = [self._vid(x) for x in in_tensors]
        n = mod.ncalls
        mod.ncalls = n + 1
        op = t.op(
            "module", mod.path, mod.type, inputs, params=info.params if n == 0 else 0,
            stand_in=info.hyper, call_index=n,  # without one, the trace's root gives mod.py by path
        )  # fmt: skip
        op.attrs["layer"] = info.kind
        if info.rule is not None and len(args) == 1 and isinstance(args[0], TracedTensor):
            x = args[0]
            in_shape = x.shape
            out_shape = t.layer_shape(info.rule, info.hyper, in_shape, op)
            if out_shape is None:
                raise TraceAborted
            out = x if info.inplace and out_shape == in_shape else TracedTensor(out_shape, x.dtype)
            op.outputs = [self._new_value(out, op.id)]
        else:
            out, err = self._quietly(self.run_method, mod, method, args, True)
            if err is not None:
                t.fail(mod.path, op.id, op.type, err, [shape_of(x) for x in in_tensors], fatal=True)
                raise TraceAborted
            op.outputs = [self._as_output(o, op.id) for o in flat_tensors(out, [])]
        if info.weights and op.outputs:
            op.macs = leaf_macs(info.kind, info.weights, t.values[op.outputs[0]].shape)
        return out
