"""What the Training tab knows of the run it shows, headless (no Qt, no torch, no threads).

:class:`TabRun` is the tab's model: the run's series as core
:class:`~resviz.core.training.store.RunStore` objects (``"residual"``, and ``"plain"`` for the
plain twin or an overlaid run), the run's state, its fault (NaN/Inf) and error, and which
gradient norms are flagged since which step. The panel feeds it what the training thread sends (or
what a followed run directory's poll filed) and only draws what it holds; the tests drive it
directly with step records, without a window, a thread or a wait.

States are the training controller's words (``idle``, ``building``, ``running``, ``paused``,
``finished``, ``faulted``, ``error``, ``stopped``); every store gets the matching
:class:`~resviz.core.training.store.RunState` (``building`` is still idle, ``error`` stopped).
"""

from __future__ import annotations

from ...core.training.store import RunState, RunStore

STATES = ("idle", "building", "running", "paused", "finished", "faulted", "error", "stopped")
_RUN_STATE = {"building": RunState.IDLE, "error": RunState.STOPPED}

__all__ = ["STATES", "TabRun", "flag_source"]


def flag_source(store: RunStore | None) -> dict | None:
    """The record whose flags the tab lists: the latest one, or at a NaN/Inf fault (whose norms
    are not numbers) the last finite one: what was exploding or vanishing before the fault."""
    if store is None:
        return None
    if store.latest is not None and store.latest.get("nonfinite") and store.last_finite is not None:
        return store.last_finite
    return store.latest


class TabRun:
    """The Training tab's run: stores, state, fault, error, flags (see the module doc)."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self.stores: dict[str, RunStore] = {}
        self.state = "idle"
        self.info: dict = {}
        self.fault: dict | None = None  # message, which ('residual'/'plain'), blocks, lr
        self.error: str | None = None
        self.flag_since: dict[str, int] = {}  # "<block>.<probe>" (or "plain:...") -> first step flagged

    # ---------------------------------------------------------------- what happens to a run

    def clear(self) -> None:
        """No run: nothing recorded, nothing flagged (the state stays)."""
        self.stores = {}
        self.info = {}
        self.fault = None
        self.error = None
        self.flag_since = {}

    def started(self, info: dict) -> None:
        """A new run was built: ``info`` names its blocks (``names``, ``plain_names``, ``twin``)."""
        self.clear()
        self.info = dict(info)
        names = list(info.get("names", []))
        self.stores = {"residual": RunStore(names, self.capacity)}
        if info.get("twin"):
            self.stores["plain"] = RunStore(info.get("plain_names") or names, self.capacity)
        self._push_state()

    def stepped(self, batch: list) -> None:
        """File a batch of ``{"residual": payload | None, "plain": payload | None}`` steps."""
        for item in batch:
            for key, store in self.stores.items():
                payload = item.get(key)
                if payload is not None:
                    store.append(payload)
        self.track_flags()

    def set_state(self, state: str) -> None:
        self.state = state
        self._push_state()

    def faulted(self, fault: dict) -> None:
        self.fault = dict(fault)

    def failed(self, message: str) -> None:
        self.error = message

    def resumed(self) -> None:
        """Going on after a fault (at a lower learning rate): the fault is past."""
        self.fault = None

    def reset(self) -> None:
        """Back to step 0 with the same blocks: the stores emptied, nothing flagged."""
        self.stores = {k: RunStore(s.names, self.capacity) for k, s in self.stores.items()}
        self.fault = None
        self.error = None
        self.flag_since = {}
        self._push_state()

    def adopt(self, which: str, store: RunStore) -> None:
        """Show ``store`` (a followed run directory's) as series ``which``."""
        self.stores[which] = store
        self.track_flags()

    def _push_state(self) -> None:
        if self.state not in STATES:
            return
        rs = _RUN_STATE.get(self.state) or RunState(self.state)
        for store in self.stores.values():
            store.set_state(rs)

    # ---------------------------------------------------------------- what the tab reads

    def track_flags(self) -> None:
        """Which norms are flagged now, and since which step (a norm back in range is forgotten)."""
        for key, store in self.stores.items():
            last = flag_source(store)
            if last is None:
                continue
            plain = key == "plain"
            prefix = "plain:" if plain else ""
            current = {prefix + k for k in last.get("flags", {})}
            for k in [k for k in self.flag_since if k.startswith("plain:") == plain]:
                if k not in current:
                    del self.flag_since[k]
            for k in current:
                self.flag_since.setdefault(k, int(last["step"]))

    def flag_entries(self) -> list[tuple]:
        """``(key, block, probe, kind, value, since, which)`` per flagged norm: residual first."""
        entries = []
        for key in sorted(self.flag_since, key=lambda k: (k.startswith("plain:"), k)):
            which = "plain" if key.startswith("plain:") else "residual"
            rest = key[len("plain:") :] if which == "plain" else key
            last = flag_source(self.stores.get(which))
            if last is None:
                continue
            block, _, probe = rest.rpartition(".")
            kind = last.get("flags", {}).get(rest, "")
            v = last.get("blocks", {}).get(block, {}).get(probe, float("nan"))
            entries.append((key, block, probe, kind, v, self.flag_since[key], which))
        return entries

    def steps_done(self) -> int:
        store = self.stores.get("residual")
        return 0 if store is None or store.latest is None else int(store.latest["step"]) + 1

    def bad_blocks(self) -> set[str]:
        """Blocks of the residual net with a NaN/Inf now (the graph tints them red)."""
        store = self.stores.get("residual")
        bad = set(store.bad_blocks()) if store is not None and store.count else set()
        if self.fault and self.fault.get("which", "residual") == "residual":
            bad |= set(self.fault.get("blocks") or [])
        return bad
