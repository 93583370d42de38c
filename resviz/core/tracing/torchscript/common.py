"""What every part of the TorchScript interpreter shares: the traced tensor :class:`TracedTensor`,
walking nested arguments for tensors, TorchScript's dtype numbering, and the failure of a leaf's
quiet run (the abort that unwinds an interpretation is the builder's ``TraceAborted``).

It sits below everything else in the package (and under ``exported.py``, which follows exported
aten graphs with the same :class:`TracedTensor`), so that the aten evaluator, the layer readers
and the interpreter agree on what a tensor is without importing one another.
"""

from __future__ import annotations

import torch

from .. import shape_rules as rules
from ..builder import PlainMessage

Shape = tuple[int, ...]


class TracedTensor:
    """A tensor the interpreter follows: its shape, dtype and current value id (None while quiet)."""

    __slots__ = ("shape", "dtype", "vid")

    def __init__(self, shape: Shape, dtype: torch.dtype, vid: int | None = None):
        self.shape = shape
        self.dtype = dtype
        self.vid = vid

    def __repr__(self):
        return f"TracedTensor({rules.fmt_shape(self.shape)}, {self.dtype}, v{self.vid})"


TENSOR_TYPES = (TracedTensor, torch.Tensor)  # what counts as a tensor here: traced, or a real constant
META = torch.device("meta")

# c10::ScalarType numbering: TorchScript passes dtypes around as these ints.
DTYPES = [
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
    torch.float64, torch.complex32, torch.complex64, torch.complex128, torch.bool, torch.qint8,
    torch.quint8, torch.qint32, torch.bfloat16,
]  # fmt: skip
DTYPE_INT = {d: i for i, d in enumerate(DTYPES)}


def shape_of(x) -> Shape:
    """The shape of a traced tensor or a real one, as a tuple."""
    return x.shape if isinstance(x, TracedTensor) else tuple(x.shape)




def has_tensor(obj) -> bool:
    """Is there a tensor (traced or real) in ``obj`` at any depth?"""
    if isinstance(obj, TENSOR_TYPES):
        return True
    if isinstance(obj, (list, tuple)):
        return any(has_tensor(o) for o in obj)
    if isinstance(obj, dict):
        return any(has_tensor(o) for o in obj.values())
    return False



def flat_tensors(obj, out: list) -> list:
    """The tensors in ``obj`` at any depth, appended to ``out``: a traced one counts as much as a
    constant (the eager tracer's ``_tensors`` does this for real tensors only)."""
    if isinstance(obj, TENSOR_TYPES):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            flat_tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            flat_tensors(o, out)
    return out




def arg_shapes(obj):
    """Arguments with every tensor replaced by its shape (a tuple), as ``rules.FUNC_RULES`` want."""
    if isinstance(obj, TENSOR_TYPES):
        return shape_of(obj)
    if isinstance(obj, list):
        return [arg_shapes(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(arg_shapes(o) for o in obj)
    return obj


def first_tensor(args):
    for a in args:
        if isinstance(a, TENSOR_TYPES):
            return a
        if isinstance(a, (list, tuple)):
            t = first_tensor(a)
            if t is not None:
                return t
    return None




class QuietFailure(PlainMessage):
    """A failure inside a leaf layer's own code (run quietly, recording nothing); the leaf records it."""


