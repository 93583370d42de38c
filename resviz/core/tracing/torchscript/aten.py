"""Evaluating one aten op on interpreter values: its output shape from an aten-level rule where
there is one, else by running the op for real on meta tensors made on the fly.

Why look rules up by aten op name: a TorchScript or exported graph calls ``aten::_convolution``
and ``aten::view``, not ``nn.Conv2d`` and ``Tensor.view``, with arguments in schema order. Where
the schema is the function's (``conv2d``, ``linear``, ``max_pool2d``...) the rule is the eager
tracer's own object from ``shape_rules.OP_RULES``; elsewhere a small adapter reads the arguments
and checks through the same ``shape_rules`` function, so an error reads the same from every
front-end. Running on meta is the slow, always-correct fallback (a meta ``relu`` costs ~500 µs
against ~2 µs for a rule), so a missing rule costs time, never correctness. ``exported.py``
evaluates its aten nodes through :func:`aten_eval` too.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .. import shape_rules as rules
from .common import META, TENSOR_TYPES, TracedTensor, arg_shapes, first_tensor, flat_tensors

# ---------------------------------------------------------------------- aten-level shape rules
# Each takes (args, kwargs) in the op's schema order with tensors replaced by their shapes and
# returns (out_shape, inplace_index); NotImplementedError means "run it on meta tensors". Where
# aten's schema matches the function's (conv2d, linear, max_pool2d...) the rule IS the eager
# tracer's (``rules.OP_RULES``); where it does not, the adapter here reads the arguments and
# checks through the same ``rules`` function, so each error has one wording.


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


def _binary_inplace(name: str):
    def rule(args, kwargs):
        out, _ = _binary(args, kwargs)
        sa = args[0]
        if out != sa:
            raise rules.RuleError(rules.binary_error(name, sa, args[1] if isinstance(args[1], tuple) else (), out))
        return sa, 0

    return rule


def _batch_norm_rule(args, kwargs):
    # batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
    return rules.batch_norm_rule(args[0], args[1:5]), None


def _convolution(args, kwargs):
    # (_)convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
    # groups, ...)
    return rules.conv_weight_shape(args[0], args[1], args[3], args[4], args[5], args[8], args[6], args[7]), None


def _conv_transpose_nd(args, kwargs):
    # conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return rules.conv_weight_shape(args[0], args[1], args[3], args[4], args[7], args[6], True, args[5]), None


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
    return rules.reduce_rule(args[:3], {})


def _pad_rule(args, kwargs):  # constant_pad_nd(self, pad, value) / pad(self, pad, mode, value)
    return rules.pad_shape(args[0], args[1]), None


def _unsqueeze_rule(args, kwargs):
    x, d = args[0], args[1]
    d = d + len(x) + 1 if d < 0 else d
    return (*x[:d], 1, *x[d:]), None


def _first(n: int, name: str):
    """``rules.OP_RULES[name]`` on the first ``n`` arguments: the ones the function has too."""
    rule = rules.OP_RULES[name]
    return lambda args, kwargs: rule(args[:n], {})


# Ops whose output has their input's shape (the norms among them check it first, below).
SHAPE_PRESERVING = frozenset((
    "relu", "relu6", "sigmoid", "tanh", "gelu", "silu", "hardswish", "hardsigmoid", "hardtanh",
    "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "neg", "abs", "exp", "sqrt", "rsqrt",
    "log", "clone", "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    "softmax", "log_softmax", "_softmax", "_log_softmax", "clamp", "clamp_min", "clamp_max",
    "erf", "reciprocal", "square", "prelu", "instance_norm", "layer_norm", "group_norm",
    "zeros_like", "ones_like", "empty_like", "full_like", "fill", "hardshrink", "sin", "cos",
    "logsigmoid", "threshold", "square", "detach",
    "relu_", "relu6_", "sigmoid_", "tanh_", "hardtanh_", "leaky_relu_", "elu_", "selu_", "celu_",
    "silu_", "hardswish_", "hardsigmoid_", "mish_", "clamp_", "clamp_min_", "clamp_max_", "neg_",
    "abs_", "exp_", "sqrt_", "dropout_", "feature_dropout_", "alpha_dropout_", "zero_", "fill_",
    "threshold_", "detach_",
))  # fmt: skip

ATEN_RULES: dict[str, Any] = {name: _same_inplace if name.endswith("_") else _same for name in SHAPE_PRESERVING}
for _name in ("add", "sub", "mul", "div", "true_divide", "rsub", "maximum", "minimum", "pow",
              "remainder", "fmod", "atan2", "hypot", "floor_divide"):  # fmt: skip
    ATEN_RULES[_name] = _binary
for _name in ("add_", "sub_", "mul_", "div_", "pow_", "remainder_", "floor_divide_"):
    ATEN_RULES[_name] = _binary_inplace(_name)
# `where(cond, a, b)` broadcasts three operands: left to meta.
ATEN_RULES.update(
    {
        "batch_norm": _batch_norm_rule,
        "layer_norm": rules.OP_RULES["layer_norm"], "group_norm": rules.OP_RULES["group_norm"],
        "conv1d": rules.OP_RULES["conv1d"], "conv2d": rules.OP_RULES["conv2d"],
        "conv3d": rules.OP_RULES["conv3d"],
        "convolution": _convolution, "_convolution": _convolution,
        "conv_transpose1d": _conv_transpose_nd, "conv_transpose2d": _conv_transpose_nd,
        "conv_transpose3d": _conv_transpose_nd,
        "linear": rules.OP_RULES["linear"],
        "view": _view_rule, "reshape": _view_rule, "_unsafe_view": _view_rule,
        "flatten": _first(3, "flatten"),
        "mean": _mean_rule, "sum": _mean_rule,
        "amax": _first(3, "amax"), "amin": _first(3, "amin"),
        "cat": _first(2, "cat"), "concat": _first(2, "concat"), "concatenate": _first(2, "concatenate"),
        "adaptive_avg_pool1d": _first(2, "adaptive_avg_pool1d"),
        "adaptive_avg_pool2d": _first(2, "adaptive_avg_pool2d"),
        "adaptive_avg_pool3d": _first(2, "adaptive_avg_pool3d"),
        "_adaptive_avg_pool2d": _first(2, "adaptive_avg_pool2d"),
        "max_pool1d": _first(6, "max_pool1d"), "max_pool2d": _first(6, "max_pool2d"),
        "max_pool3d": _first(6, "max_pool3d"),
        "avg_pool1d": _first(5, "avg_pool1d"), "avg_pool2d": _first(5, "avg_pool2d"),
        "avg_pool3d": _first(5, "avg_pool3d"),
        "constant_pad_nd": _pad_rule, "pad": _pad_rule,
        "unsqueeze": _unsqueeze_rule,
    }
)  # fmt: skip
# `dropout(input, p, train)`, `detach`: a no-op on shapes but a new tensor.
_IDENTITY_OPS = frozenset({"contiguous", "alias", "lift_fresh", "lift_fresh_copy"})


# ---------------------------------------------------------------------- evaluation, meta fallback


def _to_meta(obj, cpu_to_meta: bool):
    if isinstance(obj, TracedTensor):
        return torch.empty(obj.shape, dtype=obj.dtype, device=META)
    if isinstance(obj, torch.Tensor):
        if cpu_to_meta and obj.device.type != "meta":
            return torch.empty_like(obj, device=META)
        return obj
    if isinstance(obj, list):
        return [_to_meta(o, cpu_to_meta) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_to_meta(o, cpu_to_meta) for o in obj)
    return obj


def _from_meta(obj, back: dict[int, TracedTensor]):
    if isinstance(obj, torch.Tensor):
        if obj.device.type != "meta":
            return obj
        hit = back.get(id(obj))
        if hit is not None:
            return hit
        return TracedTensor(tuple(obj.shape), obj.dtype)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_meta(o, back) for o in obj)
    return obj


def aten_eval(opo, args: Sequence, kwargs: dict, base: str | None = None):
    """Evaluate an aten op on interpreter values: a rule when there is one, else meta tensors.

    Returns the op's result with tensors as :class:`TracedTensor` (the very input object for an op that
    returns its ``self``, such as an in-place op) or, when no traced tensor took part, whatever the
    op returns for real. Raises :class:`rules.RuleError` or the op's own exception.
    """
    if base is None:
        base = opo._opname
    tensors = flat_tensors((args, kwargs), [])
    if not any(isinstance(t, TracedTensor) for t in tensors):
        return _constant_eval(opo, args, kwargs, tensors)
    if base in _IDENTITY_OPS:
        return args[0]
    out = _rule_eval(base, args, kwargs)
    if out is not None:
        return out
    return _meta_eval(opo, args, kwargs)


_PROMOTING = frozenset({"add", "sub", "mul", "div", "true_divide", "maximum", "minimum"})


def _rule_eval(base: str, args: Sequence, kwargs: dict):
    """The op's result by its shape rule; None when it has none (or the rule declines)."""
    rule = ATEN_RULES.get(base)
    if rule is None:
        return None
    try:
        out_shape, inplace = rule(arg_shapes(list(args)), arg_shapes(kwargs))
    except NotImplementedError:
        return None
    if inplace is not None:
        return args[inplace]
    return TracedTensor(out_shape, result_dtype(base, args))


