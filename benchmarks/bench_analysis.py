"""How fast resviz analyses a network, next to the tools users would otherwise reach for.

Same process, same model object, warm medians. Prints one line per tool and the ratios:

    python benchmarks/bench_analysis.py            # resnet152 @ 224 and resnet1202 @ 32
    python benchmarks/bench_analysis.py --quick    # fewer repeats
    python benchmarks/bench_analysis.py --library  # only the library-built layers section

torchinfo.summary runs the real forward pass on the CPU; torchview.draw_graph traces with its own
hooks (given device='meta' here, its fastest mode). resviz runs the model's forward on meta tensors
with direct shape rules for common layers.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import resviz  # noqa: E402
from resviz.core import gcpause
from resviz.core.sources import zoo  # noqa: E402


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_resnet152(repeats: int) -> dict:
    shape = (1, 3, 224, 224)
    torch.manual_seed(0)
    model = zoo.build("resnet152", device="cpu").eval()
    out = {}
    out["resviz.analyze"] = median_seconds(lambda: resviz.analyze(model, shape), repeats * 3)
    try:
        import torchinfo

        out["torchinfo.summary"] = median_seconds(
            lambda: torchinfo.summary(model, input_size=shape, verbose=0), repeats
        )
    except ImportError:
        pass
    try:
        import torchview

        out["torchview.draw_graph"] = median_seconds(
            lambda: torchview.draw_graph(model, input_size=shape, device="meta", depth=3), repeats
        )
    except ImportError:
        pass
    return out


def bench_resnet1202(repeats: int) -> dict:
    shape = (1, 3, 32, 32)
    out = {}
    out["zoo.build (meta)"] = median_seconds(lambda: zoo.build("resnet1202"), repeats, 1)
    meta_model = zoo.build("resnet1202")
    out["resviz.analyze"] = median_seconds(lambda: resviz.analyze(meta_model, shape), repeats)
    with gcpause.owning_process():  # as `resviz check` runs it: the collector paused inside
        out["  in the CLI (gc paused)"] = median_seconds(lambda: resviz.analyze(meta_model, shape), repeats)
    cpu_model = zoo.build("resnet1202", device="cpu").eval()
    try:
        import torchinfo

        out["torchinfo.summary"] = median_seconds(
            lambda: torchinfo.summary(cpu_model, input_size=shape, verbose=0), max(repeats // 2, 2), 1
        )
    except ImportError:
        pass
    return out


def bench_library_layers(repeats: int) -> dict:
    """A net made of a model library's own layers (library_layers.py) next to its plain-PyTorch
    twin. "first analysis" clears resviz's memory of meta runs before each call (what a fresh
    process or a new model pays); "again" is a re-analysis (the app's re-trace, a size sweep)."""
    from library_layers import library_net

    from resviz.core.tracing import meta_cache as metacache

    shape = (1, 3, 224, 224)
    out = {}
    for label, lib in (("library layers", True), ("plain twin", False)):
        model = library_net(lib, depth=(3, 4, 6, 3)).eval()

        def cold(model=model):
            metacache.clear()
            resviz.analyze(model, shape)

        out[f"{label}, first analysis"] = median_seconds(cold, repeats * 2)
        out[f"{label}, again"] = median_seconds(lambda model=model: resviz.analyze(model, shape), repeats * 2)
    return out


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_mb() -> dict:
    """Resident memory added by building + analysing resnet152 on meta, then on the CPU."""
    out = {}
    for device in ("meta", "cpu"):
        gc.collect()
        before = _rss_mb()
        model = zoo.build("resnet152", device=device)
        resviz.analyze(model, (1, 3, 224, 224))
        out[device] = _rss_mb() - before
        del model
        gc.collect()
    return out | {"weights": zoo.param_count("resnet152") * 4 / 2**20}


def _print_library(repeats: int) -> None:
    print("\nlibrary-built layers (no shape rule) @ 1x3x224x224, 16 blocks + attention")
    r = bench_library_layers(repeats)
    twin = r["plain twin, first analysis"]
    for name, sec in r.items():
        print(f"  {name:32s} {sec * 1e3:8.1f} ms   {sec / twin:5.2f}x the plain twin's first analysis")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--library", action="store_true", help="only the library-built layers section")
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, resviz {resviz.__version__}")

    if args.library:
        return _print_library(repeats)
    print("\nresnet152 @ 1x3x224x224 (warm medians)")
    r = bench_resnet152(repeats)
    base = r["resviz.analyze"]
    for name, sec in r.items():
        ratio = "" if name == "resviz.analyze" else f"   resviz is {sec / base:5.1f}x faster"
        print(f"  {name:22s} {sec * 1e3:9.1f} ms{ratio}")

    print("\nresnet1202 @ 1x3x32x32 (600 blocks)")
    r = bench_resnet1202(repeats)
    base = r["resviz.analyze"]
    for name, sec in r.items():
        ratio = f"   resviz is {sec / base:5.1f}x faster" if name == "torchinfo.summary" else ""
        if "gc paused" in name:
            ratio = f"   {sec / base:5.2f}x the library call's time (its gc left as the host has it)"
        print(f"  {name:22s} {sec * 1e3:9.1f} ms{ratio}")

    _print_library(repeats)

    print("\nresident memory added by build + analyse resnet152")
    mem = memory_mb()
    print(f"  built on meta   {mem['meta']:7.1f} MB")
    print(f"  built on cpu    {mem['cpu']:7.1f} MB   (weights alone: {mem['weights']:.0f} MB)")


if __name__ == "__main__":
    main()
