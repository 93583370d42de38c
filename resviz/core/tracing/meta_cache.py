"""Remember what a meta run found, so a layer without a shape rule runs on meta tensors once per
(layer, hyper-parameters, input shapes), not once per call.

On the meta device an op's result can depend only on what it is given: the shapes, dtypes and
strides of its tensors and the plain values of its other arguments (and, for a module, its own
attributes and the shapes of its parameters and buffers). That is the key. Model libraries'
norms, activations and attention layers have no rule here; their meta kernels are Python
decompositions (a meta ``batch_norm`` costs ~8 ms on a 2-core machine), and a net repeats the
same layer at the same shape dozens of times. A miss runs the op as before; a hit makes fresh meta
tensors of the remembered shapes.

Anything the key cannot describe faithfully (an arbitrary object, a bound method) makes the call
uncacheable, and it runs every time, as before. So do results that are one of the inputs (an
in-place op) or that hold no tensor at all: those can have side effects a template cannot repeat.
"""

from __future__ import annotations

import threading
import types
from typing import Any

import torch

_MAX_ENTRIES = 8192
_lock = threading.Lock()
_entries: dict[Any, Any] = {}

UNCACHEABLE = object()  # a remembered "this key's result cannot be replayed"


class Uncacheable(Exception):
    pass


# ---------------------------------------------------------------------------------- keys

_PLAIN = (int, float, bool, str, bytes, type(None), complex, torch.dtype, torch.device, torch.layout,
          torch.memory_format)  # fmt: skip
_BY_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, type, types.MethodDescriptorType,
                types.WrapperDescriptorType, torch._ops.OpOverload, torch._ops.OpOverloadPacket)  # fmt: skip


def arg_key(obj) -> Any:
    """A hashable description of an argument that is all a meta run can depend on; raises
    :class:`Uncacheable` for anything it cannot describe faithfully."""
    if isinstance(obj, torch.Tensor):
        return (torch.Tensor, tuple(obj.shape), obj.dtype, obj.stride(), obj.device.type)
    if isinstance(obj, _PLAIN):
        return (type(obj), obj)  # 1, 1.0 and True are equal as keys: the type tells them apart
    if isinstance(obj, (tuple, list)) and type(obj) in (tuple, list, torch.Size):
        return (type(obj), tuple(arg_key(o) for o in obj))
    if isinstance(obj, dict) and type(obj) is dict:
        return (dict, tuple((k, arg_key(v)) for k, v in obj.items()))
    if isinstance(obj, slice):
        return (slice, arg_key(obj.start), arg_key(obj.stop), arg_key(obj.step))
    if obj is Ellipsis:
        return (type(obj),)
    if isinstance(obj, _BY_IDENTITY):
        return obj  # the object itself: hashed by identity, and kept alive by the key
    raise Uncacheable


_SKIP_ATTRS = frozenset(
    {"_parameters", "_buffers", "_modules", "training", "_forward_hooks", "_forward_pre_hooks",
     "_backward_hooks", "_backward_pre_hooks", "_forward_hooks_with_kwargs",
     "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
     "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
     "_is_full_backward_hook", "_non_persistent_buffers_set"}
)  # fmt: skip


def module_key(m: torch.nn.Module) -> Any:
    """Everything about a module its forward can read: its class, its plain attributes, the
    shapes and dtypes of its parameters and buffers, its children's keys. Raises
    :class:`Uncacheable` when an attribute is something else (an object, a tensor held plainly)."""
    attrs = []
    for k, v in m.__dict__.items():
        if k in _SKIP_ATTRS:
            continue
        if isinstance(v, torch.Tensor):
            raise Uncacheable  # a plain tensor attribute could be updated by forward
        attrs.append((k, arg_key(v)))
    tensors = tuple(
        (k, None if t is None else (tuple(t.shape), t.dtype))
        for d in (m._parameters, m._buffers) for k, t in d.items()
    )  # fmt: skip
    children = tuple((k, None if c is None else module_key(c)) for k, c in m._modules.items())
    return (type(m), tuple(attrs), tensors, children)


# ---------------------------------------------------------------------------------- results


def template(out, inputs: list[torch.Tensor]):
    """What to remember of a result: its structure with tensors as (shape, dtype, stride). Raises
    :class:`Uncacheable` when the result is (or holds) an input, or holds no tensor."""
    found = [False]

    def walk(o):
        if isinstance(o, torch.Tensor):
            if any(o is t for t in inputs):
                raise Uncacheable
            found[0] = True
            return (torch.Tensor, tuple(o.shape), o.dtype, o.stride())
        if type(o) in (tuple, list):
            return (type(o), tuple(walk(x) for x in o))
        if isinstance(o, _PLAIN):
            return (None, o)
        raise Uncacheable

    t = walk(out)
    if not found[0]:
        raise Uncacheable
    return t


def build(t, device: torch.device):
    """Fresh meta tensors (and values) shaped as remembered."""
    kind = t[0]
    if kind is torch.Tensor:
        return torch.empty_strided(t[1], t[3], dtype=t[2], device=device)
    if kind is None:
        return t[1]
    return kind(build(x, device) for x in t[1])


def get(key):
    return _entries.get(key)


def put(key, value) -> None:
    with _lock:
        if len(_entries) >= _MAX_ENTRIES:
            _entries.clear()  # a simple bound: a net repeats few distinct (layer, shape) pairs
        _entries[key] = value


def clear() -> None:
    with _lock:
        _entries.clear()
