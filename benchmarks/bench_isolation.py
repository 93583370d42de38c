"""What running a Python file's code in a child process costs, per check.

    python benchmarks/bench_isolation.py            # 3 repeats of each
    python benchmarks/bench_isolation.py --quick    # 1 repeat

resviz imports, builds and traces a user's ``model.py`` in a child process
(:mod:`resviz.core.session.isolation`), so that code which hangs, exits or crashes cannot take resviz
with it. The alternative is doing the same in resviz's own process, as it did before. This
prints, for a small file and a ResNet-50-sized one:

* ``in-process``: ``load_model`` + ``analyze_session`` here (torch already imported; each run
  re-imports the file, as every check and every app reload does);
* ``child``: :func:`resviz.core.session.isolation.open_python` (start Python, import torch and resviz,
  the same work, plain records back), as ``resviz check model.py`` does;
* ``warm child``: the same with the spare child the app keeps started ahead (:class:`SpareChild`),
  ready when the request comes, as on a reload after the user saved an edit;

and the extra milliseconds per check and the ratio. The extra is mostly starting Python and
importing torch in the child. On the command line the parent imports what it needs while the
child works, so the wall-clock difference of ``resviz check model.py`` is smaller than this.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resviz.core.session import isolation  # noqa: E402
from resviz.core.session.isolation import open_python  # noqa: E402
from resviz.core.session.opened_model import analyze_session  # noqa: E402
from resviz.core.sources.loading import load_model  # noqa: E402

SMALL = """
from torch import nn

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return (self.bn2(self.conv2(self.bn1(self.conv1(x)))) + x).relu()

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(16) for _ in range(9)])
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))
"""

RESNET50 = """
from resviz.core.sources import zoo

def resnet50():
    return zoo.build("resnet50")
"""


def median_ms(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    repeats = 1 if ap.parse_args().quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for name, text, shape in (("small.py", SMALL, "1x3x32x32"), ("resnet50.py", RESNET50, "1x3x224x224")):
            path = Path(tmp) / name
            path.write_text(text)
            cases.append((str(path), shape))

        def in_process(path, shape):
            return analyze_session(load_model(path), shape)

        def in_child(path, shape):
            return open_python(path, input_shape=shape)

        spare = isolation.SpareChild()

        def warm_child(path, shape):
            return open_python(path, input_shape=shape, spare=spare)

        def wait_for_spare():  # not timed: the app's spare starts while the user edits
            spare.refill()
            spare.wait_ready(120)  # its "ready" frame is there

        in_process(*cases[0])  # warm: the first trace imports resviz's tracer modules
        print(f"{'file':<14}{'in-process':>12}{'child':>10}{'extra':>9}{'ratio':>7}"
              f"{'warm child':>12}{'extra':>9}{'ratio':>7}")  # fmt: skip
        for path, shape in cases:
            here = median_ms(lambda p=path, s=shape: in_process(p, s), repeats)
            child = median_ms(lambda p=path, s=shape: in_child(p, s), repeats)
            warm = median_ms(lambda p=path, s=shape: warm_child(p, s), repeats, before=wait_for_spare)
            print(f"{Path(path).name:<14}{here:>10.0f}ms{child:>8.0f}ms{child - here:>7.0f}ms"
                  f"{child / here:>6.1f}x{warm:>10.0f}ms{warm - here:>7.0f}ms{warm / here:>6.1f}x")  # fmt: skip
        spare.close()


if __name__ == "__main__":
    main()
