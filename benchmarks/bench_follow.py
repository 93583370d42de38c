"""Opening and following a long run directory in the app.

    python benchmarks/bench_follow.py                          # 100,000 steps x 50 blocks (~1 GB)
    python benchmarks/bench_follow.py --steps 20000 --blocks 20 --seconds 5

Writes a run directory (``steps.jsonl`` lines shaped like ``resviz train``'s, ~10 KB each at 50
blocks) into a temporary folder, then measures, in one process:

* ``open``    :meth:`RunFollower.open <resviz.gui.training.follow.RunFollower.open>` (what the app does
              on its worker thread for ``resviz RUN_DIR``), next to reading every line the way
              ``resviz.core.training.open_run`` does (timed on the first 5,000 lines, scaled up:
              reading all of them would take minutes). Aim: under 2 s.
* ``window``  the whole app path: ``QtMainWindow.open_source(RUN_DIR)`` until the graph and the
              Training tab's plots are drawn.
* ``follow``  a separate writer process appends records at ``--rate`` steps/s while the window
              follows them; a 5 ms QTimer on the UI thread records the gaps between its ticks: the
              longest is the longest the UI could not react (aim: under 50 ms). The window settles
              the heap after the model loads, as ``resviz RUN_DIR`` does (``resviz.gui.runtime.heap``);
              ``--no-settle`` shows the same without it (a full garbage collection walks every
              module, widget and model object: the longest stall). The longest garbage collection
              while following is printed beside the gaps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "RESVIZ_SETTINGS" not in os.environ:
    os.environ["RESVIZ_SETTINGS"] = os.path.join(tempfile.mkdtemp(prefix="resviz-bench-"), "settings.ini")

PROBES = ("grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio", "gain")


def block_names(n: int) -> list[str]:
    per = max(1, -(-n // 4))
    return [f"layer{1 + i // per}.{i % per}" for i in range(n)]


def line_maker(names: list[str], variants: int = 64):
    """A function step -> one JSON line; the block values cycle through ``variants`` sets."""
    rnd = random.Random(0)
    blocks = [
        json.dumps({b: {p: rnd.random() * 10 ** rnd.uniform(-4, 1) for p in PROBES} for b in names})
        for _ in range(variants)
    ]
    t0 = time.time()

    def line(step: int) -> str:
        return (f'{{"step": {step}, "loss": {2.3 / (1 + step / 5000) + rnd.random() * 0.1!r}, '
                f'"accuracy": {min(1.0, step / 200000)!r}, "lr": 0.1, "seconds": 0.05, "nonfinite": false, '
                f'"blocks": {blocks[step % variants]}, "flags": {{}}, "message": "", "time": {t0 + step * 0.05!r}}}\n')  # fmt: skip

    return line


def make_run(path: str, steps: int, names: list[str]) -> None:
    import resviz
    from resviz.core.sources.zoo import build
    from resviz.core.training import RunWriter
    from resviz.core.training.runreport import report_json

    net = build("resnet110") if len(names) > 30 else build("resnet20")
    report = report_json(resviz.analyze(net, (1, 3, 32, 32)))
    w = RunWriter.create(path, name="bench", config={"optimizer": "sgd", "lr": 0.1, "batch_size": 32},
                         blocks=names, report=report)  # fmt: skip
    w._steps.close()
    line = line_maker(names)
    with open(os.path.join(path, "steps.jsonl"), "w", encoding="utf-8") as f:
        buf = []
        for s in range(steps):
            buf.append(line(s))
            if len(buf) == 1000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))
    w.set_state("running")


def bench_open(path: str) -> dict:
    from resviz.core.training import open_run
    from resviz.gui.training.follow import RunFollower

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        f = RunFollower.open(path)
        times.append(time.perf_counter() - t0)
    lines = f.reader.lines
    sub = tempfile.mkdtemp(prefix="resviz-bench-head-")
    shutil.copy(os.path.join(path, "run.json"), sub)
    with (
        open(os.path.join(path, "steps.jsonl"), "rb") as src,
        open(os.path.join(sub, "steps.jsonl"), "wb") as dst,
    ):
        for _ in range(5000):
            dst.write(src.readline())
    t0 = time.perf_counter()
    open_run(sub)
    full = (time.perf_counter() - t0) * lines / 5000
    shutil.rmtree(sub)
    return {"lines": lines, "parsed": f.parsed, "open_s": min(times), "every_line_s": full}


def bench_window(
    path: str, follow_seconds: float, rate: float, names: list[str], settle: bool = True
) -> dict:
    import gc

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from resviz.gui.training.tab import install
    from resviz.gui.window.main_window import QtMainWindow

    QApplication.instance() or QApplication([sys.argv[0]])
    w = QtMainWindow()
    tab = install(w, None)
    if settle:
        from resviz.gui.runtime.heap import settle_after_loads

        settle_after_loads(w)  # as run_app does
    w.resize(1600, 1000)
    w.show()
    w.select_tab("Training")
    t0 = time.perf_counter()
    w.open_source(path)
    _wait(lambda: w.is_idle() and w.document.drawn is not None and tab.built and tab.panel.following)
    p = tab.panel
    p.redraw()
    QApplication.processEvents()
    opened = time.perf_counter() - t0
    if w.document.error:
        raise SystemExit(w.document.error)
    start_step = int(p.buffers["residual"].latest["step"]) + 1
    writer = subprocess.Popen([sys.executable, __file__, "--write", path, "--from-step", str(start_step),
                               "--rate", str(rate), "--seconds", str(follow_seconds), "--blocks", str(len(names))])  # fmt: skip
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    collections: list[tuple[int, float]] = []  # (generation, ms) of each collection while following
    gc_start = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            collections.append((info["generation"], (time.perf_counter() - gc_start[0]) * 1000))

    gc.callbacks.append(on_gc)
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    last[0] = time.perf_counter()
    timer.start()
    t1 = time.perf_counter()
    _wait(lambda: writer.poll() is not None and time.perf_counter() - t1 > follow_seconds + 0.5,
          timeout=follow_seconds + 120)  # fmt: skip
    timer.stop()
    gc.callbacks.remove(on_gc)
    t2 = time.perf_counter()
    gc.collect()  # what one full collection, which allocation starts at some moment, stalls the UI for
    full_ms = (time.perf_counter() - t2) * 1000
    got = int(p.buffers["residual"].latest["step"]) + 1 - start_step
    redraws = p.redraws
    w.close()
    ms = sorted(g * 1000 for g in gaps)
    return {"window_open_s": opened, "followed_steps": got, "written_steps": int(rate * follow_seconds),
            "gap_max_ms": ms[-1] if ms else float("nan"), "gap_p99_ms": ms[int(len(ms) * 0.99)] if ms else float("nan"),
            "gap_median_ms": statistics.median(ms) if ms else float("nan"), "redraws": redraws,
            "gc_max_ms": max((ms for _, ms in collections), default=0.0),
            "gc_full_now_ms": full_ms, "gc_full": sum(1 for g, _ in collections if g == 2)}  # fmt: skip


def _wait(pred, timeout=120.0):
    from PySide6.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not pred():
        QApplication.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("timed out")


def writer_main(path: str, first: int, rate: float, seconds: float, blocks: int) -> None:
    """The other process: append ``rate`` records per second for ``seconds``, flushed each."""
    line = line_maker(block_names(blocks))
    with open(os.path.join(path, "steps.jsonl"), "a", encoding="utf-8") as f:
        t0 = time.perf_counter()
        for k in range(int(rate * seconds)):
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            f.write(line(first + k))
            f.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--blocks", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0, help="how long the writer appends while followed")
    ap.add_argument("--rate", type=float, default=100.0, help="steps/s the writer appends")
    ap.add_argument(
        "--no-settle", action="store_true", help="don't settle the heap after the load (see qt_heap)"
    )
    ap.add_argument("--keep", action="store_true", help="leave the run directory (its path is printed)")
    ap.add_argument("--write", help=argparse.SUPPRESS)
    ap.add_argument("--from-step", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write:
        writer_main(a.write, a.from_step, a.rate, a.seconds, a.blocks)
        return
    names = block_names(a.blocks)
    root = tempfile.mkdtemp(prefix="resviz-bench-run-")
    path = os.path.join(root, "run")
    try:
        t0 = time.perf_counter()
        make_run(path, a.steps, names)
        size = os.path.getsize(os.path.join(path, "steps.jsonl"))
        print(f"run: {a.steps} steps x {a.blocks} blocks, steps.jsonl {size / 2**20:.0f} MiB "
              f"({size / a.steps / 1024:.1f} KiB a line), written in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        o = bench_open(path)
        print(f"open (RunFollower.open): {o['open_s']:.2f} s, {o['parsed']} of {o['lines']} lines parsed; "
              f"reading every line (open_run): ~{o['every_line_s']:.0f} s "
              f"({o['every_line_s'] / o['open_s']:.0f}x slower)")  # fmt: skip
        r = bench_window(path, a.seconds, a.rate, names, settle=not a.no_settle)
        print(f"window: resviz RUN_DIR drawn (graph + Training plots) in {r['window_open_s']:.2f} s")
        print(f"follow: {r['followed_steps']} of {r['written_steps']} appended steps shown "
              f"({a.rate:.0f} steps/s for {a.seconds:.0f} s, {r['redraws']} redraws); UI gaps: max "
              f"{r['gap_max_ms']:.1f} ms, p99 {r['gap_p99_ms']:.1f} ms, median {r['gap_median_ms']:.1f} ms "
              "(5 ms timer; aim: max < 50 ms)")  # fmt: skip
        print(f"garbage collection: a full one costs {r['gc_full_now_ms']:.0f} ms on the UI thread; while "
              f"following the longest took {r['gc_max_ms']:.1f} ms, {r['gc_full']} were full "
              f"({'heap settled after the load' if not a.no_settle else 'heap not settled: --no-settle'})")  # fmt: skip
    finally:
        if a.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
