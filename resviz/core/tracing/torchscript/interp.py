"""The interpreter proper: runs a compiled method graph node by node — prim nodes, control flow,
attribute reads, module and function calls — over an environment of value id -> value.

A ``prim::CallMethod`` on a submodule is where the module tree shows: a leaf layer becomes one op
(``leaves.py``), any other submodule a :class:`~resviz.core.tracing.records.Call` whose graph is run
recursively, exactly the calls the eager tracer records. Control flow runs on Python values only:
a condition that depends on a tensor's *values* cannot be decided by shape analysis and ends the
trace with that said. Aten ops are recorded by ``recording.py``; graphs come from ``graphs.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..builder import TraceAborted, TraceBuilder, clean_message
from .common import DTYPE_INT, META, TENSOR_TYPES, QuietFailure, TracedTensor, flat_tensors, shape_of
from .graphs import CompiledBlock, FunctionRef, GraphCompiler
from .leaves import LeafLayers, Submodule
from .recording import AtenRecorder


def _missing():
    # A cache sentinel no attribute can be: None and False are values an attribute can have.
    return None


# TorchScript type names (``prim::isinstance``'s types) -> what a Python value of that type is.
_SCALAR_TYPES: dict[str, Any] = {
    "NoneType": lambda v: v is None,
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def is_instance_of(v, type_name: str) -> bool:
    """``isinstance(v, T)`` for a value of the interpreter (a traced tensor is a Tensor) and
    TorchScript's name of ``T``: 'Tensor', 'int', 'List[int]' or 'int[]', 'Tuple[...]', 'Dict[...]'."""
    if type_name.startswith("Tensor"):
        return isinstance(v, TENSOR_TYPES)
    scalar = _SCALAR_TYPES.get(type_name)
    if scalar is not None:
        return scalar(v)
    if type_name.endswith("[]") or type_name.startswith("List"):
        return isinstance(v, list)
    if type_name.startswith(("Tuple", "(")):
        return isinstance(v, tuple)
    if type_name.startswith("Dict"):
        return isinstance(v, dict)
    return False


def _inplace_call(fname: str, args) -> bool:
    # A library function that modifies its input returns that very tensor, yet is an op to record.
    return fname.endswith("_") or any(a is True for a in args[1:] if isinstance(a, bool))


