"""Evaluating one aten op on interpreter values: its output shape from an aten-level rule where
there is one, else by running the op for real on meta tensors made on the fly.

Why rules at the aten level as well as ``rules.py``'s: a TorchScript or exported graph calls
``aten::_convolution`` and ``aten::view``, not ``nn.Conv2d`` and ``Tensor.view``, with arguments
in schema order; the rules here take those arguments and reuse ``rules.py``'s size formulas and
error messages wherever the eager tracer has them. Running on meta is the slow, always-correct
fallback (a meta ``relu`` costs ~500 µs against ~2 µs for a rule), so a missing rule costs time,
never correctness. ``export_trace.py`` evaluates its aten nodes through :func:`aten_eval` too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .. import shape_rules as rules
from .common import _META, _T, _TENSORS, Shape, _first_tensor, _flat_tensors, _shapes

# ---------------------------------------------------------------------- aten-level shape rules
# Each takes (args, kwargs) in the op's schema order with tensors replaced by their shapes and
# returns (out_shape, inplace_index); NotImplementedError means "run it on meta tensors".


def _same(args, kwargs):
    return args[0], None


def _same_inplace(args, kwargs):
    return args[0], 0


def _binary(args, kwargs):
    a, b = args[0], args[1]
    sa = a if isinstance(a, tuple) else ()
    sb = b if isinstance(b, tuple) else ()
    out = rules.broadcast(sa, sb)
    if out is None:
        raise rules.RuleError(rules.broadcast_error(sa, sb))
    return out, None


def _binary_inplace(args, kwargs):
    out, _ = _binary(args, kwargs)
    sa = args[0]
    if out != sa:
        raise rules.RuleError(f"output with shape {list(sa)} doesn't match the broadcast shape {list(out)}")
    return sa, 0


def _batch_norm_rule(args, kwargs):
    x = args[0]
    if len(x) < 2:
        raise rules.RuleError(f"batch_norm expects at least 2D input, got {rules._fmt(x)}")
    for stat in args[1:5]:
        if isinstance(stat, tuple) and stat and stat[0] != x[1]:
            raise rules.RuleError(
                f"running_mean should contain {x[1]} elements not {stat[0]} (input {rules._fmt(x)})"
            )
    return x, None


def conv_shape(x: Shape, w: Shape, stride, padding, dilation, groups: int, transposed=False,
               output_padding=0) -> Shape:  # fmt: skip
    """Output shape of an aten convolution; RuleError in PyTorch's words when it cannot run."""
    nd = len(w) - 2
    if len(x) not in (nd + 1, nd + 2):
        raise rules.RuleError(
            f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to conv{nd}d, "
            f"but got input of size: {list(x)}"
        )
    s = rules._tuple(stride, nd)
    d = rules._tuple(dilation, nd)
    spatial = x[-nd:]
    k = w[2:]
    if transposed:
        p = rules._tuple(padding, nd)
        op = rules._tuple(output_padding, nd)
        expected, cout = w[0], w[1] * groups
        out_sp = tuple(rules.conv_transpose_out(spatial[i], k[i], s[i], p[i], d[i], op[i]) for i in range(nd))
    else:
        expected, cout = w[1] * groups, w[0]
        if isinstance(padding, str):
            out_sp = (
                tuple(spatial)
                if padding == "same"
                else tuple(rules.conv_out(spatial[i], k[i], s[i], 0, d[i]) for i in range(nd))
            )
        else:
            p = rules._tuple(padding, nd)
            out_sp = tuple(rules.conv_out(spatial[i], k[i], s[i], p[i], d[i]) for i in range(nd))
    out = (*x[: -nd - 1], cout, *out_sp)
    if x[-nd - 1] != expected:
        raise rules.RuleError(
            f"Given groups={groups}, weight of size {list(w)}, expected input{list(x)} to have "
            f"{expected} channels, but got {x[-nd - 1]} channels instead",
            out,
        )
    if min(out_sp) <= 0:
        raise rules.RuleError(
            f"Calculated output size: {list(out_sp)} is too small (input {list(x)}, kernel {list(k)})"
        )
    return out


def _conv_nd(args, kwargs):
    # conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups)
    return conv_shape(args[0], args[1], args[3], args[4], args[5], args[6]), None


def _convolution(args, kwargs):
    # (_)convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
    # groups, ...)
    return conv_shape(args[0], args[1], args[3], args[4], args[5], args[8], args[6], args[7]), None


def _conv_transpose_nd(args, kwargs):
    # conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return conv_shape(args[0], args[1], args[3], args[4], args[7], args[6], True, args[5]), None


