"""What every part of the TorchScript interpreter shares: the traced tensor :class:`_T`, walking
nested arguments for tensors, TorchScript's dtype numbering, and the two exceptions that unwind
an interpretation.

It sits below everything else in the package (and under ``export_trace.py``, which follows
exported aten graphs with the same :class:`_T`), so that the aten evaluator, the layer readers
and the interpreter agree on what a tensor is without importing one another.
"""

from __future__ import annotations

import torch

from .. import shape_rules as rules
from ..eager import _clean_message

Shape = tuple[int, ...]


class _T:
    """A tensor the interpreter follows: its shape, dtype and current value id (None while quiet)."""

    __slots__ = ("shape", "dtype", "vid")

    def __init__(self, shape: Shape, dtype: torch.dtype, vid: int | None = None):
        self.shape = shape
        self.dtype = dtype
        self.vid = vid

    def __repr__(self):
        return f"_T({rules.fmt_shape(self.shape)}, {self.dtype}, v{self.vid})"


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
    # trace._tensors does this for real tensors only; here a _T counts as much as a constant
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


class _Abort(Exception):
    """Unwinds the interpretation once a fatal error has been recorded."""


class _Quiet(Exception):
    """A failure inside a leaf layer's own code; the leaf records it."""


def _clean(e: BaseException) -> str:
    # A rule's message and a quiet failure already read as a diagnosis, like PyTorch's own errors.
    return _clean_message(e, plain=(RuntimeError, rules.RuleError, _Quiet))
