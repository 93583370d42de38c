"""The Training tab, plugged into the window by :func:`install` (``resviz.gui.app`` calls it).

Importing this module is cheap (no torch, no pyqtgraph): the tab's contents, a
:class:`~resviz.gui.training.panel.TrainingPanel`, are built the first time the tab is shown
(or a run is asked for), so opening the app costs nothing until someone trains. The training
thread is stopped and joined when the window closes or the application quits.

``resviz MODEL --screenshot out.png --train N`` trains N steps first: the tab starts a run as soon
as the model is on screen, and tells the window it is busy (``QtMainWindow.busy_checks``) until
the run has ended and the plots are drawn, so the screenshot shows them filled.
``RESVIZ_TRAIN_TWIN=1`` (or ``args.twin``) makes that run the plain-twin comparison.
"""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from ..window.lazy_tab import LazyTab

TAB_TITLE = "Training"
WIDE_SHARE = 0.56  # the share of the window the right-hand side gets while the Training tab shows


class TrainingTab(LazyTab):
    """The Training tab: a light shell that builds the panel on first use."""

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(window, parent)
        self._closed = False
        self._saved_sizes: list[int] | None = None
        self._wide_sizes: list[int] | None = None
        self._auto: dict | None = None  # --train N: {"steps": N, "twin": bool, "started": bool}
        self._announced = False
        window.tabs.currentChanged.connect(self._on_tab_changed)
        window.sessionChanged.connect(self._on_session)
        window.installEventFilter(self)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def make_panel(self):
        from .panel import TrainingPanel

        panel = TrainingPanel(self.window_, self)
        panel.runStateChanged.connect(self._on_run_state)
        return panel

    # ---------------------------------------------------------------- the tab's space

    def showEvent(self, event) -> None:
        super().showEvent(event)  # builds the panel on first show
        QTimer.singleShot(0, self._widen)

    def _widen(self) -> None:
        """Give the plots room: the right-hand side takes ~56% of the window while this tab shows."""
        w = self.window_
        if w.tabs.currentWidget() is not self or self._closed:
            return
        sizes = w.splitter.sizes()
        total = sum(sizes)
        if total <= 0:
            return
        want = int(total * WIDE_SHARE)
        if sizes[1] < want - 20:
            self._saved_sizes = sizes
            w.splitter.setSizes([total - want, want])
            self._wide_sizes = w.splitter.sizes()

    def _on_tab_changed(self, _index: int) -> None:
        w = self.window_
        if w.tabs.currentWidget() is self:
            QTimer.singleShot(0, self._widen)
            return
        if self._saved_sizes is not None:
            if w.splitter.sizes() == self._wide_sizes:  # the user did not move the handle since
                w.splitter.setSizes(self._saved_sizes)
            self._saved_sizes = self._wide_sizes = None

    # ---------------------------------------------------------------- --train N

    def auto_train(self, steps: int, twin: bool = False, announce: bool = False) -> None:
        """Train ``steps`` steps as soon as a model is on screen (``--train N``)."""
        self._auto = {"steps": int(steps), "twin": bool(twin), "started": False, "announce": announce}
        p = self.panel
        p.steps.setValue(int(steps))
        if self.window_.session is not None:
            QTimer.singleShot(0, self._auto_start)

    def _on_session(self, _session) -> None:
        if self._auto is not None and not self._auto["started"]:
            QTimer.singleShot(0, self._auto_start)

    def _auto_start(self) -> None:
        a = self._auto
        if a is None or a["started"] or self._closed or self.window_.session is None:
            return
        p = self.panel
        if p.session is not self.window_.session:
            p.set_session(self.window_.session)
        a["started"] = True
        if a["announce"]:
            _say_estimate(p, a["steps"])
        if not p.start(twin=a["twin"]):
            a["failed"] = True

    def _on_run_state(self, state: str) -> None:
        a = self._auto
        if a is None or not a["announce"] or self._announced:
            return
        if state in ("finished", "faulted", "error", "stopped"):
            self._announced = True
            p = self.panel
            res = p.buffers.get("residual")
            last = res.latest if res is not None else None
            if last is not None:
                print(f"resviz: trained {p.steps_done()} steps for the screenshot (loss {last['loss']:.4f}, "
                      f"accuracy {last['accuracy']:.3f})", file=sys.stderr)  # fmt: skip
            if state in ("faulted", "error"):
                why = (p.fault or {}).get("message") or p.error or state
                from ...core.printable import MESSAGE_LIMIT, printable  # the user's error text

                print(printable(f"resviz: training: {why}", limit=MESSAGE_LIMIT), file=sys.stderr)

    def busy(self) -> bool:
        """True while ``--train N`` still has steps to run or plots to draw (the screenshot waits)."""
        a = self._auto
        if a is None and self._panel is not None and self._panel.estimating and not self._closed:
            return True  # the time a step should take: in the picture too
        if a is None and self._panel is not None and self._panel.following and not self._closed:
            p = self._panel  # a recorded run (resviz RUN_DIR): draw its plots before the picture
            if p._dirty or not p.redraws:
                p.redraw()
            p.update_tint(force=True)
            return False
        if a is None or self._closed or a.get("failed"):
            return False
        if self.window_.session is None:
            return False  # loading (the document is busy) or the model did not load: nothing to wait for
        if not a["started"]:
            return True
        p = self.panel
        if p.controller.state in ("building", "running", "idle"):
            return True
        if p.controller.state == "paused" and p.steps_done() < a["steps"]:
            return True
        if p._dirty or not p.redraws:
            p.redraw()
        p.update_tint(force=True)
        return False

    def waiting_for(self) -> str:
        """What a --screenshot still waits for here, in words (for its time-out message)."""
        a = self._auto
        if a is None or not a["started"]:
            return "the training to start"
        p = self.panel
        done, res = p.steps_done(), p.buffers.get("residual")
        per = float(res.latest.get("seconds") or 0) if res is not None and res.latest else 0.0
        pace = f", about {per:.1f} s a step" if per > 0 else ""
        return (f"the training ({done} of {a['steps']} steps done{pace}); fewer --train steps or a smaller "
                "--input (e.g. 3x64x64) finish sooner")  # fmt: skip

    # ---------------------------------------------------------------- closing

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.window_ and event.type() == QEvent.Close:
            self.shutdown()
        return False

    def shutdown(self) -> None:
        """Stop the run and join the training thread (the window closes, or the app quits)."""
        if self._closed:
            return
        self._closed = True
        if self._panel is not None:
            self._panel.shutdown()