def _linear_rule(args, kwargs):
    x, w = args[0], args[1]
    if not x:
        raise rules.RuleError("linear got a scalar input")
    out = (*x[:-1], w[0])
    if x[-1] != w[-1]:
        rows = math.prod(x[:-1]) if len(x) > 1 else 1
        raise rules.RuleError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{x[-1]} and {w[-1]}x{w[0]})", out
        )
    return out, None


def _view_rule(args, kwargs):
    x, size = args[0], list(args[1])
    total = math.prod(x)
    if size.count(-1) > 1:
        raise NotImplementedError
    if -1 in size:
        rest = math.prod(s for s in size if s != -1)
        if rest == 0 or total % rest:
            raise rules.RuleError(f"shape '{size}' is invalid for input of size {total}")
        size[size.index(-1)] = total // rest
    elif math.prod(size) != total:
        raise rules.RuleError(f"shape '{size}' is invalid for input of size {total}")
    return tuple(size), None


def _mean_rule(args, kwargs):
    if len(args) < 2 or not isinstance(args[1], (list, tuple, int)) or isinstance(args[1], bool):
        return (), None  # mean(self, dtype): a full reduction
    return rules._reduce(args[:3], {})


def _pad_rule(args, kwargs):  # constant_pad_nd(self, pad, value) / pad(self, pad, mode, value)
    return rules.pad_shape(args[0], args[1]), None


def _unsqueeze_rule(args, kwargs):
    x, d = args[0], args[1]
    d = d + len(x) + 1 if d < 0 else d
    return (*x[:d], 1, *x[d:]), None


def _adaptive(nd):
    return lambda args, kwargs: rules._adaptive_pool_fn(nd)(args[:2], {})


def _pool(nd, dilation):
    rule = rules._pool_fn(nd, dilation)
    return lambda args, kwargs: rule(args[: 6 if dilation else 5], {})


_UNARY = (
    "relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "hardswish", "hardsigmoid", "hardtanh",
    "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "neg", "abs", "exp", "sqrt", "rsqrt",
    "log", "clone", "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    "softmax", "log_softmax", "_softmax", "_log_softmax", "clamp", "clamp_min", "clamp_max",
    "erf", "reciprocal", "square", "prelu", "instance_norm", "layer_norm", "group_norm",
    "zeros_like", "ones_like", "empty_like", "full_like", "fill", "hardshrink", "sin", "cos",
    "logsigmoid", "threshold", "square", "detach",
)  # fmt: skip
_INPLACE_UNARY = (
    "relu_", "relu6_", "sigmoid_", "tanh_", "hardtanh_", "leaky_relu_", "elu_", "selu_", "celu_",
    "silu_", "hardswish_", "hardsigmoid_", "mish_", "clamp_", "clamp_min_", "clamp_max_", "neg_",
    "abs_", "exp_", "sqrt_", "dropout_", "feature_dropout_", "alpha_dropout_", "zero_", "fill_",
    "threshold_", "detach_",
)  # fmt: skip

ATEN_RULES: dict[str, Any] = {name: _same for name in _UNARY}
ATEN_RULES.update({name: _same_inplace for name in _INPLACE_UNARY})
for _name in ("add", "sub", "mul", "div", "true_divide", "rsub", "maximum", "minimum", "pow",
              "remainder", "fmod", "atan2", "hypot", "floor_divide", "where"):  # fmt: skip
    ATEN_RULES[_name] = _binary
for _name in ("add_", "sub_", "mul_", "div_", "pow_", "remainder_", "floor_divide_"):
    ATEN_RULES[_name] = _binary_inplace
