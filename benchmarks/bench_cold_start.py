"""Cold start of the app: launch to the drawn graph, next to a bare ``python -c "import torch"``.

    python benchmarks/bench_cold_start.py                 # resnet50, 3 rounds
    python benchmarks/bench_cold_start.py --model resnet1202 --rounds 5

Each round runs, as fresh processes one after the other: ``python -c "import torch"`` and
``resviz MODEL --screenshot`` (offscreen, with ``RESVIZ_TIMING=1`` so the app prints when its window
was shown, the model drawn and the picture written, counted from the process start). The two are measured in
the same run and interleaved, so a busy machine slows both alike; compare the ratio and the
difference, not absolute seconds across runs. The goal: drawn within about 1 s of torch's import.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# A bare torch import, timed as the app times itself: seconds from the process start (not counting
# the interpreter's exit, which the app's "drawn" does not count either).
TORCH_ONLY = """
import os, time
import torch
with open("/proc/self/stat") as f:
    start = float(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
with open("/proc/uptime") as f:
    print(float(f.read().split()[0]) - start)
"""


def _wall(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return time.perf_counter() - t0, out.stderr + out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1600x1000")
    args = ap.parse_args()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", RESVIZ_TIMING="1")
    # As installed for a user: bytecode cached (an environment with PYTHONDONTWRITEBYTECODE would
    # compile every resviz module from source at each start); a warm-up round writes the cache.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    shot = Path(tempfile.mkdtemp(prefix="resviz-cold-")) / "shot.png"
    torch_s, torch_exit_s, launch_s, shown_s, drawn_s, written_s = [], [], [], [], [], []
    _wall([sys.executable, "-m", "resviz", args.model, "--screenshot", str(shot), "--size", args.size], env)
    for _ in range(args.rounds):
        wall, out = _wall([sys.executable, "-c", TORCH_ONLY], env)
        torch_exit_s.append(wall)
        torch_s.append(float(out.split()[-1]))
        wall, err = _wall([sys.executable, "-m", "resviz", args.model, "--screenshot", str(shot),
                           "--size", args.size], env)  # fmt: skip
        launch_s.append(wall)
        m = re.search(r"window shown after ([\d.]+) s, model drawn after ([\d.]+) s"
                      r"(?:, picture written after ([\d.]+) s)?", err)  # older resviz: no "written"
        if m:
            shown_s.append(float(m.group(1)))
            drawn_s.append(float(m.group(2)))
            if m.group(3):
                written_s.append(float(m.group(3)))
    med = statistics.median
    t = med(torch_s)
    print(f"cold start, {args.model}, median of {args.rounds} interleaved rounds")
    print(f"  python -c 'import torch'        {t:6.2f} s imported ({med(torch_exit_s):.2f} s to its exit)")
    if drawn_s:
        d = med(drawn_s)
        print(f"  resviz: window shown            {med(shown_s):6.2f} s")
        print(f"  resviz: graph drawn             {d:6.2f} s   {d / t:4.2f}x torch's import, {d - t:+.2f} s")
    if written_s:
        p = med(written_s)
        print(f"  resviz: picture written         {p:6.2f} s   {p / t:4.2f}x torch's import, {p - t:+.2f} s")
    w = med(launch_s)
    te = med(torch_exit_s)
    print(f"  resviz: launch to process exit  {w:6.2f} s   {w / te:4.2f}x the bare import's, {w - te:+.2f} s")


if __name__ == "__main__":
    main()
