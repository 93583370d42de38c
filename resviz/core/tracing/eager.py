"""Run a model's own ``forward`` once on meta tensors and record its data-flow graph.

How it works, and why this way:

* The user's model is never touched. We build a *shadow*: every non-leaf module is shallow-copied
  (its parameters and buffers replaced by meta tensors, its hooks dropped, its children replaced by
  shadows) and every leaf module is represented by a :class:`_LeafProxy` that applies a direct shape
  rule (``shape_rules.py``) or, for layers without one, runs a meta copy of the layer. Copying only
  the skeleton costs ~1 ms for resnet152 where ``copy.deepcopy`` costs ~45 ms.
* Non-leaf forwards run unchanged, so control flow, ``out += identity``, ``torch.flatten`` and
  user-written functional code all execute as written. A thread-local ``TorchFunctionMode`` sees the
  functional ops; nothing global is patched, so another thread (the training worker) is unaffected.
* Every tensor is a node value keyed by object identity; an in-place op gives the same object a new
  value, like PyTorch's version counter.
* What is seen is recorded through the tracers' one recording API (:class:`TraceBuilder`): at a
  residual add whose operands disagree it carries on with the residual branch's shape, so one run
  finds every broken block. Rule violations elsewhere (a Linear fed the wrong number of features)
  are recorded and tracing continues with the shape the layer would have produced; only an op that
  cannot be evaluated at all stops the trace.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..gcpause import gc_paused
from ..inputs import Input
from . import meta_cache as metacache
from . import shape_rules as rules
from .builder import TraceAborted, TraceBuilder, clean_message
from .records import Op, Trace

__all__ = ["Trace", "TraceAborted", "trace_module", "meta_copy", "leaf_params"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_FILE = os.path.abspath(__file__)
_NO_RULE = object()  # a function without a shape rule that answers for these arguments


class _EagerTracer:
    """The eager front-end: sees the shadow's module calls and functional ops, keeps which tensor
    object is which value, and records through a :class:`TraceBuilder`."""

    def __init__(self, builder: TraceBuilder):
        self.builder = builder
        self.device = builder.device
        self.dtype = builder.dtype
        self.values = builder.values  # read-only here: the builder writes them
        self._vid: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []
        # Tracer bookkeeping reads tensor metadata; with the mode active every `.shape` would be
        # a round trip through __torch_function__ (3 µs), so bookkeeping runs with it disabled.
        self._nofunc = torch._C.DisableTorchFunction()
        self._module_calls: dict[int, int] = {}
        self._counted: set[int] = set()  # ids of the user's parameters already counted
        self._exited: set[int] = set()  # modules whose first call has ended

    # ------------------------------------------------------------------ values

    def _new_value(self, t: torch.Tensor, producer: int | None, shape=None) -> int:
        vid = self.builder.value(tuple(t.shape) if shape is None else shape, t.dtype, producer)
        self._vid[id(t)] = vid
        self._keep.append(t)
        return vid

    def _ensure_value(self, t: torch.Tensor) -> int:
        vid = self._vid.get(id(t))
        if vid is None:  # a constant made inside forward, or a parameter used directly
            vid = self._new_value(t, None)
        return vid

    def _empty(self, shape, dtype=None) -> torch.Tensor:
        # Only called with torch functions disabled (inside the mode's handler, or under
        # self._nofunc), so making the tensor is not itself traced.
        if self.device.type == "meta":
            return torch.empty(shape, dtype=dtype or self.dtype, device=self.device)
        return torch.zeros(shape, dtype=dtype or self.dtype, device=self.device)

    def forget_tensors(self) -> None:
        self._vid.clear()
        self._keep.clear()

    # ------------------------------------------------------------------ calls

    def enter_call(self, path: str, module: nn.Module, args) -> int:
        with self._nofunc:
            inputs = [self._ensure_value(t) for t in _tensors(args)]
        return self.builder.enter(path, type(module).__name__, inputs)

    def exit_call(self, cid: int, module: nn.Module, out) -> None:
        params = macs = None
        with self._nofunc:
            outputs = [self._ensure_value(t) for t in _tensors(out)]
            if id(module) not in self._exited:
                # Parameters the module uses itself (a layer-scale gamma, a position table, a
                # fused norm's affine) or reads off a child it never calls: the call owns them.
                self._exited.add(id(module))
                params = self._uncounted_own(module)
                macs = self._own_macs(module, outputs)
        self.builder.exit(cid, outputs, params=params, macs=macs)

    def _own_macs(self, module: nn.Module, outputs: list[int]) -> int:
        """MACs of the weight and bias a non-leaf layer applies itself (a fused norm + activation
        subclassing BatchNorm2d, a conv subclass with children), by its kind and output shape."""
        own = module._parameters
        weights = sum(p.numel() for k, p in own.items() if k in ("weight", "bias") and p is not None)
        if not weights or not outputs:
            return 0
        return rules.leaf_macs(rules.layer_kind(module), weights, self.values[outputs[0]].shape)

    def _uncounted_own(self, module: nn.Module) -> int:
        """The module's own parameters, and all of any child that never ran, not yet counted.
        (A child that ran counted its own: a leaf at its first call, a module at its exit.)"""
        counted = self._counted
        n = 0
        for p in module._parameters.values():
            if p is not None and id(p) not in counted:
                counted.add(id(p))
                n += p.numel()
        for child in module._modules.values():
            if child is None or id(child) in self._exited or id(child) in self._module_calls:
                continue
            for p in child.parameters():
                if id(p) not in counted:
                    counted.add(id(p))
                    n += p.numel()
        return n

    # ------------------------------------------------------------------ leaf modules

    def call_leaf(self, proxy: _LeafProxy, args, kwargs):
        with self._nofunc:
            return self._call_leaf(proxy, args, kwargs)

    def _call_leaf(self, proxy: _LeafProxy, args, kwargs):
        module = proxy._module
        in_tensors = _tensors(args)
        if kwargs:
            in_tensors += _tensors(tuple(kwargs.values()))
        inputs = [self._ensure_value(t) for t in in_tensors]
        n = self._module_calls.get(id(module), 0)
        self._module_calls[id(module)] = n + 1
        op = self.builder.op(
            "module", proxy._path, proxy._info.type, inputs,
            params=proxy._info.count_params(self._counted) if n == 0 else 0, call_index=n,
        )  # fmt: skip
        op.attrs["layer"] = proxy._info.kind
        rule = proxy._rule
        if rule is not None and len(args) == 1 and not kwargs and inputs:
            x = in_tensors[0]
            in_shape = self.values[inputs[0]].shape
            out_shape = self.builder.layer_shape(rule, module, in_shape, op)
            if out_shape is None:
                raise TraceAborted
            if proxy._info.inplace and out_shape == in_shape:
                out = x
            else:
                out = self._empty(out_shape, x.dtype)
            op.outputs = [self._new_value(out, op.id, out_shape)]
        else:
            out = self._run_real(proxy, op, args, kwargs, in_tensors)
            if in_tensors and out is in_tensors[0]:
                op.attrs["passthrough"] = True  # an empty nn.Sequential() shortcut, say
            op.outputs = [self._new_value(t, op.id) for t in _tensors(out)]
            op.attrs["layer"] = proxy._info.kind  # a meta run may have found what it does
        info = proxy._info
        if (info.weights or info.kv_weights) and op.outputs:
            key_shape = self.values[inputs[1]].shape if info.kv_weights and len(inputs) > 1 else None
            op.macs = info.macs(self.values[op.outputs[0]].shape, key_shape)
        return out

    def _run_real(self, proxy: _LeafProxy, op: Op, args, kwargs, in_tensors):
        # Runs with torch functions disabled, so the layer's own internals are not recorded.
        if self.device.type != "meta":
            return self._run_layer(proxy._module, op, args, kwargs)
        info = proxy._info
        key = proxy._cache_key(args, kwargs)
        hit = metacache.get(key) if key is not None else None
        if hit is not None and hit is not metacache.UNCACHEABLE:
            tmpl, info.kind = hit
            return metacache.build(tmpl, self.device)
        probe = info.kind == "other" and info.weights > 0  # what does it do with its weights?
        with _AtenNames() if probe else contextlib.nullcontext() as seen:
            # the layer's own ops take their shape rules where there are some (per op, not
            # per layer: a library's norm is fast when the ops it is made of have rules)
            with torch._C._EnableTorchFunction(), _RulesOnly(probe) as ruled:
                out = self._run_layer(proxy._meta_module(), op, args, kwargs)
        if probe:
            info.kind = rules.kind_of_ops(seen.names | ruled.names)
        if key is not None and hit is None:
            _remember(key, lambda: (metacache.template(out, in_tensors), info.kind))
        return out

    def _run_layer(self, target, op: Op, args, kwargs):
        try:
            return target(*args, **kwargs)
        except TraceAborted:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the user's layer is the diagnosis: recorded as the fatal ShapeError the user sees
            shapes = [tuple(t.shape) for t in _tensors(args)]
            self.builder.fail(op.name, op.id, op.type, clean_message(e), shapes, fatal=True)
            raise TraceAborted from None

    # ------------------------------------------------------------------ functional ops

    def call_function(self, func, args, kwargs):
        fname = _func_name(func)
        if func in rules.ADD_FUNCS:
            return self._call_add(func, fname, args, kwargs, rules.ADD_FUNCS[func])
        if func in rules.BINARY_FUNCS and len(args) >= 2:
            return self._call_binary(func, fname, args, kwargs, rules.BINARY_FUNCS[func])
        tensors = _tensors(args) + _tensors(tuple(kwargs.values()))
        traced = any(id(t) in self._vid for t in tensors)
        if traced and func in rules.FUNC_RULES:
            out = self._call_ruled(func, fname, args, kwargs, tensors)
            if out is not _NO_RULE:
                return out
        return self._call_on_meta(func, fname, args, kwargs, tensors, traced)

    def _call_ruled(self, func, fname, args, kwargs, tensors):
        """A function with a shape rule: an empty tensor of the rule's shape; ``_NO_RULE`` when the
        rule does not cover these arguments."""
        shaped_args = _shapes_of(args)
        shaped_kwargs = {k: _shapes_of(v) for k, v in kwargs.items()}
        try:
            out_shape, inplace_index = rules.FUNC_RULES[func](shaped_args, shaped_kwargs)
        except NotImplementedError:
            return _NO_RULE
        except rules.RuleError as e:
            op = self._record_function(fname, tensors, _source())
            self.builder.fail(op.name, op.id, fname, str(e), [tuple(t.shape) for t in tensors], fatal=True)
            raise TraceAborted from None
        op = self._record_function(fname, tensors, _source())
        out = args[inplace_index] if inplace_index is not None else self._empty(out_shape, tensors[0].dtype)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _call_on_meta(self, func, fname, args, kwargs, tensors, traced: bool):
        """A function without a rule: evaluated on meta tensors, once per (function, argument
        shapes and values)."""
        key = hit = None
        if traced and self.device.type == "meta":
            key = _function_key(func, args, kwargs)
            hit = metacache.get(key) if key is not None else None
        if hit is not None and hit is not metacache.UNCACHEABLE:
            out = metacache.build(hit, self.device)
            op = self._record_function(fname, tensors, _source())
            op.outputs = [self._new_value(t, op.id) for t in _tensors(out)]
            return out
        try:
            out = func(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the op's own failure on traced tensors is the diagnosis: recorded as a fatal ShapeError
            if not traced:
                raise
            op = self._record_function(fname, tensors, _source())
            shapes = [tuple(t.shape) for t in tensors]
            self.builder.fail(op.name, op.id, fname, clean_message(e), shapes, fatal=True)
            raise TraceAborted from None
        if not traced:
            return out
        if key is not None and hit is None:
            _remember(key, lambda: metacache.template(out, tensors))
        outs = _tensors(out)
        if not outs:
            return out
        if len(outs) == 1 and outs[0] is tensors[0] and not fname.endswith("_"):
            return out  # a no-op such as .contiguous() on a contiguous tensor
        op = self._record_function(fname, tensors, _source())
        op.outputs = [self._new_value(t, op.id) for t in outs]
        return out

    def _record_function(self, fname, tensors, source) -> Op:
        inputs = [self._ensure_value(t) for t in tensors]
        return self.builder.function(fname, inputs, source=source)

    def _binary_shapes(self, args):
        a, b = args[0], args[1]
        sa = tuple(a.shape) if isinstance(a, torch.Tensor) else ()
        sb = tuple(b.shape) if isinstance(b, torch.Tensor) else ()
        return a, b, sa, sb

    def _result_dtype(self, a, b):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return torch.promote_types(a.dtype, b.dtype)
        return a.dtype if isinstance(a, torch.Tensor) else b.dtype

    def _call_binary(self, func, fname, args, kwargs, inplace):
        a, b, sa, sb = self._binary_shapes(args)
        tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
        if not any(id(t) in self._vid for t in tensors):
            return func(*args, **kwargs)
        op = self._record_function(fname, tensors, _source())
        shape = self.builder.elementwise(op, fname, sa, sb, inplace=inplace)
        out = a if inplace else self._empty(shape, self._result_dtype(a, b))
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _call_add(self, func, fname, args, kwargs, inplace):
        a, b, sa, sb = self._binary_shapes(args)
        tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
        is_traced = [isinstance(t, torch.Tensor) and id(t) in self._vid for t in (a, b)]
        if not any(is_traced):
            return func(*args, **kwargs)
        op = self._record_function("add", tensors, _source())
        out_shape = self.builder.add(op, sa, sb, traced=(is_traced[0], is_traced[1]), distinct=a is not b,
                               inplace=inplace)  # fmt: skip
        if inplace and out_shape == sa:
            out = a
        else:
            out = self._empty(out_shape, self._result_dtype(a, b))
        op.outputs = [self._new_value(out, op.id)]
        return out


def _remember(key, template) -> None:
    """Keep a meta run's result under ``key`` (or that it cannot be kept)."""
    try:
        metacache.put(key, template())
    except metacache.Uncacheable:
        metacache.put(key, metacache.UNCACHEABLE)


