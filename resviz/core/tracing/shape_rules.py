"""Direct shape rules for the layers and functions residual networks are made of.

Why not just run every op on meta tensors? Because PyTorch implements many meta kernels in Python
(the reference decompositions): on this project's 2-core machine a meta ``relu`` costs ~500 µs and a
meta ``add`` ~200 µs, while the integer arithmetic below costs ~2 µs. A rule reproduces PyTorch's
output-size formula and its input checks; anything without a rule still runs on meta tensors, so a
missing rule costs time, never correctness.

A rule returns the output shape, or raises :class:`RuleError` carrying a message in PyTorch's
terms and, where tracing can sensibly go on, the shape the layer *would* produce with a correct
input (so one run reports every broken layer instead of stopping at the first).

One table for every front-end. Each concept (a convolution, a linear layer, a batch norm, a
pool, an elementwise op) has one check that holds its size formula and its error's words
(:func:`conv_shape`, :func:`linear_shape`, ...), looked up three ways: by a layer's class
(``MODULE_RULES``, :class:`ModuleRule` objects that also say which attributes they read), by a
torch function (``FUNC_RULES``) and by op name (``OP_RULES``, which ``torchscript/aten.py``
uses for aten ops of the same schema). So a wrong input reads the same whether the model was
traced live, from TorchScript or from ``torch.export``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Shape = tuple[int, ...]


class RuleError(RuntimeError):
    """A shape PyTorch would refuse, said once for every front-end. A RuntimeError, as PyTorch's
    own shape errors are, so every front-end reports it as plainly as theirs."""

    def __init__(self, message: str, continue_shape: Shape | None = None):
        super().__init__(message)
        self.continue_shape = continue_shape


def fmt_shape(shape: Sequence[int]) -> str:
    """A shape as written for people: ``2×3×32×32``, or ``scalar``."""
    return "×".join(map(str, shape)) if len(shape) else "scalar"


def as_tuple(v, n: int) -> tuple:
    """``v`` as an ``n``-tuple: an int repeated, a 1-sequence repeated, a full sequence as is."""
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
    name = name.rstrip("_")  # 'mul_' from a tensor method, aten's 'mul_': the in-place mul
    return f"in-place {name}: output with shape {fmt_shape(a)} doesn't match the broadcast shape {fmt_shape(shape)}"


# ---------------------------------------------------------------- one check per concept
# The module rules, the functional rules and the aten-level rules (``torchscript/aten.py``) all
# check through these, so a wrong input reads the same whichever front-end traced it: a live
# model, a TorchScript archive or an exported program. ``layer`` names what the user wrote: the
# class for a module ('Conv2d'), the function for a call ('conv2d', also for aten's
# '_convolution').


def check_spatial_input(layer: str, nd: int, shape: Shape) -> None:
    """A conv or pool over ``nd`` spatial dimensions takes a batched or an unbatched input."""
    if len(shape) not in (nd + 1, nd + 2):
        raise RuleError(
            f"{layer} expects a {nd + 1}D (unbatched) or {nd + 2}D (batched) input, got {fmt_shape(shape)}"
        )


def conv_shape(x: Shape, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Shape,
               padding: Shape | str, dilation: Shape, transposed: bool = False, output_padding: Shape = (),
               layer: str | None = None) -> Shape:  # fmt: skip
    """Output shape of a convolution over ``len(kernel)`` dimensions, its stride, padding ('same',
    'valid' or one per dimension), dilation and output padding given per dimension (as
    :func:`conv_geometry` gives them). A wrong channel count goes on with the shape the conv would
    give; an input too small for the kernel stops."""
    nd = len(kernel)
    if len(x) not in (nd + 1, nd + 2):
        check_spatial_input(layer or (f"conv_transpose{nd}d" if transposed else f"conv{nd}d"), nd, x)
    s, d = stride, dilation
    spatial = x[-nd:]
    pads = ((0,) * nd if padding == "valid" else None) if type(padding) is str else padding
    # plain loops: this runs once per conv call, and a comprehension costs a frame of its own
    out_sp = []
    for i in range(nd):
        if transposed:
            out_sp.append(conv_transpose_out(spatial[i], kernel[i], s[i], pads[i], d[i], output_padding[i]))
        elif pads is None:  # 'same'
            out_sp.append(spatial[i])
        else:
            out_sp.append(conv_out(spatial[i], kernel[i], s[i], pads[i], d[i]))
    out = (*x[: -nd - 1], out_channels, *out_sp)
    channels = x[-nd - 1]
    if channels != in_channels:
        layer = layer or (f"conv_transpose{nd}d" if transposed else f"conv{nd}d")
        raise RuleError(
            f"{layer} expects {in_channels} input channels but got {channels} (input {fmt_shape(x)})", out
        )
    if min(out_sp) <= 0:
        layer = layer or (f"conv_transpose{nd}d" if transposed else f"conv{nd}d")
        raise RuleError(
            f"{layer} input {fmt_shape(spatial)} is too small for kernel {fmt_shape(kernel)} "
            f"with padding {fmt_shape(pads or (0,))}"
        )
    return out


def conv_weight_shape(x: Shape, w: Shape, stride, padding, dilation, groups: int = 1,
                      transposed: bool = False, output_padding=0) -> Shape:  # fmt: skip
    """:func:`conv_shape` of a conv given by its weight (a functional or aten call), its other
    arguments in any form PyTorch accepts (an int, a 1-sequence, one per dimension)."""
    nd = len(w) - 2
    s, d = as_tuple(stride, nd), as_tuple(dilation, nd)
    p = padding if isinstance(padding, str) else as_tuple(padding, nd)
    if transposed:
        return conv_shape(x, w[0], w[1] * groups, w[2:], s, p, d, True, as_tuple(output_padding, nd))
    return conv_shape(x, w[1] * groups, w[0], w[2:], s, p, d)


def linear_shape(x: Shape, in_features: int, out_dims: Shape, layer: str = "linear") -> Shape:
    """Output shape of a linear layer (``out_dims`` is ``(out_features,)``, or ``()`` for a 1-D
    weight); a wrong width goes on with the shape the layer would give."""
    if not x:
        raise RuleError(f"{layer} got a scalar input")
    out = (*x[:-1], *out_dims)
    if x[-1] != in_features:
        flat = " (was the input flattened?)" if len(x) > 2 else ""
        raise RuleError(
            f"{layer} expects {in_features} input features but got {x[-1]} (input {fmt_shape(x)}){flat}",
            out,
        )
    return out


def batch_norm_shape(x: Shape, channels: int | None, layer: str = "batch_norm") -> Shape:
    """A batch norm keeps its input's shape; its statistics fix the channels (``None``: unknown)."""
    if len(x) < 2:
        raise RuleError(f"{layer} expects at least 2D input, got {fmt_shape(x)}")
    if channels is not None and x[1] != channels:
        raise RuleError(f"{layer} expects {channels} channels but got {x[1]} (input {fmt_shape(x)})", x)
    return x


