"""One opened model: where it came from, the input shape chosen, and its analysis.

The command line and the desktop app both open models through :func:`open_model`, so a model
source means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .analysis import Report, analyze_any
from .errors import ResvizError
from .shapes import parse_shape

DEFAULT_IMAGE_SIZE = 224


@dataclass
class Session:
    loaded: object  # loading.LoadedModel
    input_shape: tuple[int, ...]
    report: Report
    notes: list[str] = field(default_factory=list)


def guess_input_shape(module) -> tuple[tuple[int, ...], str]:
    """An input shape for a model that does not declare one, and a note saying so."""
    if isinstance(module, nn.Module):
        for m in module.modules():
            if isinstance(m, (nn.Conv2d,)):
                c = m.in_channels
                shape = (1, c, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
                break
            if isinstance(m, nn.Conv1d):
                shape = (1, m.in_channels, 1024)
                break
            if isinstance(m, nn.Linear):
                shape = (1, m.in_features)
                break
        else:
            shape = (1, 3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    else:
        shape = (1, 3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    text = "x".join(map(str, shape))
    return shape, f"no input shape given; assuming {text} (use --input to choose)"


def resolve_input(loaded, input_shape) -> tuple[tuple[int, ...], list[str]]:
    if input_shape is not None:
        return parse_shape(input_shape), []
    if getattr(loaded, "input_shape", None):
        return tuple(loaded.input_shape), []
    target = loaded.module if loaded.module is not None else None
    shape, note = guess_input_shape(target)
    return shape, [note]


def open_model(source: str, *, input_shape=None, kwargs_text: str | None = None,
               kwargs: dict | None = None, trust: bool = False) -> Session:  # fmt: skip
    from .loading import load_model, parse_kwargs

    if kwargs is None:
        kwargs = parse_kwargs(kwargs_text) if kwargs_text else None
    loaded = load_model(source, kwargs=kwargs, trust=trust)
    return analyze_session(loaded, input_shape)


def analyze_session(loaded, input_shape=None) -> Session:
    shape, notes = resolve_input(loaded, input_shape)
    target = loaded.exported if getattr(loaded, "exported", None) is not None else loaded.module
    if target is None:
        raise ResvizError(f"{loaded.name}: nothing to analyse")
    report = analyze_any(target, shape, name=loaded.name)
    spec = getattr(loaded, "spec", None)
    if spec is not None and report.mismatches:
        from .spec_fix import attach_spec_fixes

        attach_spec_fixes(spec, report)  # a spec's user edits fields, not PyTorch code
    return Session(loaded, shape, report, list(getattr(loaded, "notes", [])) + notes)
