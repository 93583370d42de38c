"""Could resviz drop its TorchScript interpreter and convert TorchScript to an ExportedProgram?

torch ships a converter, ``torch._export.converter.TS2EPConverter(ts_module, sample_args)``,
that turns a ScriptModule into an ``ExportedProgram``; resviz's torch.export front-end could then
read every TorchScript archive and ``core/tracing/torchscript/`` (the interpreter) could go.
This runs the converter on each TorchScript case the tests use and says, per case:

* ``converted`` or ``failed`` (with the first line of the error), how long converting took and
  how long the interpreter takes to trace the same archive;
* for a converted program, whether the report resviz builds from it (through the export front-end)
  matches the report of the interpreter on the ScriptModule: blocks and shortcut kinds, residual
  mismatches, errors (layer, fatal, message), output shapes, every layer's output shape.

    python benchmarks/ts_to_export.py

The decision and its numbers are written in ``core/tracing/torchscript/__init__.py``.
"""

from __future__ import annotations

import io
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from resviz.core.analysis.pipeline import build_report  # noqa: E402
from resviz.core.tracing.exported import trace_exported  # noqa: E402
from resviz.core.tracing.torchscript import trace_script_module  # noqa: E402
from tests.nets import TVBasicBlock  # noqa: E402
from tests.test_archives_trace import BrokenNet, CheckedNet, PoolNet, TinyResNet  # noqa: E402
from tests.test_params_macs import FusedBlock, LayerScaleBlock  # noqa: E402


class Tiny(nn.Module):  # tests/test_loading.py
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return torch.relu(self.fc(x))


class LoopNet(nn.Module):
    """Control flow on Python values: a loop over blocks and a branch on the input's size."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.blocks = nn.ModuleList([TVBasicBlock(8, 8) for _ in range(3)])
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        if x.size(-1) > 4:
            x = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return self.head(torch.flatten(x, 1))


def _roundtrip(module):
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _widened_block_net():  # tests/test_blame.py: a residual branch one layer too wide
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), TVBasicBlock(8, 8), TVBasicBlock(8, 8),
                      TVBasicBlock(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))  # fmt: skip
    m[2].conv2, m[2].bn2 = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
    return m.eval()


def _params_net():  # tests/test_params_archives.py
    return nn.Sequential(FusedBlock(3, 8, 1), LayerScaleBlock(8), FusedBlock(8, 8, 2)).eval()


def _script(make):
    return lambda: _roundtrip(torch.jit.script(make().eval()))


def _trace(make, shape):
    return lambda: _roundtrip(torch.jit.trace(make().eval(), torch.randn(*shape)))


def _meta_script():
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(TinyResNet().eval()), buf)
    buf.seek(0)
    return torch.jit.load(buf, map_location="meta")


R = (2, 3, 32, 32)
# (case, how the archive is made, the shape it is saved/converted at, the shape it is analysed at)
CASES = [
    ("resnet scripted", _script(TinyResNet), R, R),
    ("resnet traced", _trace(TinyResNet, R), R, R),
    ("resnet scripted, other size", _script(TinyResNet), R, (1, 3, 17, 17)),
    ("resnet traced, other size", _trace(TinyResNet, R), R, (3, 3, 40, 40)),
    ("resnet scripted, loaded on meta", _meta_script, R, R),
    ("resnet scripted, wrong channels", _script(TinyResNet), R, (2, 4, 32, 32)),
    ("broken net scripted", _script(BrokenNet), (1, 3, 16, 16), (1, 3, 16, 16)),
    ("pool net scripted, odd size", _script(PoolNet), (1, 3, 32, 32), (1, 3, 33, 33)),
    ("pool net traced, odd size", _trace(PoolNet, (1, 3, 32, 32)), (1, 3, 32, 32), (1, 3, 33, 33)),
    ("shape check raises (control flow)", _script(CheckedNet), (1, 3, 8, 8), (1, 1, 8, 8)),
    ("loop and branch (control flow)", _script(LoopNet), (1, 3, 8, 8), (1, 3, 8, 8)),
    ("widened residual branch scripted", _script(_widened_block_net), (1, 3, 16, 16), (1, 3, 16, 16)),
    ("fused norm + layer scale traced", _trace(_params_net, (1, 3, 8, 8)), (1, 3, 8, 8), (1, 3, 8, 8)),
    ("linear scripted", _script(Tiny), (3, 4), (3, 4)),
    ("linear traced", _trace(Tiny, (3, 4)), (3, 4), (3, 4)),
]


def _summary(trace) -> dict:
    report = build_report(trace, None, "m")
    return {
        "blocks": [(b.name, b.shortcut) for b in report.blocks],
        "mismatches": [(m.block, m.residual_shape, m.shortcut_shape) for m in report.mismatches],
        "errors": [(e.module, e.fatal, e.message) for e in trace.errors],
        "outputs": report.output_shapes,
        "layers": {(o.name, o.call_index): trace.values[o.outputs[0]].shape
                   for o in trace.ops if o.kind == "module" and o.outputs},  # fmt: skip
    }


def _differences(a: dict, b: dict) -> list[str]:
    return [k for k in a if a[k] != b[k]]


def _convert(ts, shape):
    from torch._export.converter import TS2EPConverter

    return TS2EPConverter(ts, (torch.randn(*shape),)).convert()


def main() -> None:
    print(f"torch {torch.__version__}: TS2EPConverter on the TorchScript cases of the tests\n")
    converted = same = 0
    for name, make, saved, analysed in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = make()
            t0 = time.perf_counter()
            try:
                ep = _convert(ts, saved)
            except Exception as e:  # noqa: BLE001 - measuring: every way the converter fails is an answer
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:110]
                print(f"  {name:36s} failed     {time.perf_counter() - t0:5.2f} s  {type(e).__name__}: {first}")
                continue
            took = time.perf_counter() - t0
            converted += 1
            t0 = time.perf_counter()
            want = _summary(trace_script_module(ts, analysed))
            interp = time.perf_counter() - t0
            try:
                got = _summary(trace_exported(ep, analysed))
            except Exception as e:  # noqa: BLE001 - measuring: a converted program the front-end cannot read
                print(f"  {name:36s} converted  {took:5.2f} s  report: export front-end raised {type(e).__name__}: {e}")
                continue
        diff = _differences(want, got)
        same += not diff
        verdict = "report matches the interpreter's" if not diff else "report differs: " + "; ".join(
            f"{k} {got[k]} instead of {want[k]}" for k in diff
        )
        print(f"  {name:36s} converted  {took:5.2f} s  (interpreter {interp * 1e3:4.0f} ms)  {verdict}")
    print(f"\n{converted}/{len(CASES)} converted, {same}/{len(CASES)} with the interpreter's report")


if __name__ == "__main__":
    main()
