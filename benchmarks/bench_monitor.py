"""Per-step cost of ``resviz.monitor`` in the user's own loop, against the same loop without it.

    python benchmarks/bench_monitor.py                       # resnet20 @ 32x32 b128, resnet50 @ 64x64 b16
    python benchmarks/bench_monitor.py --device cuda --steps 30
    python benchmarks/bench_monitor.py --models resnet20 --quick --every 10

Three loops in one process share the initial weights and a fixed batch; each is the plain PyTorch
step a user writes (zero_grad, forward, cross-entropy, backward, optimizer step):

* ``monitor`` the loop plus ``mon.step(loss)`` (the probes write a run directory in a temp folder);
* ``bare``    the same loop without the monitor;
* ``bare2``   an identical second bare loop: its ratio to ``bare`` is the noise floor.

``mon.step`` itself is timed too (CPU time inside the call: the record's own work, the
parameter-gradient norms and the JSON line, apart from the hooks' share in forward/backward).

``--breakdown`` adds three monitored loops that each leave out or change one part of the work, to
attribute the cost (their records are wrong by design; they only measure): ``no_reads`` takes no norm of an
activation or gradient (each is one extra read of a tensor that is usually out of cache by then),
``no_adds`` does not watch the residual adds (no residual/shortcut norms at all), ``no_plan``
watches them with the TorchFunctionMode on every recorded step instead of the plan learned on the
first one (what the monitor did before: ~10 µs per torch call inside a block).

Steps are interleaved (forward order, then reversed on the next round) so drift in machine load hits
all alike; the per-round ratio's median is reported (wall and process CPU time), and the ratio of
each loop's quietest fifth of steps (a busy machine only ever adds time; on this shared 2-core machine the
ratios still move by a few percent from run to run: compare within one run). The target is
monitor/bare <= 1.03 (issue 9). The bare loop reads ``loss.item()`` as nearly every real loop does
(logging), so both pay one device-to-host copy.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import resviz  # noqa: E402
from resviz.core.sources import zoo  # noqa: E402
from resviz.core.training import probes  # noqa: E402

CASES = {"resnet20": ((3, 32, 32), 128), "resnet50": ((3, 64, 64), 16)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Loop:
    def __init__(self, model, device: str, mon_dir: str | None, shape, every: int, leave_out: str = ""):
        self.model = copy.deepcopy(model).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.mon = None
        self.leave_out = leave_out
        self.step_cpu: list[float] = []  # CPU time inside mon.step, per step
        if mon_dir is not None:
            self.mon = resviz.monitor(self.model, mon_dir, input_shape=(1, *shape), every=every)
            for w in self.mon.probes.watches:
                if leave_out == "adds":
                    w._lookup = {}  # the watch then calls forward as it is
                elif leave_out == "plan":
                    w.plan = False  # the add-watching mode on every recorded step, as before the plan

    def step(self, x, y) -> float:
        sq_norm = probes._sq_norm
        if self.leave_out == "reads":
            probes._sq_norm = _no_read
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
            probes._sq_norm = sq_norm
        return loss.item()


def _no_read(t):
    return 0.0


def _quiet(times: list[float]) -> float:
    """Mean of the fastest fifth: on a shared machine, a step is only ever slowed by others."""
    fast = sorted(times)[: max(1, len(times) // 5)]
    return sum(fast) / len(fast)


def bench(name, shape, batch, steps, warmup, device, every, tmp, breakdown=False) -> dict:
    torch.manual_seed(0)
    model = zoo.build(name, device="cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    loops = {
        "monitor": Loop(model, device, os.path.join(tmp, name), shape, every),
        "bare": Loop(model, device, None, shape, every),
        "bare2": Loop(model, device, None, shape, every),
    }
    if breakdown:
        loops["no_reads"] = Loop(model, device, os.path.join(tmp, name + "-r"), shape, every, "reads")
        loops["no_adds"] = Loop(model, device, os.path.join(tmp, name + "-a"), shape, every, "adds")
        loops["no_plan"] = Loop(model, device, os.path.join(tmp, name + "-p"), shape, every, "plan")
    wall = {k: [] for k in loops}
    cpu = {k: [] for k in loops}
    order = list(loops)
    for i in range(warmup + steps):
        for k in order if i % 2 == 0 else reversed(order):
            _sync(device)
            c0, w0 = time.process_time(), time.perf_counter()
            loops[k].step(x, y)
            _sync(device)
            if i >= warmup:
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
    mon = loops["monitor"].mon
    for loop in loops.values():
        if loop.mon is not None and loop.mon is not mon:
            loop.mon.close()
    mon.close()
    assert not mon.errors, mon.errors
    med = {k: statistics.median(v) for k, v in wall.items()}
    return {
        "model": name, "input": "x".join(map(str, shape)), "batch": batch, "blocks": len(mon.block_names),
        "wall": med,
        "paired_wall": statistics.median(m / b for m, b in zip(wall["monitor"], wall["bare"])),
        "paired_cpu": statistics.median(m / b for m, b in zip(cpu["monitor"], cpu["bare"])),
        "control": statistics.median(m / b for m, b in zip(wall["bare2"], wall["bare"])),
        "mon_step": statistics.median(loops["monitor"].step_cpu[warmup:]),
        "bare_cpu": statistics.median(cpu["bare"]),
        "left_out": {k: statistics.median(m / b for m, b in zip(cpu[k], cpu["bare"]))
                     for k in ("no_reads", "no_adds", "no_plan") if k in cpu},
        # the quietest fifth of each loop's steps (CPU time): other processes only ever add time
        "quiet": {k: _quiet(v) / _quiet(cpu["bare"]) for k, v in cpu.items() if k != "bare"},
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(CASES))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=15, help="measured steps per loop (default 15)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--every", type=int, default=1, help="record every N steps (default 1: every step)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="5 measured steps, 1 warm-up")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the monitor without norm reads and without the add watch")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 5, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, every "
          f"{args.every}, {args.steps} measured steps after {args.warmup} warm-up (medians)")  # fmt: skip
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            shape, batch = CASES.get(name, ((3, 32, 32), 64))
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
