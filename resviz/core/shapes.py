"""Parsing and formatting of tensor shapes as users type and read them."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .errors import ShapeSyntaxError

Shape = tuple[int, ...]

_SEP = re.compile(r"\s*[x×,*]\s*|\s+")

# Limits that turn a typo into a message rather than an overflow deep inside torch: a dimension
# fits torch's 32-bit kernels and a whole input stays far from int64 once layers widen it.
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**40  # about 1.1e12 values: 4 TiB of float32, past any machine's memory


def parse_shape(text: str | Sequence[int], *, batch: bool = True) -> Shape:
    """Parse ``"1x3x224x224"``, ``"3x224x224"`` (batch 1 implied), ``"3,32,32"`` or a sequence.

    A three-dimensional shape is taken as C×H×W and given a batch of 1, the way users write image
    sizes. Anything else must have between one and five positive dimensions.
    """
    dims = _dims_from_text(text) if isinstance(text, str) else _dims_from_sequence(text)
    _check_dims(dims)
    if batch and len(dims) == 3:
        dims = (1, *dims)
    return dims


def _dims_from_text(text: str) -> Shape:
    """The integers of a typed shape (``1x3x32x32``, ``(3, 32, 32)``), not yet range-checked."""
    raw = text.strip().strip("()[]")
    if not raw:
        raise ShapeSyntaxError("empty input shape: expected something like 1x3x224x224")
    parts = [p for p in _SEP.split(raw) if p]
    if any(len(p.lstrip("+-")) > 19 for p in parts):
        raise ShapeSyntaxError(
            f"input shape '{_clip(text)}' has a dimension of more than 19 digits; each dimension "
            f"must be at most {MAX_DIM}"
        )
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ShapeSyntaxError(
            f"input shape '{text}' is not a list of integers: expected something like "
            "1x3x224x224 or 3x224x224"
        ) from None


def _dims_from_sequence(dims: Sequence[int]) -> Shape:
    try:
        return tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise ShapeSyntaxError(f"input shape {dims!r} is not a sequence of integers") from None


def _check_dims(dims: Shape) -> None:
    """Raise :class:`ShapeSyntaxError` unless ``dims`` is 1 to 5 positive dimensions, each within
    torch's 32-bit limit and with at most :data:`MAX_ELEMENTS` values in all."""
    if not dims or len(dims) > 5:
        raise ShapeSyntaxError(f"input shape '{format_shape(dims)}' must have 1 to 5 dimensions")
    if any(d <= 0 for d in dims):
        raise ShapeSyntaxError(
            f"input shape '{_clip(format_shape(dims))}' has a dimension that is not positive"
        )
    if any(d > MAX_DIM for d in dims):
        raise ShapeSyntaxError(
            f"input shape '{_clip(format_shape(dims))}' has a dimension past the limit of {MAX_DIM} "
            "(2^31 - 1)"
        )
    numel = math.prod(dims)
    if numel > MAX_ELEMENTS:
        raise ShapeSyntaxError(
            f"input shape '{format_shape(dims)}' has {numel:.3g} elements, past the limit of "
            f"{MAX_ELEMENTS:.3g} (2^40) elements per input"
        )


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def format_shape(shape: Sequence[int], *, batch: bool = True, sep: str = "x") -> str:
    """``(1, 64, 56, 56)`` → ``1x64x56x56``; with ``batch=False`` → ``64x56x56``.

    This ``x`` form is what users type (``--input``, the app's shape field); shapes in text meant
    to be read use :func:`human_shape`."""
    dims = tuple(shape)
    if not batch and len(dims) > 1:
        dims = dims[1:]
    return sep.join(str(d) for d in dims) if dims else "scalar"


def human_shape(shape: Sequence[int], *, batch: bool = True) -> str:
    """A tensor shape in words for people: ``64×56×56`` (the one convention in causes, tables,
    pictures and messages; JSON keeps shapes as lists)."""
    return format_shape(shape, batch=batch, sep="×")
