"""Overhead of the per-block probes: instrumented vs bare training steps, in one process.

    python benchmarks/bench_probes.py                 # resnet20 @ 32x32 b128, resnet50 @ 64x64 b16
    python benchmarks/bench_probes.py --steps 30 --device cuda
    python benchmarks/bench_probes.py --models resnet20 --batch 64 --quick

For each model, three steppers share the same initial weights and the same fixed batch:

* ``probes``  a :class:`Trainer` with probes (hooks, add-watching modes, norms, one D2H copy);
* ``bare``    a :class:`Trainer` without probes (still checks for NaN/Inf: one D2H copy);
* ``bare2``   a second, identical bare Trainer: its ratio to ``bare`` is the noise floor;
* ``torch``   a hand-written loop: zero_grad, forward, cross-entropy, backward, optimizer step,
              ``loss.item()``.

Steps are interleaved (probes, bare, torch, then reversed on the next round) so drift in machine
load hits all three alike, and medians of warm steps are compared. Wall time and process CPU time
are both reported; on a shared machine the CPU-time ratio is the steadier one. The overhead target
is probes/bare <= 1.03.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from resviz.core.analysis.pipeline import analyze  # noqa: E402
from resviz.core.sources import zoo  # noqa: E402
from resviz.core.training import TrainConfig, Trainer  # noqa: E402
from resviz.core.training.data import SyntheticData  # noqa: E402
from resviz.core.training.trainer import resolve_device  # noqa: E402

CASES = {
    "resnet20": ((3, 32, 32), 128),
    "resnet50": ((3, 64, 64), 16),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class TorchLoop:
    def __init__(self, model, device: str, lr: float):
        self.model = copy.deepcopy(model).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    def step(self, batch):
        x, y = batch
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def bench(name: str, shape, batch: int, steps: int, warmup: int, device: str) -> dict:
    torch.manual_seed(0)
    model = zoo.build(name, device="cpu")
    report = analyze(model, (1, *shape), suggest_sizes=False)
    data = SyntheticData(shape, 10, seed=0)
    x, y = data.batch(0, batch)
    xd, yd = x.to(device), y.to(device)
    cfg = TrainConfig(batch_size=batch, lr=0.01, device=device, snapshot_every=0)
    probed = Trainer(model, cfg, report=report, data=data)
    bare = Trainer(model, TrainConfig(**{**cfg.__dict__, "probes": False}), report=report, data=data)
    bare2 = Trainer(model, TrainConfig(**{**cfg.__dict__, "probes": False}), report=report, data=data)
    raw = TorchLoop(model, device, 0.01)
    runners = {
        "probes": lambda: probed.step((xd, yd)),
        "bare": lambda: bare.step((xd, yd)),
        "bare2": lambda: bare2.step((xd, yd)),  # an identical control: shows the noise floor
        "torch": lambda: raw.step((xd, yd)),
    }
    wall = {k: [] for k in runners}
    cpu = {k: [] for k in runners}
    order = list(runners)
    for i in range(warmup + steps):
        for k in order if i % 2 == 0 else reversed(order):
            _sync(device)
            c0, w0 = time.process_time(), time.perf_counter()
            runners[k]()
            _sync(device)
            if i >= warmup:
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    # steps of one round ran back to back: the median of per-round ratios resists load drift
    paired = statistics.median(p / b for p, b in zip(wall["probes"], wall["bare"]))
    paired_cpu = statistics.median(p / b for p, b in zip(cpu["probes"], cpu["bare"]))
    control = statistics.median(p / b for p, b in zip(wall["bare2"], wall["bare"]))
    rec = probed.history.last
    return {
        "model": name, "input": "x".join(map(str, shape)), "batch": batch, "device": device,
        "blocks": len(rec.blocks), "wall": med, "cpu": cmed,
        "ratio_wall": med["probes"] / med["bare"], "ratio_cpu": cmed["probes"] / cmed["bare"],
        "paired_wall": paired, "paired_cpu": paired_cpu, "control": control,
        "ratio_vs_torch_wall": med["probes"] / med["torch"], "bare_vs_torch_wall": med["bare"] / med["torch"],
        "ratio_vs_torch_cpu": cmed["probes"] / cmed["torch"],
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(CASES), help="zoo models (default: resnet20 resnet50)")
    p.add_argument("--batch", type=int, default=None, help="override the batch size")
    p.add_argument("--size", type=int, default=None, help="override the image size")
    p.add_argument("--steps", type=int, default=15, help="measured steps per stepper (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps per stepper (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="5 measured steps, 1 warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 5, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
          f"{args.steps} measured steps after {args.warmup} warm-up (medians)")  # fmt: skip
    worst = 0.0
    for name in args.models:
        shape, batch = CASES.get(name, ((3, 32, 32), 64))
        if args.size:
            shape = (shape[0], args.size, args.size)
        batch = args.batch or batch
        r = bench(name, shape, batch, args.steps, args.warmup, device)
        w = r["wall"]
        print(
            f"{r['model']:>10} {r['input']:>8} b{r['batch']:<4} {r['blocks']:>2} blocks | wall ms: probes "
            f"{w['probes'] * 1e3:8.1f} bare {w['bare'] * 1e3:8.1f} torch {w['torch'] * 1e3:8.1f} | "
            f"probes/bare {r['ratio_wall']:.3f} (cpu {r['ratio_cpu']:.3f}, paired {r['paired_wall']:.3f}/"
            f"{r['paired_cpu']:.3f}; control bare2/bare {r['control']:.3f}) | probes/torch "
            f"{r['ratio_vs_torch_wall']:.3f} (cpu {r['ratio_vs_torch_cpu']:.3f})"
        )
        worst = max(worst, r["paired_wall"])
    print(f"worst paired probes/bare wall-time ratio: {worst:.3f} (target <= 1.03)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
