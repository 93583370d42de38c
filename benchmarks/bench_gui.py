"""Desktop app: open-to-drawn time, pan/zoom frame times (offscreen, warm medians).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py

"Open-to-drawn" runs the whole path a user triggers with File→Open: load the model, trace it,
fold the view, lay it out (background thread) and build the scene (UI thread), until the window
reports idle. For scale, torchview's draw_graph (a static graph for graphviz, no picture drawn) is
timed on the same models in the same process.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QPointF  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import resviz.gui  # noqa: E402,F401  (PySide6 None-refcount workaround first)
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402


def wait_idle(app, window, timeout=120.0) -> float:
    t0 = time.perf_counter()
    while True:
        app.processEvents()
        if window.is_idle() and window.document.drawn is not None:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("window never became idle")
        time.sleep(0.001)


def open_to_drawn(app, window, source: str, shape: str, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first open warms caches (zoo build, imports)
        t0 = time.perf_counter()
        window.document.open_source(source, input_shape=shape)
        wait_idle(app, window)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def frame_times(app, window, steps: int = 40) -> tuple[float, float]:
    """Median ms per repaint while panning and while zooming."""
    view = window.view
    view.viewport().resize(1200, 900)

    def timed(action) -> float:
        ts = []
        for i in range(steps):
            action(i)
            t0 = time.perf_counter()
            view.viewport().repaint()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    pan = timed(lambda i: view.centerOn(QPointF(400, 200 + i * 400)))
    zoom = timed(lambda i: view.scale(1.08 if i % 20 < 10 else 1 / 1.08, 1.08 if i % 20 < 10 else 1 / 1.08))
    return pan, zoom


def expand_collapse(app, window) -> list[tuple[str, float, float]]:
    """Expand all / collapse all on the loaded model: ms until drawn and the longest UI stall
    (the gap between two event-loop passes: what a user feels as a frozen window)."""

    def run(action, done) -> tuple[float, float]:
        t0 = last = time.perf_counter()
        action()
        stall = 0.0
        while True:
            app.processEvents()
            now = time.perf_counter()
            stall, last = max(stall, now - last), now
            if done():
                break
            time.sleep(0.001)
        settle = time.perf_counter()  # the overview redraws a moment later: count its stall too
        while time.perf_counter() - settle < 0.3:
            app.processEvents()
            now = time.perf_counter()
            stall, last = max(stall, now - last), now
            time.sleep(0.001)
        return (settle - t0) * 1e3, stall * 1e3

    rows = []
    nodes = len(window.scene.node_items)
    for _ in range(2):
        for name, action in (("expand all", window.expand_all), ("collapse all", window.collapse_all)):
            before = len(window.scene.node_items)
            ms, stall = run(action, lambda b=before: window.is_idle() and len(window.scene.node_items) != b)
            rows.append((name, ms, stall))
    assert len(window.scene.node_items) == nodes
    return rows[2:]  # the second round: warm


def main() -> None:
    app = QApplication.instance() or QApplication(["resviz-bench"])
    window = QtMainWindow()
    window.resize(1600, 1000)
    window.show()
    print("open-to-drawn (warm median), offscreen")
    rows = []
    for name, shape, reps in (("resnet152", "1x3x224x224", 5), ("resnet1202", "1x3x32x32", 3)):
        sec = open_to_drawn(app, window, name, shape, reps)
        pan, zoom = frame_times(app, window)
        rows.append((name, sec, pan, zoom))
        print(f"  {name:11s} {sec * 1e3:7.0f} ms   pan frame {pan:5.1f} ms   zoom frame {zoom:5.1f} ms")
        if name == "resnet1202":
            for what, ms, stall in expand_collapse(app, window):
                print(f"  {name:11s} {what:12s} {ms:5.0f} ms to drawn, longest UI stall {stall:4.0f} ms")
    try:
        import torchview

        from resviz.core.sources import zoo

        print("torchview.draw_graph on the same models (static graph, nothing drawn)")
        for name, shape in (("resnet152", (1, 3, 224, 224)), ("resnet1202", (1, 3, 32, 32))):
            model = zoo.build(name, device="cpu")
            torchview.draw_graph(model, input_size=shape, device="meta")
            t0 = time.perf_counter()
            torchview.draw_graph(model, input_size=shape, device="meta")
            sec = time.perf_counter() - t0
            ours = next(r[1] for r in rows if r[0] == name)
            print(f"  {name:11s} {sec * 1e3:7.0f} ms   resviz open-to-drawn is {sec / ours:4.1f}x faster")
    except ImportError:
        pass
    window.shutdown()
    window.close()


if __name__ == "__main__":
    main()
