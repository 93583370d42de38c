"""Colours for pictures of networks, for light and dark desktops (hex strings, no Qt here).

Shortcut kinds get distinct colours *and* distinct dash patterns, so identity and projection
shortcuts differ also for colour-blind users and in greyscale prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Theme:
    name: str
    background: str
    text: str
    text_dim: str
    edge: str
    edge_label: str
    node_border: str
    selection: str
    hover: str
    broken: str
    broken_fill: str
    stage_fills: tuple[str, str]
    stage_text: str
    block_frame: str
    block_fill: str
    kinds: dict[str, str] = field(default_factory=dict)  # layer category -> fill
    shortcuts: dict[str, str] = field(default_factory=dict)  # shortcut kind -> colour


LIGHT = Theme(
    name="light",
    background="#ffffff",
    text="#111827",
    text_dim="#4b5563",
    edge="#374151",
    edge_label="#374151",
    node_border="#6b7280",
    selection="#2563eb",
    hover="#93c5fd",
    broken="#dc2626",
    broken_fill="#fee2e2",
    stage_fills=("#f8fafc", "#f1f5f9"),
    stage_text="#334155",
    block_frame="#94a3b8",
    block_fill="#ffffff",
    kinds={
        "conv": "#dbeafe", "norm": "#e5e7eb", "act": "#fef9c3", "pool": "#ccfbf1",
        "linear": "#ede9fe", "add": "#ffffff", "block": "#ffffff", "module": "#f3f4f6",
        "io": "#1f2937", "other": "#f3f4f6", "rollup": "#f1f5f9",
    },  # fmt: skip
    shortcuts={
        "identity": "#15803d", "projection": "#c2410c", "zero-pad": "#7e22ce",
        "pool": "#0f766e", "other": "#4b5563", "none": "#9ca3af",
        "merge": "#64748b",
    },  # fmt: skip
)

DARK = Theme(
    name="dark",
    background="#111827",
    text="#f3f4f6",
    text_dim="#cbd5e1",
    edge="#cbd5e1",
    edge_label="#d1d5db",
    node_border="#9ca3af",
    selection="#60a5fa",
    hover="#3b82f6",
    broken="#f87171",
    broken_fill="#4c1d1d",
    stage_fills=("#1f2937", "#18212f"),
    stage_text="#e2e8f0",
    block_frame="#64748b",
    block_fill="#1f2937",
    kinds={
        "conv": "#1e3a5f", "norm": "#374151", "act": "#4a4322", "pool": "#134e4a",
        "linear": "#3b2f63", "add": "#1f2937", "block": "#1f2937", "module": "#273244",
        "io": "#e5e7eb", "other": "#374151", "rollup": "#273244",
    },  # fmt: skip
    shortcuts={
        "identity": "#4ade80", "projection": "#fb923c", "zero-pad": "#c084fc",
        "pool": "#2dd4bf", "other": "#9ca3af", "none": "#6b7280",
        "merge": "#94a3b8",
    },  # fmt: skip
)

# Dash patterns (in units of pen width, Qt/SVG style); None is a solid line.
SHORTCUT_DASH: dict[str, tuple[float, ...] | None] = {
    "identity": (5, 3),
    "projection": None,
    "zero-pad": (1, 2),
    "pool": (6, 2, 1, 2),
    "other": (3, 3),
    "merge": (1, 3),  # branches of a split merging inside a block, not a skip
}


@dataclass(frozen=True)
class LineStyle:
    """How a line is stroked, for Qt and Graphviz alike (widths in px, dashes in pen widths)."""

    color: str
    width: float
    dash: tuple[float, ...] | None = None  # None: solid
    halo: str | None = None  # a wider, paler stroke under the line that makes it stand out
    halo_width: float = 0.0


BLOCK_FRAME_DASH = (4.0, 3.0)


def edge_style(theme: Theme, kind: str, shortcut: str | None, broken: bool) -> LineStyle:
    """A data edge: main path, a shortcut (colour and dash by kind), or an operand of a broken add.

    A broken add's edges are the ones the user must find, and they run inside the broken block's
    red dashed frame: they are drawn solid, twice as heavy, over a pale halo, so they never read
    as part of the frame (and stay distinct in greyscale)."""
    if broken:
        return LineStyle(theme.broken, 3.4, None, halo=theme.broken_fill, halo_width=10.0)
    if kind == "skip":
        return LineStyle(theme.shortcuts.get(shortcut or "other", theme.edge), 2.2,
                         SHORTCUT_DASH.get(shortcut or "other"))  # fmt: skip
    return LineStyle(theme.edge, 1.5)


def frame_style(theme: Theme, broken: bool) -> LineStyle:
    """The dashed frame of an expanded block (red around a mismatch, lighter than its edges)."""
    if broken:
        return LineStyle(theme.broken, 1.6, BLOCK_FRAME_DASH)
    return LineStyle(theme.block_frame, 1.2, BLOCK_FRAME_DASH)


def category(op_type: str, kind: str = "op") -> str:
    """Layer category used for fills: conv, norm, act, pool, linear, add, ..."""
    if kind in ("input", "output"):
        return "io"
    if kind in ("block", "module", "rollup"):
        return kind
    t = op_type.lower()
    if "conv" in t:
        return "conv"
    if "norm" in t:
        return "norm"
    if "pool" in t:
        return "pool"
    if "linear" in t:
        return "linear"
    if t in ("add", "add_"):
        return "add"
    if any(a in t for a in ("relu", "gelu", "silu", "sigmoid", "tanh", "elu", "swish", "mish",
                            "softmax", "hardtanh")):  # fmt: skip
        return "act"
    return "other"


def is_dark_color(hex_color: str) -> bool:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return (0.299 * r + 0.587 * g + 0.114 * b) < 128