def result_dtype(base: str, args: Sequence) -> torch.dtype:
    """The dtype of a ruled op's result: its first tensor's, promoted with the second operand's
    for arithmetic, and a true division of integers gives the default float."""
    dtype = first_tensor(args).dtype
    if base in _PROMOTING and isinstance(args[1], TENSOR_TYPES):
        dtype = torch.promote_types(dtype, args[1].dtype)
    if base in ("div", "true_divide") and not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return dtype


def _meta_eval(opo, args: Sequence, kwargs: dict):
    """Run the op for real on meta tensors made on the fly; its traced inputs come back as themselves."""
    margs = _to_meta(list(args), True)
    mkw = {k: _to_meta(v, True) for k, v in kwargs.items()}
    back = {}
    _pair_back(args, margs, back)
    return _from_meta(opo(*margs, **mkw), back)


def _constant_eval(opo, args: Sequence, kwargs: dict, tensors: list):
    """An op on constants and parameters only: run for real, on meta when any of them is, and a
    tensor created inside forward is made on meta, never allocated."""
    if any(t.device.type == "meta" for t in tensors):
        args = _to_meta(list(args), True)
        kwargs = {k: _to_meta(v, True) for k, v in kwargs.items()}
    elif "device" in kwargs or _creates_on_device(opo):
        kwargs = dict(kwargs)
        kwargs["device"] = META
    return opo(*args, **kwargs)


def _pair_back(args, margs, back):
    for a, m in zip(args, margs):
        if isinstance(a, TracedTensor):
            back[id(m)] = a
        elif isinstance(a, (list, tuple)):
            _pair_back(a, m, back)


_DEVICE_ARG: dict[Any, bool] = {}


def _creates_on_device(opo) -> bool:
    hit = _DEVICE_ARG.get(opo)
    if hit is None:
        try:
            hit = any(a.name == "device" and a.kwarg_only for a in opo._schema.arguments)
        except AttributeError:  # not an OpOverload (a Python callable): it takes no device
            hit = False
        _DEVICE_ARG[opo] = hit
    return hit
