"""Terminal output: aligned tables, human numbers, colour only when writing to a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..core.shapes import human_shape


class Style:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream=None) -> Style:
        stream = stream or sys.stdout
        tty = hasattr(stream, "isatty") and stream.isatty()
        return cls(tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb")

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, t: str) -> str:
        return self._wrap("1", t)

    def dim(self, t: str) -> str:
        return self._wrap("2", t)

    def red(self, t: str) -> str:
        return self._wrap("31", t)

    def green(self, t: str) -> str:
        return self._wrap("32", t)

    def yellow(self, t: str) -> str:
        return self._wrap("33", t)

    def cyan(self, t: str) -> str:
        return self._wrap("36", t)


def human(n: int | float) -> str:
    """11689512 → 11.69M; 1818558976 → 1.82G."""
    n = float(n)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{int(n)}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 block``, ``2 blocks``; ``words`` for irregular plurals (``mismatches``)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def verdict(report) -> str:
    """The whole report in one line, worded the same in the terminal and in the app."""
    nb = len(report.blocks)
    if report.ok:
        if report.residual_adds:
            return f"{plural(nb, 'block')}, every shortcut matches" if nb else "every shortcut matches"
        if nb:
            return f"{plural(nb, 'block')}, none with a shortcut: the network has no residual adds"
        return "no residual adds, so no shortcuts to check; every shape fits"
    parts = []
    if report.mismatches:
        parts.append(plural(len(report.mismatches), "shortcut mismatch", "shortcut mismatches"))
    if report.errors:
        parts.append(plural(len(report.errors), "shape error"))
    if not report.complete:
        parts.append("tracing stopped early")
    return ", ".join(parts) + (f" in {plural(nb, 'block')}" if nb else "")


def shape_str(shape, batch: bool = True) -> str:
    return "?" if shape is None else human_shape(shape, batch=batch)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "", style=None) -> str:
    """A plain aligned table; ``align`` has one 'l' or 'r' per column (default left)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _visible_len(cell))
    align = align or "l" * len(headers)

    def fmt(cells):
        out = []
        for i, cell in enumerate(cells):
            pad = widths[i] - _visible_len(cell)
            out.append(" " * pad + cell if align[i] == "r" else cell + " " * pad)
        return "  ".join(out).rstrip()

    head = fmt(headers)
    if style is not None:
        head = style.bold(head)
    rule = "  ".join("─" * w for w in widths)
    return "\n".join([head, rule, *(fmt(r) for r in rows)])


def _visible_len(s: str) -> int:
    # ANSI colour codes take no room on screen
    n, i = 0, 0
    while i < len(s):
        if s[i] == "\033":
            j = s.find("m", i)
            i = j + 1 if j >= 0 else len(s)
            continue
        n += 1
        i += 1
    return n


def format_check(report, style: Style) -> str:
    """Block table, then every mismatch with cause and fix, then other shape errors."""
    lines = [
        f"{style.bold(report.model_name)}  input {shape_str(report.input_shape)}  "
        f"params {human(report.total_params)}  MACs {human(report.macs)}",
        "",
    ]
    if report.blocks:
        rows = []
        for b in report.blocks:
            mark = style.red("✗") if b.broken else style.green("✓")
            rows.append([
                mark, b.name, b.type, b.shortcut,
                f"{shape_str(b.input_shape, False)} → {shape_str(b.output_shape, False)}",
            ])  # fmt: skip
        lines.append(table(["", "block", "type", "shortcut", "input → output (C×H×W)"], rows,
                           style=style))  # fmt: skip
    else:
        lines.append(style.dim("no residual blocks found"))
    lines.append("")
    for m in report.mismatches:
        kind = "broadcasts silently" if m.broadcastable else "shapes differ"
        lines.append(
            f"{style.red('✗ mismatch')} in {style.bold(m.block)} ({kind}): residual "
            f"{shape_str(m.residual_shape, False)} vs shortcut {shape_str(m.shortcut_shape, False)}"
        )
        lines.append(f"    cause: {m.cause}")
        fix_lines = m.fix.splitlines() or [""]
        lines.append(f"    fix:   {style.cyan(fix_lines[0])}")
        lines.extend(f"           {style.cyan(f)}" for f in fix_lines[1:])
        if m.input_sizes:
            lines.append(f"    works at input sizes: {', '.join(map(str, m.input_sizes[:8]))}")
        lines.append("")
    for e in report.errors:
        tag = "✗ error (tracing stopped here)" if e.fatal else "✗ error"
        shapes = ", ".join(shape_str(s) for s in e.input_shapes)
        lines.append(f"{style.red(tag)} in {style.bold(e.module)} ({e.type}): {e.message}")
        if shapes:
            lines.append(f"    input: {shapes}")
        if e.suggestion:
            lines.append(f"    hint:  {e.suggestion}")
        lines.append("")
    if report.ok:
        lines.append(style.green(
            f"✓ {verdict(report)}; output " + ", ".join(shape_str(s) for s in report.output_shapes)
        ))  # fmt: skip
    else:
        lines.append(style.red("✗ " + verdict(report)))
    return "\n".join(lines)


def format_summary(report, rows, style: Style) -> str:
    body = []
    for r in rows:
        indent = "  " * max(r.depth - 1, 0)
        name = f"{indent}{r.name.rsplit('.', 1)[-1] if r.depth > 1 else r.name}"
        body.append([
            name, r.type, shape_str(r.output_shape),
            f"{r.params:,}" if r.params else "–", human(r.macs) if r.macs else "–",
        ])  # fmt: skip
    out = [table(["layer", "type", "output shape", "params", "MACs"], body, "lllrr", style)]
    out.append("")
    out.append(f"total params      {report.total_params:,}")
    out.append(f"trainable params  {report.trainable_params:,}")
    out.append(f"MACs              {human(report.macs)} ({report.macs:,})")
    out.append(f"input             {shape_str(report.input_shape)}")
    out.append("output            " + ", ".join(shape_str(s) for s in report.output_shapes))
    if not report.complete or report.errors or report.mismatches:
        out.append(style.red("shape problems found: run `resviz check` for causes and fixes"))
    return "\n".join(out)