def _function_key(func, args, kwargs):
    try:
        return (func, metacache.arg_key(args), metacache.arg_key(kwargs))
    except metacache.Uncacheable:
        return None


# ---------------------------------------------------------------------- the function mode


# Metadata queries go straight through: they are most of what forward code asks of a tensor.
_METADATA = frozenset(
    {
        torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.shape.__get__,
        torch.Tensor.dtype.__get__, torch.Tensor.device.__get__, torch.Tensor.ndim.__get__,
        torch.Tensor.is_contiguous, torch.Tensor.requires_grad.__get__, torch.Tensor.__len__,
        torch.Tensor.is_floating_point, torch.Tensor.is_meta.__get__, torch.Tensor.data_ptr,
    }
)  # fmt: skip


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: _EagerTracer):
        super().__init__()
        self.trace = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _METADATA:
            return func(*args, **(kwargs or {}))
        return self.trace.call_function(func, args, kwargs or {})


# ---------------------------------------------------------------------- the shadow model


_UNKNOWN = object()


class _AtenNames(TorchDispatchMode):
    """Collects the names of the aten ops a layer runs (``convolution``, ``addmm``...)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class _RulesOnly(TorchFunctionMode):
    """Inside a layer without a rule: ops with a shape rule make an empty meta tensor of the
    rule's shape, the rest run on meta. Nothing is recorded; a rule that objects lets the op run
    for real, and if PyTorch refuses it too the layer fails with the rule's message, the one the
    TorchScript and torch.export front-ends give for the same op."""

    def __init__(self, record: bool = False):
        super().__init__()
        self.record = record
        self.names: set[str] = set()  # functions answered by a rule (they reach no aten op)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunction():
            if func in _METADATA:
                return func(*args, **kwargs)
            out = _rule_result(func, args, kwargs)
            if self.record and out is not None:
                self.names.add(_func_name(func))
            return func(*args, **kwargs) if out is None else out


def _rule_result(func, args, kwargs):
    rule = rules.FUNC_RULES.get(func)
    if rule is None and (func in rules.ADD_FUNCS or func in rules.BINARY_FUNCS):
        rule = rules.elementwise_rule(func)
    if rule is None:
        return None
    try:
        out_shape, inplace = rule(_shapes_of(args), {k: _shapes_of(v) for k, v in kwargs.items()})
    except NotImplementedError:
        return None
    except rules.RuleError as objection:
        try:  # PyTorch decides, so a rule stricter than it costs nothing ...
            func(*args, **kwargs)
        except Exception:  # noqa: BLE001 - ... and when it refuses too, the rule's words say why
            raise objection from None
        return None
    if inplace is not None:
        return args[inplace]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        return None
    dtype = tensors[0].dtype
    if len(args) >= 2 and func not in rules.FUNC_RULES:
        dtype = torch.result_type(args[0], args[1])
        if not dtype.is_floating_point and "div" in _func_name(func):
            return None  # true division of integers gives floats: let PyTorch say which
    return torch.empty(out_shape, dtype=dtype, device=tensors[0].device)


class _LeafProxy:
    """Stands in for a leaf module inside the shadow; calling it records one op."""

    __slots__ = ("_trace", "_module", "_path", "_rule", "_info", "_meta", "_mkey")

    def __init__(self, trace: _EagerTracer, module: nn.Module, path: str):
        self._trace = trace
        self._module = module
        self._path = path
        self._rule = rules.module_rule(module)
        # computed here, before the function mode is active: under it, every Parameter
        # attribute access is a __torch_function__ round trip (~20 µs per layer)
        self._info = _LeafInfo(module)
        self._meta = None
        self._mkey: Any = _UNKNOWN

    def _cache_key(self, args, kwargs):
        """The meta-run cache key of a call with these arguments; None: not cacheable."""
        if self._mkey is _UNKNOWN:
            try:
                self._mkey = metacache.module_key(self._module)
            except metacache.Uncacheable:
                self._mkey = None
        if self._mkey is None:
            return None
        try:
            return (self._mkey, metacache.arg_key(args), metacache.arg_key(kwargs))
        except metacache.Uncacheable:
            return None

    def __call__(self, *args, **kwargs):
        return self._trace.call_leaf(self, args, kwargs)

    forward = __call__

    def _meta_module(self) -> nn.Module:
        if self._meta is None:
            self._meta = meta_copy(self._module)
        return self._meta

    def __getattr__(self, name):
        # Forward code sometimes reads a layer's attributes (self.conv1.out_channels,
        # self.fc.weight): answer from a meta copy so no real tensor leaks into the trace.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._meta_module(), name)

    def __iter__(self):
        return iter(self._meta_module())

    def __len__(self):
        return len(self._meta_module())

    def __repr__(self):
        return f"<traced {type(self._module).__name__} {self._path}>"


_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)  # fmt: skip


def _is_leaf(m: nn.Module) -> bool:
    return not m._modules or rules.module_rule(m) is not None or isinstance(m, rules.ATOMIC_MODULES)


def _meta_tensor(t: torch.Tensor, device) -> torch.Tensor:
    if t.device == device and device.type == "meta":
        return t
    new = torch.empty_like(t, device=device) if device.type == "meta" else t
    if isinstance(t, nn.Parameter):
        return nn.Parameter(new, requires_grad=t.requires_grad)
    return new


def meta_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers live on the meta device."""
    memo: dict[int, Any] = {}
    meta = torch.device("meta")
    for t in list(module.parameters()) + list(module.buffers()):
        memo[id(t)] = _meta_tensor(t, meta)
    clone = copy.deepcopy(module, memo)
    clone.eval()  # shapes are analysed in eval mode: batch-1 BatchNorm must not complain
    for m in clone.modules():
        for name in _HOOK_DICTS:
            d = m.__dict__.get(name)
            if d:
                m.__dict__[name] = type(d)()
    return clone


