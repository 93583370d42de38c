"""Hyper-parameters and short labels of recorded ops, for reports, tables and pictures."""

from __future__ import annotations

from typing import Any

from ..tracing.records import ModuleIndex, Op

# ``rules`` (and with it torch) is imported where a geometry is asked for, not here: the app draws
# its window from this module's labels before torch has finished importing on the worker thread.

_ATTRS = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "in_features", "out_features", "num_features", "num_channels", "num_groups",
    "normalized_shape", "output_size", "ceil_mode", "p", "inplace", "start_dim", "end_dim",
    "scale_factor", "mode", "eps", "momentum",
)  # fmt: skip


def hyperparams(op: Op, modules: ModuleIndex) -> dict[str, Any]:
    """The layer's hyper-parameters as plain values (kernel, stride, padding, channels, ...);
    ``modules``: the trace's (or report's) modules, where the layer is looked up by name."""
    m = modules.of(op)
    if m is None:
        return dict(op.attrs)
    out: dict[str, Any] = {}
    for name in _ATTRS:
        if hasattr(m, name):
            v = getattr(m, name)
            if isinstance(v, (int, float, bool, str, tuple, list)) or v is None:
                out[name] = list(v) if isinstance(v, tuple) else v
    if hasattr(m, "bias") and "in_channels" in out or "in_features" in out:
        out["bias"] = getattr(m, "bias", None) is not None
    if hasattr(m, "padding_mode") and m.padding_mode != "zeros":
        out["padding_mode"] = m.padding_mode
    return out


def _pair(v) -> str:
    if isinstance(v, (tuple, list)):
        if len(set(v)) == 1:
            return str(v[0])
        return "×".join(map(str, v))
    return str(v)


def short_label(op: Op, modules: ModuleIndex) -> str:
    """``Conv2d 3×3/2 64→128``, ``BatchNorm2d``, ``MaxPool2d 3×3/2``, ``add``."""
    m = modules.of(op)
    if m is None:
        return op.type
    t = op.type
    if hasattr(m, "kernel_size") and hasattr(m, "in_channels"):
        k = _pair(m.kernel_size)
        s = _pair(m.stride)
        label = f"{t} {k}×{k}" if "×" not in k else f"{t} {k}"
        if s != "1":
            label += f"/{s}"
        label += f" {m.in_channels}→{m.out_channels}"
        if getattr(m, "groups", 1) != 1:
            label += f" g{m.groups}"
        return label
    if hasattr(m, "kernel_size"):
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        return f"{t} {k}×{k}/{s}" if "×" not in k else f"{t} {k}/{s}"
    if hasattr(m, "in_features"):
        return f"{t} {m.in_features}→{m.out_features}"
    if hasattr(m, "output_size"):
        return f"{t} →{_pair(m.output_size)}"
    return t


def conv_geometry(op: Op, modules: ModuleIndex) -> dict[str, Any] | None:
    """Kernel, stride, padding, dilation and channels of a conv-like layer, or None."""
    m = modules.of(op)
    if m is None or not hasattr(m, "kernel_size") or not hasattr(m, "in_channels"):
        return None
    from ..tracing import shape_rules as rules

    g = rules.conv_geometry(m)  # ints, 1-tuples and lists alike: PyTorch accepts them all
    return {
        "kernel": g["kernel"],
        "stride": g["stride"],
        "padding": g["padding"],
        "dilation": g["dilation"],
        "in": m.in_channels,
        "out": m.out_channels,
        "groups": m.groups,
    }


def pool_geometry(op: Op, modules: ModuleIndex) -> dict[str, Any] | None:
    m = modules.of(op)
    if m is None or not hasattr(m, "kernel_size") or hasattr(m, "in_channels"):
        return None
    from ..tracing import shape_rules as rules

    nd = rules.spatial_dims(m)

    def t2(v):
        return rules.as_tuple(v, nd)

    return {
        "kernel": t2(m.kernel_size),
        "stride": t2(m.stride if m.stride is not None else m.kernel_size),
        "padding": t2(m.padding),
        "ceil_mode": bool(getattr(m, "ceil_mode", False)),
    }