def pool_shape(x: Shape, kernel, stride, padding, dilation, ceil_mode: bool, nd: int, layer: str) -> Shape:
    """Output shape of a max or average pool over ``nd`` dimensions (``stride`` None: the kernel)."""
    check_spatial_input(layer, nd, x)
    k = as_tuple(kernel, nd)
    s = k if stride is None else as_tuple(stride, nd)
    p, d = as_tuple(padding, nd), as_tuple(dilation, nd)
    for i in range(nd):
        if p[i] * 2 > k[i]:
            raise RuleError(f"{layer}: padding {p[i]} should be at most half of kernel size {k[i]}")
    out_sp = tuple(pool_out(x[-nd + i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(nd))
    if min(out_sp) <= 0:
        raise RuleError(f"{layer}: input {fmt_shape(x[-nd:])} is too small for kernel {fmt_shape(k)}")
    return (*x[:-nd], *out_sp)


# ---------------------------------------------------------------- module rules


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
                "output_padding": as_tuple(getattr(m, "output_padding", 0), nd)}  # fmt: skip
    return {
        "nd": nd,
        "kernel": as_tuple(m.kernel_size, nd),
        "stride": as_tuple(m.stride, nd),
        "padding": pad if isinstance(pad, str) else as_tuple(pad, nd),
        "dilation": as_tuple(m.dilation, nd),
        "output_padding": as_tuple(getattr(m, "output_padding", 0), nd),
    }


def _conv(m: nn.Module, shape: Shape) -> Shape:
    g = conv_geometry(m)
    return conv_shape(shape, m.in_channels, m.out_channels, g["kernel"], g["stride"], g["padding"],
                      g["dilation"], layer=type(m).__name__)  # fmt: skip


def _conv_transpose(m: nn.Module, shape: Shape) -> Shape:
    g = conv_geometry(m)
    return conv_shape(shape, m.in_channels, m.out_channels, g["kernel"], g["stride"], g["padding"],
                      g["dilation"], True, g["output_padding"], type(m).__name__)  # fmt: skip


def _batchnorm(m: nn.Module, shape: Shape) -> Shape:
    if len(shape) >= 2 and shape[1] == m.num_features:
        return shape
    return batch_norm_shape(shape, m.num_features, type(m).__name__)


def _groupnorm(m: nn.Module, shape: Shape) -> Shape:
    if len(shape) < 2 or shape[1] != m.num_channels:
        raise RuleError(
            f"GroupNorm expects {m.num_channels} channels, got input {fmt_shape(shape)}", shape
        )
    return shape


def _layernorm(m: nn.Module, shape: Shape) -> Shape:
    return layer_norm_shape(shape, tuple(m.normalized_shape), "LayerNorm")


def layer_norm_shape(x: Shape, normalized_shape: Shape, layer: str = "layer_norm") -> Shape:
    """A layer norm keeps its input's shape, whose last dimensions must be ``normalized_shape``."""
    if tuple(x[len(x) - len(normalized_shape) :]) != normalized_shape:
        raise RuleError(
            f"{layer} expects the last dimensions to be its normalized shape {fmt_shape(normalized_shape)}, "
            f"got input {fmt_shape(x)}",
            x,
        )
    return x


def _same(m: nn.Module, shape: Shape) -> Shape:
    return shape


def _pool(m: nn.Module, shape: Shape) -> Shape:
    return pool_shape(shape, m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1), m.ceil_mode,
                      spatial_dims(m), type(m).__name__)  # fmt: skip