def _say_estimate(panel, steps: int) -> None:
    """``--screenshot --train N`` on a CPU: how long N steps should take, and a faster way when a
    step takes seconds, said before the wait rather than discovered at its time-out."""
    from . import estimate as te

    session = panel.session
    if session is None or panel.device.currentText() == "cuda":
        return
    shape = tuple(session.input_shape or ())
    macs = float(getattr(session.report, "macs", 0) or 0) / max(1, shape[0] if shape else 1)
    if macs <= 0 or "torch" not in sys.modules or sys.modules["torch"].cuda.is_available():
        return
    batch = int(panel.batch.value())
    te.calibrate()
    threads = te.training_threads()
    seconds = te.step_seconds(macs, batch, te._SPEED[threads])
    if seconds * steps < 20:
        return
    text = f"resviz: --train {steps}: " + te.estimate_text(macs, batch, steps, te._SPEED[threads], threads)
    offer = te.smaller_offer(shape, seconds, "cpu")
    if offer is not None:
        text += (f"; at {offer['side']}x{offer['side']} (--input {shape[1]}x{offer['side']}x{offer['side']}) "
                 f"about {offer['speedup']:.0f}x faster, or train {offer['twin']} (32x32)")  # fmt: skip
    print(text, file=sys.stderr)


def install(window, args=None) -> TrainingTab:
    """Add the Training tab to ``window``; with ``args.train`` N, train N steps once a model shows."""
    tab = TrainingTab(window)
    window.add_tab(tab, TAB_TITLE)
    window.training_tab = tab
    steps = int(getattr(args, "train", 0) or 0) if args is not None else 0
    if steps <= 0 and args is not None and getattr(args, "screenshot", None):
        window.busy_checks.append(tab.busy)  # a recorded run's plots are drawn before the picture
    if steps > 0:
        screenshot = bool(getattr(args, "screenshot", None))
        twin = bool(getattr(args, "twin", False)) or os.environ.get("RESVIZ_TRAIN_TWIN", "") not in ("", "0")
        if not getattr(args, "tab", None):
            window.select_tab(TAB_TITLE)
        tab.auto_train(steps, twin=twin, announce=screenshot)
        if screenshot:
            window.busy_checks.append(tab.busy)
    return tab
