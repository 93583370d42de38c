"""Text that is safe to print to a terminal.

Names, messages and paths printed by resviz come from the user's files (a spec's ``name``, a
module's class name, an exception's text). An escape sequence in one of them would reach the
terminal raw and could clear the screen, set the window title or hide text, so every control
character except newline and tab is shown as a visible escape (``\\x1b``). resviz's own colour
codes (SGR sequences, ``ESC[...m``) survive when asked for.
"""

from __future__ import annotations

import re

__all__ = ["MESSAGE_LIMIT", "printable"]

MESSAGE_LIMIT = 2000  # an error is one paragraph, even when it quotes a 100 KB argument

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SGR = re.compile(r"\x1b\[(?:0|1|2|3[0-7]|9[0-7])m")  # the codes render.text.Style writes


def _escape(match: re.Match) -> str:
    return match.group(0).encode("unicode_escape").decode("ascii")


def printable(text: str, *, keep_colour: bool = False, limit: int | None = None) -> str:
    """``text`` with every control character but newline and tab made visible; with
    ``keep_colour`` resviz's SGR colour sequences are kept as they are. With ``limit`` a text
    longer than that many characters (a message quoting a huge argument) keeps its start and end."""
    if limit is not None and len(text) > limit:
        cut = len(text) - limit
        text = f"{text[: limit * 3 // 4]} [... {cut:,} characters left out ...] {text[-(limit // 4):]}"
    if not keep_colour:
        return _CONTROL.sub(_escape, text)
    out, last = [], 0
    for m in _SGR.finditer(text):
        out.append(_CONTROL.sub(_escape, text[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_CONTROL.sub(_escape, text[last:]))
    return "".join(out)