class Interpreter(GraphCompiler, AtenRecorder, LeafLayers):
    """Interprets the graphs of one ScriptModule into one trace.

    Split over mixins along what each part needs: compiling graphs, recording aten ops, calling
    leaf layers; this class holds the state they share and runs nodes and calls.
    """

    def __init__(self, builder: TraceBuilder, cache: dict):
        self.builder = builder
        self.graphs = cache  # (qualname, method, inlined) -> CompiledBlock, shared by traces of one module
        self.quiet = 0
        self.const_vids: dict[int, int] = {}
        self.keep: list[Any] = []  # constants given value ids, kept alive so ids stay unique
        self.hypers: dict[str, dict] = cache.setdefault("__hyper__", {})
        self.handlers = _HANDLERS
        self.entered: set[str] = set()  # non-leaf module paths already called

    # ------------------------------------------------------------------ running graphs

    def run_method(self, mod: Submodule, method: str, args: list, inlined: bool = False):
        g = self._graph(mod, method, inlined)
        env: dict[int, Any] = {g.ins[0]: mod, -1: mod}  # -1: the module whose method this is
        for k, a in zip(g.ins[1:], args):
            env[k] = a
        self._block(g, env)
        outs = [env[k] for k in g.outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _block(self, block: CompiledBlock, env: dict) -> None:
        for node in block.nodes:
            node.run(self, node, env)

    # ------------------------------------------------------------------ prim nodes

    def _constant(self, node, env):
        v = node.value
        env[node.outs[0]] = list(v) if type(v) is list else v  # code may append to it

    def _passthrough(self, node, env):
        env[node.outs[0]] = env[node.ins[0]]

    def _none(self, node, env):
        for o in node.outs:
            env[o] = None

    def _nothing(self, node, env):
        for o in node.outs:
            env[o] = None

    def _false(self, node, env):
        env[node.outs[0]] = False

    def _layout(self, node, env):
        env[node.outs[0]] = 0  # torch.strided

    def _dtype(self, node, env):
        x = env[node.ins[0]]
        env[node.outs[0]] = DTYPE_INT.get(x.dtype, 6)

    def _device(self, node, env):
        x = env[node.ins[0]]
        env[node.outs[0]] = x.device if isinstance(x, torch.Tensor) else META

    def _shape(self, node, env):
        env[node.outs[0]] = list(shape_of(env[node.ins[0]]))

    def _numtotensor(self, node, env):
        v = env[node.ins[0]]
        env[node.outs[0]] = v if isinstance(v, TENSOR_TYPES) else torch.tensor(v)

    def _list(self, node, env):
        env[node.outs[0]] = [env[i] for i in node.ins]

    def _tuple(self, node, env):
        env[node.outs[0]] = tuple(env[i] for i in node.ins)

    def _dict(self, node, env):
        vals = [env[i] for i in node.ins]
        env[node.outs[0]] = dict(zip(vals[0::2], vals[1::2]))

    def _unpack(self, node, env):
        seq = env[node.ins[0]]
        if len(seq) != len(node.outs):
            self._fail(f"cannot unpack {len(seq)} values into {len(node.outs)}")
        for o, v in zip(node.outs, seq):
            env[o] = v

    def _tupleindex(self, node, env):
        env[node.outs[0]] = env[node.ins[0]][env[node.ins[1]]]

    def _tupleslice(self, node, env):
        env[node.outs[0]] = tuple(env[node.ins[0]])

    def _isinstance(self, node, env):
        v = env[node.ins[0]]
        env[node.outs[0]] = any(is_instance_of(v, t) for t in node.attr)

    def _if(self, node, env):
        cond = env[node.ins[0]]
        if isinstance(cond, TENSOR_TYPES):
            self._fail("a condition depends on tensor values, which shape analysis cannot know")
        block = node.blocks[0] if cond else node.blocks[1]
        self._block(block, env)
        for o, k in zip(node.outs, block.outs):
            env[o] = env[k]

    def _loop(self, node, env):
        max_trip = env[node.ins[0]]
        cond = env[node.ins[1]]
        carried = [env[i] for i in node.ins[2:]]
        body = node.blocks[0]
        i = 0
        while cond and i < max_trip:
            env[body.ins[0]] = i
            for k, v in zip(body.ins[1:], carried):
                env[k] = v
            self._block(body, env)
            cond = env[body.outs[0]]
            if isinstance(cond, TENSOR_TYPES):
                self._fail("a loop condition depends on tensor values")
            carried = [env[k] for k in body.outs[1:]]
            i += 1
        for o, v in zip(node.outs, carried):
            env[o] = v

    def _getattr(self, node, env):
        obj = env[node.ins[0]]
        name = node.attr
        if not isinstance(obj, Submodule):
            env[node.outs[0]] = getattr(obj, name)
            return
        if name in obj.overlay:
            env[node.outs[0]] = obj.overlay[name]
            return
        hit = obj.cache.get(name, _missing)
        if hit is _missing:
            if name == "training":
                hit = False  # shapes are analysed in eval mode, like the eager tracer
            else:
                v = obj.c.getattr(name)
                if isinstance(v, torch._C.ScriptModule):
                    hit = obj.child(name, v)
                elif isinstance(v, torch.Tensor):
                    hit = v if v.device.type == "meta" else torch.empty_like(v, device=META)
                else:
                    hit = v
            obj.cache[name] = hit
        env[node.outs[0]] = hit

    def _setattr(self, node, env):
        obj = env[node.ins[0]]
        if isinstance(obj, Submodule):
            obj.overlay[node.attr] = env[node.ins[1]]

    def _raise(self, node, env):
        vals = [env[i] for i in node.ins]
        msg = str(vals[0]) if vals else "exception"
        kind = str(vals[1]) if len(vals) > 1 and vals[1] else ""
        kind = kind.rsplit(".", 1)[-1]
        if kind and kind not in ("RuntimeError", "Exception"):
            msg = f"{kind}: {msg}"
        self._fail(msg)

    def _unsupported(self, node, env):
        self._fail(node.attr)

    def _fail(self, message: str):
        if self.quiet:
            raise QuietFailure(message)
        call = self.builder.open_call
        shapes = [self.builder.values[v].shape for v in call.inputs] if call else []
        self.builder.fail_in_call(message, shapes=shapes)
        raise TraceAborted

    # ------------------------------------------------------------------ python-level ops

    def _pyop(self, node, env):
        fn = node.value
        args = [env[i] for i in node.ins]
        try:
            if fn is None:
                raise RuntimeError(f"unsupported operator {node.kind}")
            out = fn(*args)
        except (TraceAborted, QuietFailure):
            raise
        except Exception as e:  # noqa: BLE001 - the model's own Python-level op failed, however: a fatal error at that op, its message said
            self._fail(f"{node.attr or node.kind}: {clean_message(e)}")
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    # ------------------------------------------------------------------ calls

    def _callmethod(self, node, env):
        target = env[node.ins[0]]
        args = [env[i] for i in node.ins[1:]]
        if not isinstance(target, Submodule):
            out = getattr(target, node.attr)(*args)
        else:
            out = self.call_module(target, node.attr, args, same=target is env.get(-1))
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    def _own_params(self, mod: Submodule) -> int:
        """Parameters a non-leaf module holds itself (a layer-scale gamma), at its first call."""
        if mod.py is None or mod.path in self.entered:
            return 0
        self.entered.add(mod.path)
        return sum(p.numel() for p in mod.py._parameters.values() if p is not None)

    def call_module(self, mod: Submodule, method: str, args: list, same: bool = False):
        if self.quiet:
            return self.run_method(mod, method, args, True)
        if same:  # a helper method of the module running: same scope
            return self.run_method(mod, method, args)
        if mod.leaf:
            return self.call_leaf(mod, method, args)
        inputs = [self._vid(a) for a in flat_tensors(args, [])]
        cid = self.builder.enter(mod.path, mod.type, inputs, params=self._own_params(mod))
        out = self.run_method(mod, method, args)
        self.builder.exit(cid, [self._vid(o) for o in flat_tensors(out, [])])
        return out

    def _callfunction(self, node, env):
        fn = env[node.ins[0]]
        args = [env[i] for i in node.ins[1:]]
        if not isinstance(fn, FunctionRef):
            self._fail("call of an unknown function")
        g = self._function_graph(fn, node)
        if self.quiet:
            out = self._run_function(g, args)
        elif fn.is_library:
            out = self._library_function(fn, g, args, node.source)
        else:
            out = self._run_function(g, args)  # the user's own function: record its ops
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    def _run_function(self, g: CompiledBlock, args):
        env: dict[int, Any] = {}
        for k, a in zip(g.ins, args):
            env[k] = a
        self._block(g, env)
        outs = [env[k] for k in g.outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _library_function(self, fn: FunctionRef, g: CompiledBlock, args, source):
        """``F.batch_norm``, ``F.dropout``...: ONE op, as under the eager tracer's function mode."""
        tensors = flat_tensors(args, [])
        out, err = self._quietly(self._run_function, g, args)
        if not any(isinstance(x, TracedTensor) for x in tensors):
            if err is not None:
                self._fail(err)
            return out
        fname = fn.name.lstrip("_") or fn.name
        if err is not None:
            op = self._record(fname, tensors, source)
            self.builder.fail(op.name, op.id, fname, err, [shape_of(x) for x in tensors], fatal=True)
            raise TraceAborted
        outs = flat_tensors(out, [])
        if len(outs) == 1 and tensors and outs[0] is tensors[0] and not _inplace_call(fname, args):
            return out
        op = self._record(fname, tensors, source)
        op.outputs = [self._as_output(o, op.id) for o in outs]
        return out

    def _quietly(self, fn, *args):
        """Run without recording; returns (result, None) or (None, error message)."""
        self.quiet += 1
        try:
            return fn(*args), None
        except TraceAborted:
            raise
        except Exception as e:  # noqa: BLE001 - a leaf's own code failing in any way is that leaf's error: its message is recorded against it
            return None, clean_message(e)
        finally:
            self.quiet -= 1


_HANDLERS = {
    "prim::Constant": Interpreter._constant, "prim::GetAttr": Interpreter._getattr,
    "prim::SetAttr": Interpreter._setattr, "prim::CallMethod": Interpreter._callmethod,
    "prim::CallFunction": Interpreter._callfunction, "prim::ListConstruct": Interpreter._list,
    "prim::TupleConstruct": Interpreter._tuple, "prim::ListUnpack": Interpreter._unpack,
    "prim::TupleUnpack": Interpreter._unpack, "prim::TupleIndex": Interpreter._tupleindex,
    "prim::DictConstruct": Interpreter._dict, "prim::If": Interpreter._if, "prim::Loop": Interpreter._loop,
    "prim::RaiseException": Interpreter._raise, "prim::unchecked_cast": Interpreter._passthrough,
    "prim::unchecked_unwrap_optional": Interpreter._passthrough, "prim::data": Interpreter._passthrough,
    "prim::isinstance": Interpreter._isinstance, "prim::NumToTensor": Interpreter._numtotensor,
    "prim::dtype": Interpreter._dtype, "prim::device": Interpreter._device,
    "prim::Uninitialized": Interpreter._none, "prim::Print": Interpreter._nothing,
    "prim::Enter": Interpreter._nothing, "prim::Exit": Interpreter._nothing,
    "prim::requires_grad": Interpreter._false, "prim::is_cuda": Interpreter._false,
    "prim::layout": Interpreter._layout, "prim::TupleSlice": Interpreter._tupleslice,
    "prim::shape": Interpreter._shape, "prim::grad": Interpreter._none,
}  # fmt: skip

