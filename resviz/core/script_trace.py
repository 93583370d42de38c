"""Trace a TorchScript module (``torch.jit.script`` or ``torch.jit.trace``, as ``torch.jit.load``
gives it back) into the same :class:`~resviz.core.trace.Trace` the eager tracer records.

How it works, and why this way:

* The module is never run. Its *non-inlined* method graphs are interpreted node by node in
  Python, so every ``prim::CallMethod`` on a submodule is a module call with its exact path:
  a leaf layer (no children, or a layer with a shape rule) becomes ONE 'module' op, any other
  submodule becomes a :class:`Call` whose graph is interpreted recursively.
* Tensors are not materialised. A traced tensor is a :class:`_T` (shape, dtype, value id); the
  shapes come from the same rules as the eager tracer (``rules.py``) and from the aten-level rules
  below. Only ops without a rule run for real, on meta tensors made on the fly, and the result is
  turned back into a :class:`_T`. Parameters and buffers become meta copies, made only when an op
  without a rule needs them; graph constants (and sizes turned into tensors by
  ``prim::NumToTensor`` in traced graphs) stay real CPU tensors, so size arithmetic stays exact.
* A leaf layer's hyper-parameters come from the module's constants (scripted modules keep
  ``in_channels``, ``stride``, ...) or, for traced modules that keep none, from the constant
  arguments of the aten op in the layer's graph (``aten::_convolution``, ``aten::max_pool2d``...)
  and its weight's shape. With them the layer gets the eager tracer's shape rule and messages;
  without them its inlined graph is interpreted quietly (recording nothing inside it).
* Functions of the torch library called from a non-leaf graph (``F.batch_norm``, ``F.dropout``)
  are ONE 'function' op, as under the eager tracer's function mode; a user's own TorchScript
  function is interpreted in place, its ops recorded one by one.
* At a residual add whose operands disagree the mismatch is recorded and tracing goes on with the
  residual branch's shape, exactly as the eager tracer does; a ``raise`` in the model's own code
  (a shape check) and any op that cannot be evaluated end the trace with a :class:`ShapeError`.

The module is analysed in eval mode whatever its ``training`` flag says, and it is not modified
(attributes a forward assigns are kept in an overlay).
"""

from __future__ import annotations

import math
import operator
import re
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from . import rules
from .records import Call, Op, Value
from .residual import analyse_add
from .trace import Trace

Shape = tuple[int, ...]

__all__ = [
    "trace_script_module", "aten_eval", "add_shape", "module_rule_by_name", "leaf_macs",
    "hyper_object", "hyper_from_aten",
]  # fmt: skip


# ====================================================================== shared core (also used by
# export_trace.py): lightweight tensors, aten-level shape rules, meta fallback, layer attributes


class _T:
    """A tensor the interpreter follows: its shape, dtype and current value id (None while quiet)."""

    __slots__ = ("shape", "dtype", "vid")

    def __init__(self, shape: Shape, dtype: torch.dtype, vid: int | None = None):
        self.shape = shape
        self.dtype = dtype
        self.vid = vid

    def __repr__(self):
        return f"_T({rules._fmt(self.shape)}, {self.dtype}, v{self.vid})"


_TENSORS = (_T, torch.Tensor)
_META = torch.device("meta")

# c10::ScalarType numbering: TorchScript passes dtypes around as these ints.
_DTYPES = [
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
    torch.float64, torch.complex32, torch.complex64, torch.complex128, torch.bool, torch.qint8,
    torch.quint8, torch.qint32, torch.bfloat16,
]  # fmt: skip
_DTYPE_INT = {d: i for i, d in enumerate(_DTYPES)}


def _shape_of(x) -> Shape:
    return x.shape if isinstance(x, _T) else tuple(x.shape)


def _has_tensor(obj) -> bool:
    if isinstance(obj, _TENSORS):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_tensor(o) for o in obj)
    if isinstance(obj, dict):
        return any(_has_tensor(o) for o in obj.values())
    return False


def _flat_tensors(obj, out: list) -> list:
    if isinstance(obj, _TENSORS):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _flat_tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _flat_tensors(o, out)
    return out


