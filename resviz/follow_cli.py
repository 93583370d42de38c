"""``resviz follow RUN_DIR``: the live summary of a run directory, headless.

    resviz follow ~/.local/share/resviz/runs/resnet20-20260101-120000
    resviz follow runs/r1 --once          # what is there now, then exit

Prints a header (model, optimizer, batch, device, world size), then, whenever records arrived since
the last look, one line: the latest step, its loss, steps per second (from the records' own wall
times, so it is right for a run on another machine) and the flagged blocks in natural order,
summarised. NaN/Inf faults and probe errors from ``events.jsonl`` are printed as they appear. Reads
only the bytes appended since the last look (see :mod:`resviz.core.training.rundir`), so following
a long run on shared storage stays cheap. Ends when the run ends (finished, faulted, stopped;
exit 0) or on Ctrl-C (exit 130), cleanly either way. Exit 2: not a run directory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from .core.errors import ResvizError

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.05 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected seconds between 0.05 and 3600, got {text!r}")
    return value


def add_follow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run directory (resviz train, resviz.monitor, ...)"
    )
    parser.add_argument("--interval", type=_interval, default=1.0, metavar="S",
                        help="seconds between looks at the files (default 1)")  # fmt: skip
    parser.add_argument("--once", action="store_true", help="print the summary of what is there now and exit")


def _num(v: float, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def header(run) -> str:
    c = run.meta.get("config") or {}
    bits = [f"state {run.state.value}"]
    if c.get("optimizer"):
        bits.append(f"{c['optimizer']} lr {_num(c.get('lr'), 'g')}")
    if c.get("batch_size"):
        bits.append(f"batch {c['batch_size']}")
    for key, label in (("device", ""), ("world_size", "world size ")):
        if c.get(key) not in (None, ""):
            bits.append(f"{label}{c[key]}")
    if c.get("every", 1) != 1:
        bits.append(f"every {c['every']} steps")
    return f"following {run.name} ({run.path}): {', '.join(bits)}"


def status_line(run) -> str:
    from .core.training.store import summarise_flags

    store = run.store
    last = store.latest
    if last is None:
        return "no steps recorded yet"
    rate = store.steps_per_second()
    flags = summarise_flags(store.latest_flags())
    parts = [f"step {last['step']}", f"loss {_num(last['loss'], '.4f')}"]
    if math.isfinite(last.get("accuracy", math.nan)):
        parts.append(f"acc {last['accuracy']:.3f}")
    parts.append(f"{rate:.2f} steps/s" if rate > 0 else "- steps/s")
    parts.append(f"flagged: {flags}" if flags else "no flagged blocks")
    return "  ".join(parts)


STALE_AFTER = 120.0  # seconds without a new record before saying the writer may be gone


def follow(run_dir, out=None, *, interval: float = 1.0, once: bool = False, sleep=time.sleep,
           clock=time.monotonic, stale_after: float = STALE_AFTER) -> int:  # fmt: skip
    """Follow ``run_dir``, writing to ``out`` (stdout); returns the exit status. ``sleep`` is how it
    waits between looks (tests pass one that appends records instead of waiting); ``clock`` tells
    how long no record came (after ``stale_after`` seconds it says so once: a writer killed with
    SIGKILL cannot mark its run stopped, and following goes on until Ctrl-C)."""
    from .core.training import open_run

    out = out if out is not None else sys.stdout
    try:
        run = open_run(run_dir)
    except ResvizError as e:
        print(f"resviz: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    say(header(run))
    try:
        _watch(run, say, interval=interval, once=once, sleep=sleep, clock=clock, stale_after=stale_after)
        for line in closing_lines(run, once):
            say(line)
        return EXIT_OK
    except KeyboardInterrupt:
        say(f"stopped following after {run.store.count} steps (the run itself goes on)")
        return EXIT_INTERRUPTED


def _watch(run, say, *, interval: float, once: bool, sleep, clock, stale_after: float) -> None:
    """Say the news and the status after each look, until the run ends (or after one look)."""
    faults_shown = 0
    new = run.store.count
    last_news = clock()
    warned = False
    while True:
        lines, faults_shown = news_lines(run, faults_shown)
        for line in lines:
            say(line)
        if new:
            say(status_line(run))
            last_news, warned = clock(), False
        elif not warned and clock() - last_news > stale_after:
            say(stale_line(run, clock() - last_news))
            warned = True
        if once or not run.state.live:
            return
        sleep(interval)
        new = len(run.poll())


def news_lines(run, faults_shown: int) -> tuple[list[str], int]:
    """The run's new error and note events and the faults after the first ``faults_shown``, as
    lines to print; and how many faults are shown after them."""
    lines = [f"{ev['kind']}: {ev.get('message', '')}" for ev in run.new_events() if ev.get("kind") in ("error", "note")]
    lines += [f"fault at step {f['step']}: {f.get('message') or 'NaN/Inf'}" for f in run.store.faults[faults_shown:]]
    return lines, len(run.store.faults)


def stale_line(run, quiet_s: float) -> str:
    return (f"note: no new step for {quiet_s:.0f} s; run.json still says {run.state.value} (the writer "
            "may have been killed); Ctrl-C to stop following")  # fmt: skip


def closing_lines(run, once: bool) -> list[str]:
    """What is said when following ends: the run's state and steps read, and lines skipped."""
    n = run.store.count
    msg = run.meta.get("message") or ""
    lines = [f"run {run.state.value}: {n} steps read" + (f"; {msg}" if msg else "") if not once else
             f"{n} steps read; the run is {run.state.value}"]  # fmt: skip
    if run.reader.skipped:
        lines.append(f"note: {run.reader.skipped} unreadable lines skipped (a crash mid-write)")
    return lines


def run_follow(args) -> int:
    return follow(args.run_dir, interval=args.interval, once=args.once)
