"""A layer's shape rule and hyper-parameters, read from what a ScriptModule or an exported graph
keeps of it.

The eager tracer gets both from the live ``nn.Module``: ``rules.module_rule(m)`` by its class and
``m.stride``, ``m.in_channels``... by attribute. An archive has no such object. Here the rule is
found by class *name* (restricted to ``torch.nn``'s own classes), and the attributes come from the
module's constants (scripted modules keep them) or, for traced and exported graphs that keep none,
from the constant arguments of the layer's principal aten call and its weight's shape; which
attributes to read, and which a rule cannot run without, the rule object itself says
(``ModuleRule.reads`` and ``.needs``). They are handed to the rules and to ``describe.py`` as a
stand-in object that reads like the layer (:func:`hyper_object`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import shape_rules as rules
from .aten import SHAPE_PRESERVING
from .common import TENSOR_TYPES, TracedTensor, shape_of

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


# ---------------------------------------------------------------------- hyper-parameters


def hyper_object(type_name: str, attrs: dict[str, Any]):
    """A layer's hyper-parameters as attributes, named like the layer class (rules and describe.py
    read ``m.kernel_size``, ``m.stride``...): the same stand-in a child process's report holds."""
    from ..plain_module import plain_module

    return plain_module(type_name, "", attrs)


def plain_value(v):
    # TorchScript gives back lists where nn layers keep tuples (kernel_size, stride...).
    if isinstance(v, list):
        return tuple(v)
    return v


# ---------------------------------------------------------------------- from an aten call


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


def _conv_attrs(base: str, args: Sequence) -> dict[str, Any]:
    # conv2d(input, weight, bias, stride, padding, dilation, groups) or
    # (_)convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    w = shape_of(args[1])
    nd = len(w) - 2
    if base.startswith("conv") and base[-2:] in ("1d", "2d", "3d"):
        transposed, out_pad, groups = False, (0,) * nd, int(args[6])
    else:
        transposed, out_pad, groups = bool(args[6]), tuple(args[7]), int(args[8])
    pad = args[4]
    attrs = {
        "kernel_size": tuple(w[2:]), "stride": rules.as_tuple(tuple(args[3]), nd),
        "padding": pad if isinstance(pad, str) else rules.as_tuple(tuple(pad), nd),
        "dilation": rules.as_tuple(tuple(args[5]), nd), "groups": groups,
        "bias": True if args[2] is not None else None, "padding_mode": "zeros",
    }  # fmt: skip
    if transposed:
        attrs.update(in_channels=w[0], out_channels=w[1] * groups,
                     output_padding=rules.as_tuple(out_pad, nd))  # fmt: skip
    else:
        attrs.update(in_channels=w[1] * groups, out_channels=w[0])
    return attrs


def _max_pool_attrs(base: str, args: Sequence) -> dict[str, Any]:
    nd = 2 if "2d" in base else int(base[-2]) if base[-1] == "d" else 2
    return {**_pool_attrs(args, nd, True), "return_indices": base.endswith("indices")}


def _avg_pool_attrs(base: str, args: Sequence) -> dict[str, Any]:
    return _pool_attrs(args, int(base[-2]), False)


def _adaptive_pool_attrs(base: str, args: Sequence) -> dict[str, Any]:
    size = list(args[1])
    return {"output_size": size[0] if len(set(size)) == 1 else tuple(size), "return_indices": False}


def _linear_attrs(base: str, args: Sequence) -> dict[str, Any]:
    if base == "addmm":  # addmm(bias, input, weight.t())
        w = shape_of(args[2])
        return {"in_features": w[0], "out_features": w[1], "bias": True}
    w = shape_of(args[1])
    return {"in_features": w[1], "out_features": w[0], "bias": True if args[2] is not None else None}


def _batch_norm_attrs(base: str, args: Sequence) -> dict[str, Any] | None:
    for t in args[1:5]:  # the weight, bias or statistics: whichever the call has
        if isinstance(t, TENSOR_TYPES):
            return {"num_features": shape_of(t)[0]}
    return None


