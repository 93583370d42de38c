"""The Training tab: controls, status, faults and warnings, and the live plots of a run.

:class:`TrainingPanel` turns the controls into a run spec for the
:class:`~resviz.gui.training.worker.TrainingController`, files what it receives (step records,
states, faults) into its headless model, a :class:`~resviz.gui.training.run_model.TabRun` (core
RunStore columns, state, fault, flags; tested without Qt), and redraws the plots from a timer
(25 Hz, only when something changed and the tab is visible), so the cost of drawing does not grow
with the step rate. It follows the window: a new Session stops the run and resets the plots for
the new model's blocks, selecting a block in the graph highlights its curve, clicking a curve
selects the block in the graph, and the graph's blocks can be tinted by their current gradient
norm.

The panel is split by concern into mixins: :mod:`~resviz.gui.training.controls` (building and
wiring the widgets, the form's own reactions), :mod:`~resviz.gui.training.views` (redrawing the
plots, the status line and the flag list) and :mod:`~resviz.gui.training.tint` (the graph
tint); this module keeps the run's state, the commands and the controller's events.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QFileDialog, QListWidgetItem, QMessageBox, QWidget

from ..window.menus import settings
from .controls import DATA_KINDS, TrainingControlsMixin
from .plot_base import FAULT, PLAIN_DASH, Style
from .run_model import TabRun
from .tint import GraphTintMixin
from .views import TrainingViewsMixin
from .worker import TrainingController

REDRAW_MS = 15  # one of three plot groups per tick: each plot redraws at up to ~22 Hz
TINT_MS = 250
CAPACITY = 4096  # rows kept per run before thinning (see RunStore)
FOLLOW_REDRAW_MS = 200  # a followed run's plots redraw at most this often (the UI stays free between)


class TrainingPanel(TrainingControlsMixin, TrainingViewsMixin, GraphTintMixin, QWidget):
    """The contents of the Training tab for one window."""

    runStateChanged = Signal(str)

    def __init__(self, window=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.style_ = Style()
        self.controller = TrainingController(self)
        self.session = None
        self.names: list[str] = []
        self.model = TabRun(CAPACITY)  # the run shown, headless: stores, state, fault, error, flags
        self.twin = False
        self.selected: str | None = None
        self._flags_shown: tuple = ()
        self._dirty = False
        self._groups = (self._draw_probe, self._draw_middle, self._draw_lower)
        self._stale: set[int] = set()
        self._last_group = -1
        self._tint_version = None
        self._tinted: set[str] = set()
        self._node_blocks: dict[str, list[str]] = {}
        self._node_graph = None
        self.redraws = 0
        self.last_draw_ms = 0.0
        self.watches: dict = {}  # "residual" / "plain" -> QtRunWatch: runs followed from their folders
        self.estimating = False  # this CPU's speed is being measured (for the time a step takes)
        self._build_ui()
        self._wire()
        self._set_blocks([])
        self._on_state("idle")
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer)
        self._timer.start()
        self._tint_timer = QTimer(self)
        self._tint_timer.setInterval(TINT_MS)
        self._tint_timer.timeout.connect(self.update_tint)
        self._tint_timer.start()
        self._follow_touch = QTimer(self)
        self._follow_touch.setSingleShot(True)
        self._follow_touch.setInterval(FOLLOW_REDRAW_MS)
        self._follow_touch.timeout.connect(self._touch)
        if window is not None and window.session is not None:
            self.set_session(window.session)

    # the tab's model, by the names its parts read
    buffers = property(lambda self: self.model.stores, lambda self, v: setattr(self.model, "stores", v))
    info = property(lambda self: self.model.info, lambda self, v: setattr(self.model, "info", v))
    fault = property(lambda self: self.model.fault, lambda self, v: setattr(self.model, "fault", v))
    error = property(lambda self: self.model.error, lambda self, v: setattr(self.model, "error", v))
    flag_since = property(lambda self: self.model.flag_since)

    # ================================================================== commands

    def start(self, twin: bool = False, then: str = "run") -> bool:
        """Start a new run (``twin``: beside its plain twin) with the controls' settings."""
        if self.session is None:
            self._show_error("Open a model first: training uses the model on screen.")
            return False
        if self.following:
            self._show_error("This is a recorded run: the app shows its steps and has no model code to train. "
                             "Open the model itself (File → Open) to train it here.")  # fmt: skip
            return False
        spec = self.spec(twin)
        if spec is None or not self._memory_fits(spec["config"], models=2 if twin else 1):
            return False
        self._clear_run()
        self.twin = twin
        self.controller.start(self.session, spec, then)
        return True

    def _memory_fits(self, config: dict, models: int = 1) -> bool:
        """The command line's memory check, before Start: a batch that will not fit is refused
        here, with the numbers and the batch that fits, instead of failing (or swapping) mid-run."""
        from ...core.training.data import TrainingMemoryError, check_training_memory
        from ...core.training.trainer import resolve_device

        report = self.session.report
        try:
            check_training_memory(report, config["batch_size"], config["optimizer"],
                                  resolve_device(config["device"]),
                                  report.model_name + (" beside its plain twin" if models == 2 else ""), models)  # fmt: skip
        except TrainingMemoryError as exc:
            self._show_error(f"{exc.reason}. " + (
                f"Set Batch to {exc.fits} or less." if exc.fits >= 1 else
                "Even batch 1 does not fit: use a smaller input shape or a smaller model."))  # fmt: skip
            return False
        return True

    def pause(self) -> None:
        self.controller.pause()

    def resume(self) -> None:
        if self.controller.state == "finished" and self.steps.value():
            done = self.steps_done()
            if done >= self.steps.value():
                if self.window_ is not None:
                    self.window_.statusBar().showMessage(
                        f"The run reached its {done} steps: raise Steps (or set 0, unlimited) to go on", 6000
                    )
                return
        if self.controller.state == "faulted" and not self.twin:
            self.resume_lower(0.1)
            return
        self._apply_lr()
        self.controller.set_target(self.steps.value())
        self.controller.resume()

    def step(self) -> None:
        if not self.controller.has_run:
            self.start(twin=self.twin and bool(self.buffers), then="step")
            return
        self._apply_lr()
        self.controller.step()

    def stop(self) -> None:
        self.controller.stop()

    def reset(self) -> None:
        if self.controller.has_run:
            self.controller.reset()
        else:
            self._clear_run()
            self._update_buttons()

    def resume_lower(self, factor: float = 0.1) -> None:
        self.banner.setVisible(False)
        self.model.resumed()
        self.controller.resume_lower(factor)

    def set_lr(self, lr: float) -> None:
        """Change the learning rate (while training: from the next step on)."""
        self.lr.setText(f"{lr:g}")
        self._apply_lr()

    def _apply_lr(self) -> None:
        lr = _float(self.lr.text())
        if lr is not None and lr > 0 and math.isfinite(lr):
            self.controller.set_lr(lr)

    def _on_lr_edited(self) -> None:
        if self.controller.has_run:
            self._apply_lr()

    def spec(self, twin: bool = False) -> dict | None:
        """The run's settings from the controls; None (and the field marked) when one is invalid."""
        lr, wd = _float(self.lr.text()), _float(self.weight_decay.text())
        ok = True
        for field, v, positive in ((self.lr, lr, True), (self.weight_decay, wd, False)):
            bad = v is None or not math.isfinite(v) or v < 0 or (positive and v == 0)
            field.setStyleSheet(f"border: 1px solid {FAULT};" if bad else "")
            ok &= not bad
        kind = DATA_KINDS[self.data_kind.currentIndex()]
        path = self.data_path.text().strip()
        if kind[2] is not None and not path:
            self.data_path.setStyleSheet(f"border: 1px solid {FAULT};")
            self._show_error(
                f"Choose the {kind[0].lower()} to train on (the … button), or pick Synthetic data."
            )
            return None
        self.data_path.setStyleSheet("")
        if not ok:
            self._show_error("The learning rate must be a number above 0 and the weight decay 0 or more.")
            return None
        opt = self.optimizer.currentData()
        momentum = float(self.momentum.value())
        settings().setValue("training/batch", self.batch.value())
        data = "synthetic" if kind[2] is None else f"{kind[1]}:{os.path.expanduser(path)}"
        return {
            "config": {
                "optimizer": opt, "lr": lr, "momentum": momentum,
                "nesterov": bool(self.nesterov.isChecked() and opt == "sgd" and momentum > 0),
                "weight_decay": wd, "batch_size": int(self.batch.value()), "steps": int(self.steps.value()),
                "seed": int(self.seed.value()), "device": self.device.currentText(),
            },
            "data": data,
            "twin": bool(twin),
        }  # fmt: skip

    def export(self, path: str | os.PathLike, fmt_: str | None = None) -> list[Path]:
        """Write the run's per-step records (CSV or JSON lines, atomically); the plain twin's go
        to ``NAME.plain.EXT`` beside. Every step, read from the run directory (the plots hold a
        thinned view), in the very format of ``resviz train --csv/--jsonl``; only a run that could
        not be recorded exports what the tab holds. Returns the files written."""
        from ...core.training import write_csv, write_jsonl
        from ...core.training.rundir import export_run

        path = Path(path)
        fmt_ = fmt_ or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
        dirs = self.run_dirs()
        out = []
        for key, buf in self.buffers.items():
            if not buf.count:
                continue
            target = path if key == "residual" else path.with_name(f"{path.stem}.plain{path.suffix}")
            if key in dirs:
                out.append(export_run(dirs[key], target, fmt_, buf.names))
                continue
            records = buf.records()
            if fmt_ == "csv":
                out.append(write_csv(records, target, block_names=buf.names))
            else:
                out.append(write_jsonl(records, target))
        return out

    def ask_export(self, fmt_: str) -> None:
        if not any(b.count for b in self.buffers.values()):
            return
        ext = ".csv" if fmt_ == "csv" else ".jsonl"
        name = (self.info.get("model") or "run").replace(" ", "_")
        start = os.path.join(str(settings().value("training/export_dir", os.getcwd())), f"{name}-train{ext}")
        filt = "CSV (*.csv)" if fmt_ == "csv" else "JSON lines (*.jsonl)"
        path, _ = QFileDialog.getSaveFileName(self, "Export the run's records", start, filt)
        if not path:
            return
        if not path.endswith(ext):
            path += ext
        try:
            files = self.export(path, fmt_)
        except Exception as exc:  # noqa: BLE001 - a disk or permission problem: say it
            QMessageBox.warning(self, "Export failed", str(exc))
            return
        settings().setValue("training/export_dir", os.path.dirname(path))
        if self.window_ is not None:
            self.window_.statusBar().showMessage("Wrote " + ", ".join(str(f) for f in files), 6000)

    # ================================================================== session and selection

    def set_session(self, session) -> None:
        """A new model (or input shape) on screen: stop any run, reset the panel for its blocks."""
        self.controller.stop()
        self.session = session
        names: list[str] = []
        if session is not None:
            try:
                from ...core.training.runreport import probe_blocks

                names = probe_blocks(session.report)
            except Exception:  # noqa: BLE001 - the run will say what is wrong when started
                names = [b.name for b in getattr(session.report, "blocks", []) if b.name != "(model)"]
            if "torch" in __import__("sys").modules:
                import torch

                cuda = self.device.model().item(2)
                if cuda is not None:
                    cuda.setEnabled(bool(torch.cuda.is_available()))
        self._clear_run()
        self._set_blocks(names)
        self.banner.setVisible(False)
        follower = getattr(session, "run", None)
        if follower is not None:
            self.follow(follower)
        self._update_buttons()
        self._update_status()
        self._update_estimate()

    # ================================================================== followed runs

    @property
    def following(self) -> bool:
        """The panel shows a run read from its folder (``resviz RUN_DIR``), not one it trains."""
        return "residual" in self.watches

    def follow(self, follower, which: str = "residual") -> None:
        """Show a run directory's steps (a :class:`~resviz.gui.training.follow.RunFollower`) and follow
        it as records are appended; ``which="plain"`` overlays it, dashed, on the run shown."""
        from .follow_timer import QtRunWatch

        old = self.watches.pop(which, None)
        if old is not None:
            old.stop()
            old.deleteLater()
        watch = QtRunWatch(follower, self)
        watch.updated.connect(self._on_followed)
        self.watches[which] = watch
        self.model.adopt(which, follower.store)
        if which == "residual":
            self.info = {"model": follower.describe(), "followed": str(follower.path)}
            if follower.store.names != self.names and follower.store.names:
                self._set_blocks(list(follower.store.names))
        self.twin = "plain" in self.buffers
        self._set_legends(overlay=follower.name if which == "plain" else None)
        self._update_buttons()
        self._update_status()
        self._touch()
        self.update_tint(force=True)

    def overlay(self, path) -> bool:
        """Draw the run in folder ``path`` dashed over the one shown (a resnet and its plain twin
        trained by your own script, say). False (and the reason shown) when it cannot be read.
        ``path`` may be a RunFollower opened elsewhere (File → Overlay run… opens it on the aux
        thread: a long run's open does not hold up the UI)."""
        from ...core.errors import ResvizError
        from ..runtime.workers import JobError
        from .follow import RunFollower

        if isinstance(path, JobError):
            self._banner(f"<b style='color:{FAULT}'>Cannot overlay.</b> {_html(path.message)}", resume=False)
            return False
        if self.controller.has_run:
            self.controller.stop()
        try:
            follower = path if isinstance(path, RunFollower) else RunFollower.open(path)
        except ResvizError as exc:
            self._banner(f"<b style='color:{FAULT}'>Cannot overlay.</b> {_html(str(exc))}", resume=False)
            return False
        if "residual" not in self.buffers:
            self._show_error("Open a run first (File → Open run…, or train one here), then overlay another on it.")
            return False
        self.follow(follower, "plain")
        return True

    def _on_followed(self, _n: int) -> None:
        res = self.buffers.get("residual")
        if res is not None and self.following and res.names != self.names:
            self._set_blocks(list(res.names))  # a monitor met blocks its first record did not list
        self.model.track_flags()
        self._update_buttons()
        self._update_status()
        if not self._follow_touch.isActive():  # another process's records: the plots redraw at 5 Hz
            self._follow_touch.start()

    def _stop_following(self) -> None:
        for w in self.watches.values():
            w.stop()
            w.deleteLater()
        self.watches = {}

    def run_state(self) -> str:
        """What the status line says the run is doing: the followed run's state, else the trainer's."""
        w = self.watches.get("residual")
        return w.follower.state.value if w is not None else self.controller.state.value

    def on_module_selected(self, name: str) -> None:
        self.highlight(self.block_of(name))

    def block_of(self, name: str) -> str | None:
        """The block that module ``name`` is or sits in."""
        if not name:
            return None
        if name in self.names:
            return name
        for b in self.names:
            if name.startswith(b + "."):
                return b
        return None

    def highlight(self, block: str | None) -> None:
        self.selected = block
        for p in (self.probe_plot, self.heatmap, self.highway, self.legend):
            p.highlight(block)

    def _on_plot_clicked(self, name: str) -> None:
        self.highlight(name)
        if self.window_ is not None:
            self.window_.select_module(name)

    def _on_flag_clicked(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.UserRole)
        if name:
            self._on_plot_clicked(name)

    # ================================================================== run events

    def _clear_run(self) -> None:
        self._stop_following()
        self.model.clear()
        self._on_recording({})
        self._tint_version = None
        self.banner.setVisible(False)
        for p in (self.probe_plot, self.heatmap, self.highway, self.loss_plot, self.acc_plot):
            p.clear_data()
        self._update_flags(force=True)
        self.clear_tint()
        self._touch()

    def _set_blocks(self, names: list[str]) -> None:
        self.names = list(names)
        self.probe_plot.set_blocks(self.names)
        self.heatmap.set_blocks(self.names)
        self.highway.set_blocks(self.names)
        self.legend.set_blocks(self.names, self.probe_plot.colors)
        self.legend.setVisible(bool(self.names))
        self._node_graph = None
        self.highlight(self.selected if self.selected in self.names else None)

    def _on_started(self, info: dict) -> None:
        self.model.started(info)
        self.twin = bool(info.get("twin"))
        names = list(info.get("names", []))
        if names != self.names:
            self._set_blocks(names)
        self._set_legends()
        if info.get("notes"):
            self.detail.setToolTip("\n".join(info["notes"]))
        self._touch()

    def _set_legends(self, overlay: str | None = None) -> None:
        """Legends and the run picker for one run, or two (the plain twin, or an overlaid run)."""
        self.run_pick.setVisible(self.twin)
        if not self.twin:
            self.run_pick.setCurrentIndex(0)
        second = overlay or "plain twin"
        self.run_pick.setItemText(1, second)
        self.run_pick.setItemText(0, self.watches["residual"].follower.name if self.following else "residual net")
        s = self.style_
        res = QPen(QColor(s.residual), 2)
        plain = QPen(QColor(s.plain), 2, PLAIN_DASH)
        first = self.run_pick.itemText(0) if overlay else "residual"
        if self.twin:
            self.loss_legend.set_entries([(first, res), (second, plain)])
            self.highway_legend.set_entries([("now", res), ("step 0", QPen(QColor(s.residual), 1.4, Qt.DotLine)),
                                             (second if overlay else "plain", plain)])  # fmt: skip
        else:
            self.loss_legend.set_entries([])
            self.highway_legend.set_entries(
                [("now", res), ("step 0", QPen(QColor(s.residual), 1.4, Qt.DotLine))]
            )

    def _on_stepped(self, batch: list) -> None:
        if not self.buffers:
            return
        self.model.stepped(batch)
        res = self.buffers.get("residual")
        self._touch()
        if res is not None and res.count <= len(batch) + 2:  # the first steps: the measured time per step
            self._update_estimate()

    # ================================================================== the run directory

    def run_dirs(self) -> dict[str, Path]:
        """The run directory of each series shown (``"residual"``, ``"plain"``): the folders this
        tab records its run in, or the followed runs' folders."""
        dirs = {k: Path(v) for k, v in self.controller.recorded.items() if k != "error"}
        dirs.update({k: Path(w.follower.path) for k, w in self.watches.items()})
        return {k: v for k, v in dirs.items() if k in self.buffers}

    def _on_recording(self, where: dict) -> None:
        """Say where the run is recorded (``resviz RUN_DIR`` reopens it), or why it is not."""
        lab = self.recorded
        if where.get("error"):
            lab.setText(f"<span style='color:{FAULT}'>{_html(where['error'])}</span>")
        elif where.get("residual"):
            res = where["residual"]
            plain = " (plain twin: <code>-plain</code>)" if where.get("plain") else ""
            shown = _home_relative(res)  # the whole path is in the tooltip and behind "copy path"
            lab.setText("<a href='copy'>copy path</a> · <a href='open'>open folder</a> · "
                        f"Recorded in <code>{_html(shown)}</code>{plain}")  # fmt: skip  (links first: a long path is cut)
            lab.setToolTip(f"Reopen this run later with:  resviz {res}")
        lab.setVisible(bool(where))

    def _on_recorded_link(self, link: str) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices, QGuiApplication

        path = self.controller.recorded.get("residual")
        if not path:
            return
        if link == "copy":
            QGuiApplication.clipboard().setText(path)
            if self.window_ is not None:
                self.window_.statusBar().showMessage(f"Copied {path}: reopen the run with  resviz {path}", 6000)
        elif link == "open":
            QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    # ================================================================== the time a step takes

    def _update_estimate(self) -> None:
        """Before Start: how long a step should take on this CPU; when that (or a measured step) is
        slow at an ImageNet-size input, the offer of a 64x64 input or a CIFAR-size ResNet, in words."""
        from . import estimate as te

        lab = self.estimate
        session = self.session
        device = self.device.currentText()
        cpu = device == "cpu" or (device == "auto" and not _cuda_available())
        if session is None or self.following or not cpu:
            lab.setVisible(False)
            return
        shape = tuple(session.input_shape or ())
        macs = float(getattr(session.report, "macs", 0) or 0) / max(1, shape[0] if shape else 1)
        batch = int(self.batch.value())
        threads = te.training_threads()
        speed = te._SPEED.get(threads)
        if speed is None:
            if self.window_ is not None and not self.controller.has_run and macs > 0 and not self.estimating:
                self.estimating = True
                self.window_.aux.submit("train-speed", te.calibrate)
            lab.setVisible(False)
            return
        res = self.buffers.get("residual")
        measured = float(res.latest.get("seconds") or 0) if res is not None and res.latest else 0.0
        seconds = measured if measured > 0 else te.step_seconds(macs, batch, speed)
        parts = []
        if not self.controller.has_run and macs > 0:
            parts.append("Estimated " + te.estimate_text(macs, batch, int(self.steps.value()), speed, threads) + ".")
        offer = te.smaller_offer(shape, seconds, "cpu")
        if offer is not None:
            side, c = offer["side"], shape[1]
            parts.append(
                f"<b>{shape[2]}×{shape[3]} is an ImageNet-size input, slow to train on a CPU</b> "
                f"(about {te.duration(seconds)} a step). Train at <a href='size:{side}'>{side}×{side}</a> "
                f"instead (about {offer['speedup']:.0f}× faster: {te.duration(offer['seconds'])} a step; the "
                f"input field above the graph, 1x{c}x{side}x{side}), or on a CIFAR-size ResNet: "
                f"<a href='zoo:{offer['twin']}'>{offer['twin']}</a> at 32×32."
            )
        lab.setText(" ".join(parts))
        lab.setVisible(bool(parts))

    def _on_aux(self, channel: str, result=None) -> None:
        if channel == "train-speed":
            self.estimating = False
            self._update_estimate()
        elif channel == "overlay-run":
            self.overlay(result)  # a RunFollower opened on the aux thread, or the JobError saying why

    def _on_offer(self, link: str) -> None:
        w = self.window_
        if w is None or self.session is None:
            return
        kind, _, value = link.partition(":")
        if kind == "size":
            c = tuple(self.session.input_shape)[1]
            w.set_input_shape(f"1x{c}x{value}x{value}")
        elif kind == "zoo":
            w.open_source(value)

    def _on_state(self, state: str) -> None:
        self.model.set_state(state)
        self._update_estimate()
        self._update_buttons()
        self._update_status()
        self._touch()
        if state not in ("running", "building"):  # the run's last step tints the graph now, not at
            self.update_tint()  # the next tint tick (a short run can end between two ticks)
        self.runStateChanged.emit(state)

    def _update_buttons(self) -> None:
        for w in (self.optimizer, self.lr, self.momentum, self.nesterov, self.weight_decay, self.batch, self.steps,
                  self.seed, self.device, self.data_kind, self.data_path, self.data_browse):  # fmt: skip
            w.setEnabled(not self.following)  # a recorded run's own settings are in the detail line
        for w in self.settings_widgets:  # ... so the form's, which would contradict them, are hidden
            w.setVisible(not self.following)
        if not self.following:  # what the form itself enables: momentum for SGD, a path for files
            sgd = self.optimizer.currentData() == "sgd"
            self.momentum.setEnabled(sgd)
            self.nesterov.setEnabled(sgd)
            browse = DATA_KINDS[self.data_kind.currentIndex()][2] is not None
            self.data_path.setEnabled(browse)
            self.data_browse.setEnabled(browse)
        if self.following:  # a recorded run: nothing to train, its records to export
            for b in (self.pause_btn, self.resume_btn, self.step_btn, self.stop_btn, self.reset_btn,
                      self.start_btn, self.twin_btn):  # fmt: skip
                b.setEnabled(False)
            self.export_btn.setEnabled(any(b.count for b in self.buffers.values()))
            return
        c = self.controller
        state = c.state
        has = c.has_run
        running = state in ("running", "building")
        # a finished run goes on only once Steps is raised (or set to 0, unlimited)
        done = state == "finished" and bool(self.steps.value()) and self.steps_done() >= self.steps.value()
        self.pause_btn.setEnabled(state == "running")
        self.resume_btn.setEnabled(has and state in ("paused", "finished", "error") and not done
                                   or (state == "faulted" and self.twin))  # fmt: skip
        self.step_btn.setEnabled(self.session is not None and not running and state != "faulted"
                                 and not done or (state == "faulted" and self.twin))  # fmt: skip
        self.stop_btn.setEnabled(has and state not in ("stopped", "idle", "finished"))
        self.reset_btn.setEnabled(has and not running or bool(self.buffers) and not has)
        self.start_btn.setEnabled(self.session is not None)
        self.twin_btn.setEnabled(self.session is not None)
        self.export_btn.setEnabled(any(b.count for b in self.buffers.values()))

    def _on_reset(self) -> None:
        names = self.info.get("names", self.names)
        self.model.reset()
        self.banner.setVisible(False)
        for p in (self.probe_plot, self.heatmap, self.highway, self.loss_plot, self.acc_plot):
            p.clear_data()
        self._set_blocks(names)
        self._update_flags(force=True)
        self._touch()

    def _on_faulted(self, fault: dict) -> None:
        self.model.faulted(fault)
        text = fault.get("message", "the loss or a gradient became NaN/Inf")
        blocks = fault.get("blocks") or []
        more = (
            f"<br><b>Blocks with NaN/Inf or exploding gradients:</b> {', '.join(blocks[:8])}{' …' if len(blocks) > 8 else ''}"
            if blocks
            else ""
        )
        self._banner(f"<b style='color:{FAULT}'>NaN/Inf — training paused.</b> {_html(text)}{more}"
                     "<br>Try a lower learning rate: <i>Resume with lr ×0.1</i> rolls back to the last good "
                     "snapshot and goes on; or Reset / Start again with other settings.", resume=True)  # fmt: skip
        self._touch()
        self.update_tint(force=True)

    def _on_failed(self, message: str) -> None:
        self.model.failed(message)
        self._banner(f"<b style='color:{FAULT}'>Training failed.</b> {_html(message)}", resume=False)

    def _show_error(self, message: str) -> None:
        self._banner(f"<b style='color:{FAULT}'>Cannot start.</b> {_html(message)}", resume=False)

    def _banner(self, html: str, resume: bool) -> None:
        self.banner_text.setText(html)
        self.resume_low_btn.setVisible(resume)
        self.banner.setVisible(True)

    # ================================================================== shutdown

    def shutdown(self, timeout_ms: int = 2000) -> bool:
        self._stop_following()
        self._follow_touch.stop()
        self._timer.stop()
        self._tint_timer.stop()
        return self.controller.shutdown(timeout_ms)


def _cuda_available() -> bool:
    import sys

    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def _float(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", "."))
    except (ValueError, AttributeError):
        return None


def _html(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")


def _home_relative(path) -> str:
    """``/home/ada/.local/share/resviz/runs/r1`` → ``~/.local/share/resviz/runs/r1``."""
    p, home = Path(path), Path.home()
    try:
        return "~/" + str(p.relative_to(home))
    except ValueError:
        return str(p)

