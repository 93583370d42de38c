"""Direct shape rules for the layers and functions residual networks are made of.

Why not just run every op on meta tensors? Because PyTorch implements many meta kernels in Python
(the reference decompositions): on this project's 2-core machine a meta ``relu`` costs ~500 µs and a
meta ``add`` ~200 µs, while the integer arithmetic below costs ~2 µs. A rule reproduces PyTorch's
output-size formula and its input checks; anything without a rule still runs on meta tensors, so a
missing rule costs time, never correctness.

A rule returns the output shape, or raises :class:`RuleError` carrying a message in PyTorch's
terms and, where tracing can sensibly go on, the shape the layer *would* produce with a correct
input (so one run reports every broken layer instead of stopping at the first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Shape = tuple[int, ...]


class RuleError(Exception):
    def __init__(self, message: str, continue_shape: Shape | None = None):
        super().__init__(message)
        self.continue_shape = continue_shape


def _fmt(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape)) if len(shape) else "scalar"  # as shapes are written for people


def as_tuple(v, n: int) -> tuple:
    """``v`` as an ``n``-tuple: an int repeated, a 1-sequence repeated, a full sequence as is."""
    return _tuple(v, n)


def _tuple(v, n: int) -> tuple:
    if isinstance(v, (tuple, list)):
        return tuple(v) if len(v) == n else tuple(v) * n if len(v) == 1 else tuple(v)
    return (v,) * n


# ---------------------------------------------------------------- size formulas (PyTorch's own)


def conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_out(size: int, k: int, s: int, p: int, d: int, output_padding: int) -> int:
    return (size - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    # aten/src/ATen/native/Pool.h: pooling_output_shape
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    out = num // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """NumPy broadcasting; None when the shapes cannot broadcast."""
    n = max(len(a), len(b))
    a2 = (1,) * (n - len(a)) + tuple(a)
    b2 = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a2, b2):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(out)


def broadcast_error(a: Shape, b: Shape) -> str:
    n = max(len(a), len(b))
    a2 = (1,) * (n - len(a)) + tuple(a)
    b2 = (1,) * (n - len(b)) + tuple(b)
    for i, (x, y) in enumerate(zip(a2, b2)):
        if x != y and x != 1 and y != 1:
            return (
                f"the size of tensor a ({x}) must match the size of tensor b ({y}) "
                f"at non-singleton dimension {i}"
            )
    return "shapes do not broadcast"


def binary_error(name: str, a: Shape, b: Shape, shape: Shape | None) -> str:
    """Why the operands of ``a <name> b`` do not fit: they do not broadcast (``shape`` is None), or
    an in-place op would have to change ``a``'s shape to the broadcast ``shape``."""
    if shape is None:
        return broadcast_error(a, b)
    return f"in-place {name}: output with shape {_fmt(a)} doesn't match the broadcast shape {_fmt(shape)}"


# ---------------------------------------------------------------- module rules


def _spatial_input(name: str, nd: int, shape: Shape) -> None:
    if len(shape) not in (nd + 1, nd + 2):
        raise RuleError(
            f"{name} expects a {nd + 1}D (unbatched) or {nd + 2}D (batched) input, got {_fmt(shape)}"
        )


def spatial_dims(m: nn.Module) -> int:
    """How many spatial dimensions a conv or pooling layer works over, by its type (a weight of
    rank n+2 for a conv; the class it derives from for a pool), never by its name."""
    k = m.__dict__.get("kernel_size")
    if type(k) is tuple and len(k) > 1 and isinstance(m, nn.modules.conv._ConvNd):
        return len(k)  # as nn.Conv*d sets it; a 1-tuple may be a user's shorthand: look closer
    w = m.__dict__.get("_parameters", {}).get("weight")
    if isinstance(m, nn.modules.conv._ConvNd) and w is not None and w.dim() >= 3:
        return w.dim() - 2
    for nd, classes in _ND_CLASSES.items():
        if isinstance(m, classes):
            return nd
    k = getattr(m, "kernel_size", None)
    return len(k) if isinstance(k, (tuple, list)) else 2