_MODULE_INTERNALS = frozenset({"_parameters", "_buffers", "_modules", *_HOOK_DICTS})
_IMMUTABLE = (int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, type,
              range, slice, frozenset, torch.Size)  # fmt: skip


_IMMUTABLE_TYPES = frozenset({bool, int, float, str, type(None)})


def _private_copy(val, device, cache: dict[int, Any]):
    """A copy of a plain attribute that the shadow's forward may change without touching the
    user's object: tensors become meta tensors, containers and plain objects are copied at every
    depth (a shared one once, cycles kept). Modules, functions and immutables are kept as they are."""
    if _is_stateless(val):
        return val  # functions, classes and modules (a module is callable) are not state
    hit = cache.get(id(val))
    if hit is not None:
        return hit
    if isinstance(val, torch.Tensor):
        out = cache[id(val)] = _private_tensor(val, device)
        return out
    if type(val) is tuple:
        out = cache[id(val)] = tuple(_private_copy(v, device, cache) for v in val)
        return out
    try:
        out = copy.copy(val)
    except Exception:  # noqa: BLE001 - an object copy.copy cannot copy (a lock, a file): the forward gets the user's own, as PyTorch would give it
        return val
    cache[id(val)] = out
    _copy_contents(val, out, device, cache)
    return out


