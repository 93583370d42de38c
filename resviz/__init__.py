"""resviz: see, check and train residual networks.

    >>> import resviz
    >>> report = resviz.analyze(model, (1, 3, 224, 224))
    >>> report.ok, [m.block for m in report.mismatches]
    >>> resviz.show(model, (1, 3, 224, 224))        # the desktop app on a live module
    >>> with resviz.monitor(model, "runs/r1", input_shape=(1, 3, 32, 32)) as mon:
    ...     ...; loss.backward(); opt.step(); mon.step(loss)   # probes in your own loop

``analyze`` never modifies the model (device, mode, weights and hooks stay as they were) and never
raises for shape problems: they are in ``report.mismatches`` and ``report.errors``.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["analyze", "monitor", "show", "Report", "Input", "__version__"]


def analyze(model, input_shape=None, **kwargs):
    """Trace ``model`` at ``input_shape`` (``(1, 3, 224, 224)``, taken exactly as given) → Report.

    ``dtype=torch.int64`` for token ids; ``inputs=`` example tensors instead of a shape: one, a
    sequence (positional arguments) or a mapping (keyword arguments). See ``resviz.core.inputs``.
    """
    from .core.analysis.pipeline import analyze_any

    return analyze_any(model, input_shape, **kwargs)


def monitor(model, run_dir=None, *, input_shape=None, every: int = 1, **kwargs):
    """Per-block gradient probes on ``model`` for your own training loop; writes a run directory::

        with resviz.monitor(model, "runs/r1", input_shape=(1, 3, 32, 32)) as mon:
            for x, y in loader:
                loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
                mon.step(loss)          # one JSON line per recorded step in runs/r1/steps.jsonl

    ``every=N`` records every N-th step. Works under DDP (only rank 0 writes; norms are the
    global batch's). ``close()`` (or leaving the ``with``) leaves the model exactly as it was.
    See :mod:`resviz.core.training.monitor`."""
    from .core.training.monitor import monitor as _monitor

    return _monitor(model, run_dir, input_shape=input_shape, every=every, **kwargs)


def show(model, input_shape=None, **kwargs):
    """Open the resviz window on a live ``nn.Module`` (from a script or Jupyter)."""
    from .gui.app import show as _show

    return _show(model, input_shape, **kwargs)


def __getattr__(name):
    if name == "Report":
        from .core.analysis.pipeline import Report

        return Report
    if name == "Input":
        from .core.inputs import Input

        return Input
    raise AttributeError(name)
