"""The Training tab: controls, status, faults and warnings, and the live plots of a run.

:class:`TrainingPanel` turns the controls into a run spec for the
:class:`~resviz.gui.qt_training_worker.TrainingController`, files the step records it receives into
:class:`~resviz.gui.qt_training_buffer.RunBuffer` columns, and redraws the plots from a timer
(25 Hz, only when something changed and the tab is visible), so the cost of drawing does not grow
with the step rate. It follows the window: a new Session stops the run and resets the plots for
the new model's blocks, selecting a block in the graph highlights its curve, clicking a curve
selects the block in the graph, and the graph's blocks can be tinted by their current gradient
norm.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QLocale, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QDoubleValidator, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .qt_menus import settings
from .qt_training_buffer import PROBE_TITLES, PROBES, RunBuffer
from .qt_training_plots import (
    FAULT,
    PLAIN_DASH,
    ColorScale,
    CurvePlot,
    DepthLegend,
    HeatmapPlot,
    HighwayPlot,
    LineLegend,
    ProbePlot,
    Style,
    fmt,
)
from .qt_training_worker import TrainingController

REDRAW_MS = 15  # one of three plot groups per tick: each plot redraws at up to ~22 Hz
TINT_MS = 250
CAPACITY = 4096  # rows kept per run before thinning (see RunBuffer)
DEFAULT_LR = {"sgd": "0.1", "adam": "0.001", "adamw": "0.001"}
DEFAULT_WD = {"sgd": "5e-4", "adam": "0", "adamw": "0.01"}
DATA_KINDS = (  # (label, prefix, browse: 'dir' | 'file' | None)
    ("Synthetic (built in)", "synthetic", None),
    ("CIFAR-10 folder", "cifar10", "dir"),
    ("Image folder", "folder", "dir"),
    ("NPZ file", "npz", "file"),
)
STATE_TEXT = {
    "idle": ("#6b7280", "ready"), "building": ("#6b7280", "building the run…"),
    "running": ("#16a34a", "running"), "paused": ("#d97706", "paused"),
    "finished": ("#2563eb", "finished"), "faulted": (FAULT, "stopped by NaN/Inf"),
    "error": (FAULT, "failed"), "stopped": ("#6b7280", "stopped"),
}  # fmt: skip


def _pastel(c: QColor, base: QColor, amount: float) -> QColor:
    """``c`` blended toward ``base`` (white or the dark background) so node text stays readable."""
    return QColor(
        round(c.red() * (1 - amount) + base.red() * amount),
        round(c.green() * (1 - amount) + base.green() * amount),
        round(c.blue() * (1 - amount) + base.blue() * amount),
    )


class _Card(QFrame):
    """A titled box for a plot: title and extras on one line, the plot below."""

    def __init__(
        self, title: str, body: QWidget, extras: list[QWidget] | None = None, side: QWidget | None = None
    ):
        super().__init__()
        self.setFrameShape(QFrame.NoFrame)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 2, 0, 0)
        box.setSpacing(1)
        head = QHBoxLayout()
        head.setContentsMargins(4, 0, 4, 0)
        head.setSpacing(6)
        self.title = QLabel(title)
        self.title.setTextFormat(Qt.RichText)
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(max(8.0, f.pointSizeF() - 0.5))
        self.title.setFont(f)
        head.addWidget(self.title)
        for w in extras or []:
            head.addWidget(w)
        head.addStretch(1)
        self.head = head
        box.addLayout(head)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        row.addWidget(body, 1)
        if side is not None:
            row.addWidget(side)
        box.addLayout(row, 1)

    def add_right(self, w: QWidget) -> None:
        self.head.addWidget(w)


class TrainingPanel(QWidget):
    """The contents of the Training tab for one window."""

    runStateChanged = Signal(str)

    def __init__(self, window=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_ = window
        self.style_ = Style()
        self.controller = TrainingController(self)
        self.session = None
        self.names: list[str] = []
        self.buffers: dict[str, RunBuffer] = {}
        self.twin = False
        self.info: dict = {}
        self.selected: str | None = None
        self.fault: dict | None = None
        self.error: str | None = None
        self.flag_since: dict[str, int] = {}
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
        if window is not None and window.session is not None:
            self.set_session(window.session)

    # ================================================================== building the UI

    def _build_ui(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(6, 6, 6, 4)
        root.setSpacing(4)
        root.addWidget(self._build_controls())
        root.addLayout(self._build_buttons())
        root.addLayout(self._build_status())
        root.addWidget(self._build_banner())
        self.flag_list = QListWidget()
        self.flag_list.setMaximumHeight(66)
        self.flag_list.setVisible(False)
        self.flag_list.setToolTip("Gradient norms out of range in the latest step (click: select the block)")
        self.flag_list.itemClicked.connect(self._on_flag_clicked)
        root.addWidget(self.flag_list)
        root.addWidget(self._build_plots(), 1)

    def _build_controls(self) -> QWidget:
        box = QFrame()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        s = settings()

        def lab(text: str, tip: str = "") -> QLabel:
            w = QLabel(text)
            w.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            if tip:
                w.setToolTip(tip)
            return w

        self.optimizer = QComboBox()
        for label, key in (("SGD", "sgd"), ("Adam", "adam"), ("AdamW", "adamw")):
            self.optimizer.addItem(label, key)
        self.lr = QLineEdit(DEFAULT_LR["sgd"])
        self.lr.setValidator(_number_validator(self.lr))
        self.lr.setToolTip("Learning rate; editable while training (applies from the next step)")
        self.momentum = QDoubleSpinBox()
        self.momentum.setRange(0.0, 0.999)
        self.momentum.setDecimals(3)
        self.momentum.setSingleStep(0.05)
        self.momentum.setValue(0.9)
        self.nesterov = QCheckBox("Nesterov")
        self.weight_decay = QLineEdit(DEFAULT_WD["sgd"])
        self.weight_decay.setValidator(_number_validator(self.weight_decay))
        self.batch = QSpinBox()
        self.batch.setRange(1, 65536)
        self.batch.setValue(int(s.value("training/batch", 32)))
        self.steps = QSpinBox()
        self.steps.setRange(0, 100_000_000)
        self.steps.setValue(500)
        self.steps.setSpecialValueText("unlimited")
        self.steps.setToolTip("Steps to train (0 = unlimited); can be raised while training")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.data_kind = QComboBox()
        for label, _prefix, _browse in DATA_KINDS:
            self.data_kind.addItem(label)
        self.data_path = QLineEdit()
        self.data_path.setPlaceholderText("built-in gratings at the model's input shape: nothing to download")
        self.data_browse = QToolButton()
        self.data_browse.setText("…")
        self.data_browse.setToolTip("Browse for the data folder or file")
        self.tint = QCheckBox("Tint graph by")
        self.tint.setChecked(True)
        self.tint.setToolTip(
            "Colour the graph's blocks by their current value of the selected probe (log scale)"
        )
        self.tint_probe = QLabel("grad_norm")
        self.tint_scale = ColorScale(self._tint_colors())
        self.tint_scale.setToolTip("Graph tint: low (left) to high (right), log scale; red: NaN/Inf")

        grid.addWidget(lab("Optimizer"), 0, 0)
        grid.addWidget(self.optimizer, 0, 1)
        grid.addWidget(lab("lr"), 0, 2)
        grid.addWidget(self.lr, 0, 3)
        grid.addWidget(lab("Momentum"), 0, 4)
        mom = QHBoxLayout()
        mom.setSpacing(4)
        mom.addWidget(self.momentum, 1)
        mom.addWidget(self.nesterov)
        grid.addLayout(mom, 0, 5)
        grid.addWidget(lab("Weight decay"), 0, 6)
        grid.addWidget(self.weight_decay, 0, 7)
        grid.addWidget(lab("Batch"), 1, 0)
        grid.addWidget(self.batch, 1, 1)
        grid.addWidget(lab("Steps"), 1, 2)
        grid.addWidget(self.steps, 1, 3)
        grid.addWidget(lab("Seed"), 1, 4)
        grid.addWidget(self.seed, 1, 5)
        grid.addWidget(lab("Device"), 1, 6)
        grid.addWidget(self.device, 1, 7)
        grid.addWidget(lab("Data"), 2, 0)
        grid.addWidget(self.data_kind, 2, 1)
        data_row = QHBoxLayout()
        data_row.setSpacing(2)
        data_row.addWidget(self.data_path, 1)
        data_row.addWidget(self.data_browse)
        grid.addLayout(data_row, 2, 2, 1, 6)
        tint_row = QHBoxLayout()
        tint_row.setSpacing(6)
        tint_row.addWidget(self.tint)
        tint_row.addWidget(self.tint_probe)
        tint_row.addWidget(self.tint_scale, 1)
        grid.addLayout(tint_row, 3, 0, 1, 8)
        for col, stretch in ((1, 3), (3, 3), (5, 3), (7, 3)):
            grid.setColumnStretch(col, stretch)
        self._on_data_kind(0)
        return box

    def _build_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(4)
        st = self.style()

        def button(text: str, icon, tip: str) -> QPushButton:
            b = QPushButton(text)
            if icon is not None:
                b.setIcon(st.standardIcon(icon))
            b.setToolTip(tip)
            b.setAutoDefault(False)
            row.addWidget(b)
            return b

        self.start_btn = button("Start", QStyle.SP_MediaPlay, "Start a new run with these settings")
        self.pause_btn = button("Pause", QStyle.SP_MediaPause, "Pause after the current step")
        self.resume_btn = button("Resume", QStyle.SP_MediaSeekForward, "Go on training")
        self.step_btn = button("Step", QStyle.SP_MediaSkipForward, "Train exactly one step")
        self.stop_btn = button("Stop", QStyle.SP_MediaStop, "End the run (the plots stay)")
        self.reset_btn = button("Reset", QStyle.SP_BrowserReload, "Back to the initial weights, step 0")
        row.addSpacing(6)
        self.twin_btn = button("Compare with plain twin", None,
                               "Train the same network without its shortcuts beside it: same data, seed and "
                               "optimizer (residual solid, plain dashed)")  # fmt: skip
        row.addStretch(1)
        self.export_btn = QToolButton()
        self.export_btn.setText("Export")
        self.export_btn.setToolTip("Save the run's per-step records")
        self.export_btn.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self.export_btn)
        menu.addAction("CSV…", lambda: self.ask_export("csv"))
        menu.addAction("JSON lines…", lambda: self.ask_export("jsonl"))
        self.export_btn.setMenu(menu)
        row.addWidget(self.export_btn)
        return row

    def _build_status(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(8)
        self.status = QLabel()
        self.status.setTextFormat(Qt.RichText)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.status.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.detail = QLabel()
        self.detail.setStyleSheet("color: palette(mid);")
        self.detail.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.badge = QLabel()
        self.badge.setTextFormat(Qt.RichText)
        self.badge.setVisible(False)
        col = QVBoxLayout()
        col.setSpacing(0)
        col.addWidget(self.status)
        col.addWidget(self.detail)
        row.addLayout(col, 1)
        row.addWidget(self.badge, 0, Qt.AlignTop)
        return row

    def _build_banner(self) -> QFrame:
        self.banner = QFrame()
        self.banner.setObjectName("trainBanner")
        self.banner.setStyleSheet(
            "#trainBanner { background: %s; border: 1px solid %s; border-radius: 4px; }"
            % (("#3b1414", "#f87171") if self.style_.dark else ("#fef2f2", "#fca5a5"))
        )
        row = QHBoxLayout(self.banner)
        row.setContentsMargins(8, 4, 4, 4)
        self.banner_text = QLabel()
        self.banner_text.setWordWrap(True)
        self.banner_text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.banner_text.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        row.addWidget(self.banner_text, 1)
        buttons = QVBoxLayout()
        self.resume_low_btn = QPushButton("Resume with lr ×0.1")
        self.resume_low_btn.setToolTip(
            "Roll back to the last good snapshot and go on at a tenth of the learning rate"
        )
        self.resume_low_btn.setAutoDefault(False)
        self.dismiss_btn = QToolButton()
        self.dismiss_btn.setText("✕")
        self.dismiss_btn.setToolTip("Hide this message")
        self.dismiss_btn.setAutoRaise(True)
        top = QHBoxLayout()
        top.addStretch(1)
        top.addWidget(self.dismiss_btn)
        buttons.addLayout(top)
        buttons.addWidget(self.resume_low_btn)
        buttons.addStretch(1)
        row.addLayout(buttons)
        self.banner.setVisible(False)
        return self.banner

    def _build_plots(self) -> QWidget:
        st = self.style_
        self.probe = QComboBox()
        for p in PROBES:
            self.probe.addItem(p, p)
        self.probe.setToolTip("\n".join(f"{p}: {t}" for p, t in PROBE_TITLES.items()))
        self.run_pick = QComboBox()
        self.run_pick.addItem("residual net", "residual")
        self.run_pick.addItem("plain twin", "plain")
        self.run_pick.setVisible(False)
        self.run_pick.setToolTip("Which of the twin runs the per-block curves and the heatmap show")
        self.probe_plot = ProbePlot(st)
        self.legend = DepthLegend(st)
        self.probe_card = _Card("Per block", self.probe_plot, [self.probe, self.run_pick], side=self.legend)
        self.probe_hint = QLabel("colour = depth · log scale · click a curve to select its block")
        self.probe_hint.setStyleSheet("color: palette(mid); font-size: 8pt;")
        self.probe_card.add_right(self.probe_hint)
        self.heatmap = HeatmapPlot(st)
        self.heat_card = _Card("Heatmap <span style='font-weight:normal'>blocks × steps, log₁₀</span>",
                               self.heatmap)  # fmt: skip
        self.highway = HighwayPlot(st)
        self.highway_legend = LineLegend()
        self.highway_card = _Card("Gradient highway <span style='font-weight:normal'>‖∂L/∂x‖ at each block"
                                  "</span>", self.highway)  # fmt: skip
        self.highway_card.add_right(self.highway_legend)
        self.loss_plot = CurvePlot(st, "", ylog=True)
        self.acc_plot = CurvePlot(st, "")
        self.acc_plot.fixed_y = (-0.02, 1.02)
        self.loss_legend = LineLegend()
        self.loss_card = _Card("Loss <span style='font-weight:normal'>(log)</span>", self.loss_plot)
        self.loss_card.add_right(self.loss_legend)
        self.acc_card = _Card("Accuracy", self.acc_plot)
        for p in (self.probe_plot, self.heatmap, self.highway):
            p.blockClicked.connect(self._on_plot_clicked)
        for p in (self.probe_plot, self.heatmap, self.highway, self.loss_plot, self.acc_plot):
            p.viewReset.connect(self._touch)
        self.legend.blockClicked.connect(self._on_plot_clicked)

        split = QSplitter(Qt.Vertical)
        split.setChildrenCollapsible(False)
        split.addWidget(self.probe_card)
        mid = QSplitter(Qt.Horizontal)
        mid.setChildrenCollapsible(False)
        mid.addWidget(self.heat_card)
        mid.addWidget(self.highway_card)
        low = QSplitter(Qt.Horizontal)
        low.setChildrenCollapsible(False)
        low.addWidget(self.loss_card)
        low.addWidget(self.acc_card)
        split.addWidget(mid)
        split.addWidget(low)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 4)
        split.setStretchFactor(2, 3)
        self.plot_splitter = split
        return split

    def _wire(self) -> None:
        c = self.controller
        c.started.connect(self._on_started)
        c.stepped.connect(self._on_stepped)
        c.stateChanged.connect(self._on_state)
        c.faulted.connect(self._on_faulted)
        c.failed.connect(self._on_failed)
        c.lrChanged.connect(lambda lr: self.lr.setText(f"{lr:g}"))
        c.wasReset.connect(self._on_reset)
        self.start_btn.clicked.connect(lambda: self.start())
        self.twin_btn.clicked.connect(lambda: self.start(twin=True))
        self.pause_btn.clicked.connect(self.pause)
        self.resume_btn.clicked.connect(self.resume)
        self.step_btn.clicked.connect(self.step)
        self.stop_btn.clicked.connect(self.stop)
        self.reset_btn.clicked.connect(self.reset)
        self.resume_low_btn.clicked.connect(lambda: self.resume_lower(0.1))
        self.dismiss_btn.clicked.connect(lambda: self.banner.setVisible(False))
        self.optimizer.currentIndexChanged.connect(self._on_optimizer)
        self.lr.editingFinished.connect(self._on_lr_edited)
        self.steps.valueChanged.connect(lambda v: self.controller.set_target(v))
        self.data_kind.currentIndexChanged.connect(self._on_data_kind)
        self.data_browse.clicked.connect(self._browse_data)
        self.probe.currentIndexChanged.connect(self._on_probe)
        self.run_pick.currentIndexChanged.connect(lambda _i: self._touch())
        self.tint.toggled.connect(self._on_tint_toggled)
        w = self.window_
        if w is not None:
            w.sessionChanged.connect(self.set_session)
            w.moduleSelected.connect(self.on_module_selected)
            w.document.graphChanged.connect(self._on_graph)

    # ================================================================== commands

    def start(self, twin: bool = False, then: str = "run") -> bool:
        """Start a new run (``twin``: beside its plain twin) with the controls' settings."""
        if self.session is None:
            self._show_error("Open a model first: training uses the model on screen.")
            return False
        spec = self.spec(twin)
        if spec is None:
            return False
        self._clear_run()
        self.twin = twin
        self.controller.start(self.session, spec, then)
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
        self.fault = None
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
        to ``NAME.plain.EXT`` beside. Returns the files written."""
        from ..core.training import write_csv, write_jsonl

        path = Path(path)
        fmt_ = fmt_ or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
        out = []
        for key, buf in self.buffers.items():
            if not buf.count:
                continue
            target = path if key == "residual" else path.with_name(f"{path.stem}.plain{path.suffix}")
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
                from ..core.training.probes import probe_blocks

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
        self._update_buttons()
        self._update_status()

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
        self.buffers = {}
        self.info = {}
        self.fault = None
        self.error = None
        self.flag_since = {}
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
        self.info = info
        self.twin = bool(info.get("twin"))
        names = list(info.get("names", []))
        if names != self.names:
            self._set_blocks(names)
        self.buffers = {"residual": RunBuffer(names, CAPACITY)}
        if self.twin:
            self.buffers["plain"] = RunBuffer(info.get("plain_names") or names, CAPACITY)
        self.run_pick.setVisible(self.twin)
        if not self.twin:
            self.run_pick.setCurrentIndex(0)
        s = self.style_
        res = QPen(QColor(s.residual), 2)
        plain = QPen(QColor(s.plain), 2, PLAIN_DASH)
        if self.twin:
            self.loss_legend.set_entries([("residual", res), ("plain twin", plain)])
            self.highway_legend.set_entries([("now", res), ("step 0", QPen(QColor(s.residual), 1.4, Qt.DotLine)),
                                             ("plain", plain)])  # fmt: skip
        else:
            self.loss_legend.set_entries([])
            self.highway_legend.set_entries(
                [("now", res), ("step 0", QPen(QColor(s.residual), 1.4, Qt.DotLine))]
            )
        if info.get("notes"):
            self.detail.setToolTip("\n".join(info["notes"]))
        self._touch()

    def _on_stepped(self, batch: list) -> None:
        if not self.buffers:
            return
        res, plain = self.buffers.get("residual"), self.buffers.get("plain")
        for item in batch:
            r = item.get("residual")
            if r is not None and res is not None:
                res.append(r)
            p = item.get("plain")
            if p is not None and plain is not None:
                plain.append(p)
        self._track_flags()
        self._touch()

    def _on_state(self, state: str) -> None:
        self._update_buttons()
        self._update_status()
        self._touch()
        self.runStateChanged.emit(state)

    def _update_buttons(self) -> None:
        c = self.controller
        state = c.state
        has = c.has_run
        running = state in ("running", "building")
        self.pause_btn.setEnabled(state == "running")
        self.resume_btn.setEnabled(has and state in ("paused", "finished", "error")
                                   or (state == "faulted" and self.twin))  # fmt: skip
        self.step_btn.setEnabled(self.session is not None and not running and state != "faulted" or
                                 (state == "faulted" and self.twin))  # fmt: skip
        self.stop_btn.setEnabled(has and state not in ("stopped", "idle"))
        self.reset_btn.setEnabled(has and not running or bool(self.buffers) and not has)
        self.start_btn.setEnabled(self.session is not None)
        self.twin_btn.setEnabled(self.session is not None)
        self.export_btn.setEnabled(any(b.count for b in self.buffers.values()))

    def _on_reset(self) -> None:
        names = self.info.get("names", self.names)
        self.buffers = {k: RunBuffer(b.names, CAPACITY) for k, b in self.buffers.items()}
        self.fault = None
        self.error = None
        self.flag_since = {}
        self.banner.setVisible(False)
        for p in (self.probe_plot, self.heatmap, self.highway, self.loss_plot, self.acc_plot):
            p.clear_data()
        self._set_blocks(names)
        self._update_flags(force=True)
        self._touch()

    def _on_faulted(self, fault: dict) -> None:
        self.fault = fault
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
        self.error = message
        self._banner(f"<b style='color:{FAULT}'>Training failed.</b> {_html(message)}", resume=False)

    def _show_error(self, message: str) -> None:
        self._banner(f"<b style='color:{FAULT}'>Cannot start.</b> {_html(message)}", resume=False)

    def _banner(self, html: str, resume: bool) -> None:
        self.banner_text.setText(html)
        self.resume_low_btn.setVisible(resume)
        self.banner.setVisible(True)

    # ================================================================== flags

    def _track_flags(self) -> None:
        """Which norms are flagged now, and since when (flag keys of the twin get 'plain:')."""
        for key, buf in self.buffers.items():
            last = buf.latest
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

    def _update_flags(self, force: bool = False) -> None:
        entries = []
        for key in sorted(self.flag_since, key=lambda k: (k.startswith("plain:"), k)):
            which = "plain" if key.startswith("plain:") else "residual"
            rest = key[len("plain:") :] if which == "plain" else key
            buf = self.buffers.get(which)
            if buf is None or buf.latest is None:
                continue
            block, _, probe = rest.rpartition(".")
            kind = buf.latest.get("flags", {}).get(rest, "")
            v = buf.latest.get("blocks", {}).get(block, {}).get(probe, float("nan"))
            entries.append((key, block, probe, kind, v, self.flag_since[key], which))
        shown = tuple((e[0], e[3]) for e in entries)
        if shown == self._flags_shown and not force:
            return
        self._flags_shown = shown
        self.flag_list.clear()
        for _key, block, probe, kind, v, since, which in entries:
            who = "plain twin · " if which == "plain" else ""
            arrow = "↓" if kind == "vanishing" else "↑"
            item = QListWidgetItem(f"{arrow} {who}{block} · {probe} {kind} ({fmt(v)}) since step {since}")
            item.setData(Qt.UserRole, block)
            item.setForeground(QColor("#b45309" if kind == "vanishing" else FAULT))
            self.flag_list.addItem(item)
        n = len(entries)
        self.flag_list.setVisible(n > 0)
        self.badge.setVisible(n > 0)
        if n:
            self.badge.setText(f"<span style='background:#f59e0b; color:white; border-radius:3px; padding:1px 5px'>"
                               f"&nbsp;⚠ {n} flagged&nbsp;</span>")  # fmt: skip
            self.badge.setToolTip("Gradient norms below 1e-7 (vanishing) or above 1e3 (exploding) now")

    # ================================================================== drawing

    def _touch(self) -> None:
        self._dirty = True
        self._stale.update(range(len(self._groups)))

    def _on_timer(self) -> None:
        """One group of plots per tick, in turn: each event-loop pass redraws and repaints a third
        of the tab, so the UI never waits for all of it at once (each plot still gets >= 20 Hz)."""
        if not self._stale or not self.isVisible():
            return
        n = len(self._groups)
        for k in range(1, n + 1):
            group = (self._last_group + k) % n
            if group in self._stale:
                self._last_group = group
                self._draw_group(group)
                break
        if not self._stale:
            self._dirty = False
            self.redraws += 1

    def current_probe(self) -> str:
        return self.probe.currentData() or "grad_norm"

    def _on_probe(self, _i: int) -> None:
        p = self.current_probe()
        self.tint_probe.setText(p)
        self.probe_plot.getPlotItem().setLabel("left", p, **{"font-size": "8pt", "color": self.style_.dim})
        self._tint_version = None
        self._touch()
        self.update_tint(force=True)

    def shown_buffer(self) -> RunBuffer | None:
        key = self.run_pick.currentData() if self.twin else "residual"
        return self.buffers.get(key) or self.buffers.get("residual")

    def redraw(self) -> None:
        """Push the buffers into every plot now (tests, the screenshot, the benchmark)."""
        import time

        t0 = time.perf_counter()
        for group in range(len(self._groups)):
            self._draw_group(group)
        self._dirty = False
        self.redraws += 1
        self.last_draw_ms = (time.perf_counter() - t0) * 1000

    def _draw_group(self, group: int) -> None:
        self._groups[group]()
        self._stale.discard(group)

    def _draw_probe(self) -> None:
        """The per-block curves (with the NaN/Inf marks), the status line and the flag list."""
        probe = self.current_probe()
        buf = self.shown_buffer()
        if buf is not None and buf.count:
            self.probe_plot.set_data(buf.steps(), buf.probe(probe))
            fault_steps = [float(f["step"]) for f in buf.faults]
            pts = []
            for b in buf.bad_blocks():
                i = buf.index.get(b)
                if i is not None:
                    v = _last_finite(buf.probe(probe)[:, i : i + 1])[0]
                    pts.append((float(buf.latest["step"]), float(v)))
            self.probe_plot.set_faults(pts, fault_steps)
        else:
            self.probe_plot.clear_data()
        res = self.buffers.get("residual")
        self._update_flags()
        self._update_status()
        self.export_btn.setEnabled(bool(res is not None and res.count))

    def _draw_middle(self) -> None:
        """The heatmap and the gradient highway."""
        probe = self.current_probe()
        buf = self.shown_buffer()
        if buf is not None and buf.count:
            rows = buf.n > 0  # evenly spaced rows; the very first step alone until there are some
            self.heatmap.set_data(buf.steps(with_latest=not rows), buf.probe(probe, with_latest=not rows))
            self.heatmap.set_fault_steps([float(f["step"]) for f in buf.faults])
        else:
            self.heatmap.clear_data()
        for key in ("residual", "plain"):
            b = self.buffers.get(key)
            if b is not None and b.count:
                self.highway.set_series(key, _last_finite(b.probe("input_grad_norm")))
                self.highway.set_series(key + "0", b.first_probe("input_grad_norm"))
            else:
                self.highway.set_series(key, None)
                self.highway.set_series(key + "0", None)
        self.highway.fit()
        res = self.buffers.get("residual")
        bad = res.bad_blocks() if res is not None and res.count else []
        self.highway.set_faults(
            [res.index[b] for b in bad if b in res.index], self.highway.values.get("residual")
        )

    def _draw_lower(self) -> None:
        """Loss and accuracy."""
        for key in ("residual", "plain"):
            b = self.buffers.get(key)
            if b is not None and b.count:
                s = b.steps()
                self.loss_plot.set_series(key, s, b.scalar("loss"))
                self.acc_plot.set_series(key, s, b.scalar("accuracy"))
            else:
                self.loss_plot.set_series(key, None, None)
                self.acc_plot.set_series(key, None, None)
        self.loss_plot.fit()
        self.acc_plot.fit()

    def _update_status(self) -> None:
        state = self.controller.state
        color, word = STATE_TEXT.get(state, ("#6b7280", state))
        parts = [f"<b style='color:{color}'>● {word}</b>"]
        res = self.buffers.get("residual")
        if res is not None and res.latest is not None:
            last = res.latest
            target = self.steps.value()
            parts.append(f"step <b>{last['step'] + 1}</b>" + (f" / {target}" if target else ""))
            plain = self.buffers.get("plain")
            if plain is not None and plain.latest is not None:
                pl = plain.latest
                parts.append(f"loss <b>{fmt(last['loss'])}</b> · plain <b>{fmt(pl['loss'])}</b>")
                parts.append(f"acc <b>{last['accuracy']:.0%}</b> · plain <b>{pl['accuracy']:.0%}</b>")
            else:
                parts.append(f"loss <b>{fmt(last['loss'])}</b>")
                parts.append(f"acc <b>{last['accuracy']:.1%}</b>")
            rate = res.steps_per_second()
            if state == "running" and rate > 0:
                parts.append(f"<b>{rate:.1f}</b> steps/s")
            parts.append(f"lr {last['lr']:g}")
        elif self.session is None:
            parts.append("open a model to train it")
        elif state in ("idle", "stopped"):
            parts.append(f"{len(self.names)} blocks · press Start (or Compare with plain twin)")
        text = " · ".join(parts)
        if text != self.status.text():
            self.status.setText(text)
        info = self.info
        if info:
            threads = (
                f", {info['threads']} thread{'s' if info['threads'] != 1 else ''}"
                if info.get("threads")
                else ""
            )
            twin = " + plain twin" if info.get("twin") else ""
            self.detail.setText(f"{info.get('model', '')}{twin} · {info.get('data', '')} · {info.get('optimizer', '')} · "
                                f"batch {info.get('batch_size', '')} · {info.get('device', '')}{threads}")  # fmt: skip
        elif self.session is not None:
            self.detail.setText(f"{getattr(self.session.report, 'model_name', '')}")
        else:
            self.detail.setText("")

    def steps_done(self) -> int:
        res = self.buffers.get("residual")
        return 0 if res is None or res.latest is None else int(res.latest["step"]) + 1

    # ================================================================== graph tint

    def _tint_colors(self) -> list[QColor]:
        """The heatmap's colour map (viridis), softened so node labels stay readable on it."""
        cols = self.__dict__.get("_tint_cols")
        if cols is None:
            import pyqtgraph as pg

            base = QColor(self.style_.bg)
            cmap = pg.colormap.get("viridis")
            amount = 0.5 if not self.style_.dark else 0.35
            cols = [_pastel(cmap.map(float(f), mode="qcolor"), base, amount) for f in np.linspace(0, 1, 7)]
            self._tint_cols = cols
        return cols

    def _tint_color(self, f: float) -> QColor:
        cols = self._tint_colors()
        f = min(1.0, max(0.0, f)) * (len(cols) - 1)
        i = min(int(f), len(cols) - 2)
        t = f - i
        a, b = cols[i], cols[i + 1]
        return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                      round(a.blue() + (b.blue() - a.blue()) * t))  # fmt: skip

    def _on_tint_toggled(self, on: bool) -> None:
        if on:
            self.update_tint(force=True)
        else:
            self.clear_tint()

    def _on_graph(self, _drawn) -> None:
        self._node_graph = None
        self._tinted = set()
        self.update_tint(force=True)

    def clear_tint(self) -> None:
        w = self.window_
        if w is None:
            return
        items = w.scene.node_items
        for nid in list(self._tinted):
            item = items.get(nid)
            if item is not None:
                try:
                    item.set_tint(None)
                except RuntimeError:
                    pass
        self._tinted = set()
        self._tint_version = None
        self.tint_scale.set_range(None, None)

    def _node_map(self) -> dict[str, list[str]]:
        """Graph node id → the blocks it stands for (a block, a member of one, a roll-up, a stage)."""
        w = self.window_
        graph = w.scene.graph
        if self._node_graph is graph:
            return self._node_blocks
        names = self.buffers["residual"].names if self.buffers else self.names
        index = {n: i for i, n in enumerate(names)}
        out: dict[str, list[str]] = {}
        for nid, item in w.scene.node_items.items():
            node = item.node
            if node.kind == "rollup" and node.name in index:
                i = index[node.name]
                out[nid] = names[i : i + max(1, node.repeat)]
            elif node.block and node.block in index:
                out[nid] = [node.block]
            elif node.kind == "module":
                inside = [b for b in names if b.startswith(node.name + ".")]
                if inside:
                    out[nid] = inside
        self._node_graph, self._node_blocks = graph, out
        return out

    def update_tint(self, force: bool = False) -> None:
        """Colour the graph's blocks by their latest value of the selected probe (log scale)."""
        w = self.window_
        res = self.buffers.get("residual")
        if w is None or not self.tint.isChecked() or res is None or res.latest is None:
            return
        key = (res.version, self.current_probe(), id(w.scene.graph))
        if key == self._tint_version and not force:
            return
        self._tint_version = key
        probe = self.current_probe()
        vals = res.latest_probe(probe)
        bad = set(res.bad_blocks())
        if self.fault and self.fault.get("which", "residual") == "residual":
            bad |= set(self.fault.get("blocks") or [])
        logs = {}
        for name, v in zip(res.names, vals):
            if math.isfinite(v) and v > 0:
                logs[name] = math.log10(v)
        if logs:
            lo, hi = min(logs.values()), max(logs.values())
            self.tint_scale.set_range(lo, hi)
        else:
            lo = hi = 0.0
            self.tint_scale.set_range(None, None)
        span = hi - lo if hi > lo else 1.0
        red = _pastel(QColor(FAULT), QColor(self.style_.bg), 0.35)
        tinted = set()
        items = w.scene.node_items
        for nid, blocks in self._node_map().items():
            item = items.get(nid)
            if item is None:
                continue
            color = None
            if any(b in bad for b in blocks):
                color = red
            else:
                ls = [logs[b] for b in blocks if b in logs]
                if ls:
                    color = self._tint_color((sum(ls) / len(ls) - lo) / span)
            try:
                item.set_tint(color)
            except RuntimeError:  # the scene is being redrawn
                continue
            if color is not None:
                tinted.add(nid)
        for nid in self._tinted - tinted:
            item = items.get(nid)
            if item is not None:
                try:
                    item.set_tint(None)
                except RuntimeError:
                    pass
        self._tinted = tinted

    # ================================================================== data source controls

    def _on_optimizer(self, _i: int) -> None:
        opt = self.optimizer.currentData()
        if self.lr.text() in DEFAULT_LR.values():
            self.lr.setText(DEFAULT_LR[opt])
        if self.weight_decay.text() in DEFAULT_WD.values():
            self.weight_decay.setText(DEFAULT_WD[opt])
        self.momentum.setEnabled(opt == "sgd")
        self.nesterov.setEnabled(opt == "sgd")

    def _on_data_kind(self, i: int) -> None:
        label, prefix, browse = DATA_KINDS[i]
        self.data_path.setEnabled(browse is not None)
        self.data_browse.setEnabled(browse is not None)
        self.data_path.setPlaceholderText({
            None: "built-in gratings at the model's input shape: nothing to download",
            "cifar10": "the cifar-10-batches-py folder (data_batch_1 … 5)",
            "folder": "a folder with one sub-folder of images per class",
            "npz": "an .npz file with arrays x (images) and y (labels)",
        }.get(prefix if browse else None, ""))  # fmt: skip

    def _browse_data(self) -> None:
        label, _prefix, browse = DATA_KINDS[self.data_kind.currentIndex()]
        start = self.data_path.text() or str(settings().value("training/data_dir", os.path.expanduser("~")))
        if browse == "dir":
            path = QFileDialog.getExistingDirectory(self, f"Choose the {label.lower()}", start)
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Choose the NPZ file", start, "NumPy archives (*.npz)"
            )
        if path:
            self.data_path.setText(path)
            settings().setValue("training/data_dir", os.path.dirname(path))

    # ================================================================== shutdown

    def shutdown(self, timeout_ms: int = 2000) -> bool:
        self._timer.stop()
        self._tint_timer.stop()
        return self.controller.shutdown(timeout_ms)


def _last_finite(values: np.ndarray) -> np.ndarray:
    """Per column, the last positive finite value (NaN if none): after a NaN/Inf step the
    gradient highway keeps showing the last good measurement."""
    if values.size == 0:
        return np.full(values.shape[1] if values.ndim == 2 else 0, np.nan)
    ok = np.isfinite(values) & (values > 0)
    rows = values.shape[0]
    idx = rows - 1 - np.argmax(ok[::-1], axis=0)
    out = values[idx, np.arange(values.shape[1])]
    return np.where(ok.any(axis=0), out, np.nan)


def _number_validator(parent) -> QDoubleValidator:
    """0 or more, '0.1' or '1e-3' whatever the desktop's locale (a comma locale would otherwise
    refuse '0.1', and Enter would not apply a new learning rate)."""
    v = QDoubleValidator(0.0, 1e9, 12, parent)
    v.setLocale(QLocale.c())
    v.setNotation(QDoubleValidator.ScientificNotation)
    return v


def _float(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", "."))
    except (ValueError, AttributeError):
        return None


def _html(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")