def _shapes(obj):
    """Arguments with every tensor replaced by its shape (a tuple), as ``rules.FUNC_RULES`` want."""
    if isinstance(obj, _TENSORS):
        return _shape_of(obj)
    if isinstance(obj, list):
        return [_shapes(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_shapes(o) for o in obj)
    return obj


def _first_tensor(args):
    for a in args:
        if isinstance(a, _TENSORS):
            return a
        if isinstance(a, (list, tuple)):
            t = _first_tensor(a)
            if t is not None:
                return t
    return None


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
        out_sp = tuple((spatial[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(nd))
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


# ---------------------------------------------------------------------- layers by class name


def _nn_rules() -> dict[str, Any]:
    out = {}
    for name in dir(torch.nn):
        cls = getattr(torch.nn, name)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            rule = rules.MODULE_RULES.get(cls.forward)
            if rule is not None:
                out[name] = rule
    return out


_RULES_BY_NAME = _nn_rules()


def module_rule_by_name(type_name: str, qualname: str | None = None):
    """The eager tracer's shape rule for a layer of ``torch.nn`` by class name ('Conv2d'), or None.

    ``qualname`` (``torch.nn.modules.conv.Conv2d``, or TorchScript's ``__torch__.torch.nn...``)
    keeps a user's own class that happens to be called ``Linear`` from getting nn.Linear's rule.
    """
    if qualname is not None and not qualname.startswith(("torch.nn.", "__torch__.torch.nn.")):
        return None
    return _RULES_BY_NAME.get(type_name)


# Attributes a rule (or describe.py) reads, per rule.
_RULE_ATTRS = {
    rules._conv: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                  "groups", "padding_mode"),
    rules._conv_transpose: ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                            "dilation", "groups", "output_padding"),
    rules._batchnorm: ("num_features", "eps", "momentum"),
    rules._groupnorm: ("num_groups", "num_channels", "eps"),
    rules._layernorm: ("normalized_shape", "eps"),
    rules._pool: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    rules._adaptive_pool: ("output_size", "return_indices"),
    rules._linear: ("in_features", "out_features"),
    rules._flatten: ("start_dim", "end_dim"),
    rules._upsample: ("size", "scale_factor", "mode"),
    rules._zero_pad: ("padding",),
    rules._same: ("inplace", "p"),
}  # fmt: skip

_HYPER_CLASSES: dict[str, type] = {}


class _Hyper:
    """A layer's hyper-parameters as attributes, named like the layer class (for rules and
    describe.py, which read ``type(m).__name__``, ``m.kernel_size``, ``m.stride``...)."""

    def __repr__(self):
        items = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({items})"


def hyper_object(type_name: str, attrs: dict[str, Any]) -> _Hyper:
    cls = _HYPER_CLASSES.get(type_name)
    if cls is None:
        ident = type_name if type_name.isidentifier() else "Layer"
        cls = _HYPER_CLASSES[type_name] = type(ident, (_Hyper,), {})
    obj = cls()
    obj.__dict__.update(attrs)
    return obj


def _pool_attrs(args, nd, dilation):
    k = list(args[1])
    s = list(args[2]) if args[2] else k
    out = {"kernel_size": _one(k, nd), "stride": _one(s, nd), "padding": _one(list(args[3]), nd)}
    if dilation:
        out["dilation"] = _one(list(args[4]), nd)
        out["ceil_mode"] = bool(args[5])
    else:
        out["ceil_mode"] = bool(args[4])
    return out


def _one(v, nd):
    """Pooling layers keep ints where the user gave ints: 3 rather than (3, 3)."""
    v = list(v)
    if len(v) == 1:
        v = v * nd
    return v[0] if len(set(v)) == 1 else tuple(v)


def hyper_from_aten(base: str, args: Sequence, inplace_name: bool) -> dict[str, Any] | None:
    """Layer attributes from the principal aten call of a layer (traced and exported graphs keep
    no constants): convolution, pooling, linear, batch norm, flatten, activation."""
    try:
        if base in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution"):
            w = _shape_of(args[1])
            nd = len(w) - 2
            if base.startswith("conv") and base[-2:] in ("1d", "2d", "3d"):
                transposed, out_pad, groups = False, (0,) * nd, int(args[6])
            else:
                transposed, out_pad, groups = bool(args[6]), tuple(args[7]), int(args[8])
            pad = args[4]
            attrs = {
                "kernel_size": tuple(w[2:]), "stride": rules._tuple(tuple(args[3]), nd),
                "padding": pad if isinstance(pad, str) else rules._tuple(tuple(pad), nd),
                "dilation": rules._tuple(tuple(args[5]), nd), "groups": groups,
                "bias": True if args[2] is not None else None, "padding_mode": "zeros",
            }  # fmt: skip
            if transposed:
                attrs.update(in_channels=w[0], out_channels=w[1] * groups,
                             output_padding=rules._tuple(out_pad, nd))  # fmt: skip
            else:
                attrs.update(in_channels=w[1] * groups, out_channels=w[0])
            return attrs
        if base in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices"):
            nd = 2 if "2d" in base else int(base[-2]) if base[-1] == "d" else 2
            return {**_pool_attrs(args, nd, True), "return_indices": base.endswith("indices")}
        if base in ("avg_pool1d", "avg_pool2d", "avg_pool3d"):
            return _pool_attrs(args, int(base[-2]), False)
        if base.startswith(("adaptive_avg_pool", "adaptive_max_pool", "_adaptive_avg_pool")):
            size = list(args[1])
            return {"output_size": size[0] if len(set(size)) == 1 else tuple(size),
                    "return_indices": False}  # fmt: skip
        if base in ("linear", "addmm"):
            w = _shape_of(args[1] if base == "linear" else args[2])
            if base == "addmm":  # addmm(bias, input, weight.t())
                return {"in_features": w[0], "out_features": w[1], "bias": True}
            return {"in_features": w[1], "out_features": w[0],
                    "bias": True if args[2] is not None else None}  # fmt: skip
        if base in ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
                    "_native_batch_norm_legit", "cudnn_batch_norm"):  # fmt: skip
            for t in args[1:5]:
                if isinstance(t, _TENSORS):
                    return {"num_features": _shape_of(t)[0]}
            return None
        if base == "flatten":
            return {"start_dim": int(args[1]), "end_dim": int(args[2])}
        if base in ATEN_RULES and ATEN_RULES[base] in (_same, _same_inplace):
            return {"inplace": inplace_name}
    except (IndexError, TypeError, ValueError):
        return None
    return None


def leaf_macs(type_name: str, weights: int, out: Shape) -> int:
    """MACs by torchinfo's convention (``trace._LeafInfo.macs``)."""
    if not out or not weights:
        return 0
    if "Conv" in type_name:
        return weights * math.prod(out[:1] + out[2:])
    if "Linear" in type_name:
        return weights * math.prod(out[:-1])
    return weights * out[0]