def _is_stateless(val) -> bool:
    """Immutable, or code (a function, a class, a module): nothing a forward could change."""
    return type(val) in _IMMUTABLE_TYPES or isinstance(val, _IMMUTABLE) or (
        callable(val) and not isinstance(val, torch.Tensor)
    )


def _private_tensor(val: torch.Tensor, device) -> torch.Tensor:
    out = _meta_tensor(val, device) if device.type == "meta" else val.detach().clone()
    if out is val:  # already on the meta device: still a separate object for in-place ops
        out = torch.empty_like(val)
    return out


def _copy_contents(val, out, device, cache: dict[int, Any]) -> None:
    """Make the shallow copy ``out`` of ``val`` deep: its items, elements or attributes copied."""
    if isinstance(out, dict):
        for k, v in out.items():
            out[k] = _private_copy(v, device, cache)
    elif isinstance(out, list):
        out[:] = [_private_copy(v, device, cache) for v in out]
    elif out is not val and isinstance(getattr(out, "__dict__", None), dict):
        for k, v in list(vars(out).items()):
            vars(out)[k] = _private_copy(v, device, cache)
    # a set holds hashables only: shallow is deep enough


def _shadow(trace: _EagerTracer, module: nn.Module, path: str, cache: dict[int, Any]):
    hit = cache.get(id(module))
    if hit is not None:
        return hit
    if _is_leaf(module):
        proxy = _LeafProxy(trace, module, path)
        cache[id(module)] = proxy
        return proxy
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("TorchScript sub-modules inside an eager model are not supported")
    clone = object.__new__(type(module))
    device = trace.device
    state = dict(module.__dict__)
    for key, val in state.items():  # whatever the forward might mutate stays the user's own
        if key not in _MODULE_INTERNALS:
            state[key] = _private_copy(val, device, cache)
    state["_parameters"] = {
        k: (None if v is None else _meta_tensor(v, device)) for k, v in module._parameters.items()
    }
    state["_buffers"] = {
        k: (None if v is None else _meta_tensor(v, device)) for k, v in module._buffers.items()
    }
    for name in _HOOK_DICTS:
        if name in state:
            state[name] = type(state[name])()
    cache[id(module)] = clone
    state["_modules"] = {
        k: (None if v is None else _shadow(trace, v, f"{path}.{k}" if path else k, cache))
        for k, v in module._modules.items()
    }
    object.__setattr__(clone, "__dict__", state)
    if trace.device.type == "meta":
        state["training"] = False
    forward = type(module).forward

    def traced_forward(*args, **kwargs):
        cid = trace.enter_call(path, module, (args, kwargs))
        out = forward(clone, *args, **kwargs)
        trace.exit_call(cid, module, out)
        return out

    state["forward"] = traced_forward
    return clone


