"""``resviz render``: DOT without Qt; SVG, PNG and PDF through the app's own scene."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ResvizError

FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv")


def export_graph(report, path, *, depth: int | None = None, layout: str = "auto") -> Path:
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ResvizError(
            f"cannot render to '{path.name}': the output file must end in .svg, .png, .pdf or .dot"
        )
    if ext in (".dot", ".gv"):
        from .dot import write_dot

        return write_dot(report, path, depth=depth)
    # Qt is imported only here, so `resviz check` and DOT output never load it.
    from importlib import import_module

    gui_export = import_module("resviz.gui.export")
    return gui_export.render_report(report, path, depth=depth, engine=layout)