def add_shape(trace: Trace, op: Op, sa: Shape, sb: Shape, traced: tuple[bool, bool],
              distinct: bool, inplace: bool) -> Shape:  # fmt: skip
    """The eager tracer's handling of an add (``Trace._call_add``) for an op already recorded with
    its operands: register a candidate residual add, and where the operands disagree decide which
    is the residual branch (tracing goes on with its shape) or record a broadcast error."""
    both = traced[0] and traced[1] and distinct and len(op.inputs) == 2
    if both:
        trace.candidate_adds.append(op.id)
    shape = rules.broadcast(sa, sb)
    bad = shape is None or (inplace and shape != sa)
    out_shape = shape
    decided = False
    if sa != sb and both and trace._stack:
        res = analyse_add(trace, op.id, trace._stack[-1])
        if res is not None:
            decided = True
            if bad:
                out_shape = trace.values[res.residual].shape
    if bad and not decided:
        msg = (
            rules.broadcast_error(sa, sb)
            if shape is None
            else (
                f"in-place add: output with shape {rules._fmt(sa)} doesn't match the broadcast "
                f"shape {rules._fmt(shape)}"
            )
        )
        trace._error(op.name, op.id, "add", msg, [sa, sb])
        out_shape = sa if traced[0] else sb
    return out_shape


# ====================================================================== the TorchScript interpreter


class _Abort(Exception):
    """Unwinds the interpretation once a fatal error has been recorded."""


class _Quiet(Exception):
    """A failure inside a leaf layer's own code; the leaf records it."""


class _Fn:
    """A ``prim::Constant`` of function type: the function called by ``prim::CallFunction``."""

    __slots__ = ("qualname", "name")

    def __init__(self, qualname: str, name: str):
        self.qualname = qualname
        self.name = name

    @property
    def is_library(self) -> bool:
        return self.qualname.startswith("__torch__.torch.")


class _Node:
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


class _Block:
    __slots__ = ("ins", "outs", "nodes")

    def __init__(self, ins, outs, nodes):
        self.ins = ins
        self.outs = outs
        self.nodes = nodes


_SOURCE = re.compile(r'File "([^"]+)", line (\d+)')
_SOURCE_TRACED = re.compile(r"^(.+?)\((\d+)\): ")


def _node_source(n) -> tuple[str, int] | None:
    """File and line of the model's code: scripted graphs keep the original source range,
    traced graphs the Python stack of the tracing run, both before the archive's own code."""
    try:
        text = n.sourceRange()
    except Exception:
        return None
    original = text.split("Serialized", 1)[0]
    m = _SOURCE_TRACED.match(original.strip()) or _SOURCE.search(original) or _SOURCE.search(text)
    return (m.group(1), int(m.group(2))) if m else None


class _Mod:
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
        self.children: dict[str, _Mod] = {}
        self.cache: dict[str, Any] = {}
        self.overlay: dict[str, Any] = {}
        self.ncalls = 0
        self.info: _LeafInfo | None = None

    def child(self, name: str, c) -> _Mod:
        m = self.children.get(name)
        if m is None:
            py = None
            if self.py is not None:
                try:
                    py = self.py._modules[name]
                except KeyError:
                    py = None
            m = self.children[name] = _Mod(c, py, f"{self.path}.{name}" if self.path else name)
        return m


class _LeafInfo:
    __slots__ = ("params", "weights", "rule", "hyper", "inplace")

    def __init__(self, params, weights, rule, hyper, inplace):
        self.params = params
        self.weights = weights
        self.rule = rule
        self.hyper = hyper
        self.inplace = inplace


def _missing():
    return None