def conv_geometry(m: nn.Module) -> dict:
    """A conv's kernel, stride, padding, dilation and output padding as ``nd``-tuples, whatever
    legal form the attributes hold: an int, a 1-tuple, a list, a full tuple or (padding) a string."""
    nd = spatial_dims(m)
    pad = m.padding
    k, s, d = m.kernel_size, m.stride, m.dilation
    if type(k) is type(s) is type(d) is tuple and len(k) == len(s) == len(d) == nd and (
        type(pad) is str or (type(pad) is tuple and len(pad) == nd)
    ):  # as nn.Conv*d sets them
        return {"nd": nd, "kernel": k, "stride": s, "padding": pad, "dilation": d,
                "output_padding": _tuple(getattr(m, "output_padding", 0), nd)}  # fmt: skip
    return {
        "nd": nd,
        "kernel": _tuple(m.kernel_size, nd),
        "stride": _tuple(m.stride, nd),
        "padding": pad if isinstance(pad, str) else _tuple(pad, nd),
        "dilation": _tuple(m.dilation, nd),
        "output_padding": _tuple(getattr(m, "output_padding", 0), nd),
    }


def _conv(m: nn.Module, shape: Shape) -> Shape:
    g = conv_geometry(m)
    nd, k, s, d = g["nd"], g["kernel"], g["stride"], g["dilation"]
    name = type(m).__name__
    _spatial_input(name, nd, shape)
    channels = shape[-nd - 1]
    spatial = shape[-nd:]
    if isinstance(g["padding"], str):
        pads = (0,) * nd if g["padding"] == "valid" else None
    else:
        pads = g["padding"]
    out_sp = []
    for i in range(nd):
        if pads is None:  # 'same'
            out_sp.append(spatial[i])
        else:
            out_sp.append(conv_out(spatial[i], k[i], s[i], pads[i], d[i]))
    out = (*shape[: -nd - 1], m.out_channels, *out_sp)
    if channels != m.in_channels:
        raise RuleError(
            f"{name} expects {m.in_channels} input channels but got {channels} "
            f"(input {_fmt(shape)})",
            out,
        )
    if min(out_sp) <= 0:
        raise RuleError(
            f"{name} input {_fmt(spatial)} is too small for kernel {_fmt(k)} "
            f"with padding {_fmt(pads or (0,))}",
            None,
        )
    return out


def _conv_transpose(m: nn.Module, shape: Shape) -> Shape:
    g = conv_geometry(m)
    nd = g["nd"]
    _spatial_input(type(m).__name__, nd, shape)
    channels = shape[-nd - 1]
    k, s, p, d, op = g["kernel"], g["stride"], g["padding"], g["dilation"], g["output_padding"]
    out_sp = tuple(conv_transpose_out(shape[-nd + i], k[i], s[i], p[i], d[i], op[i]) for i in range(nd))
    out = (*shape[: -nd - 1], m.out_channels, *out_sp)
    if channels != m.in_channels:
        raise RuleError(
            f"{type(m).__name__} expects {m.in_channels} input channels but got {channels} "
            f"(input {_fmt(shape)})",
            out,
        )
    return out


def _batchnorm(m: nn.Module, shape: Shape) -> Shape:
    name = type(m).__name__
    if len(shape) < 2:
        raise RuleError(f"{name} expects at least 2D input, got {_fmt(shape)}")
    if shape[1] != m.num_features:
        raise RuleError(
            f"{name} expects {m.num_features} channels but got {shape[1]} (input {_fmt(shape)})",
            shape,
        )
    return shape


def _groupnorm(m: nn.Module, shape: Shape) -> Shape:
    if len(shape) < 2 or shape[1] != m.num_channels:
        raise RuleError(
            f"GroupNorm expects {m.num_channels} channels, got input {_fmt(shape)}", shape
        )
    return shape


def _layernorm(m: nn.Module, shape: Shape) -> Shape:
    ns = tuple(m.normalized_shape)
    if tuple(shape[-len(ns) :]) != ns:
        raise RuleError(
            f"LayerNorm expects the last dimensions to be {_fmt(ns)}, got input {_fmt(shape)}", shape
        )
    return shape


