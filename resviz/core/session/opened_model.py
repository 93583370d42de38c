"""One opened model: where it came from, the input shape chosen, and its analysis.

The command line and the desktop app both open models through :func:`open_model`, so a model
source means the same thing everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from ..analysis.pipeline import analyze_any
from ..errors import ResvizError
from ..inputs import Input, parse_input
from ..shapes import parse_shape
from .session_record import Session

DEFAULT_IMAGE_SIZE = 224
DEFAULT_TOKENS = 16


def guess_input(module) -> tuple[Input, str]:
    """An input for a model that does not declare one, and a note saying so: from the first
    layer that fixes it (token ids for an Embedding, an image for a conv, features for a Linear)."""
    spec = Input((1, 3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE))
    if isinstance(module, nn.Module):
        for m in module.modules():
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
                spec = Input((1, DEFAULT_TOKENS), torch.int64)
                break
            if isinstance(m, nn.Conv2d):
                spec = Input((1, m.in_channels, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE))
                break
            if isinstance(m, nn.Conv1d):
                spec = Input((1, m.in_channels, 1024))
                break
            if isinstance(m, nn.Linear):
                spec = Input((1, m.in_features))
                break
    what = "token ids " if not spec.dtype.is_floating_point else ""
    return spec, f"no input shape given; assuming {what}{spec.describe()} (use --input to choose)"


def resolve_inputs_typed(loaded, input_shape) -> tuple[list[Input], list[str]]:
    """The inputs of a session from what a user typed (CLI ``--input``, the app's shape field):
    one text or several ``[NAME:]SHAPE[:DTYPE]``, a shape (a bare ``3x224x224`` is an image with
    batch 1), :class:`Input` specs, or nothing (the source's own input, else a guess)."""
    if input_shape is not None:
        items = [input_shape] if isinstance(input_shape, (str, Input)) else list(input_shape)
        if items and all(isinstance(i, (str, Input)) for i in items):
            return [i if isinstance(i, Input) else parse_input(i) for i in items], []
        return [Input(parse_shape(input_shape))], []
    if getattr(loaded, "input_shape", None):
        return [Input(tuple(loaded.input_shape))], []
    spec, note = guess_input(loaded.module if loaded.module is not None else None)
    return [spec], [note]


def resolve_input(loaded, input_shape) -> tuple[tuple[int, ...], list[str]]:
    """The first input's shape of :func:`resolve_inputs_typed`, and its notes."""
    specs, notes = resolve_inputs_typed(loaded, input_shape)
    return specs[0].shape, notes


def open_model(source: str, *, input_shape=None, kwargs_text: str | None = None,
               kwargs: dict | None = None, trust: bool = False) -> Session:  # fmt: skip
    from ..sources.loading import load_model, parse_kwargs

    if kwargs is None:
        kwargs = parse_kwargs(kwargs_text) if kwargs_text else None
    loaded = load_model(source, kwargs=kwargs, trust=trust)
    return analyze_session(loaded, input_shape)


def analyze_session(loaded, input_shape=None) -> Session:
    specs, notes = resolve_inputs_typed(loaded, input_shape)
    target = loaded.exported if getattr(loaded, "exported", None) is not None else loaded.module
    if target is None:
        raise ResvizError(f"{loaded.name}: nothing to analyse")
    report = analyze_any(target, inputs=specs, name=loaded.name)
    spec = getattr(loaded, "spec", None)
    if spec is not None and report.mismatches:
        from ..fixes.spec_edits import attach_spec_fixes

        attach_spec_fixes(spec, report)  # a spec's user edits fields, not PyTorch code
    notes = list(getattr(loaded, "notes", [])) + notes
    return Session(loaded, specs[0].shape, report, notes, specs)