class _Interp:
    def __init__(self, trace: Trace, cache: dict):
        self.trace = trace
        self.graphs = cache  # (qualname, method, inlined) -> _Block, shared by traces of one module
        self.quiet = 0
        self.const_vids: dict[int, int] = {}
        self.keep: list[Any] = []  # constants given value ids, kept alive so ids stay unique
        self.hypers: dict[str, dict] = cache.setdefault("__hyper__", {})
        self.handlers = _HANDLERS

    # ------------------------------------------------------------------ compiling graphs

    def _graph(self, mod: _Mod, method: str, inlined: bool) -> _Block:
        key = (mod.qualname, method, inlined)
        g = self.graphs.get(key)
        if g is None:
            m = mod.c._get_method(method)
            graph = m.inlined_graph if inlined else m.graph
            g = self.graphs[key] = self._compile(graph.inputs(), graph.outputs(), graph.nodes())
            self.graphs[("graph", *key)] = graph  # the compiled nodes point into it
        return g

    def _compile(self, inputs, outputs, nodes) -> _Block:
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
        return _Block(tuple(v.unique() for v in inputs), tuple(v.unique() for v in outputs), out)

    def _schema_op(self, n, node: _Node):
        try:
            text = n.schema()
        except Exception:
            text = "(no schema)"
        if text == "(no schema)":
            node.attr = f"unsupported TorchScript node {node.kind}"
            return _Interp._unsupported
        schema = torch._C.parse_schema(text)
        ns, name = schema.name.split("::", 1)
        node.base = name
        node.attr = f"{name}.{schema.overload_name}" if schema.overload_name else name
        node.argn = sum(1 for a in schema.arguments if not a.kwarg_only)
        node.kwn = tuple(a.name for a in schema.arguments if a.kwarg_only)
        node.tnode = n
        py = _PY_OPS.get(node.attr) or _PY_OPS.get(name)
        if py is not None and (node.attr in _PY_OPS or not _schema_has_tensor(schema)):
            node.value = py
            return _Interp._pyop
        try:
            packet = getattr(getattr(torch.ops, ns), name)
            node.opo = getattr(packet, schema.overload_name or "default")
        except AttributeError:
            node.attr = f"unknown operator {schema.name}"
            return _Interp._unsupported
        node.value = py  # scalar overloads of tensor ops (aten::add.int) run as Python
        return _Interp._aten

    # ------------------------------------------------------------------ running graphs

    def run_method(self, mod: _Mod, method: str, args: list, inlined: bool = False):
        g = self._graph(mod, method, inlined)
        env: dict[int, Any] = {g.ins[0]: mod, -1: mod}  # -1: the module whose method this is
        for k, a in zip(g.ins[1:], args):
            env[k] = a
        self._block(g, env)
        outs = [env[k] for k in g.outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _block(self, block: _Block, env: dict) -> None:
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
        env[node.outs[0]] = _DTYPE_INT.get(x.dtype, 6)

    def _device(self, node, env):
        x = env[node.ins[0]]
        env[node.outs[0]] = x.device if isinstance(x, torch.Tensor) else _META

    def _shape(self, node, env):
        env[node.outs[0]] = list(_shape_of(env[node.ins[0]]))

    def _numtotensor(self, node, env):
        v = env[node.ins[0]]
        env[node.outs[0]] = v if isinstance(v, _TENSORS) else torch.tensor(v)

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
        ok = False
        for t in node.attr:
            if t.startswith("Tensor"):
                ok |= isinstance(v, _TENSORS)
            elif t == "NoneType":
                ok |= v is None
            elif t == "int":
                ok |= isinstance(v, int) and not isinstance(v, bool)
            elif t == "float":
                ok |= isinstance(v, float)
            elif t == "bool":
                ok |= isinstance(v, bool)
            elif t == "str":
                ok |= isinstance(v, str)
            elif t.endswith("[]") or t.startswith("List"):
                ok |= isinstance(v, list)
            elif t.startswith("Tuple") or t.startswith("("):
                ok |= isinstance(v, tuple)
            elif t.startswith("Dict"):
                ok |= isinstance(v, dict)
        env[node.outs[0]] = ok

    def _if(self, node, env):
        cond = env[node.ins[0]]
        if isinstance(cond, _TENSORS):
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
            if isinstance(cond, _TENSORS):
                self._fail("a loop condition depends on tensor values")
            carried = [env[k] for k in body.outs[1:]]
            i += 1
        for o, v in zip(node.outs, carried):
            env[o] = v

    def _getattr(self, node, env):
        obj = env[node.ins[0]]
        name = node.attr
        if not isinstance(obj, _Mod):
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
                    hit = v if v.device.type == "meta" else torch.empty_like(v, device=_META)
                else:
                    hit = v
            obj.cache[name] = hit
        env[node.outs[0]] = hit

    def _setattr(self, node, env):
        obj = env[node.ins[0]]
        if isinstance(obj, _Mod):
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
            raise _Quiet(message)
        t = self.trace
        scope = t._stack[-1] if t._stack else 0
        call = t.calls[scope] if t.calls else None
        where = call.path if call and call.path else "(model)"
        shapes = [t.values[v].shape for v in call.inputs] if call else []
        t._error(where, None, call.type if call else "", message, shapes, fatal=True)
        raise _Abort

    # ------------------------------------------------------------------ python-level ops

    def _pyop(self, node, env):
        fn = node.value
        args = [env[i] for i in node.ins]
        try:
            if fn is None:
                raise RuntimeError(f"unsupported operator {node.kind}")
            out = fn(*args)
        except (_Abort, _Quiet):
            raise
        except Exception as e:
            self._fail(f"{node.attr or node.kind}: {_clean(e)}")
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    # ------------------------------------------------------------------ aten ops

    def _aten(self, node, env):
        vals = [env[i] for i in node.ins]
        if node.value is not None and not _has_tensor(vals):
            return self._pyop(node, env)  # aten::add.int and friends on Python numbers
        args = vals[: node.argn]
        kwargs = dict(zip(node.kwn, vals[node.argn :])) if node.kwn else {}
        if self.quiet:
            try:
                out = aten_eval(node.opo, args, kwargs, node.base)
            except (_Abort, _Quiet):
                raise
            except Exception as e:
                raise _Quiet(f"{node.base}: {_clean(e)}") from None
        else:
            out = self._record_aten(node, args, kwargs)
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    def _record_aten(self, node, args, kwargs):
        tensors = _flat_tensors((args, kwargs), [])
        if not any(isinstance(t, _T) for t in tensors):
            try:
                return aten_eval(node.opo, args, kwargs, node.base)
            except Exception as e:
                self._fail(f"{node.base}: {_clean(e)}")
        base = node.base
        if base in ("add", "add_") and len(args) >= 2:
            return self._record_add(node, args, base == "add_")
        if base in _BINARY_NAMES and len(args) >= 2:
            return self._record_binary(node, args, kwargs, base)
        try:
            out = aten_eval(node.opo, args, kwargs, base)
        except Exception as e:
            op = self._record(base, tensors, node.source)
            msg = str(e) if isinstance(e, rules.RuleError) else _clean(e)
            self.trace._error(op.name, op.id, base, msg, [_shape_of(t) for t in tensors], True)
            raise _Abort from None
        outs = _flat_tensors(out, [])
        if not outs:
            return out
        if len(outs) == 1 and outs[0] is tensors[0] and not base.endswith("_"):
            return out  # a no-op such as .contiguous() on a contiguous tensor
        op = self._record(base, tensors, node.source)
        op.outputs = [self._new_value(t, op.id) for t in outs]
        return out

    def _record_binary(self, node, args, kwargs, base):
        a, b = args[0], args[1]
        sa = _shape_of(a) if isinstance(a, _TENSORS) else ()
        sb = _shape_of(b) if isinstance(b, _TENSORS) else ()
        tensors = [t for t in (a, b) if isinstance(t, _TENSORS)]
        inplace = base.endswith("_")
        op = self._record(base, tensors, node.source)
        shape = rules.broadcast(sa, sb)
        if shape is None or (inplace and shape != sa):
            msg = (
                rules.broadcast_error(sa, sb)
                if shape is None
                else (
                    f"in-place {base}: output with shape {rules._fmt(sa)} doesn't match the "
                    f"broadcast shape {rules._fmt(shape)}"
                )
            )
            self.trace._error(op.name, op.id, base, msg, [sa, sb])
            shape = sa
        out = self._result(a, b, shape, inplace)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _record_add(self, node, args, inplace):
        a, b = args[0], args[1]
        sa = _shape_of(a) if isinstance(a, _TENSORS) else ()
        sb = _shape_of(b) if isinstance(b, _TENSORS) else ()
        tensors = [x for x in (a, b) if isinstance(x, _TENSORS)]
        op = self._record("add", tensors, node.source)
        traced = (isinstance(a, _T), isinstance(b, _T))
        out_shape = add_shape(self.trace, op, sa, sb, traced, a is not b, inplace)
        out = self._result(a, b, out_shape, inplace and out_shape == sa)
        op.outputs = [self._new_value(out, op.id)]
        return out

    def _result(self, a, b, shape, inplace):
        if inplace and isinstance(a, _T):
            return a
        if isinstance(a, _TENSORS) and isinstance(b, _TENSORS):
            dtype = torch.promote_types(a.dtype, b.dtype)
        else:
            dtype = a.dtype if isinstance(a, _TENSORS) else b.dtype
        return _T(shape, dtype)

    # ------------------------------------------------------------------ trace records

    def _vid(self, t) -> int:
        if isinstance(t, _T):
            if t.vid is None:
                self._new_value(t, None)
            return t.vid
        vid = self.const_vids.get(id(t))
        if vid is None:
            tr = self.trace
            vid = len(tr.values)
            tr.values.append(Value(vid, tuple(t.shape), _dtype_name(t.dtype), None))
            self.const_vids[id(t)] = vid
            self.keep.append(t)
        return vid

    def _new_value(self, t: _T, producer: int | None) -> int:
        tr = self.trace
        vid = len(tr.values)
        tr.values.append(Value(vid, t.shape, _dtype_name(t.dtype), producer))
        t.vid = vid
        return vid

    def _record(self, fname: str, tensors, source) -> Op:
        # scalars that tracing turned into constant tensors (`x * 2`) are not inputs
        inputs = [self._vid(t) for t in tensors if isinstance(t, _T) or t.dim() or t.is_meta]
        return self.trace._add_op("function", self.trace._function_name(fname), fname, inputs,
                                  source=source)  # fmt: skip

    def _as_output(self, t, op_id: int) -> int:
        if not isinstance(t, _T):
            t = _T(tuple(t.shape), t.dtype)
        return self._new_value(t, op_id)

    # ------------------------------------------------------------------ calls

    def _callmethod(self, node, env):
        target = env[node.ins[0]]
        args = [env[i] for i in node.ins[1:]]
        if not isinstance(target, _Mod):
            out = getattr(target, node.attr)(*args)
        else:
            out = self.call_module(target, node.attr, args, same=target is env.get(-1))
        if len(node.outs) == 1:
            env[node.outs[0]] = out
        else:
            for o, v in zip(node.outs, out):
                env[o] = v

    def call_module(self, mod: _Mod, method: str, args: list, same: bool = False):
        if self.quiet:
            return self.run_method(mod, method, args, True)
        if same:  # a helper method of the module running: same scope
            return self.run_method(mod, method, args)
        if mod.leaf:
            return self.call_leaf(mod, method, args)
        t = self.trace
        inputs = [self._vid(a) for a in _flat_tensors(args, [])]
        cid = len(t.calls)
        parent = t._stack[-1] if t._stack else None
        t.calls.append(Call(cid, mod.path, mod.type, parent, inputs, first_op=len(t.ops), module=mod.py))
        t._stack.append(cid)
        out = self.run_method(mod, method, args)
        outs = _flat_tensors(out, [])
        t.calls[cid].outputs = [self._vid(o) for o in outs]
        t.calls[cid].last_op = len(t.ops) - 1
        t._stack.pop()
        return out

    def _leaf_info(self, mod: _Mod) -> _LeafInfo:
        info = mod.info
        if info is not None:
            return info
        params = weights = 0
        if mod.py is not None:
            for name, p in mod.py._parameters.items():
                if p is None:
                    continue
                n = p.numel()
                params += n
                if name in ("weight", "bias"):
                    weights += n
            if mod.py._modules:
                params = sum(p.numel() for p in mod.py.parameters())
        rule = module_rule_by_name(mod.type, mod.qualname)
        attrs = self._hyper_attrs(mod, rule)
        hyper = None
        if attrs is not None:
            hyper = hyper_object(mod.type, attrs)
        if rule is rules._pool and attrs and attrs.get("return_indices"):
            rule = None
        if attrs is None or (rule is not None and not _has_required(rule, attrs)):
            rule = None
        inplace = bool(attrs.get("inplace")) if attrs else False
        info = mod.info = _LeafInfo(params, weights, rule, hyper, inplace)
        return info

    def _hyper_attrs(self, mod: _Mod, rule) -> dict | None:
        """Attributes from the module's constants (scripted) or its graph (traced)."""
        names = _RULE_ATTRS.get(rule, ()) if rule is not None else ()
        attrs = self.hypers.get(mod.qualname)
        if attrs is None:
            attrs = {}
            c = mod.c
            for name in names:
                if c.hasattr(name):
                    try:
                        attrs[name] = _plain(c.getattr(name))
                    except Exception:
                        pass
            self.hypers[mod.qualname] = attrs
        attrs = dict(attrs)
        if names and (not _has_required(rule, attrs) or (rule is rules._same and "inplace" not in attrs)):
            derived = self._hyper_from_graph(mod)
            if derived is not None:
                attrs = {**derived, **attrs}
        if mod.c.hasattr("bias") and ("in_channels" in attrs or "in_features" in attrs):
            try:
                attrs["bias"] = True if mod.c.getattr("bias") is not None else None
            except Exception:
                pass
        return attrs

    def _hyper_from_graph(self, mod: _Mod) -> dict | None:
        """A traced layer keeps no constants: read them off its aten call's constant arguments."""
        key = ("layer-call", mod.qualname)
        spec = self.graphs.get(key)
        if spec is None:
            try:
                spec = _scan_layer_graph(mod.c._get_method("forward").graph)
            except Exception:
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
                except Exception:
                    return None
            args.append(v)
        return hyper_from_aten(base, args, base.endswith("_"))

    def call_leaf(self, mod: _Mod, method: str, args: list):
        t = self.trace
        info = self._leaf_info(mod)
        in_tensors = _flat_tensors(args, [])
        inputs = [self._vid(x) for x in in_tensors]
        n = mod.ncalls
        mod.ncalls = n + 1
        op = t._add_op(
            "module", mod.path, mod.type, inputs, params=info.params if n == 0 else 0,
            module=info.hyper if info.hyper is not None else mod.py, call_index=n,
        )  # fmt: skip
        if info.rule is not None and len(args) == 1 and isinstance(args[0], _T):
            x = args[0]
            in_shape = x.shape
            try:
                out_shape = info.rule(info.hyper, in_shape)
            except rules.RuleError as e:
                fatal = e.continue_shape is None
                t._error(mod.path, op.id, op.type, str(e), [in_shape], fatal)
                if fatal:
                    raise _Abort from None
                out_shape = e.continue_shape
            out = x if info.inplace and out_shape == in_shape else _T(out_shape, x.dtype)
            op.outputs = [self._new_value(out, op.id)]
        else:
            out, err = self._quietly(self.run_method, mod, method, args, True)
            if err is not None:
                t._error(mod.path, op.id, op.type, err, [_shape_of(x) for x in in_tensors], True)
                raise _Abort
            op.outputs = [self._as_output(o, op.id) for o in _flat_tensors(out, [])]
        if info.weights and op.outputs:
            op.macs = leaf_macs(mod.type, info.weights, t.values[op.outputs[0]].shape)
        return out

    def _callfunction(self, node, env):
        fn = env[node.ins[0]]
        args = [env[i] for i in node.ins[1:]]
        if not isinstance(fn, _Fn):
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

    def _run_function(self, g: _Block, args):
        env: dict[int, Any] = {}
        for k, a in zip(g.ins, args):
            env[k] = a
        self._block(g, env)
        outs = [env[k] for k in g.outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _library_function(self, fn: _Fn, g: _Block, args, source):
        """``F.batch_norm``, ``F.dropout``...: ONE op, as under the eager tracer's function mode."""
        tensors = _flat_tensors(args, [])
        out, err = self._quietly(self._run_function, g, args)
        if not any(isinstance(x, _T) for x in tensors):
            if err is not None:
                self._fail(err)
            return out
        fname = fn.name.lstrip("_") or fn.name
        if err is not None:
            op = self._record(fname, tensors, source)
            self.trace._error(op.name, op.id, fname, err, [_shape_of(x) for x in tensors], True)
            raise _Abort
        outs = _flat_tensors(out, [])
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
        except _Abort:
            raise
        except Exception as e:
            return None, _clean(e)
        finally:
            self.quiet -= 1

    def _function_graph(self, fn: _Fn, call_node: _Node) -> _Block:
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


_HANDLERS = {
    "prim::Constant": _Interp._constant, "prim::GetAttr": _Interp._getattr,
    "prim::SetAttr": _Interp._setattr, "prim::CallMethod": _Interp._callmethod,
    "prim::CallFunction": _Interp._callfunction, "prim::ListConstruct": _Interp._list,
    "prim::TupleConstruct": _Interp._tuple, "prim::ListUnpack": _Interp._unpack,
    "prim::TupleUnpack": _Interp._unpack, "prim::TupleIndex": _Interp._tupleindex,
    "prim::DictConstruct": _Interp._dict, "prim::If": _Interp._if, "prim::Loop": _Interp._loop,
    "prim::RaiseException": _Interp._raise, "prim::unchecked_cast": _Interp._passthrough,
    "prim::unchecked_unwrap_optional": _Interp._passthrough, "prim::data": _Interp._passthrough,
    "prim::isinstance": _Interp._isinstance, "prim::NumToTensor": _Interp._numtotensor,
    "prim::dtype": _Interp._dtype, "prim::device": _Interp._device,
    "prim::Uninitialized": _Interp._none, "prim::Print": _Interp._nothing,
    "prim::Enter": _Interp._nothing, "prim::Exit": _Interp._nothing,
    "prim::requires_grad": _Interp._false, "prim::is_cuda": _Interp._false,
    "prim::layout": _Interp._layout, "prim::TupleSlice": _Interp._tupleslice,
    "prim::shape": _Interp._shape, "prim::grad": _Interp._none,
}  # fmt: skip


_LAYER_OPS = frozenset(
    {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "max_pool1d", "max_pool2d",
     "max_pool3d", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
     "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
     "adaptive_max_pool2d", "adaptive_max_pool3d", "linear", "batch_norm", "flatten"}
    | {k for k, v in ATEN_RULES.items() if v in (_same, _same_inplace)}
)  # fmt: skip


def _scan_layer_graph(graph):
    """(aten op name, [(kind, value)]) for the first layer op of a traced layer's graph; kind is
    'const' for constant arguments, 'attr' for the module's own tensors, 'input' otherwise."""
    consts: dict[int, Any] = {}
    attrs: dict[int, str] = {}
    self_id = next(iter(graph.inputs())).unique()
    for n in graph.nodes():
        kind = n.kind()
        if kind == "prim::Constant":
            if n.output().type().kind() != "FunctionType":
                consts[n.output().unique()] = n.output().toIValue()
        elif kind == "prim::ListConstruct":
            ins = [v.unique() for v in n.inputs()]
            if all(i in consts for i in ins):
                consts[n.output().unique()] = [consts[i] for i in ins]
        elif kind == "prim::GetAttr":
            ins = list(n.inputs())
            if ins[0].unique() == self_id:
                attrs[n.output().unique()] = n.s("name")
        elif kind.startswith("aten::") and kind[6:] in _LAYER_OPS:
            spec = []
            for v in n.inputs():
                u = v.unique()
                if u in consts:
                    spec.append(("const", consts[u]))
                elif u in attrs:
                    spec.append(("attr", attrs[u]))
                else:
                    spec.append(("input", _T((), torch.float32)))
            return kind[6:], spec
    return None


def _inplace_call(fname: str, args) -> bool:
    return fname.endswith("_") or any(a is True for a in args[1:] if isinstance(a, bool))


_BINARY_NAMES = frozenset({"sub", "mul", "div", "true_divide", "sub_", "mul_", "div_"})


def _has_required(rule, attrs) -> bool:
    need = {
        rules._conv: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"),
        rules._conv_transpose: ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                "dilation", "output_padding"),
        rules._batchnorm: ("num_features",), rules._groupnorm: ("num_channels",),
        rules._layernorm: ("normalized_shape",),
        rules._pool: ("kernel_size", "stride", "padding", "ceil_mode"),
        rules._adaptive_pool: ("output_size",), rules._linear: ("in_features", "out_features"),
        rules._flatten: ("start_dim", "end_dim"), rules._upsample: ("size", "scale_factor"),
        rules._zero_pad: ("padding",),
    }.get(rule, ())  # fmt: skip
    return all(k in attrs for k in need)


def _plain(v):
    if isinstance(v, list):
        return tuple(v)
    return v


def _schema_has_tensor(schema) -> bool:
    for a in schema.arguments:
        if "Tensor" in str(a.type):
            return True
    return False


def _const_value(n):
    out = n.output()
    t = out.type()
    if t.kind() == "FunctionType":
        return _Fn(str(t), n.s("name") if n.hasAttribute("name") else str(t).rsplit(".", 1)[-1])
    try:
        v = out.toIValue()
    except Exception:
        return None
    return v


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _clean(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    if isinstance(e, (RuntimeError, rules.RuleError, _Quiet)):
        return text
    return f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------- Python-level operators


def _size(x, dim=None):
    s = _shape_of(x)
    return list(s) if dim is None else s[dim]


def _append(lst, v):
    lst.append(v)
    return lst


def _setitem(container, k, v):
    container[k] = v


def _insert(lst, i, v):
    lst.insert(i, v)


def _pop(lst, i=-1):
    return lst.pop(i)


def _extend(lst, other):
    lst.extend(other)


def _slice(lst, start=None, end=None, step=1):
    return lst[start:end:step]


def _format(fmt, *args):
    parts = fmt.split("{}")
    out = parts[0]
    for i, p in enumerate(parts[1:]):
        a = args[i] if i < len(args) else ""
        out += (rules._fmt(_shape_of(a)) if isinstance(a, _TENSORS) else str(a)) + p
    return out


def _int(v):
    if isinstance(v, _T):
        raise RuntimeError("the value of a traced tensor is not known during shape analysis")
    if isinstance(v, torch.Tensor):
        if v.device.type == "meta":
            raise RuntimeError("the value of a parameter is not known during shape analysis")
        return int(v.item())
    return int(v)


def _float(v):
    if isinstance(v, torch.Tensor):
        return float(v.item())
    return float(v)


def _item(v):
    if isinstance(v, _T) or (isinstance(v, torch.Tensor) and v.device.type == "meta"):
        raise RuntimeError("the value of a tensor is not known during shape analysis")
    return v.item()


def _minmax(fn):
    def run(*args):
        return fn(args[0]) if len(args) == 1 else fn(args[0], args[1])

    return run


def _tensor(data, dtype=None, device=None, requires_grad=False):
    dt = _DTYPES[dtype] if isinstance(dtype, int) else dtype
    return torch.tensor(data, dtype=dt)


def _numel(x):
    return math.prod(_shape_of(x))


def _is_fp(x):
    return x.dtype.is_floating_point


def _div(a, b):
    return a / b


_PY_OPS: dict[str, Any] = {
    # always Python, whatever the argument types
    "size": _size, "size.int": _size, "dim": lambda x: len(_shape_of(x)), "numel": _numel,
    "len.Tensor": lambda x: _shape_of(x)[0], "is_floating_point": _is_fp,
    "__getitem__.t": operator.getitem, "__getitem__.Dict_str": operator.getitem,
    "__getitem__.Dict_int": operator.getitem, "len.t": len, "len": len, "append.t": _append,
    "__is__": operator.is_, "__isnot__": operator.is_not, "format": _format,
    "warn": lambda *a: None, "list.t": list, "_set_item.t": _setitem, "insert.t": _insert,
    "pop.t": _pop, "extend.t": _extend, "slice.t": _slice, "__contains__": operator.contains,
    "Int.Tensor": _int, "Float.Tensor": _float, "ScalarImplicit": _item, "item": _item,
    "Bool.Tensor": lambda v: bool(_item(v)), "tensor": _tensor, "tensor.int": _tensor,
    "tensor.float": _tensor, "tensor.bool": _tensor, "keys.str": lambda d: list(d.keys()),
    "values.str": lambda d: list(d.values()), "items.str": lambda d: list(d.items()),
    "dict": dict, "copy.t": list, "str": str, "__range_length": lambda lo, hi, st: len(range(lo, hi, st)),
    "__derive_index": lambda i, start, step: start + i * step,
    # Python numbers (only when no tensor is involved)
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": _div,
    "floordiv": operator.floordiv, "remainder": operator.mod, "pow": operator.pow,
    "neg": operator.neg, "__not__": operator.not_, "__and__": operator.and_,
    "__or__": operator.or_, "__xor__": operator.xor, "eq": operator.eq, "ne": operator.ne,
    "lt": operator.lt, "gt": operator.gt, "le": operator.le, "ge": operator.ge, "abs": abs,
    "min": _minmax(min), "max": _minmax(max), "floor": math.floor, "ceil": math.ceil,
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "round": round, "Int": _int,
    "Float": _float, "Bool": bool, "__contains__.str_list": operator.contains,
}  # fmt: skip


# ====================================================================== entry point


def _forward_args(sm, x: _T) -> list | str:
    """``[x]`` plus the defaults of any further arguments of ``forward``; a message if one has
    no default."""
    try:
        arguments = sm._c._get_method("forward").schema.arguments[1:]
    except Exception:
        return [x]
    if not arguments:
        return "forward takes no input"
    args: list = [x]
    for a in arguments[1:]:
        if not a.has_default_value():
            n = len(arguments)
            return (
                f"forward takes {n} inputs ({', '.join(b.name for b in arguments)}); resviz "
                f"traces models with one input tensor"
            )
        args.append(a.default_value)
    return args


_GRAPH_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trace_script_module(sm, input_shape: Sequence[int], *, dtype=torch.float32) -> Trace:
    """Trace a ``torch.jit.ScriptModule`` for an input of ``input_shape``; never raises for shape
    problems (they land in ``trace.errors``; ``trace.complete`` says whether it ran to the end)."""
    trace = Trace(input_shape, dtype=dtype)
    try:
        cache = _GRAPH_CACHE.setdefault(sm, {})
    except TypeError:
        cache = {}
    interp = _Interp(trace, cache)
    root = _Mod(sm._c, sm, "")
    inp = trace._add_op("input", "input", "Input", [])
    x = _T(tuple(trace.input_shape), dtype)
    inp.outputs = [interp._new_value(x, inp.id)]
    out = None
    cid = 0
    trace.calls.append(Call(0, "", root.type, None, [x.vid], first_op=len(trace.ops), module=sm))
    trace._stack.append(cid)
    try:
        args = _forward_args(sm, x)
        if isinstance(args, str):
            trace._error("(model)", None, root.type, args, [x.shape], fatal=True)
            raise _Abort
        if root.leaf and module_rule_by_name(root.type, root.qualname) is not None:
            out = interp.call_leaf(root, "forward", args)  # a single layer
        else:  # a model, or a frozen one (its layers inlined): record its ops one by one
            out = interp.run_method(root, "forward", args)
        trace.calls[0].outputs = [interp._vid(o) for o in _flat_tensors(out, [])]
        trace.complete = True
    except _Abort:
        out = None
    except Exception as e:  # the interpreter itself could not follow the graph
        t = trace
        scope = t.calls[t._stack[-1]] if t._stack else None
        where = scope.path if scope and scope.path else "(model)"
        t._error(where, None, scope.type if scope else "", _clean(e), [], fatal=True)
        out = None
    finally:
        while trace._stack:
            c = trace.calls[trace._stack.pop()]
            c.last_op = len(trace.ops) - 1
    if out is not None:
        outs = _flat_tensors(out, [])
        trace.output_values = [interp._vid(o) for o in outs]
        o = trace._add_op("output", "output", "Output", list(trace.output_values))
        o.scope = 0
    return trace
