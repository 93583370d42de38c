"""How a tall picture is cut into columns (PNG) or pages (PDF) that readers can open.

A residual chain is drawn as one tall column: resnet1202 with its 600 blocks folded is about
560 x 42,700 pt. As one PNG at 2 px per pt that is 1,127 x 85,312 px (384 MB decoded), which Qt's
image reader and most viewers refuse, and as one PDF page it is past the 14,400 pt a PDF page may
measure. Such a picture is cut between nodes (never through a node or an edge's shape label) into
spans of about equal height, laid side by side in one PNG or one span per PDF page. When even that
would not make a readable file, :class:`PictureTooBig` says so, with the sizes and the options
that draw less.

Coordinates are the layout's (pixels = points, y down). No Qt here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import ResvizError
from .layout import Layout

PNG_MAX_SIDE = 32_767  # past this many pixels a side, many decoders and painters give up
PNG_MAX_BYTES = 256 * 1024**2  # Qt's default image allocation limit (4 bytes per pixel)
PDF_MAX_PAGE = 14_400.0  # points: the PDF page size limit (200 inches, ISO 32000 Annex C)
MIN_SCALE = 1.0  # px per pt below which 8 pt shape labels stop being legible
COLUMN_GAP = 24.0  # between columns of a PNG, in layout units

SMALLER = (
    "draw less with --rollup (runs of identical blocks as one node), --collapse stages "
    "(one node per stage) or a smaller --depth"
)


class PictureTooBig(ResvizError):
    """The picture cannot be written as a file that image readers open; nothing was written."""


@dataclass
class Sheet:
    """One output image or PDF page: spans of the picture (y0, y1) placed side by side."""

    spans: list[tuple[float, float]]
    width: float  # in layout units, before scaling
    height: float


@dataclass
class Plan:
    scale: float  # output units per layout unit (px for PNG, pt for PDF)
    sheets: list[Sheet]
    x0: float  # left edge of the picture (every span has the full picture width)
    picture_width: float


def obstacles(layout: Layout) -> list[tuple[float, float]]:
    """Vertical extents a cut must not pass through: nodes, shape labels, group titles."""
    spans = [(b.y - 3, b.bottom + 3) for b in layout.nodes.values()]
    for r in list(layout.edges) + list(layout.self_arcs.values()):
        if r.label_pos is not None and r.points:
            spans.append((r.label_pos[1] - 8, r.label_pos[1] + 8))
    for g in layout.groups.values():
        spans.append((g.y - 2, g.y + 40))  # the title at a band's or frame's top
    return _merge(spans)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def cut_spans(top: float, bottom: float, max_h: float,
              blocked: list[tuple[float, float]]) -> list[tuple[float, float]]:  # fmt: skip
    """Cut [top, bottom] into spans of at most ``max_h`` (where the gaps allow), each cut at the
    lowest free y that keeps the span within ``max_h``. A single obstacle taller than ``max_h``
    is kept whole: its span is as tall as it needs."""
    spans = []
    start = top
    while bottom - start > max_h:
        limit = start + max_h
        cut = None
        for a, b in blocked:  # the last free y at or above limit
            if a > limit:
                break
            if a <= limit <= b:  # limit inside an obstacle: cut just above it
                cut = a
                break
            cut = limit  # limit lies after this obstacle, in free space
        if cut is None:
            cut = limit
        if cut <= start + 1:  # an obstacle at the very top is taller than max_h: keep it whole
            cut = next((b for a, b in blocked if a <= start + 1 < b), limit)
        cut = min(cut, bottom)
        spans.append((start, cut))
        start = cut
    if bottom > start or not spans:
        spans.append((start, bottom))
    return spans


def _columns_for(width: float, height: float, aspect: float = 1.0) -> int:
    """Columns that make the sheet about ``aspect`` (width / height) wide."""
    return max(1, round(math.sqrt(height / max(width, 1.0) * aspect)))


def plan_png(layout: Layout, x0: float, y0: float, width: float, height: float,
             scale: float = 2.0, what: str = "the picture", smaller: str = SMALLER) -> Plan:  # fmt: skip
    """One PNG: the whole picture if it fits at ``scale`` (or less, down to legible), else columns.

    Raises :class:`PictureTooBig` before anything is drawn when no legible arrangement fits."""

    def fits(w: float, h: float, s: float) -> bool:
        pw, ph = math.ceil(w * s), math.ceil(h * s)
        return pw <= PNG_MAX_SIDE and ph <= PNG_MAX_SIDE and pw * ph * 4 <= PNG_MAX_BYTES

    scales = [s for s in (scale, 1.5, 1.25, MIN_SCALE) if s <= scale] or [scale]
    for s in scales:
        if fits(width, height, s):
            return Plan(s, [Sheet([(y0, y0 + height)], width, height)], x0, width)
    blocked = obstacles(layout)
    ncols = _columns_for(width, height)
    spans = cut_spans(y0, y0 + height, height / ncols * 1.04, blocked)
    sheet_h = max(b - a for a, b in spans)
    sheet_w = len(spans) * width + (len(spans) - 1) * COLUMN_GAP
    for s in scales:
        if fits(sheet_w, sheet_h, s):
            return Plan(s, [Sheet(spans, sheet_w, sheet_h)], x0, width)
    pw, ph = math.ceil(width * MIN_SCALE), math.ceil(height * MIN_SCALE)
    raise PictureTooBig(
        f"{what} is {width:,.0f} x {height:,.0f} pt: as a PNG at a legible 1 px per pt that is "
        f"{pw:,} x {ph:,} px ({pw * ph * 4 / 1024**2:,.0f} MB decoded), and even cut into "
        f"{len(spans)} columns it is {sheet_w * MIN_SCALE:,.0f} x {sheet_h * MIN_SCALE:,.0f} px, "
        f"more than image readers open (Qt and most viewers refuse images over "
        f"{PNG_MAX_BYTES // 1024**2} MB or {PNG_MAX_SIDE:,} px a side). Nothing was written. "
        f"To fix it, {smaller}, or write .svg or .pdf (paged) instead."
    )


def plan_pdf(layout: Layout, x0: float, y0: float, width: float, height: float,
             smaller: str = SMALLER) -> Plan:  # fmt: skip
    """One page if the picture fits a PDF page, else one page per span of about equal height.

    A picture wider than a page is scaled down to fit: PDF is vector, so it zooms back sharp."""
    scale = min(1.0, PDF_MAX_PAGE / width)
    if height * scale <= PDF_MAX_PAGE:
        return Plan(scale, [Sheet([(y0, y0 + height)], width, height)], x0, width)
    ncols = _columns_for(width * scale, height * scale, aspect=1 / math.sqrt(2))
    max_h = min(height / ncols * 1.04, PDF_MAX_PAGE / scale)
    spans = cut_spans(y0, y0 + height, max_h, obstacles(layout))
    sheets = []
    for a, b in spans:
        if (b - a) * scale > PDF_MAX_PAGE:  # one node taller than a page: nothing can cut it
            raise PictureTooBig(
                f"one part of the picture is {b - a:,.0f} pt tall with no place to cut it, past "
                f"the {PDF_MAX_PAGE:,.0f} pt a PDF page may measure. Nothing was written. "
                f"To fix it, {smaller}, or write .svg instead."
            )
        sheets.append(Sheet([(a, b)], width, b - a))
    return Plan(scale, sheets, x0, width)