def _same(m: nn.Module, shape: Shape) -> Shape:
    return shape


def _pool(m: nn.Module, shape: Shape) -> Shape:
    name = type(m).__name__
    nd = spatial_dims(m)
    _spatial_input(name, nd, shape)
    k = _tuple(m.kernel_size, nd)
    s = _tuple(m.stride if m.stride is not None else m.kernel_size, nd)
    p = _tuple(m.padding, nd)
    d = _tuple(getattr(m, "dilation", 1), nd)
    for i in range(nd):
        if p[i] * 2 > k[i]:
            raise RuleError(f"{name}: padding {p[i]} should be at most half of kernel size {k[i]}")
    out_sp = tuple(pool_out(shape[-nd + i], k[i], s[i], p[i], d[i], m.ceil_mode) for i in range(nd))
    if min(out_sp) <= 0:
        raise RuleError(f"{name}: input {_fmt(shape[-nd:])} is too small for kernel {_fmt(k)}")
    return (*shape[:-nd], *out_sp)


def _adaptive_pool(m: nn.Module, shape: Shape) -> Shape:
    name = type(m).__name__
    nd = spatial_dims(m)
    _spatial_input(name, nd, shape)
    size = _tuple(m.output_size, nd)
    out_sp = tuple(shape[-nd + i] if size[i] is None else size[i] for i in range(nd))
    return (*shape[:-nd], *out_sp)


def _linear(m: nn.Module, shape: Shape) -> Shape:
    out = (*shape[:-1], m.out_features)
    if not shape:
        raise RuleError("Linear got a scalar input")
    if shape[-1] != m.in_features:
        flat = ""
        if len(shape) > 2:
            flat = " (was the input flattened?)"
        raise RuleError(
            f"Linear expects {m.in_features} input features but got {shape[-1]} "
            f"(input {_fmt(shape)}){flat}",
            out,
        )
    return out


def _flatten(m: nn.Module, shape: Shape) -> Shape:
    return flatten_shape(shape, m.start_dim, m.end_dim)


def flatten_shape(shape: Shape, start: int, end: int) -> Shape:
    if not shape:
        return (1,)
    n = len(shape)
    start = start + n if start < 0 else start
    end = end + n if end < 0 else end
    return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])


def _upsample(m: nn.Module, shape: Shape) -> Shape:
    nd = len(shape) - 2
    if m.size is not None:
        size = _tuple(m.size, nd)
    else:
        sf = _tuple(m.scale_factor, nd)
        size = tuple(int(math.floor(shape[2 + i] * sf[i])) for i in range(nd))
    return (*shape[:2], *size)


def _zero_pad(m: nn.Module, shape: Shape) -> Shape:
    pad = m.padding
    return pad_shape(shape, pad)


def pad_shape(shape: Shape, pad: Sequence[int]) -> Shape:
    out = list(shape)
    for i in range(len(pad) // 2):
        dim = len(shape) - 1 - i
        out[dim] += pad[2 * i] + pad[2 * i + 1]
    return tuple(out)


_SAME_MODULES = [
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout, nn.Identity, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LocalResponseNorm,
]  # fmt: skip

_ND_CLASSES = {
    1: (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.Conv1d,
        nn.ConvTranspose1d),
    2: (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Conv2d,
        nn.ConvTranspose2d),
    3: (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d, nn.Conv3d,
        nn.ConvTranspose3d),
}  # fmt: skip

MODULE_RULES: dict[Callable, Callable[[nn.Module, Shape], Shape]] = {}
for _cls in _SAME_MODULES:
    MODULE_RULES[_cls.forward] = _same
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    MODULE_RULES[_cls.forward] = _conv
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    MODULE_RULES[_cls.forward] = _conv_transpose
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    MODULE_RULES[_cls.forward] = _batchnorm
for _cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d):
    MODULE_RULES[_cls.forward] = _pool
for _cls in (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
):  # fmt: skip
    MODULE_RULES[_cls.forward] = _adaptive_pool
