"""The TorchScript operators that work on Python values rather than tensors — list and dict
methods, int/float arithmetic and comparisons, ``aten::size``, ``aten::format``, ``Int(tensor)`` —
evaluated as plain Python.

Why: a graph computes sizes (``x.size(0)``, ``[n, -1]``) and checks (``if x.dim() != 4``) with
these, and they must come out exact for shapes to stay exact. A size read off a traced tensor is
known; a tensor's *value* never is, and asking for one is a clear error, not a guess.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch

from .. import shape_rules as rules
from .common import DTYPES, TENSOR_TYPES, TracedTensor, shape_of


def _size(x, dim=None):
    s = shape_of(x)
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
        out += (rules.fmt_shape(shape_of(a)) if isinstance(a, TENSOR_TYPES) else str(a)) + p
    return out


def _int(v):
    if isinstance(v, TracedTensor):
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
    if isinstance(v, TracedTensor) or (isinstance(v, torch.Tensor) and v.device.type == "meta"):
        raise RuntimeError("the value of a tensor is not known during shape analysis")
    return v.item()


def _minmax(fn):
    def run(*args):
        return fn(args[0]) if len(args) == 1 else fn(args[0], args[1])

    return run


def _tensor(data, dtype=None, device=None, requires_grad=False):
    dt = DTYPES[dtype] if isinstance(dtype, int) else dtype
    return torch.tensor(data, dtype=dt)


def _numel(x):
    return math.prod(shape_of(x))


def _is_fp(x):
    return x.dtype.is_floating_point


def _div(a, b):
    return a / b


PY_OPS: dict[str, Any] = {
    # always Python, whatever the argument types
    "size": _size, "size.int": _size, "dim": lambda x: len(shape_of(x)), "numel": _numel,
    "len.Tensor": lambda x: shape_of(x)[0], "is_floating_point": _is_fp,
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