def _adaptive_pool(m: nn.Module, shape: Shape) -> Shape:
    nd = spatial_dims(m)
    check_spatial_input(type(m).__name__, nd, shape)
    size = as_tuple(m.output_size, nd)
    out_sp = tuple(shape[-nd + i] if size[i] is None else size[i] for i in range(nd))
    return (*shape[:-nd], *out_sp)


def _linear(m: nn.Module, shape: Shape) -> Shape:
    if shape and shape[-1] == m.in_features:
        return (*shape[:-1], m.out_features)
    return linear_shape(shape, m.in_features, (m.out_features,), "Linear")


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
        size = as_tuple(m.size, nd)
    else:
        sf = as_tuple(m.scale_factor, nd)
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



class ModuleRule(functools.partial):
    """A layer's shape rule, callable as ``rule(module, input_shape)``, with what it reads of the
    layer: ``reads``, the attributes the rule and the reports use; ``needs``, those it cannot run
    without. An archive's layer (no ``nn.Module``, only what TorchScript or torch.export kept) gets
    the rule only when its attributes can be read (``torchscript/layers.py``).

    A ``functools.partial`` of the shape function, so that calling a rule, once per layer call,
    costs no more than calling the function."""

    def __new__(cls, name: str, shape: Callable[[nn.Module, Shape], Shape], reads: tuple[str, ...],
                needs: tuple[str, ...] = ()):  # fmt: skip
        self = super().__new__(cls, shape)
        self.name = name
        self.reads = reads
        self.needs = needs
        return self

    def __repr__(self):
        return f"<shape rule {self.name}>"

    def needs_met(self, attrs: dict) -> bool:
        """Whether these attributes hold all the rule cannot run without."""
        return all(k in attrs for k in self.needs)

    def can_run(self, attrs: dict) -> bool:
        """Whether the rule can run on a layer known only by these attributes: all it needs are
        there, and (a pool) it gives one tensor, not values and indices."""
        if self.name == "pool" and attrs.get("return_indices"):
            return False
        return self.needs_met(attrs)


_CONV_READS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")
CONV_RULE = ModuleRule("conv", _conv, (*_CONV_READS, "groups", "padding_mode"), _CONV_READS)
CONV_TRANSPOSE_RULE = ModuleRule("conv_transpose", _conv_transpose, (*_CONV_READS, "groups", "output_padding"),
                                 (*_CONV_READS, "output_padding"))  # fmt: skip
BATCHNORM_RULE = ModuleRule("batchnorm", _batchnorm, ("num_features", "eps", "momentum"), ("num_features",))
GROUPNORM_RULE = ModuleRule("groupnorm", _groupnorm, ("num_groups", "num_channels", "eps"), ("num_channels",))
LAYERNORM_RULE = ModuleRule("layernorm", _layernorm, ("normalized_shape", "eps"), ("normalized_shape",))
POOL_RULE = ModuleRule("pool", _pool, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                       ("kernel_size", "stride", "padding", "ceil_mode"))  # fmt: skip
ADAPTIVE_POOL_RULE = ModuleRule("adaptive_pool", _adaptive_pool, ("output_size", "return_indices"), ("output_size",))
LINEAR_RULE = ModuleRule("linear", _linear, ("in_features", "out_features"), ("in_features", "out_features"))
FLATTEN_RULE = ModuleRule("flatten", _flatten, ("start_dim", "end_dim"), ("start_dim", "end_dim"))
UPSAMPLE_RULE = ModuleRule("upsample", _upsample, ("size", "scale_factor", "mode"), ("size", "scale_factor"))
PAD_RULE = ModuleRule("pad", _zero_pad, ("padding",), ("padding",))
SAME_RULE = ModuleRule("same", _same, ("inplace", "p"))  # the output has the input's shape

