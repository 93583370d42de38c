"""Per-step cost of ``resviz.monitor`` in the user's own loop, against the same loop without it.

    python benchmarks/bench_monitor.py                       # resnet20 @ 32x32 b128, resnet50 @ 224x224 b8
    python benchmarks/bench_monitor.py --models resnet20 --batch 32 --steps 60
    python benchmarks/bench_monitor.py --device cuda --steps 30
    python benchmarks/bench_monitor.py --models resnet20 --quick --every 10

Three copies of the model in one process share the initial weights and a fixed batch; each runs
the plain PyTorch step a user writes (zero_grad, forward, cross-entropy, backward, optimizer step).
One of them at a time carries ``resviz.monitor`` and calls ``mon.step(loss)`` (the probes write a run
directory in a temp folder); the monitor moves to the next copy every few rounds, so each copy
is monitored for a third of the rounds. Why rotate: identical copies of a model differ in speed by
up to ~1% here (where their tensors land in memory), and a fixed monitored copy would carry that
bias into the ratio. Reported:

* ``monitor/bare``: the monitored step against a bare step of another copy in the same round;
* ``control``: one bare copy against the other in the same round: the noise floor.

``mon.step`` itself is timed too (CPU time inside the call: the record's own work, the
parameter-gradient norms and the JSON line, apart from the hooks' share in forward/backward).

Allocator: glibc's malloc hands freed blocks above its mmap threshold back to the kernel and faults
them in again on the next step: ~2,500 page faults per resnet20 step on this machine, a count that
moves by +-400 between identical loops (+-1% of the step) and buries the effect being measured.
``--malloc steady`` (the default) re-runs the benchmark with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` raised so that freed memory is reused, as jemalloc or tcmalloc (which
PyTorch recommends for CPU training) do; ``--malloc default`` keeps glibc's behaviour. Both loops
always run under the same allocator.

``--breakdown`` adds three monitored copies (not rotated) that each leave out or change one part of
the work, to attribute the cost (their records are wrong by design; they only measure): ``no_reads``
takes no norm of an activation or gradient, ``no_adds`` does not watch the residual adds (no
residual/shortcut norms at all), ``no_plan`` watches them with the TorchFunctionMode on every
recorded step instead of the plan learned on the first one.

Steps are interleaved (forward order, then reversed on the next round) so drift in machine load hits
all alike; the per-round ratio's median is reported (wall and process CPU time), and the ratio of
each role's quietest fifth of steps (a busy machine only ever adds time). The target is
monitor/bare <= 1.03 (issue 9). The bare loop reads ``loss.item()`` as nearly every real loop does
(logging), so both pay one device-to-host copy.

Default cases: resnet20 on CIFAR-sized input (32x32) at the paper's batch of 128, and resnet50 on
ImageNet-sized input (224x224) at batch 8 (small, for a CPU). ``--batch``/``--size`` change them.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import resviz  # noqa: E402
from resviz.core.errors import ResvizError  # noqa: E402
from resviz.core.sources import zoo  # noqa: E402
from resviz.core.training import probes  # noqa: E402

CASES = {"resnet20": ((3, 32, 32), 128), "resnet50": ((3, 224, 224), 8)}
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Loop:
    def __init__(self, model, device: str, shape, every: int, leave_out: str = ""):
        self.model = copy.deepcopy(model).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.shape, self.every, self.leave_out = shape, every, leave_out
        self.mon = None
        self.step_cpu: list[float] = []  # CPU time inside mon.step, per step

    def attach(self, run_dir: str) -> None:
        self.mon = resviz.monitor(self.model, run_dir, input_shape=(1, *self.shape), every=self.every)
        for w in self.mon.probes.watches:
            if self.leave_out == "adds":
                w._lookup = {}  # the watch then calls forward as it is
            elif self.leave_out == "plan":
                w.plan = False  # the add-watching mode on every recorded step, as before the plan

    def detach(self) -> None:
        mon, self.mon = self.mon, None
        mon.close()
        assert not mon.errors, mon.errors

    def step(self, x, y) -> float:
        sq_norm, bn_later = probes._sq_norm, probes._batchnorm_later
        if self.leave_out == "reads":
            probes._sq_norm, probes._batchnorm_later = _no_read, _none
        try:
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            if self.mon is not None:
                c0 = time.process_time()
                self.mon.step(loss)
                self.step_cpu.append(time.process_time() - c0)
        finally:
            probes._sq_norm, probes._batchnorm_later = sq_norm, bn_later
        return loss.item()


def _no_read(t):
    return 0.0


def _none(*args):
    return None


def _quiet(times: list[float]) -> float:
    """Mean of the fastest fifth: on a shared machine, a step is only ever slowed by others."""
    fast = sorted(times)[: max(1, len(times) // 5)]
    return sum(fast) / len(fast)


def _timed(loop: Loop, x, y, device: str) -> tuple[float, float]:
    _sync(device)
    c0, w0 = time.process_time(), time.perf_counter()
    loop.step(x, y)
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def _move_monitor(copies: list[Loop], to: int, run_dir: str) -> None:
    for c in copies:
        if c.mon is not None:
            c.detach()
    copies[to].attach(run_dir)


def _rounds(copies, extra, x, y, steps, warmup, device, tmp, name) -> tuple[dict, dict]:
    """Wall and CPU times per role and round; the monitor moves to the next copy every block."""
    roles = ["monitor", "bare", "bare2"]
    wall = {k: [] for k in [*roles, *extra]}
    cpu = {k: [] for k in wall}
    block = max(2, steps // 6)  # rounds per monitored copy: each copy carries it ~twice
    for i in range(steps):
        m = (i // block) % 3
        if copies[m].mon is None:  # the monitor moves on, and every loop warms up again
            _move_monitor(copies, m, os.path.join(tmp, f"{name}-{i}"))
            for _ in range(warmup):
                for loop in [*copies, *extra.values()]:
                    loop.step(x, y)
        by_role = {**dict(zip(roles, (copies[m], copies[(m + 1) % 3], copies[(m + 2) % 3]))), **extra}
        for k in list(by_role) if i % 2 == 0 else list(reversed(by_role)):
            w, c = _timed(by_role[k], x, y, device)
            wall[k].append(w)
            cpu[k].append(c)
    return wall, cpu


def bench(name, shape, batch, steps, warmup, device, every, tmp, breakdown=False) -> dict:
    torch.manual_seed(0)
    model = zoo.build(name, device="cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    copies = [Loop(model, device, shape, every) for _ in range(3)]  # the monitor rotates over them
    extra = {}
    if breakdown:
        for kind in ("reads", "adds", "plan"):
            extra["no_" + kind] = loop = Loop(model, device, shape, every, kind)
            loop.attach(os.path.join(tmp, f"{name}-{kind}"))
    wall, cpu = _rounds(copies, extra, x, y, steps, warmup, device, tmp, name)
    blocks = next(len(c.mon.block_names) for c in copies if c.mon is not None)
    for loop in [*copies, *extra.values()]:
        if loop.mon is not None:
            loop.detach()
    med = {k: statistics.median(v) for k, v in wall.items()}
    return {
        "model": name, "input": "x".join(map(str, shape)), "batch": batch, "blocks": blocks,
        "wall": med,
        "paired_wall": statistics.median(m / b for m, b in zip(wall["monitor"], wall["bare"])),
        "paired_cpu": statistics.median(m / b for m, b in zip(cpu["monitor"], cpu["bare"])),
        "control": statistics.median(m / b for m, b in zip(wall["bare2"], wall["bare"])),
        "mon_step": statistics.median(t for c in copies for t in c.step_cpu),
        "bare_cpu": statistics.median(cpu["bare"]),
        "left_out": {k: statistics.median(m / b for m, b in zip(cpu[k], cpu["bare"])) for k in extra},
        # the quietest fifth of each role's steps (CPU time): other processes only ever add time
        "quiet": {k: _quiet(v) / _quiet(cpu["bare"]) for k, v in cpu.items() if k != "bare"},
    }  # fmt: skip


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(CASES))
    p.add_argument("--batch", type=_at_least(1), default=None)
    p.add_argument("--size", type=_at_least(1), default=None, help="input height and width (default per model)")
    p.add_argument("--malloc", choices=("steady", "default"), default="steady",
                   help="steady: glibc reuses freed memory (see the module doc); default: as glibc is set")  # fmt: skip
    p.add_argument("--steps", type=_at_least(1), default=24, help="measured rounds (default 24)")
    p.add_argument("--warmup", type=_at_least(0), default=3)
    p.add_argument("--every", type=_at_least(1), default=1, help="record every N steps (default 1: every step)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="6 measured rounds, 1 warm-up")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the monitor without norm reads and without the add watch")  # fmt: skip
    args = p.parse_args(argv)
    for name in args.models:
        try:
            zoo.get(name)
        except ResvizError as e:
            p.error(str(e))
    if args.malloc == "steady" and any(os.environ.get(k) != v for k, v in STEADY_MALLOC.items()):
        # glibc reads these at start-up only: run again with them set
        env = {**os.environ, **STEADY_MALLOC}
        return subprocess.run([sys.executable, os.path.abspath(__file__), *(sys.argv[1:] if argv is None else argv)],
                              env=env, check=False).returncode  # fmt: skip
    if args.quick:
        args.steps, args.warmup = 6, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, every "
          f"{args.every}, {args.steps} measured rounds after {args.warmup} warm-up per monitor move (medians), "
          f"malloc {args.malloc}")  # fmt: skip
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            shape, batch = CASES.get(name, ((3, 32, 32), 64))
            if args.size:
                shape = (shape[0], args.size, args.size)
            r = bench(name, shape, args.batch or batch, args.steps, args.warmup, args.device, args.every, tmp,
                      args.breakdown)  # fmt: skip
            w = r["wall"]
            print(f"{r['model']:>10} {r['input']:>8} b{r['batch']:<4} {r['blocks']:>2} blocks | wall ms: monitor "
                  f"{w['monitor'] * 1e3:8.2f} bare {w['bare'] * 1e3:8.2f} | monitor/bare paired wall "
                  f"{r['paired_wall']:.3f} cpu {r['paired_cpu']:.3f} | control bare2/bare {r['control']:.3f}")  # fmt: skip
            print(f"{'':>10} mon.step itself: {r['mon_step'] * 1e3:.2f} ms CPU "
                  f"({100 * r['mon_step'] / r['bare_cpu']:.2f}% of a bare step)")  # fmt: skip
            for k, v in r["left_out"].items():
                print(f"{'':>10} monitor {k.replace('_', ' ')}: paired cpu {v:.3f} of bare")
            print(f"{'':>10} quietest fifth of the steps, CPU time / bare: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["quiet"].items()))  # fmt: skip
            worst = max(worst, r["paired_wall"])
    print(f"worst paired monitor/bare wall-time ratio: {worst:.3f} (target <= 1.03)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