MODULE_RULES[nn.GroupNorm.forward] = _groupnorm
MODULE_RULES[nn.LayerNorm.forward] = _layernorm
MODULE_RULES[nn.Linear.forward] = _linear
MODULE_RULES[nn.Flatten.forward] = _flatten
MODULE_RULES[nn.Upsample.forward] = _upsample
for _cls in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ReflectionPad2d,
             nn.ReplicationPad2d):  # fmt: skip
    MODULE_RULES[_cls.forward] = _zero_pad
# MaxPool with return_indices gives a tuple: leave those to meta execution.


def module_rule(m: nn.Module):
    rule = MODULE_RULES.get(type(m).forward)
    if rule is _pool and getattr(m, "return_indices", False):
        return None
    return rule


def is_inplace(m: nn.Module) -> bool:
    return getattr(m, "inplace", False) is True


def is_passthrough(m: nn.Module) -> bool:
    """Modules whose output is their input (nn.Identity; dropout does not change shapes)."""
    return type(m).forward is nn.Identity.forward


# ---------------------------------------------------------------- functional rules
# Each takes (args, kwargs) with tensors replaced by their shapes and returns
# (out_shape, inplace_index) where inplace_index is the argument that is modified and returned.

def _unary_same(args, kwargs, inplace_kw: bool):
    shape = args[0]
    inplace = bool(kwargs.get("inplace", False))
    if not inplace and inplace_kw and len(args) > 1 and isinstance(args[-1], bool):
        inplace = args[-1]
    return shape, (0 if inplace else None)


def _unary_inplace(args, kwargs):
    return args[0], 0


def _dropout(args, kwargs):
    inplace = kwargs.get("inplace", args[3] if len(args) > 3 else False)
    return args[0], (0 if inplace else None)


def _adaptive_pool_fn(nd: int):
    def rule(args, kwargs):
        shape = args[0]
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
        size = _tuple(size, nd)
        out = tuple(shape[-nd + i] if size[i] is None else size[i] for i in range(nd))
        return (*shape[:-nd], *out), None

    return rule


def _pool_fn(nd: int, has_dilation: bool):
    names = ["input", "kernel_size", "stride", "padding"] + (
        ["dilation", "ceil_mode"] if has_dilation else ["ceil_mode"]
    )

    def rule(args, kwargs):
        vals = dict(zip(names, args))
        vals.update(kwargs)
        if vals.get("return_indices"):
            raise NotImplementedError  # tuple output: let meta run it
        shape = vals["input"]
        k = _tuple(vals["kernel_size"], nd)
        s = vals.get("stride")
        s = k if s is None or (isinstance(s, (list, tuple)) and not s) else _tuple(s, nd)
        p = _tuple(vals.get("padding", 0), nd)
        d = _tuple(vals.get("dilation", 1), nd)
        ceil = bool(vals.get("ceil_mode", False))
        _spatial_input(f"pool{nd}d", nd, shape)
        out = tuple(pool_out(shape[-nd + i], k[i], s[i], p[i], d[i], ceil) for i in range(nd))
        if min(out) <= 0:
            raise RuleError(f"input {_fmt(shape[-nd:])} is too small for pooling kernel {_fmt(k)}")
        return (*shape[:-nd], *out), None

    return rule


def _reduce(args, kwargs):
    shape = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    if "dtype" in kwargs and len(args) > 2 and not isinstance(args[2], bool):
        keepdim = False
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return ((1,) * len(shape) if keepdim else ()), None
    dims = {d % len(shape) for d in (dim if isinstance(dim, (list, tuple)) else (dim,))}
    if keepdim:
        return tuple(1 if i in dims else n for i, n in enumerate(shape)), None
    return tuple(n for i, n in enumerate(shape) if i not in dims), None


def _flatten_fn(args, kwargs):
    shape = args[0]
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
    return flatten_shape(shape, start, end), None