def _flatten_attrs(base: str, args: Sequence) -> dict[str, Any]:
    return {"start_dim": int(args[1]), "end_dim": int(args[2])}


# The layer attributes each principal aten call shows, by the op's name.
_ATTRS_FROM_CALL = {
    **dict.fromkeys(("conv1d", "conv2d", "conv3d", "convolution", "_convolution"), _conv_attrs),
    **dict.fromkeys(("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices"), _max_pool_attrs),
    **dict.fromkeys(("avg_pool1d", "avg_pool2d", "avg_pool3d"), _avg_pool_attrs),
    **dict.fromkeys(("linear", "addmm"), _linear_attrs),
    **dict.fromkeys(("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
                     "_native_batch_norm_legit", "cudnn_batch_norm"), _batch_norm_attrs),
    "flatten": _flatten_attrs,
}  # fmt: skip


def hyper_from_aten(base: str, args: Sequence, inplace_name: bool) -> dict[str, Any] | None:
    """Layer attributes from the principal aten call of a layer (traced and exported graphs keep
    no constants): convolution, pooling, linear, batch norm, flatten, activation."""
    read = _ATTRS_FROM_CALL.get(base)
    if read is None and base.startswith(("adaptive_avg_pool", "adaptive_max_pool", "_adaptive_avg_pool")):
        read = _adaptive_pool_attrs
    if read is None:
        return {"inplace": inplace_name} if base in SHAPE_PRESERVING else None
    try:
        return read(base, args)
    except (IndexError, TypeError, ValueError):  # a call of another overload: no attributes
        return None


# ---------------------------------------------------------------------- traced layers' graphs


# The aten calls of a layer whose arguments carry its hyper-parameters (``hyper_from_aten`` reads
# them), in the form every graph has them: TorchScript's and torch.export's layer ops start here.
LAYER_CALL_OPS = frozenset(
    {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "max_pool1d", "max_pool2d",
     "max_pool3d", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
     "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool2d",
     "linear", "batch_norm", "flatten"}
)  # fmt: skip
# A traced layer's principal op in its own TorchScript graph.
_LAYER_OPS = LAYER_CALL_OPS | {"adaptive_max_pool1d", "adaptive_max_pool3d"} | SHAPE_PRESERVING


def scan_layer_graph(graph):
    """(aten op name, [(kind, value)]) for the first layer op of a traced layer's graph; kind is
    'const' for constant arguments, 'attr' for the module's own tensors, 'input' otherwise."""
    consts: dict[int, Any] = {}
    attrs: dict[int, str] = {}
    self_id = next(iter(graph.inputs())).unique()
    for n in graph.nodes():
        kind = n.kind()
        if kind.startswith("aten::") and kind[6:] in _LAYER_OPS:
            return kind[6:], [_argument_kind(v.unique(), consts, attrs) for v in n.inputs()]
        _note_value(n, kind, self_id, consts, attrs)
    return None


def _note_value(n, kind: str, self_id: int, consts: dict[int, Any], attrs: dict[int, str]) -> None:
    """Remember what a node before the layer op makes: a constant (a list of constants is one
    too), or an attribute of the module itself."""
    if kind == "prim::Constant":
        if n.output().type().kind() != "FunctionType":
            consts[n.output().unique()] = n.output().toIValue()
    elif kind == "prim::ListConstruct":
        ins = [v.unique() for v in n.inputs()]
        if all(i in consts for i in ins):
            consts[n.output().unique()] = [consts[i] for i in ins]
    elif kind == "prim::GetAttr":
        if next(iter(n.inputs())).unique() == self_id:
            attrs[n.output().unique()] = n.s("name")


def _argument_kind(u: int, consts: dict[int, Any], attrs: dict[int, str]) -> tuple[str, Any]:
    if u in consts:
        return ("const", consts[u])
    if u in attrs:
        return ("attr", attrs[u])
    return ("input", TracedTensor((), torch.float32))
