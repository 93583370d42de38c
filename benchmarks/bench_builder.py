"""Builder: time from an edit in the Builder tab to the new graph on screen (offscreen, warm medians).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_builder.py

An edit of a ResNet-50-sized net (stage 3's block count, 6 ↔ 5) runs the whole path a keystroke
triggers once the debounce pause has passed: validate the draft, build the net on meta, trace and
analyse it, fold and lay it out (worker thread), build the scene (UI thread), until the window is
idle. The alternative a user would reach for to see the new shapes after editing a model —
rebuilding it in PyTorch and calling torchinfo.summary — is timed on the same net.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtWidgets import QApplication  # noqa: E402

import resviz.gui  # noqa: E402,F401  (PySide6 None-refcount workaround first)
from resviz.gui.builder import install  # noqa: E402
from resviz.gui.window.main_window import QtMainWindow  # noqa: E402


def wait_idle(app, window, timeout=120.0) -> None:
    t0 = time.perf_counter()
    while True:
        app.processEvents()
        if window.is_idle() and window.document.drawn is not None:
            return
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("window never became idle")
        time.sleep(0.0005)


def edit_to_drawn(app, window, panel, name: str, repeats: int) -> tuple[float, float]:
    from resviz.core.sources import zoo

    panel.new_net(zoo.get(name).spec)
    wait_idle(app, window)
    n = zoo.get(name).spec.stages[2].blocks
    edits, totals = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        panel.builder.set_field("stages[2].blocks", n - 1 if i % 2 == 0 else n, merge=False)
        t1 = time.perf_counter()
        panel.push()  # what the debounce timer does once typing pauses
        wait_idle(app, window)
        t2 = time.perf_counter()
        edits.append(t1 - t0)
        totals.append(t2 - t0)
    return statistics.median(edits[1:]), statistics.median(totals[1:])


def torchinfo_time(name: str, repeats: int) -> float:
    import torchinfo

    from resviz.core.sources import zoo
    from resviz.core.sources.spec import build

    spec = zoo.get(name).spec
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model = build(spec, device="cpu")
        torchinfo.summary(model, spec.input_shape, verbose=0, device="cpu")
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    app = QApplication.instance() or QApplication([])
    window = QtMainWindow()
    install(window)
    window.resize(1600, 1000)
    window.show()
    window.select_tab("Builder")
    panel = window.builder_tab.panel
    print(f"{'net':<10} {'validate':>9} {'edit → drawn':>13} {'torchinfo':>11} {'ratio':>7}")
    for name, repeats in (("resnet50", 9), ("resnet152", 5)):
        validate, total = edit_to_drawn(app, window, panel, name, repeats)
        ti = torchinfo_time(name, 3)
        print(
            f"{name:<10} {validate * 1e3:7.1f} ms {total * 1e3:10.1f} ms {ti * 1e3:8.0f} ms {ti / total:6.1f}x"
        )
    print(f"(plus the {panel._timer.interval()} ms debounce pause after the last keystroke)")
    window.builder_tab.panel.builder.new()  # nothing unsaved: closing does not ask
    window.close()


if __name__ == "__main__":
    main()
