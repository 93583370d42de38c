"""``resviz render``: which file format was asked for, and DOT output (no Qt here).

SVG, PNG and PDF are painted by the app's own scene; the command line calls
:func:`resviz.gui.graph.scene_export.render_report` for those itself, so this package stays headless.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ResvizError

FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv")
QT_FORMATS = (".svg", ".png", ".pdf")


def output_format(path) -> str:
    """The output's extension (``.svg`` ...), or a clear error naming the formats resviz writes."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ResvizError(
            f"cannot render to '{path.name}': the output file must end in .svg, .png, .pdf or .dot"
        )
    return ext


def needs_qt(path) -> bool:
    return output_format(path) in QT_FORMATS