# ---------------------------------------------------------------------- entry point


def trace_module(
    model: nn.Module, input_shape: Sequence[int] | None = None, *, device: str = "meta",
    dtype=torch.float32, inputs: Sequence[Input] | None = None,
) -> Trace:  # fmt: skip
    """Trace ``model`` for one input of ``input_shape`` (or for ``inputs``: several, keyword, of
    any dtype); never raises for shape problems.

    Problems land in ``trace.errors``; ``trace.complete`` says whether forward ran to the end.
    """
    if inputs is None:
        inputs = [Input(tuple(input_shape), dtype)]
    with gc_paused():
        return _trace_module(model, list(inputs), device)


def _trace_module(model, inputs: list[Input], device) -> Trace:
    builder = TraceBuilder(inputs[0].shape, device=device, dtype=inputs[0].dtype, inputs=inputs)
    tracer = _EagerTracer(builder)
    root = _shadow(tracer, model, "", {})
    args, kwargs = _input_tensors(tracer, inputs)
    if isinstance(root, _LeafProxy):  # a single layer: give it a model-level call anyway
        tracer.enter_call("", model, (args, kwargs))
    complete = False
    out = None
    try:
        with torch.no_grad(), _Mode(tracer):
            out = root(*args, **kwargs)
        complete = True
    except TraceAborted:
        pass
    except Exception as e:  # noqa: BLE001 - a failure in the user's own forward code, outside any layer: recorded as a fatal ShapeError on the innermost call
        builder.fail_in_call(clean_message(e))
    finally:
        builder.exit_all()
    if out is not None:
        with tracer._nofunc:
            builder.output([tracer._ensure_value(t) for t in _tensors(out)])
    tracer.forget_tensors()
    return builder.finish(complete=complete, root=model)  # the shadow was built along model._modules


