"""The Training tab under load: UI stalls while training, plot redraw rate, close-mid-step join.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_training.py
    python benchmarks/bench_gui_training.py --only redraw --blocks 50 --steps 5000
    python benchmarks/bench_gui_training.py --only stall --model resnet56 --seconds 20

Three measurements, each in the real window (``QtMainWindow`` with the Training tab installed):

* ``stall``  trains a zoo model flat out on the worker thread while a 5 ms QTimer on the UI thread
             records the gaps between its ticks; the longest gap is the longest time the UI could
             not react (aim: < 50 ms). The plots redraw at their normal rate meanwhile.
* ``redraw`` feeds ``--blocks`` synthetic blocks × ``--steps`` steps into the panel (no training),
             then times full frames: one more step, the plots' ``setData``/``setImage``, and a
             paint of the whole tab into a pixmap. Reported as frames per second (aim: >= 20).
* ``close``  starts a run whose steps take about a second, closes the window inside a step, and
             reports how long closing waited for the training thread (aim: < 2 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "RESVIZ_SETTINGS" not in os.environ:  # leave the user's settings (last batch size, ...) alone
    import tempfile

    os.environ["RESVIZ_SETTINGS"] = os.path.join(tempfile.mkdtemp(prefix="resviz-bench-"), "settings.ini")

import resviz.gui  # noqa: E402,F401  (keeps None alive under PySide6 abi3 wheels on Python 3.11)


def _app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([sys.argv[0]])


def _window(size=(1600, 1000)):
    from resviz.gui.training.tab import install
    from resviz.gui.window.main_window import QtMainWindow

    w = QtMainWindow()
    tab = install(w, None)
    w.resize(*size)
    w.show()
    w.select_tab("Training")
    return w, tab


def _wait(pred, timeout=300.0):
    from PySide6.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not pred():
        QApplication.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("timed out")


def _open(w, model: str, shape: str | None):
    w.open_source(model, input_shape=shape)
    _wait(lambda: w.is_idle() and w.document.drawn is not None)
    if w.session is None:
        raise SystemExit(f"could not open {model}: {w.document.error}")


def _training_panel(model: str, shape: str | None, batch: int):
    """A window on ``model`` with its Training tab set to run forever on the CPU."""
    w, tab = _window()
    _open(w, model, shape)
    p = tab.panel
    p.batch.setValue(batch)
    p.steps.setValue(0)
    p.device.setCurrentText("cpu")
    return w, tab, p


# ------------------------------------------------------------------------------------ stall


def bench_stall(model: str, shape: str | None, batch: int, seconds: float, twin: bool) -> dict:
    from PySide6.QtCore import QTimer

    w, tab, p = _training_panel(model, shape, batch)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    p.start(twin=twin)
    _wait(lambda: p.steps_done() >= 2)  # the first steps warm up (allocations, lazy init)
    s0, redraws0 = p.steps_done(), p.redraws
    last[0] = time.perf_counter()
    timer.start()
    t0 = time.perf_counter()
    _wait(lambda: time.perf_counter() - t0 >= seconds, timeout=seconds + 60)
    timer.stop()
    elapsed = time.perf_counter() - t0
    steps = p.steps_done() - s0
    redraws = p.redraws - redraws0
    p.stop()
    _wait(lambda: p.controller.state in ("stopped", "idle"))
    threads = (p.info or {}).get("threads")
    w.close()
    gaps_ms = sorted(g * 1000 for g in gaps)
    return {
        "model": f"{model}{' + plain twin' if twin else ''} @ {shape or 'default'} b{batch}",
        "blocks": len(p.names),
        "steps/s": steps / elapsed,
        "redraws/s": redraws / elapsed,
        "max gap ms": gaps_ms[-1] if gaps_ms else float("nan"),
        "p99 gap ms": gaps_ms[int(0.99 * (len(gaps_ms) - 1))] if gaps_ms else float("nan"),
        "median gap ms": statistics.median(gaps_ms) if gaps_ms else float("nan"),
        "torch threads": threads or "unchanged",
    }


# ------------------------------------------------------------------------------------ redraw


def bench_redraw(blocks: int, steps: int, frames: int) -> dict:
    import math
    import random

    from PySide6.QtWidgets import QApplication

    w, tab = _window()
    p = tab.panel
    stages = 3
    per = math.ceil(blocks / stages)
    names = [f"layer{s + 1}.{i}" for s in range(stages) for i in range(per)][:blocks]
    p._set_blocks(names)
    p._on_started({"model": "synthetic", "names": names, "twin": False, "device": "cpu", "data": "synthetic",
                   "notes": [], "lr": 0.1, "optimizer": "sgd", "batch_size": 64, "steps": 0})  # fmt: skip
    rng = random.Random(0)
    probes = ("grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio", "gain")

    def payload(step: int) -> dict:
        decay = 1.0 / (1 + step / 500)
        return {
            "step": step, "loss": 2.3 * decay + rng.random() * 0.1, "accuracy": min(1.0, step / steps),
            "lr": 0.1, "seconds": 0.01, "flags": {}, "nonfinite": False, "message": "", "t": step * 0.01,
            "blocks": {n: {k: (0.5 + rng.random()) * decay * (1 + i) ** -0.5 for k in probes}
                       for i, n in enumerate(names)},
        }  # fmt: skip

    t0 = time.perf_counter()
    p._on_stepped([{"residual": payload(s), "plain": None} for s in range(steps)])
    fill_s = time.perf_counter() - t0
    QApplication.processEvents()
    p.redraw()
    p.grab()  # first paint: fonts, caches
    plots = (p.probe_plot, p.heatmap, p.highway, p.loss_plot, p.acc_plot)
    times, draw, whole = [], [], []
    for f in range(frames):
        t = time.perf_counter()
        p._on_stepped([{"residual": payload(steps + f), "plain": None}])
        p.redraw()
        draw.append(p.last_draw_ms)
        for plot in plots:  # what the screen repaints after a redraw: the five plots
            plot.viewport().repaint()
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        p.grab()  # worst case: paint the whole tab (controls included) into a pixmap
        whole.append(time.perf_counter() - t + draw[-1] / 1000)
    rows = len(p.buffers["residual"])
    w.close()
    med = statistics.median(times)
    return {
        "blocks × steps": f"{blocks} × {steps}",
        "rows kept": rows,
        "fill ms": fill_s * 1000,
        "setData ms (median)": statistics.median(draw),
        "frame ms (median)": med * 1000,
        "frame ms (p90)": sorted(times)[int(0.9 * (len(times) - 1))] * 1000,
        "fps": 1 / med,
        "fps, whole tab grabbed": 1 / statistics.median(whole),
    }


# ------------------------------------------------------------------------------------ close


def bench_close(model: str, shape: str | None, batch: int) -> dict:
    w, tab, p = _training_panel(model, shape, batch)
    p.start()
    _wait(lambda: p.steps_done() >= 1)
    step_s = p.buffers["residual"].latest["seconds"]
    _wait(lambda: p.steps_done() >= 2)
    time.sleep(min(0.4, step_s / 3))  # inside a step now
    t0 = time.perf_counter()
    w.close()
    close_ms = (time.perf_counter() - t0) * 1000
    return {
        "model": f"{model} @ {shape or 'default'} b{batch}",
        "step s": step_s,
        "close ms": close_ms,
        "join ms": p.controller.join_ms,
        "thread ended": not p.controller.is_running(),
    }


def _print(title: str, row: dict) -> None:
    print(f"\n{title}")
    for k, v in row.items():
        print(f"  {k:>22}: {v:.1f}" if isinstance(v, float) else f"  {k:>22}: {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("stall", "redraw", "close"), action="append")
    ap.add_argument("--model", default="resnet20", help="zoo model for stall (default resnet20)")
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--twin", action="store_true", help="stall: train beside the plain twin")
    ap.add_argument("--blocks", type=int, default=50)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--close-model", default="resnet56")
    ap.add_argument("--close-batch", type=int, default=128)
    args = ap.parse_args(argv)
    only = set(args.only or ("stall", "redraw", "close"))
    _app()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"Qt platform {os.environ.get('QT_QPA_PLATFORM')}")  # fmt: skip
    if "redraw" in only:
        _print("plot redraw (synthetic records)", bench_redraw(args.blocks, args.steps, args.frames))
    if "stall" in only:
        _print("UI event-loop stalls while training flat out",
               bench_stall(args.model, args.input, args.batch, args.seconds, args.twin))  # fmt: skip
    if "close" in only:
        _print("closing the window mid-step", bench_close(args.close_model, "3x32x32", args.close_batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
