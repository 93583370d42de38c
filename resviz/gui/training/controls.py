"""The Training tab's controls: the settings form (optimizer, learning rate, batch, data source,
graph tint), the command buttons, the status line, the fault banner and the plot cards, built once
by :class:`TrainingControlsMixin` and wired to the panel; plus the reactions of the form itself
(optimizer defaults, data source kind, browsing for data).

A mixin of :class:`~resviz.gui.training.panel.TrainingPanel`: it creates the widgets the
panel's other parts (:mod:`~resviz.gui.training.views`, :mod:`~resviz.gui.training.tint`)
read and update.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QLocale, Qt
from PySide6.QtGui import QDoubleValidator
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
    QMenu,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.training.steps import PROBES
from ...core.training.store import PROBE_TITLES
from ..window.menus import settings
from .legends import ColorScale, DepthLegend, LineLegend
from .plots import CurvePlot, HeatmapPlot, HighwayPlot, ProbePlot

DEFAULT_BATCH = 32  # resviz train's --batch default and TrainConfig's (a test holds the three together)
DEFAULT_LR = {"sgd": "0.1", "adam": "0.001", "adamw": "0.001"}
DEFAULT_WD = {"sgd": "5e-4", "adam": "0", "adamw": "0.01"}
DATA_KINDS = (  # (label, prefix, browse: 'dir' | 'file' | None)
    ("Synthetic (built in)", "synthetic", None),
    ("CIFAR-10 folder", "cifar10", "dir"),
    ("Image folder", "folder", "dir"),
    ("NPZ file", "npz", "file"),
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


class TrainingControlsMixin:
    """Builds and wires the Training tab's widgets (a mixin of ``TrainingPanel``)."""

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
        self.batch.setValue(int(s.value("training/batch", DEFAULT_BATCH)))
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
        # the settings of a run to start: hidden while a recorded run is shown (its own are in the
        # detail line; the form's would contradict them)
        self.settings_widgets = _widgets_in(grid, rows=range(3))
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
        self.estimate = QLabel()  # before Start: the time a step should take; a slow CPU run: what to do
        self.estimate.setTextFormat(Qt.RichText)
        self.estimate.setWordWrap(True)
        self.estimate.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.estimate.setVisible(False)
        col = QVBoxLayout()
        col.setSpacing(0)
        col.addWidget(self.status)
        col.addWidget(self.detail)
        # where the run is recorded (its run directory): copy the path, open the folder
        self.recorded = QLabel()
        self.recorded.setTextFormat(Qt.RichText)
        self.recorded.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.recorded.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.recorded.setVisible(False)
        col.addWidget(self.recorded)
        col.addWidget(self.estimate)
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
        c.recording.connect(self._on_recording)
        self.recorded.linkActivated.connect(self._on_recorded_link)
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
        self.steps.valueChanged.connect(lambda _v: self._update_buttons())  # a finished run may go on
        self.data_kind.currentIndexChanged.connect(self._on_data_kind)
        self.data_browse.clicked.connect(self._browse_data)
        self.probe.currentIndexChanged.connect(self._on_probe)
        self.run_pick.currentIndexChanged.connect(lambda _i: self._touch())
        self.tint.toggled.connect(self._on_tint_toggled)
        self.estimate.linkActivated.connect(self._on_offer)
        self.batch.valueChanged.connect(lambda _v: self._update_estimate())
        self.steps.valueChanged.connect(lambda _v: self._update_estimate())
        self.device.currentIndexChanged.connect(lambda _i: self._update_estimate())
        w = self.window_
        if w is not None:
            w.aux.finished.connect(self._on_aux)
            w.aux.failed.connect(self._on_aux)
            w.sessionChanged.connect(self.set_session)
            w.moduleSelected.connect(self.on_module_selected)
            w.document.graphChanged.connect(self._on_graph)

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


def _number_validator(parent) -> QDoubleValidator:
    """0 or more, '0.1' or '1e-3' whatever the desktop's locale (a comma locale would otherwise
    refuse '0.1', and Enter would not apply a new learning rate)."""
    v = QDoubleValidator(0.0, 1e9, 12, parent)
    v.setLocale(QLocale.c())
    v.setNotation(QDoubleValidator.ScientificNotation)
    return v


def _widgets_in(grid: QGridLayout, rows) -> list[QWidget]:
    """The widgets in ``rows`` of ``grid``, nested layouts included."""
    found: list[QWidget] = []

    def walk(item) -> None:
        if item is None:
            return
        if item.widget() is not None:
            found.append(item.widget())
        elif item.layout() is not None:
            lay = item.layout()
            for i in range(lay.count()):
                walk(lay.itemAt(i))

    for i in range(grid.count()):
        row, _col, _rspan, _cspan = grid.getItemPosition(i)
        if row in rows:
            walk(grid.itemAt(i))
    return found