def _cat(args, kwargs):
    shapes = list(args[0])
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    shapes = [s for s in shapes if s != (0,)]  # legacy: empty 1-D tensors are skipped
    if not shapes:
        return (0,), None
    ref = shapes[0]
    d = dim % len(ref)
    total = 0
    for s in shapes:
        if len(s) != len(ref) or any(s[i] != ref[i] for i in range(len(ref)) if i != d):
            raise RuleError(
                "torch.cat: all tensors must have the same shape except in the concatenating "
                f"dimension {dim}; got " + ", ".join(_fmt(x) for x in shapes)
            )
        total += s[d]
    return (*ref[:d], total, *ref[d + 1 :]), None


_UNARY_FUNCS: list[tuple[Callable, bool]] = [
    (F.relu, True), (F.relu6, True), (F.elu, True), (F.selu, True), (F.celu, True),
    (F.leaky_relu, True), (F.hardtanh, True), (F.hardswish, True), (F.hardsigmoid, True),
    (F.silu, True), (F.mish, True), (F.gelu, False), (F.sigmoid, False), (F.tanh, False),
    (F.softplus, False), (torch.relu, False), (torch.sigmoid, False), (torch.tanh, False),
    (torch.Tensor.relu, False), (torch.Tensor.sigmoid, False), (torch.Tensor.tanh, False),
    (torch.Tensor.clone, False), (torch.neg, False), (torch.Tensor.neg, False),
    (torch.Tensor.abs, False), (torch.abs, False), (torch.exp, False), (torch.Tensor.exp, False),
    (torch.sqrt, False), (torch.Tensor.sqrt, False),
]  # fmt: skip

FUNC_RULES: dict[Callable, Callable] = {}
for _f, _kw in _UNARY_FUNCS:
    FUNC_RULES[_f] = (lambda kw: lambda a, k: _unary_same(a, k, kw))(_kw)
for _f in (torch.relu_, torch.Tensor.relu_, torch.Tensor.sigmoid_, torch.Tensor.tanh_,
           F.relu_, F.leaky_relu_, F.elu_, torch.Tensor.clamp_, torch.Tensor.neg_):  # fmt: skip
    FUNC_RULES[_f] = _unary_inplace
FUNC_RULES[F.dropout] = _dropout
FUNC_RULES[F.dropout2d] = _dropout
FUNC_RULES[F.adaptive_avg_pool2d] = _adaptive_pool_fn(2)
FUNC_RULES[F.adaptive_max_pool2d] = _adaptive_pool_fn(2)
FUNC_RULES[F.adaptive_avg_pool1d] = _adaptive_pool_fn(1)
FUNC_RULES[F.avg_pool2d] = _pool_fn(2, False)
FUNC_RULES[F.max_pool2d] = _pool_fn(2, True)
for _f in (torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum, torch.amax,
           torch.Tensor.amax):  # fmt: skip
    FUNC_RULES[_f] = _reduce
for _f in (torch.flatten, torch.Tensor.flatten):
    FUNC_RULES[_f] = _flatten_fn
FUNC_RULES[torch.cat] = _cat
FUNC_RULES[torch.concat] = _cat
FUNC_RULES[torch.concatenate] = _cat

# Elementwise binary ops: the add family is handled by the tracer itself because a residual add
# needs the data-flow graph to decide which operand is the shortcut.
ADD_FUNCS = {
    torch.add: False, torch.Tensor.add: False, torch.Tensor.__add__: False,
    torch.Tensor.__radd__: False, torch.Tensor.add_: True, torch.Tensor.__iadd__: True,
}  # fmt: skip
BINARY_FUNCS: dict[Callable, bool] = {}
for _name in ("sub", "mul", "div", "true_divide"):
    for _owner in (torch, torch.Tensor):
        if hasattr(_owner, _name):
            BINARY_FUNCS[getattr(_owner, _name)] = False
    if hasattr(torch.Tensor, _name + "_"):
        BINARY_FUNCS[getattr(torch.Tensor, _name + "_")] = True
for _dunder, _inplace in (("mul", False), ("sub", False), ("truediv", False), ("rmul", False),
                          ("imul", True), ("isub", True), ("itruediv", True)):  # fmt: skip
    BINARY_FUNCS[getattr(torch.Tensor, f"__{_dunder}__")] = _inplace


