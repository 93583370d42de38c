"""The :class:`Session` record: one opened model, the input chosen and its report (no torch here:
the app opens a recorded run into one without importing it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..analysis.report import Report
    from ..inputs import Input


@dataclass
class Session:
    loaded: object  # loading.LoadedModel
    input_shape: tuple[int, ...]  # the first input's shape
    report: Report
    notes: list[str] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)  # every input, in call order