ATEN_RULES.update(
    {
        "batch_norm": _batch_norm_rule,
        "conv1d": _conv_nd, "conv2d": _conv_nd, "conv3d": _conv_nd,
        "convolution": _convolution, "_convolution": _convolution,
        "conv_transpose1d": _conv_transpose_nd, "conv_transpose2d": _conv_transpose_nd,
        "conv_transpose3d": _conv_transpose_nd,
        "linear": _linear_rule,
        "view": _view_rule, "reshape": _view_rule, "_unsafe_view": _view_rule,
        "flatten": lambda a, k: rules._flatten_fn(a[:3], {}),
        "mean": _mean_rule, "sum": _mean_rule,
        "amax": lambda a, k: rules._reduce(a[:3], {}), "amin": lambda a, k: rules._reduce(a[:3], {}),
        "cat": lambda a, k: rules._cat(a[:2], {}), "concat": lambda a, k: rules._cat(a[:2], {}),
        "concatenate": lambda a, k: rules._cat(a[:2], {}),
        "adaptive_avg_pool1d": _adaptive(1), "adaptive_avg_pool2d": _adaptive(2),
        "adaptive_avg_pool3d": _adaptive(3), "_adaptive_avg_pool2d": _adaptive(2),
        "max_pool1d": _pool(1, True), "max_pool2d": _pool(2, True), "max_pool3d": _pool(3, True),
        "avg_pool1d": _pool(1, False), "avg_pool2d": _pool(2, False), "avg_pool3d": _pool(3, False),
        "constant_pad_nd": _pad_rule, "pad": _pad_rule,
        "unsqueeze": _unsqueeze_rule,
    }
)  # fmt: skip
# `where(cond, a, b)` broadcasts three operands: leave it to meta.
del ATEN_RULES["where"]
# `dropout(input, p, train)`, `detach`: a no-op on shapes but a new tensor.
_IDENTITY_OPS = frozenset({"contiguous", "alias", "lift_fresh", "lift_fresh_copy"})


# ---------------------------------------------------------------------- evaluation, meta fallback


def _to_meta(obj, cpu_to_meta: bool):
    if isinstance(obj, _T):
        return torch.empty(obj.shape, dtype=obj.dtype, device=_META)
    if isinstance(obj, torch.Tensor):
        if cpu_to_meta and obj.device.type != "meta":
            return torch.empty_like(obj, device=_META)
        return obj
    if isinstance(obj, list):
        return [_to_meta(o, cpu_to_meta) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_to_meta(o, cpu_to_meta) for o in obj)
    return obj


def _from_meta(obj, back: dict[int, _T]):
    if isinstance(obj, torch.Tensor):
        if obj.device.type != "meta":
            return obj
        hit = back.get(id(obj))
        if hit is not None:
            return hit
        return _T(tuple(obj.shape), obj.dtype)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_meta(o, back) for o in obj)
    return obj


def aten_eval(opo, args: Sequence, kwargs: dict, base: str | None = None):
    """Evaluate an aten op on interpreter values: a rule when there is one, else meta tensors.

    Returns the op's result with tensors as :class:`_T` (the very input object for an op that
    returns its ``self``, such as an in-place op) or, when no traced tensor took part, whatever the
    op returns for real. Raises :class:`rules.RuleError` or the op's own exception.
    """
    if base is None:
        base = opo._opname
    tensors = _flat_tensors((args, kwargs), [])
    if any(isinstance(t, _T) for t in tensors):
        if base in _IDENTITY_OPS:
            return args[0]
        rule = ATEN_RULES.get(base)
        if rule is not None:
            try:
                out_shape, inplace = rule(_shapes(list(args)), _shapes(kwargs))
            except NotImplementedError:
                pass
            else:
                if inplace is not None:
                    return args[inplace]
                ref = _first_tensor(args)
                dtype = ref.dtype
                if base in ("add", "sub", "mul", "div", "true_divide", "maximum", "minimum") and \
                        isinstance(args[1], _TENSORS):  # fmt: skip
                    dtype = torch.promote_types(dtype, args[1].dtype)
                if base in ("div", "true_divide") and not dtype.is_floating_point:
                    dtype = torch.get_default_dtype()
                return _T(out_shape, dtype)
        margs = _to_meta(list(args), True)
        mkw = {k: _to_meta(v, True) for k, v in kwargs.items()}
        back = {}
        _pair_back(args, margs, back)
        out = opo(*margs, **mkw)
        return _from_meta(out, back)
    # no traced tensor: constants and parameters only
    if any(t.device.type == "meta" for t in tensors):
        args = _to_meta(list(args), True)
        kwargs = {k: _to_meta(v, True) for k, v in kwargs.items()}
    elif "device" in kwargs or _creates_on_device(opo):
        kwargs = dict(kwargs)
        kwargs["device"] = _META  # a tensor created inside forward: never allocate it for real
    return opo(*args, **kwargs)


def _pair_back(args, margs, back):
    for a, m in zip(args, margs):
        if isinstance(a, _T):
            back[id(m)] = a
        elif isinstance(a, (list, tuple)):
            _pair_back(a, m, back)


_DEVICE_ARG: dict[Any, bool] = {}


def _creates_on_device(opo) -> bool:
    hit = _DEVICE_ARG.get(opo)
    if hit is None:
        try:
            hit = any(a.name == "device" and a.kwarg_only for a in opo._schema.arguments)
        except Exception:
            hit = False
        _DEVICE_ARG[opo] = hit
    return hit
