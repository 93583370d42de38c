"""What the Training tab shows of a run: the throttled redraw of the plots (one of three plot
groups per timer tick, only when something changed), the status line, and the list of flagged
(vanishing or exploding) gradient norms.

A mixin of :class:`~resviz.gui.training.panel.TrainingPanel`: it reads the panel's run buffers
and pushes them into the plots built by :mod:`~resviz.gui.training.controls`.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QListWidgetItem

from ...core.training.store import RunStore
from .plot_base import FAULT, fmt

STATE_TEXT = {
    "idle": ("#6b7280", "ready"), "building": ("#6b7280", "building the run…"),
    "running": ("#16a34a", "running"), "paused": ("#d97706", "paused"),
    "finished": ("#2563eb", "finished"), "faulted": (FAULT, "stopped by NaN/Inf"),
    "error": (FAULT, "failed"), "stopped": ("#6b7280", "stopped"),
}  # fmt: skip


class TrainingViewsMixin:
    """The flag list, the plots' redraw and the status line (a mixin of ``TrainingPanel``)."""

    # ================================================================== flags

    def _update_flags(self, force: bool = False) -> None:
        entries = self.model.flag_entries()
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

    def shown_buffer(self) -> RunStore | None:
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
        text = " · ".join(p for p in self._status_parts(self.run_state()) if p)
        if text != self.status.text():
            self.status.setText(text)
        self._update_detail()

    def _status_parts(self, state: str) -> list[str]:
        """The status line's pieces: the state, then the latest step, or what to do next."""
        color, word = STATE_TEXT.get(state, ("#6b7280", state))
        parts = [f"<b style='color:{color}'>● {word}</b>"]
        watch = self.watches.get("residual")
        res = self.buffers.get("residual")
        if res is not None and res.latest is not None:
            target = self.steps.value() if watch is None else int((watch.follower.meta.get("config") or {}).get("steps") or 0)
            plain = self.buffers.get("plain")
            rate = rate_text(res.steps_per_second(), res.latest.get("seconds")) if state == "running" else ""
            parts += step_parts(res.latest, plain.latest if plain is not None else None, target,
                                "plain" if watch is None else "overlay", rate)  # fmt: skip
            if watch is not None and watch.follower.live and watch.follower.quiet_for() > QUIET_S:
                parts.append(f"no new step for {_duration(watch.follower.quiet_for())}")
        elif watch is not None:
            parts.append(f"no step recorded yet in {watch.follower.path.name}")
        elif self.session is None:
            parts.append("open a model to train it")
        elif state in ("idle", "stopped"):
            parts.append(f"{len(self.names)} blocks · press Start (or Compare with plain twin)")
        return parts

    def _update_detail(self) -> None:
        """The line under the status: the followed run, else the run's settings, else the model."""
        watch = self.watches.get("residual")
        if watch is not None:
            over = self.watches.get("plain")
            errors = watch.follower.errors
            self.detail.setText(f"run {watch.follower.describe()}"
                                + (f" · overlaid: {over.follower.describe()}" if over is not None else "")
                                + (f" · {len(errors)} probe error{'s' if len(errors) != 1 else ''} in events.jsonl"
                                   if errors else ""))  # fmt: skip
            self.detail.setToolTip("\n".join(errors[-5:]) if errors else str(watch.follower.path))
        elif self.info:
            self.detail.setText(run_detail(self.info))
        elif self.session is not None:
            self.detail.setText(f"{getattr(self.session.report, 'model_name', '')}")
        else:
            self.detail.setText("")

    def steps_done(self) -> int:
        return self.model.steps_done()


QUIET_S = 60  # a live run with no new record for this long says so (its writer may have died)

def step_parts(last: dict, plain: dict | None, target: int, other: str, rate: str = "") -> list[str]:
    """The status line's pieces for the latest step ``last`` (and the plain twin's or the overlaid
    run's, ``plain``, named ``other``): step / target, loss, accuracy, rate, learning rate."""
    parts = [f"step <b>{last['step'] + 1}</b>" + (f" / {target}" if target else "")]
    if plain is not None:
        parts.append(f"loss <b>{fmt(last['loss'])}</b> · {other} <b>{fmt(plain['loss'])}</b>")
        parts.append(f"acc <b>{last['accuracy']:.0%}</b> · {other} <b>{plain['accuracy']:.0%}</b>")
    else:
        parts.append(f"loss <b>{fmt(last['loss'])}</b>")
        parts.append(f"acc <b>{last['accuracy']:.1%}</b>")
    if rate:
        parts.append(rate)
    parts.append(f"lr {last['lr']:g}")
    return parts


def run_detail(info: dict) -> str:
    """``resnet20 + plain twin · synthetic · sgd · batch 32 · cpu, 4 threads`` (the ``started`` info)."""
    n = info.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
    twin = " + plain twin" if info.get("twin") else ""
    return (f"{info.get('model', '')}{twin} · {info.get('data', '')} · {info.get('optimizer', '')} · "
            f"batch {info.get('batch_size', '')} · {info.get('device', '')}{threads}")  # fmt: skip



def rate_text(steps_per_second: float, seconds_per_step: float | None = None) -> str:
    """``12.3 steps/s``, or ``4.2 s/step`` when a step takes more than a second (never ``0.0 steps/s``)."""
    rate = steps_per_second if steps_per_second and steps_per_second > 0 else 0.0
    if rate <= 0 and seconds_per_step is not None and seconds_per_step == seconds_per_step and seconds_per_step > 0:
        rate = 1.0 / seconds_per_step
    if rate <= 0:
        return ""
    if rate >= 1:
        return f"<b>{rate:.1f}</b> steps/s"
    return f"<b>{1 / rate:.1f}</b> s/step" if rate > 1 / 100 else f"<b>{_duration(1 / rate)}</b> per step"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