def _input_tensors(tracer: _EagerTracer, inputs: list[Input]) -> tuple[list, dict]:
    """An empty tensor per input, recorded as the input ops' values: (positional, keyword)."""
    args: list[torch.Tensor] = []
    kwargs: dict[str, torch.Tensor] = {}
    for i, spec in enumerate(inputs):
        x = tracer._empty(spec.shape, spec.dtype)
        inp = tracer.builder.input("input" if i == 0 else f"input.{spec.name or i}")
        inp.outputs = [tracer._new_value(x, inp.id)]
        if spec.name:
            kwargs[spec.name] = x
        else:
            args.append(x)
    return args, kwargs


# ---------------------------------------------------------------------- helpers


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        out = []
        for o in obj:
            if isinstance(o, torch.Tensor):
                out.append(o)
            elif isinstance(o, (list, tuple, dict)):
                out.extend(_tensors(o))
        return out
    if isinstance(obj, dict):
        out = []
        for o in obj.values():
            out.extend(_tensors(o))
        return out
    return []


def _shapes_of(obj):
    """Tensors replaced by their shapes, at any depth (``torch.cat([a, b], 1)``)."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_shapes_of(o) for o in obj)
    return obj


def _func_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("i") and name[1:] in ("add", "sub", "mul", "truediv"):
            name = name[1:] + "_"
        elif name.startswith("r") and name[1:] in ("add", "sub", "mul", "truediv"):
            name = name[1:]
    return name


def _source() -> tuple[str, int] | None:
    """File and line of the model code that made the current call (skips torch and this tracer;
    resviz's own zoo blocks are model code like any other)."""
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if not (fn.startswith(_TORCH_DIR) or fn == _THIS_FILE):
            return fn, f.f_lineno
        f = f.f_back
    return None


def leaf_params(module) -> tuple[int, int]:
    """(parameters, weights) of a leaf layer, an ``nn.Module`` or a ScriptModule: ``weights``
    counts the tensors named weight and bias only, the ones torchinfo counts MACs from."""
    params = weights = 0
    for name, p in module._parameters.items():
        if p is None:
            continue
        n = p.numel()
        params += n
        if name in ("weight", "bias"):
            weights += n
    if module._modules:  # a layer with a rule but children (e.g. a parametrized conv)
        params = sum(p.numel() for p in module.parameters())
        weights += _parametrized_weights(module)
    return params, weights


def _parametrized_weights(module) -> int:
    """Elements of a parametrized weight and bias (``torch.nn.utils.parametrize``: weight norm,
    spectral norm), which live in ``module.parametrizations``, not ``_parameters``; counted by
    their stored originals' shapes, never by computing them."""
    plist = getattr(module, "__dict__", {}).get("_modules", {}).get("parametrizations")
    if plist is None:
        return 0
    n = 0
    for name in ("weight", "bias"):
        if name in module._parameters:
            continue
        entry = plist._modules.get(name) if hasattr(plist, "_modules") else None
        if entry is None:
            continue
        originals = [p for k, p in entry._parameters.items() if k.startswith("original") and p is not None]
        if originals:  # weight norm stores (g, v): the weight has v's shape
            n += max(p.numel() for p in originals)
    return n


class _LeafInfo:
    """What the tracer needs to know about a leaf module, computed once per trace."""

    __slots__ = ("type", "kind", "params", "weights", "kv_weights", "inplace", "_param_sizes")

    def __init__(self, module: nn.Module):
        self.type = type(module).__name__
        self.kind = rules.layer_kind(module)
        self.params, self.weights = leaf_params(module)
        self.kv_weights = 0
        if self.kind == "attention":
            self.weights, self.kv_weights = _attention_weights(module)
        elif self.kind == "rnn":
            self.weights = self.params
        self.inplace = rules.is_inplace(module)
        params = module.parameters() if module._modules else module._parameters.values()
        self._param_sizes = [(id(p), p.numel()) for p in params if p is not None]

    def count_params(self, counted: set[int]) -> int:
        """The layer's parameters not yet counted anywhere in this trace (a tied weight once)."""
        n = 0
        for pid, size in self._param_sizes:
            if pid not in counted:
                counted.add(pid)
                n += size
        return n

    def macs(self, out: tuple[int, ...], key_shape: tuple[int, ...] | None = None) -> int:
        """MACs for an output of shape ``out``; ``key_shape``: an attention layer's key input."""
        key_tokens = math.prod(key_shape[:-1]) if key_shape else None
        return rules.leaf_macs(self.kind, self.weights, out, key_tokens, self.kv_weights)


def _attention_weights(m: nn.Module) -> tuple[int, int]:
    """(query + output projection, key + value projection) sizes of a MultiheadAttention."""
    e = m.embed_dim
    bias = 1 if m.in_proj_bias is not None else 0
    q = e * e + bias * e
    kv = e * m.kdim + e * m.vdim + 2 * bias * e
    out = sum(p.numel() for p in m.out_proj.parameters())
    return q + out, kv
