"""What the Training tab remembers of a run: the core's one run store (no Qt, no torch).

:class:`RunBuffer` is :class:`resviz.core.training.store.RunStore` (numpy columns with bounded,
evenly thinned memory; first, latest and faulted steps kept in full; events). The worker thread
sends one plain dict per step (:func:`record_payload`). The names stay here for the tab's modules.
"""

from __future__ import annotations

from ..core.training.records import NORM_PROBES, PROBES
from ..core.training.store import PROBE_INDEX, PROBE_TITLES, RunStore, record_payload

RunBuffer = RunStore

__all__ = ["NORM_PROBES", "PROBES", "PROBE_INDEX", "PROBE_TITLES", "RunBuffer", "record_payload"]
