"""How long a training step will take, said before Start, and what to do when that is too long
(no Qt here; torch is imported only to time this machine once).

:func:`step_seconds` multiplies the model's multiply-accumulates per sample (the analysis counts
them) by the batch and by 3 (a forward and a backward pass, which costs about twice the forward),
adds what the probes and the optimizer cost (:data:`OVERHEAD`), and divides by what this CPU
does: :func:`cpu_macs_per_second` times a small convolution forward and backward once per
process and thread count (a few tens of milliseconds). The Training tab shows the result before
Start and, for an ImageNet-size input on a CPU that would take seconds a step, offers in words to
train at 64x64 or on a CIFAR-size ResNet instead (:func:`smaller_offer`).
"""

from __future__ import annotations

import time

OVERHEAD = 1.3  # probes' hooks and norms, the optimizer step, data: measured 1.2-1.4x on resnet20/56
SLOW_STEP_S = 1.0  # a CPU step slower than this gets the offer of a smaller input
SMALL_SIDE = 64  # the smaller input offered
CIFAR_TWIN = "resnet20"  # the CIFAR-size ResNet offered (basic blocks, 32x32, 0.27M parameters)
_SPEED: dict[int, float] = {}  # torch threads -> MAC/s of this CPU


def training_threads() -> int:
    """The intra-op threads a CPU training run uses: torch's count as the process has it (the
    host's own under ``resviz.show``; in the app, what ``run_app`` set once at start, see
    :func:`resviz.gui.app.set_thread_policy`). Nothing in the Training tab changes it:
    ``torch.set_num_threads`` acts on the whole process, not on the thread that calls it."""
    import torch

    return torch.get_num_threads()


def calibrate() -> dict[int, float]:
    """Time this CPU at the thread count training uses (once per process and count): what the
    estimate divides by."""
    cpu_macs_per_second()
    return dict(_SPEED)


def cpu_macs_per_second() -> float:
    """Multiply-accumulates per second of a 3x3 convolution, forward and backward, on this CPU at
    torch's current intra-op thread count; timed once per process and thread count."""
    import torch

    threads = torch.get_num_threads()
    if threads not in _SPEED:
        _SPEED[threads] = _time_conv(torch)
    return _SPEED[threads]


def _time_conv(torch) -> float:
    """A ResNet stage's 3x3 convolution (64 channels at 28x28, batch 8), forward and backward:
    big enough that the GEMM runs at the speed training sees, small enough to take ~0.1-0.5 s."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
        x = torch.randn(8, 64, 28, 28, requires_grad=True)
        macs = 3 * 8 * 64 * 64 * 9 * 28 * 28  # forward + backward (weight and input gradients)
        best = float("inf")
        for i in range(3):  # the first run warms up (allocations, kernel choice)
            t0 = time.perf_counter()
            conv(x).sum().backward()
            if i:
                best = min(best, time.perf_counter() - t0)
    return macs / max(best, 1e-6)


def step_seconds(macs_per_sample: float, batch: int, macs_per_second: float) -> float:
    """Seconds one training step (forward, backward, probes, optimizer) should take."""
    return 3.0 * macs_per_sample * batch * OVERHEAD / macs_per_second


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def smaller_offer(input_shape, seconds: float, device: str) -> dict | None:
    """For a slow CPU step on an image bigger than 64x64: ``{"side": 64, "speedup": ...,
    "twin": "resnet20"}``, what the tab offers instead; None when there is nothing to offer."""
    if device not in ("cpu", "auto") or seconds < SLOW_STEP_S:
        return None
    shape = tuple(input_shape or ())
    if len(shape) != 4 or min(shape[2], shape[3]) <= SMALL_SIDE:
        return None
    speedup = (shape[2] * shape[3]) / (SMALL_SIDE * SMALL_SIDE)
    return {"side": SMALL_SIDE, "speedup": speedup, "seconds": seconds / speedup, "twin": CIFAR_TWIN}


def estimate_text(macs_per_sample: float, batch: int, steps: int, macs_per_second: float,
                  threads: int) -> str:  # fmt: skip
    """``about 2.1 s a step on this CPU (4 threads) at batch 32: 500 steps take about 18 min``."""
    s = step_seconds(macs_per_sample, batch, macs_per_second)
    total = f": {steps} steps take about {duration(s * steps)}" if steps else ""
    per = f"about {duration(s)} a step" if s >= 0.05 else f"about {1 / s:.0f} steps/s"
    return f"{per} on this CPU ({threads} thread{'s' if threads != 1 else ''}) at batch {batch}{total}"
