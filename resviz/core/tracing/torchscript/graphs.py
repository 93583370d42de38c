"""TorchScript graphs compiled once into plain node lists the interpreter can run fast.

Walking ``torch._C`` graph objects is slow (every ``n.kind()``, ``n.inputs()`` is a call into C++),
and a model's method graphs are run once per call of the module — a ResNet-152 runs its
Bottleneck's graph 50 times. So each graph is turned once into :class:`CompiledBlock` s of
:class:`_Node` s holding value ids, constants, the resolved aten overload and the Python function
that runs the node; the compiled graphs are cached per ScriptModule and shared by its traces.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from ..builder import SOURCE_LINE
from .pyops import PY_OPS

if TYPE_CHECKING:
    from .leaves import Submodule


class FunctionRef:
    """A ``prim::Constant`` of function type: the function called by ``prim::CallFunction``."""

    __slots__ = ("qualname", "name")

    def __init__(self, qualname: str, name: str):
        self.qualname = qualname
        self.name = name

    @property
    def is_library(self) -> bool:
        return self.qualname.startswith("__torch__.torch.")


class _Node:
    """One node of a compiled graph; ``run(interp, node, env)`` executes it."""

    __slots__ = ("kind", "ins", "outs", "run", "attr", "blocks", "opo", "base", "argn", "kwn",
                 "tnode", "value", "_source")  # fmt: skip

    def __init__(self, kind, ins, outs):
        self.kind = kind
        self.ins = ins
        self.outs = outs
        self.attr = None
        self.blocks = ()
        self.opo = None
        self.base = ""
        self.argn = 0  # number of positional arguments; the rest are kwarg-only
        self.kwn: tuple[str, ...] = ()
        self.tnode = None  # the TorchScript node, for its source range (read only when recorded)
        self.value = None
        self._source = False

    @property
    def source(self) -> tuple[str, int] | None:
        if self._source is False:
            self._source = _node_source(self.tnode) if self.tnode is not None else None
        return self._source


class CompiledBlock:
    """A graph or a sub-block of ``prim::If`` / ``prim::Loop``: value ids in and out, its nodes."""

    __slots__ = ("ins", "outs", "nodes")

    def __init__(self, ins, outs, nodes):
        self.ins = ins
        self.outs = outs
        self.nodes = nodes


_SOURCE_TRACED = re.compile(r"^(.+?)\((\d+)\): ")


def _node_source(n) -> tuple[str, int] | None:
    """File and line of the model's code: scripted graphs keep the original source range,
    traced graphs the Python stack of the tracing run, both before the archive's own code."""
    try:
        text = n.sourceRange()
    except RuntimeError:  # a node made by a pass, with no source: the op is shown without a line
        return None
    original = text.split("Serialized", 1)[0]
    m = _SOURCE_TRACED.match(original.strip()) or SOURCE_LINE.search(original) or SOURCE_LINE.search(text)
    return (m.group(1), int(m.group(2))) if m else None


def _const_value(n):
    out = n.output()
    t = out.type()
    if t.kind() == "FunctionType":
        return FunctionRef(str(t), n.s("name") if n.hasAttribute("name") else str(t).rsplit(".", 1)[-1])
    try:
        v = out.toIValue()
    except RuntimeError:  # a constant Python cannot hold; an op that uses it fails and says so
        return None
    return v


def _schema_has_tensor(schema) -> bool:
    for a in schema.arguments:
        if "Tensor" in str(a.type):
            return True
    return False


class GraphCompiler:
    """The interpreter's graph compilation (a mixin of ``interp.Interpreter``); it uses ``self.graphs``
    (the per-module cache) and ``self.handlers`` (node kind -> handler)."""

    def _graph(self, mod: Submodule, method: str, inlined: bool) -> CompiledBlock:
        key = (mod.qualname, method, inlined)
        g = self.graphs.get(key)
        if g is None:
            m = mod.c._get_method(method)
            graph = m.inlined_graph if inlined else m.graph
            g = self.graphs[key] = self._compile(graph.inputs(), graph.outputs(), graph.nodes())
            self.graphs[("graph", *key)] = graph  # the compiled nodes point into it
        return g

    def _compile(self, inputs, outputs, nodes) -> CompiledBlock:
        out = []
        for n in nodes:
            kind = n.kind()
            node = _Node(kind, tuple(v.unique() for v in n.inputs()), tuple(v.unique() for v in n.outputs()))
            handler = self.handlers.get(kind)
            if kind == "prim::Constant":
                node.value = _const_value(n)
            elif kind in ("prim::GetAttr", "prim::SetAttr", "prim::CallMethod"):
                node.attr = n.s("name")
            elif kind in ("prim::If", "prim::Loop"):
                node.blocks = tuple(self._compile(b.inputs(), b.outputs(), b.nodes()) for b in n.blocks())
            elif kind == "prim::TupleIndex":
                pass
            elif kind == "prim::isinstance":
                node.attr = tuple(str(t) for t in n.tys("types"))
            elif kind == "prim::CallFunction":
                node.tnode = n
                node.value = n  # compiled lazily into a stand-alone graph (see _function_graph)
            if handler is None:
                handler = self._schema_op(n, node)
            node.run = handler
            out.append(node)
        return CompiledBlock(tuple(v.unique() for v in inputs), tuple(v.unique() for v in outputs), out)

    def _schema_op(self, n, node: _Node):
        # Handlers are stored unbound, like those in self.handlers: the loop calls
        # node.run(interp, node, env), and compiled graphs outlive the interpreter that made them.
        ops = type(self)
        try:
            text = n.schema()
        except RuntimeError:
            text = "(no schema)"
        if text == "(no schema)":
            node.attr = f"unsupported TorchScript node {node.kind}"
            return ops._unsupported
        schema = torch._C.parse_schema(text)
        ns, name = schema.name.split("::", 1)
        node.base = name
        node.attr = f"{name}.{schema.overload_name}" if schema.overload_name else name
        node.argn = sum(1 for a in schema.arguments if not a.kwarg_only)
        node.kwn = tuple(a.name for a in schema.arguments if a.kwarg_only)
        node.tnode = n
        py = PY_OPS.get(node.attr) or PY_OPS.get(name)
        if py is not None and (node.attr in PY_OPS or not _schema_has_tensor(schema)):
            node.value = py
            return ops._pyop
        try:
            packet = getattr(getattr(torch.ops, ns), name)
            node.opo = getattr(packet, schema.overload_name or "default")
        except AttributeError:
            node.attr = f"unknown operator {schema.name}"
            return ops._unsupported
        node.value = py  # scalar overloads of tensor ops (aten::add.int) run as Python
        return ops._aten

    def _function_graph(self, fn: FunctionRef, call_node: _Node) -> CompiledBlock:
        key = ("fn", fn.qualname)
        g = self.graphs.get(key)
        if g is None:
            n = call_node.value
            g2 = torch._C.Graph()
            mapping = {}
            ins = list(n.inputs())
            for v in ins[1:]:
                nv = g2.addInput()
                nv.setType(v.type())
                mapping[v.unique()] = nv
            fconst = g2.createClone(ins[0].node(), lambda v: mapping[v.unique()])
            g2.insertNode(fconst)
            mapping[ins[0].unique()] = fconst.output()
            call = g2.createClone(n, lambda v: mapping[v.unique()])
            g2.insertNode(call)
            for o in call.outputs():
                g2.registerOutput(o)
            torch._C._jit_pass_inline(g2)
            g = self.graphs[key] = self._compile(g2.inputs(), g2.outputs(), g2.nodes())
            self.graphs[("graph", *key)] = g2
        return g