MODULE_RULES: dict[Callable, ModuleRule] = {}
for _cls in _SAME_MODULES:
    MODULE_RULES[_cls.forward] = SAME_RULE
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    MODULE_RULES[_cls.forward] = CONV_RULE
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    MODULE_RULES[_cls.forward] = CONV_TRANSPOSE_RULE
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    MODULE_RULES[_cls.forward] = BATCHNORM_RULE
for _cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d):
    MODULE_RULES[_cls.forward] = POOL_RULE
for _cls in (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
):  # fmt: skip
    MODULE_RULES[_cls.forward] = ADAPTIVE_POOL_RULE
MODULE_RULES[nn.GroupNorm.forward] = GROUPNORM_RULE
MODULE_RULES[nn.LayerNorm.forward] = LAYERNORM_RULE
MODULE_RULES[nn.Linear.forward] = LINEAR_RULE
MODULE_RULES[nn.Flatten.forward] = FLATTEN_RULE
MODULE_RULES[nn.Upsample.forward] = UPSAMPLE_RULE
for _cls in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ReflectionPad2d,
             nn.ReplicationPad2d):  # fmt: skip
    MODULE_RULES[_cls.forward] = PAD_RULE
# MaxPool with return_indices gives a tuple: leave those to meta execution.


def module_rule(m: nn.Module) -> ModuleRule | None:
    rule = MODULE_RULES.get(type(m).forward)
    if rule is POOL_RULE and getattr(m, "return_indices", False):
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


def adaptive_pool_rule(nd: int):
    def rule(args, kwargs):
        shape = args[0]
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
        size = as_tuple(size, nd)
        out = tuple(shape[-nd + i] if size[i] is None else size[i] for i in range(nd))
        return (*shape[:-nd], *out), None

    return rule


def pool_rule(nd: int, has_dilation: bool, layer: str):
    """The rule of ``layer`` (max_pool2d, avg_pool1d...), a call in ``F.max_pool2d``'s argument order."""
    names = ["input", "kernel_size", "stride", "padding"] + (
        ["dilation", "ceil_mode"] if has_dilation else ["ceil_mode"]
    )

    def rule(args, kwargs):
        vals = dict(zip(names, args))
        vals.update(kwargs)
        if vals.get("return_indices"):
            raise NotImplementedError  # tuple output: let meta run it
        s = vals.get("stride")
        s = None if s is None or (isinstance(s, (list, tuple)) and not s) else s
        out = pool_shape(vals["input"], vals["kernel_size"], s, vals.get("padding", 0), vals.get("dilation", 1),
                         bool(vals.get("ceil_mode", False)), nd, layer)  # fmt: skip
        return out, None

    return rule


def reduce_rule(args, kwargs):
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


def flatten_rule(args, kwargs):
    shape = args[0]
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
    return flatten_shape(shape, start, end), None


def cat_rule(args, kwargs):
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
                f"dimension {dim}; got " + ", ".join(fmt_shape(x) for x in shapes)
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
for _f in (torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum, torch.amax,
           torch.Tensor.amax):  # fmt: skip
    FUNC_RULES[_f] = reduce_rule
for _f in (torch.flatten, torch.Tensor.flatten):
    FUNC_RULES[_f] = flatten_rule

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


def batch_norm_rule(x: Shape, stats) -> Shape:
    """A batch norm's output, its channels fixed by whichever statistics or affine tensors it has
    (the first that disagrees with the input, so a wrong one is named)."""
    channels = None
    if len(x) >= 2:
        for stat in stats:
            if isinstance(stat, tuple) and stat and (channels is None or stat[0] != x[1]):
                channels = stat[0]
    return batch_norm_shape(x, channels)