# ---------------------------------------------------------------- layer kinds and MACs
# What a layer *does* decides how its MACs are counted and whether it can project a shortcut;
# its class name does not (a ``ConvNextLayerNorm`` is a norm, a ``StdConv2d`` or a ``Proj(nn.Conv2d)``
# is a conv).

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
          nn.RMSNorm)  # fmt: skip
_KIND_CLASSES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("conv", (nn.modules.conv._ConvNd,)),
    ("linear", (nn.Linear, nn.Bilinear)),
    ("attention", (nn.MultiheadAttention,)),
    ("rnn", (nn.RNNBase,)),
    ("norm", _NORMS),
    ("embedding", (nn.Embedding, nn.EmbeddingBag)),
)
# Modules with children that are still one layer: their forward calls their children's weights
# directly (MultiheadAttention's out_proj), so tracing inside them would miss those.
ATOMIC_MODULES: tuple[type, ...] = (nn.MultiheadAttention, nn.RNNBase)


def layer_kind(m) -> str:
    """'conv', 'linear', 'attention', 'rnn', 'norm', 'embedding' or 'other', by type."""
    for kind, classes in _KIND_CLASSES:
        if isinstance(m, classes):
            return kind
    return "other"


def layer_kind_of_class_name(name: str) -> str:
    """The kind of a layer known only by its class name (a TorchScript or torch.export archive):
    only ``torch.nn``'s own classes are recognised, by their exact names."""
    cls = getattr(nn, name, None)
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        for kind, classes in _KIND_CLASSES:
            if issubclass(cls, classes):
                return kind
    return "other"


