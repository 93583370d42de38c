"""What a model is fed: one or several example inputs, each a shape, a dtype and, for a keyword
argument of ``forward``, a name.

From Python a shape is taken exactly as given (``(1, 16, 100)`` is a 3-D input); only text typed
on the command line or in the app reads a bare ``3x224x224`` as an image with batch 1. Example
tensors may be passed instead of shapes: only their shapes and dtypes are used, never their values.

    analyze(model, (1, 3, 224, 224))                              # one float input
    analyze(model, (1, 16), dtype=torch.int64)                    # token ids
    analyze(model, inputs=torch.zeros(1, 16, dtype=torch.long))   # an example tensor
    analyze(model, inputs=(ids, mask))                            # forward(ids, mask)
    analyze(model, inputs={"input_ids": ids, "attention_mask": mask})   # forward(**inputs)
    analyze(model, inputs=[Input((1, 16), torch.int64, name="ids")])    # specs, no tensors

On the command line: ``--input ids:1x16:int64`` (``[NAME:]SHAPE[:DTYPE]``), repeatable; an input
without a name is positional, one with a name a keyword argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .errors import ResvizError, ShapeSyntaxError
from .shapes import format_shape, parse_shape

Shape = tuple[int, ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
                  "int": "int32", "short": "int16", "byte": "uint8"}  # fmt: skip


@dataclass(frozen=True)
class Input:
    """One input of ``forward``: its shape, its dtype, and the keyword it is passed by (None:
    positional, in order)."""

    shape: Shape
    dtype: torch.dtype = torch.float32
    name: str | None = None

    def describe(self) -> str:
        text = f"{format_shape(self.shape)}:{dtype_name(self.dtype)}"
        return f"{self.name}:{text}" if self.name else text

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": dtype_name(self.dtype)}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(text: str) -> torch.dtype:
    key = text.strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    dtype = getattr(torch, key, None)
    if not isinstance(dtype, torch.dtype):
        raise ShapeSyntaxError(
            f"unknown dtype '{text}': expected one of float32, float16, bfloat16, float64, int64, "
            "int32, int16, int8, uint8, bool"
        )
    return dtype


def parse_input(text: str) -> Input:
    """``[NAME:]SHAPE[:DTYPE]`` as typed on the command line: ``ids:1x16:int64``, ``1x16:int64``,
    ``3x224x224`` (a bare three-dimensional shape with no dtype is an image: batch 1 is added)."""
    parts = [p.strip() for p in text.strip().split(":")]
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ShapeSyntaxError(
            f"input '{text}' is not [NAME:]SHAPE[:DTYPE]: expected something like 3x224x224, "
            "1x16:int64 or ids:1x16:int64"
        )
    name = None
    if len(parts) > 1 and _NAME.match(parts[0]) and not _looks_like_shape(parts[0]):
        name = parts.pop(0)
    if len(parts) > 2:
        raise ShapeSyntaxError(f"input '{text}': '{parts[0]}' is not a valid argument name")
    dtype = parse_dtype(parts[1]) if len(parts) == 2 else None
    shape = parse_shape(parts[0], batch=dtype is None and name is None)
    return Input(shape, dtype or torch.float32, name)


def _looks_like_shape(text: str) -> bool:
    return bool(re.fullmatch(r"[\d\sx×,*()\[\]]+", text))


def resolve_inputs(input_shape=None, inputs=None, dtype: torch.dtype | None = None) -> list[Input]:
    """The inputs of one analysis, from :func:`resviz.analyze`'s ``input_shape``/``dtype`` or its
    ``inputs`` (a tensor, a sequence of tensors or :class:`Input`, or a mapping name → tensor)."""
    if inputs is None:
        return [_input_from_shape(input_shape, dtype)]
    if input_shape is not None:
        raise ResvizError("give either input_shape or inputs, not both")
    return _args_before_kwargs(_checked_names(_inputs_from_values(inputs, dtype)))


def _input_from_shape(input_shape, dtype: torch.dtype | None) -> Input:
    if input_shape is None:
        raise ResvizError("give the input: analyze(model, input_shape) or analyze(model, inputs=...)")
    if isinstance(input_shape, Input):
        return input_shape
    return Input(parse_shape(input_shape, batch=False), dtype or torch.float32)


def _inputs_from_values(inputs, dtype: torch.dtype | None) -> list[Input]:
    """One :class:`Input` per value of ``inputs`` (keyword inputs named by a mapping's keys)."""
    if isinstance(inputs, (torch.Tensor, Input)):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        out = [_one(v, str(k), dtype) for k, v in inputs.items()]
    elif isinstance(inputs, Sequence) and not isinstance(inputs, str):
        out = [_one(v, None, dtype) for v in inputs]
    else:
        raise ResvizError(
            f"inputs must be a tensor, a sequence of tensors or a mapping of names to tensors; "
            f"got a {type(inputs).__name__}"
        )
    if not out:
        raise ResvizError("inputs is empty: the model needs at least one input")
    return out


def _checked_names(inputs: list[Input]) -> list[Input]:
    names = [i.name for i in inputs if i.name]
    if len(set(names)) != len(names):
        raise ResvizError(f"inputs name an argument twice: {', '.join(names)}")
    return inputs


def _args_before_kwargs(inputs: list[Input]) -> list[Input]:
    """Positional inputs first, in their order, then the named ones, in theirs (``forward`` can
    only be called that way)."""
    return [i for i in inputs if i.name is None] + [i for i in inputs if i.name]


def _one(v, name: str | None, dtype) -> Input:
    if isinstance(v, Input):
        return v if name is None or v.name == name else Input(v.shape, v.dtype, name)
    if isinstance(v, torch.Tensor):
        return Input(tuple(v.shape), v.dtype, name)
    if isinstance(v, Sequence) and not isinstance(v, str):
        return Input(parse_shape(v, batch=False), dtype or torch.float32, name)
    label = f"input '{name}'" if name else "an input"
    raise ResvizError(f"{label} is a {type(v).__name__}: expected a tensor, a shape or an Input")