def _norm_same(channels_from: str):
    def rule(args, kwargs):
        shape = args[0]
        if channels_from == "batch_norm":  # F.batch_norm(input, running_mean, running_var, weight, bias)
            names = ("running_mean", "running_var", "weight", "bias")
            batch_norm_rule(shape, [_arg(args, kwargs, i + 1, n) for i, n in enumerate(names)])
        elif channels_from == "normalized_shape":
            layer_norm_shape(shape, tuple(_arg(args, kwargs, 1, "normalized_shape") or ()))
        elif channels_from == "num_groups":
            g = _arg(args, kwargs, 1, "num_groups")
            if not isinstance(g, int) or len(shape) < 2 or g <= 0 or shape[1] % g:
                raise RuleError(f"group_norm: {shape[1] if len(shape) > 1 else '?'} channels do not "
                                f"split into {g} groups", shape)  # fmt: skip
        return shape, None

    return rule


def conv_rule(nd: int):
    """``F.conv{nd}d`` and ``aten::conv{nd}d`` (input, weight, bias, stride, padding, dilation, groups)."""

    def rule(args, kwargs):
        shape, w = args[0], _arg(args, kwargs, 1, "weight")
        if not isinstance(w, tuple) or len(w) != nd + 2:
            raise NotImplementedError
        out = conv_weight_shape(shape, w, _arg(args, kwargs, 3, "stride", 1), _arg(args, kwargs, 4, "padding", 0),
                                _arg(args, kwargs, 5, "dilation", 1), _arg(args, kwargs, 6, "groups", 1))  # fmt: skip
        return out, None

    return rule


def linear_rule(args, kwargs):
    """``F.linear`` and ``aten::linear`` (input, weight, bias)."""
    shape, w = args[0], _arg(args, kwargs, 1, "weight")
    if not isinstance(w, tuple) or len(w) not in (1, 2):
        raise NotImplementedError
    return linear_shape(shape, w[-1], w[:-1]), None


def _sdpa(args, kwargs):
    q, v = args[0], _arg(args, kwargs, 2, "value")
    if not isinstance(q, tuple) or not isinstance(v, tuple) or len(q) < 2 or len(v) < 2:
        raise NotImplementedError
    return (*q[:-1], v[-1]), None


# One rule per op name, for the functions of the same name and for aten's ops whose schema takes
# the same arguments in the same order (``torchscript/aten.py`` looks them up here by name).
OP_RULES: dict[str, Callable] = {
    "batch_norm": _norm_same("batch_norm"), "instance_norm": _norm_same("none"),
    "layer_norm": _norm_same("normalized_shape"), "group_norm": _norm_same("num_groups"),
    "conv1d": conv_rule(1), "conv2d": conv_rule(2), "conv3d": conv_rule(3), "linear": linear_rule,
    "scaled_dot_product_attention": _sdpa,
    "adaptive_avg_pool1d": adaptive_pool_rule(1), "adaptive_avg_pool2d": adaptive_pool_rule(2),
    "adaptive_avg_pool3d": adaptive_pool_rule(3), "adaptive_max_pool2d": adaptive_pool_rule(2),
    "mean": reduce_rule, "sum": reduce_rule, "amax": reduce_rule, "amin": reduce_rule,
    "flatten": flatten_rule, "cat": cat_rule, "concat": cat_rule, "concatenate": cat_rule,
}  # fmt: skip
for _nd in (1, 2, 3):
    OP_RULES[f"max_pool{_nd}d"] = pool_rule(_nd, True, f"max_pool{_nd}d")
    OP_RULES[f"avg_pool{_nd}d"] = pool_rule(_nd, False, f"avg_pool{_nd}d")
for _f in (F.batch_norm, F.instance_norm, F.layer_norm, F.group_norm, F.conv1d, F.conv2d, F.conv3d,
           F.linear, F.scaled_dot_product_attention, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
           F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d):  # fmt: skip
    FUNC_RULES[_f] = OP_RULES[_f.__name__]
for _f in (torch.cat, torch.concat, torch.concatenate):
    FUNC_RULES[_f] = OP_RULES[_f.__name__]


def elementwise_rule(func):
    """The broadcast rule of an add/sub/mul/div, for use where no residual add is decided (the
    inside of a layer): ``a op b`` has the broadcast shape; an in-place op keeps ``a``."""
    inplace = ADD_FUNCS.get(func, BINARY_FUNCS.get(func))
    name = getattr(func, "__name__", "op").strip("_")
    if name[:1] in "ir" and name[1:] in ("add", "sub", "mul", "truediv"):
        name = name[1:]  # __iadd__, __radd__: an add

    def rule(args, kwargs):
        if len(args) < 2 or kwargs:
            raise NotImplementedError
        a = args[0] if isinstance(args[0], tuple) else ()
        b = args[1] if isinstance(args[1], tuple) else ()
        shape = broadcast(a, b)
        if shape is None or (inplace and shape != a):
            raise RuleError(binary_error(name, a, b, shape))
        return shape, (0 if inplace else None)

    return rule