# aten ops that show what an unknown layer does (seen while it runs on meta tensors)
CONV_OPS = frozenset({"convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                      "conv_transpose2d", "conv_transpose3d", "_convolution"})  # fmt: skip
LINEAR_OPS = frozenset({"linear", "addmm", "mm", "bmm", "matmul"})


def kind_of_ops(op_names) -> str:
    """A layer's kind from the aten ops it ran: a convolution makes it a conv, a matrix product
    with its weight a linear layer."""
    names = set(op_names)
    if names & CONV_OPS:
        return "conv"
    if names & LINEAR_OPS:
        return "linear"
    return "other"


def leaf_macs(kind: str, weights: int, out: Sequence[int], key_tokens: int | None = None,
              kv_weights: int = 0) -> int:  # fmt: skip
    """MACs of a leaf layer by torchinfo's convention (``LayerInfo.calculate_macs``): each weight
    (the tensors named weight and bias; all of an RNN's) once per output position it is used at.

    Where torchinfo multiplies by the batch only (a Linear on a 3-D or 4-D input: it counts one
    token), this counts every position, as the layer computes: tokens x features, not features.
    ``kind`` is :func:`layer_kind`'s answer; for attention, ``weights`` are the query and output
    projections and ``kv_weights`` the key and value projections, used ``key_tokens`` times."""
    if not out or not (weights or kv_weights):
        return 0
    out = tuple(out)
    if kind == "conv":
        return weights * math.prod(out[:1] + out[2:])
    if kind == "linear":
        return weights * math.prod(out[:-1])
    if kind == "attention":
        tokens = math.prod(out[:-1])
        return weights * tokens + kv_weights * (tokens if key_tokens is None else key_tokens)
    if kind == "rnn":
        return weights * math.prod(out[:2])
    return weights * out[0]


# ---------------------------------------------------------------- rules for library layers' ops
# Norm, conv, linear and attention layers of model libraries are written with these functions;
# their meta kernels are Python decompositions (a meta batch_norm ~8 ms), a rule is microseconds.


def _arg(args, kwargs, i: int, name: str, default=None):
    return kwargs.get(name, args[i] if len(args) > i else default)


def _norm_same(channels_from: str):
    def rule(args, kwargs):
        shape = args[0]
        if channels_from == "running_mean":
            stats = _arg(args, kwargs, 1, "running_mean")
            if stats is not None and len(shape) >= 2 and stats != (shape[1],):
                raise RuleError(
                    f"running_mean should contain {shape[1]} elements not {_fmt(stats)}", shape
                )
        elif channels_from == "normalized_shape":
            ns = tuple(_arg(args, kwargs, 1, "normalized_shape") or ())
            if tuple(shape[len(shape) - len(ns) :]) != ns:
                raise RuleError(
                    f"layer_norm expects the last dimensions to be {_fmt(ns)}, got input {_fmt(shape)}",
                    shape,
                )
        elif channels_from == "num_groups":
            g = _arg(args, kwargs, 1, "num_groups")
            if not isinstance(g, int) or len(shape) < 2 or g <= 0 or shape[1] % g:
                raise RuleError(f"group_norm: {shape[1] if len(shape) > 1 else '?'} channels do not "
                                f"split into {g} groups", shape)  # fmt: skip
        return shape, None

    return rule


def _conv_fn(nd: int):
    def rule(args, kwargs):
        shape, w = args[0], _arg(args, kwargs, 1, "weight")
        if not isinstance(w, tuple) or len(w) != nd + 2 or len(shape) not in (nd + 1, nd + 2):
            raise NotImplementedError
        s = _tuple(_arg(args, kwargs, 3, "stride", 1), nd)
        p = _arg(args, kwargs, 4, "padding", 0)
        d = _tuple(_arg(args, kwargs, 5, "dilation", 1), nd)
        groups = _arg(args, kwargs, 6, "groups", 1)
        if shape[-nd - 1] != w[1] * groups:
            raise RuleError(f"conv{nd}d expects {w[1] * groups} input channels but got "
                            f"{shape[-nd - 1]} (input {_fmt(shape)})")  # fmt: skip
        if isinstance(p, str):
            if p != "valid":
                return (*shape[: -nd - 1], w[0], *shape[-nd:]), None
            p = 0
        p = _tuple(p, nd)
        out = tuple(conv_out(shape[-nd + i], w[2 + i], s[i], p[i], d[i]) for i in range(nd))
        if min(out) <= 0:
            raise RuleError(f"conv{nd}d input {_fmt(shape[-nd:])} is too small for kernel {_fmt(w[2:])}")
        return (*shape[: -nd - 1], w[0], *out), None

    return rule


def _linear_fn(args, kwargs):
    shape, w = args[0], _arg(args, kwargs, 1, "weight")
    if not isinstance(w, tuple) or len(w) not in (1, 2) or not shape:
        raise NotImplementedError
    if shape[-1] != w[-1]:
        raise RuleError(f"linear expects {w[-1]} input features but got {shape[-1]} (input {_fmt(shape)})")
    return (*shape[:-1], *w[:-1]), None


def _sdpa(args, kwargs):
    q, v = args[0], _arg(args, kwargs, 2, "value")
    if not isinstance(q, tuple) or not isinstance(v, tuple) or len(q) < 2 or len(v) < 2:
        raise NotImplementedError
    return (*q[:-1], v[-1]), None


FUNC_RULES[F.batch_norm] = _norm_same("running_mean")
FUNC_RULES[F.instance_norm] = _norm_same("none")
FUNC_RULES[F.layer_norm] = _norm_same("normalized_shape")
FUNC_RULES[F.group_norm] = _norm_same("num_groups")
for _nd, _f in ((1, F.conv1d), (2, F.conv2d), (3, F.conv3d)):
    FUNC_RULES[_f] = _conv_fn(_nd)
FUNC_RULES[F.linear] = _linear_fn
FUNC_RULES[F.scaled_dot_product_attention] = _sdpa


def elementwise_rule(func):
    """The broadcast rule of an add/sub/mul/div, for use where no residual add is decided (the
    inside of a layer): ``a op b`` has the broadcast shape; an in-place op keeps ``a``."""
    inplace = ADD_FUNCS.get(func, BINARY_FUNCS.get(func))

    def rule(args, kwargs):
        if len(args) < 2 or kwargs:
            raise NotImplementedError
        a = args[0] if isinstance(args[0], tuple) else ()
        b = args[1] if isinstance(args[1], tuple) else ()
        shape = broadcast(a, b)
        if shape is None or (inplace and shape != a):
            raise RuleError(binary_error("op", a, b, shape))
        return shape, (0 if inplace else None)

    return rule
