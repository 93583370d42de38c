"""resviz: see, check and train residual networks.

    >>> import resviz
    >>> report = resviz.analyze(model, (1, 3, 224, 224))
    >>> report.ok, [m.block for m in report.mismatches]
    >>> resviz.show(model, (1, 3, 224, 224))        # the desktop app on a live module

``analyze`` never modifies the model (device, mode, weights and hooks stay as they were) and never
raises for shape problems: they are in ``report.mismatches`` and ``report.errors``.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["analyze", "show", "Report", "Input", "__version__"]


def analyze(model, input_shape=None, **kwargs):
    """Trace ``model`` at ``input_shape`` (``(1, 3, 224, 224)``, taken exactly as given) → Report.

    ``dtype=torch.int64`` for token ids; ``inputs=`` example tensors instead of a shape: one, a
    sequence (positional arguments) or a mapping (keyword arguments). See ``resviz.core.inputs``.
    """
    from .core.analysis import analyze_any

    return analyze_any(model, input_shape, **kwargs)


def show(model, input_shape=None, **kwargs):
    """Open the resviz window on a live ``nn.Module`` (from a script or Jupyter)."""
    from .gui.app import show as _show

    return _show(model, input_shape, **kwargs)


def __getattr__(name):
    if name == "Report":
        from .core.analysis import Report

        return Report
    if name == "Input":
        from .core.inputs import Input

        return Input
    raise AttributeError(name)
