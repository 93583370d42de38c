"""``resviz train MODEL``: headless training with per-block probes.

    resviz train resnet20 --steps 300 --batch 64 --lr 0.1 --json > steps.jsonl
    resviz train model.py:Net --data cifar10:~/data/cifar-10-batches-py --csv run.csv
    resviz train resnet56 --plain              # the plain twin: same layers, no shortcuts

Every run writes a run directory (``--run-dir DIR``, default a new folder under the user's data
dir): ``run.json`` (configuration and state), ``report.json`` (the check report and the graph) and
``steps.jsonl`` (every step, flushed as it is recorded, so SIGTERM, Ctrl-C or a crash lose
nothing; ``resviz follow DIR`` watches it). Steps count from 0 everywhere: step k is measured on
the weights after k updates. A progress bar goes to stderr (updated in place on a terminal, a line
every ~10% otherwise); ``--json`` prints one JSON object per step on stdout; ``--csv``/``--jsonl``
stream every step to a file. Exit status: 0 done, 1 the loss or a gradient became NaN/Inf (the
message says what to run instead), 2 bad input (model, data, arguments), 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field

from .core.errors import ResvizError, Terminated
from .core.interrupts import forget_unhandled_interrupt, import_torch, raise_pending, signals_unwind
from .core.printable import MESSAGE_LIMIT, printable

EXIT_OK, EXIT_NONFINITE, EXIT_BAD_INPUT = 0, 1, 2
_FLOAT32_MAX = 3.4028234663852886e38
DEFAULT_BATCH = 32  # one default everywhere: TrainConfig, this command and the app's Training tab


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {v}")
    return v


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if abs(v) > _FLOAT32_MAX:  # torch keeps these in float32: past this they become inf
        raise argparse.ArgumentTypeError(f"{text} is past the largest float32, about 3.4e38")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2^63 - 1, got {text[:40]}")
    return v


def add_train_arguments(parser: argparse.ArgumentParser, *, model_args: bool = False) -> None:
    """Add the ``train`` options. ``model_args=True`` also adds MODEL, --input, --kwargs and
    --trust (the lead's ``cli._model_args`` adds those for the real command line)."""
    if model_args:
        parser.add_argument("model", metavar="MODEL", help="zoo name, spec file, file.py[:Name] or archive")
        parser.add_argument("--input", "-i", metavar="SHAPE", help="input shape, e.g. 3x32x32")
        parser.add_argument("--kwargs", metavar="JSON", help="constructor arguments for a Python model")
        parser.add_argument("--trust", action="store_true", help="allow unpickling a whole pickled model")
    g = parser.add_argument_group("training")
    g.add_argument(
        "--steps", type=_positive_int, default=200, metavar="N", help="training steps (default 200)"
    )
    g.add_argument("--batch", type=_positive_int, default=DEFAULT_BATCH, metavar="B",
                   help=f"batch size (default {DEFAULT_BATCH}, as in the app)")  # fmt: skip
    g.add_argument("--lr", type=_float, default=None, metavar="LR",
                   help="learning rate (default 0.1 for SGD, 0.001 for Adam/AdamW)")  # fmt: skip
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd", help="default sgd")
    g.add_argument("--momentum", type=_float, default=0.9, metavar="M", help="SGD momentum (default 0.9)")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=_float, default=None, metavar="W",
                   help="weight decay (default 5e-4 SGD, 0 Adam, 0.01 AdamW)")  # fmt: skip
    g.add_argument("--data", default="synthetic", metavar="SOURCE",
                   help="synthetic (default), cifar10:DIR, folder:DIR, npz:FILE, or a path")  # fmt: skip
    g.add_argument("--plain", action="store_true", help="train the plain twin (shortcuts removed)")
    g.add_argument("--device", default="auto", metavar="DEV", help="auto (default), cpu or cuda")
    g.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed (default 0)")
    g.add_argument("--run-dir", metavar="DIR",
                   help="the run directory to write (default: a new one under the user's data dir, "
                        "e.g. ~/.local/share/resviz/runs/NAME-TIME)")  # fmt: skip
    g.add_argument("--csv", metavar="FILE", help="also write one row per step to FILE (every step, streamed)")
    g.add_argument("--jsonl", metavar="FILE", help="also write one JSON object per step to FILE (every step)")
    g.add_argument("--json", action="store_true", help="print one JSON object per step on stdout")
    g.add_argument("--no-probes", dest="probes", action="store_false",
                   help="skip the per-block gradient probes")  # fmt: skip


class Progress:
    """A plain-text progress bar on ``stream``: in place on a terminal, else a line per ~10%."""

    def __init__(self, total: int, stream=None, width: int = 24):
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_tick = -1
        self._last_draw = 0.0
        self._start = time.perf_counter()
        self._dirty = False

    def update(self, done: int, loss: float, acc: float) -> None:
        frac = done / self.total
        if self.tty:
            now = time.perf_counter()
            if done < self.total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            n = int(frac * self.width)
            bar = "#" * n + "-" * (self.width - n)
            self.stream.write(
                f"\r[{bar}] {done}/{self.total}  loss {loss:.4f}  acc {acc:.3f}  {self._eta(done)}"
            )
            self._dirty = True
        else:
            tick = int(frac * 10)
            if tick == self._last_tick and done != self.total:
                return
            self._last_tick = tick
            self.stream.write(f"step {done - 1} ({done}/{self.total} done)  loss {loss:.4f}  acc {acc:.3f}\n")
        self.stream.flush()

    def _eta(self, done: int) -> str:
        if done == 0:
            return ""
        per = (time.perf_counter() - self._start) / done
        left = per * (self.total - done)
        return f"{per:.2f}s/step, {left:.0f}s left " if done < self.total else f"{per:.2f}s/step"

    def close(self) -> None:
        if self.tty and self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False


def run_train(args) -> int:
    """Run ``resviz train`` for parsed ``args``; returns the exit status (0, 1 NaN/Inf, 2 bad input,
    130 Ctrl-C, 143 SIGTERM: the records so far are kept)."""
    try:
        return _run(args)
    except ResvizError as e:
        print(printable(f"resviz: {e}", limit=MESSAGE_LIMIT), file=sys.stderr)
        return EXIT_BAD_INPUT


def run_config(args, cfg, trainer) -> dict:
    """What ``run.json`` records of a ``resviz train`` run (see the README's run directory format)."""
    import torch

    from ._version import __version__

    return {
        "source": "resviz train", "model": args.model, "input_shape": list(trainer.input_shape),
        "plain": bool(args.plain), "optimizer": cfg.optimizer, "lr": cfg.lr, "momentum": cfg.momentum,
        "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
        "steps": cfg.steps, "seed": cfg.seed, "data": args.data, "data_description": trainer.data.describe(),
        "device": cfg.device, "world_size": 1, "every": 1, "probes": cfg.probes,
        "torch": torch.__version__, "resviz": __version__, "argv": list(sys.argv),
    }  # fmt: skip


def _model_args_of(args) -> argparse.Namespace:
    """The model options ``open_source`` reads, with their defaults where this parser lacks them."""
    return argparse.Namespace(model=args.model, input=getattr(args, "input", None),
                              kwargs=getattr(args, "kwargs", None), trust=getattr(args, "trust", False),
                              timeout=getattr(args, "timeout", None))  # fmt: skip


def _run(args) -> int:
    import_torch()  # a Ctrl-C during torch's start-up is held until it is done (interrupts.py)
    from .core.training import RunState, RunWriter

    cfg = train_config(args)  # bad values are reported before the model is loaded
    _check_outputs(args)  # and so are output files that cannot be written
    if getattr(args, "run_dir", None):
        RunWriter.check(args.run_dir)  # and a --run-dir that cannot take this run
    trainer = _trainer(args, cfg)
    run, what = _open_run(args, cfg, trainer)
    print(printable(
        f"training {what} on {trainer.data.describe()}: {cfg.steps} steps (numbered 0-{cfg.steps - 1}), "
        f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, {cfg.device}; run directory {run.path}"),
        file=sys.stderr,
    )  # fmt: skip
    out = _Outcome(end_state=RunState.FINISHED)
    try:
        with signals_unwind():  # and a Ctrl-C swallowed in a step is raised again (interrupts.py)
            _train_steps(args, cfg, trainer, run, out)
    except (KeyboardInterrupt, Terminated) as e:
        sig = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C (SIGINT)"
        done = trainer.step_index
        out.end_state, out.end_message = RunState.STOPPED, f"stopped by {sig} after {done} of {cfg.steps} steps"
        out.status = 143 if isinstance(e, Terminated) else 130
        forget_unhandled_interrupt()  # exit 130 as documented, not by SIGINT (interrupts.py)
        print(f"\nresviz: {out.end_message}; the {done} recorded steps are kept", file=sys.stderr)
    except BaseException as e:
        out.end_state, out.end_message = RunState.STOPPED, f"{type(e).__name__}: {e}"
        raise
    finally:
        for w in out.writers:
            w.close()  # what was recorded so far is kept, even on Ctrl-C, SIGTERM or an error
        run.close(out.end_state, out.end_message)
    for line in closing_lines(out, run):
        print(printable(line), file=sys.stderr)
    return out.status


def train_config(args):
    """The run's :class:`TrainConfig` from the command line, resolved (ResvizError when a value is bad)."""
    from .core.training import TrainConfig

    return TrainConfig(
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=getattr(args, "nesterov", False),
        weight_decay=args.weight_decay, batch_size=args.batch, steps=args.steps, seed=args.seed,
        device=args.device, probes=getattr(args, "probes", True),
    ).resolved()  # fmt: skip


def _trainer(args, cfg):
    """The model opened and checked, its training memory checked, and a Trainer for it; the notes
    of each said on stderr."""
    from .cli import open_source
    from .core.training import Trainer
    from .core.training.data import check_training_memory

    # A Python file is checked in a child process first, exactly as by `resviz check` (an import
    # that hangs past --timeout, exits or crashes: exit 2, this process untouched); training then
    # builds it here, since the probes need the live model (Session.loaded.rebuild).
    session = open_source(_model_args_of(args))
    for note in session.notes:
        print(printable(f"note: {note}"), file=sys.stderr)
    check_training_memory(
        session.report, cfg.batch_size, cfg.optimizer, cfg.device, session.report.model_name
    )
    trainer = Trainer.from_session(session, cfg, data=args.data, plain=args.plain)
    trainer.interactive = False  # the fault message says what to run, not "resume or reset"
    for note in trainer.notes:
        print(printable(f"note: {note}"), file=sys.stderr)
    return trainer


def _open_run(args, cfg, trainer):
    """The run directory, created (``--run-dir`` or a new default one), and what is trained."""
    from .core.training import RunWriter, default_run_dir
    from .core.training.runreport import report_json

    what = f"plain twin of {trainer.name}" if args.plain else trainer.name
    run_dir = getattr(args, "run_dir", None)
    run_dir = run_dir or default_run_dir(f"{trainer.name}-plain" if args.plain else trainer.name)
    run = RunWriter.create(run_dir, name=what, config=run_config(args, cfg, trainer), blocks=trainer.block_names,
                           report=report_json(trainer.report))  # fmt: skip
    for note in trainer.notes:
        run.log("note", note)
    return run, what


@dataclass
class _Outcome:
    """How the training ended, filled in as it goes (a step, Ctrl-C or an error may end it anywhere)."""

    end_state: object
    end_message: str = ""
    status: int = EXIT_OK
    rec: object = None  # the last StepRecord
    writers: list = field(default_factory=list)  # --csv/--jsonl, open once a first step succeeded


def _train_steps(args, cfg, trainer, run, out: _Outcome) -> None:
    """Train ``cfg.steps`` steps, recording each (run directory, --csv/--jsonl, --json, progress);
    stop at a NaN/Inf step."""
    from .core.training import RecordWriter, RunState

    first_step = trainer.step_index
    progress = Progress(cfg.steps)
    try:
        for _ in range(cfg.steps):
            rec = out.rec = trainer.step()
            if rec.step == first_step:  # opened once a step succeeded: a run that fails
                out.writers = _open_writers(args, trainer, RecordWriter)  # first keeps old files
            run.write(rec)
            for w in out.writers:
                w.write(rec)
            if args.json:
                sys.stdout.write(json.dumps(rec.to_dict(), allow_nan=False) + "\n")
                sys.stdout.flush()
            progress.update(rec.step + 1, rec.loss, rec.accuracy)
            raise_pending()  # a Ctrl-C that code inside the step caught and dropped
            if rec.nonfinite:
                out.status = EXIT_NONFINITE
                out.end_state, out.end_message = RunState.FAULTED, rec.message
                break
    finally:
        progress.close()


def closing_lines(out: _Outcome, run) -> list[str]:
    """What is said on stderr at the end: the fault or how the last step went (when the run was
    not stopped), and the files written."""
    from .core.training.store import summarise_flags

    lines = []
    rec = out.rec
    if rec is not None and out.status in (EXIT_OK, EXIT_NONFINITE):
        if rec.nonfinite:
            lines.append(f"resviz: {rec.message}")
        else:
            flags = summarise_flags(rec.flags)
            tail = f"; flagged gradients: {flags}" if flags else ""
            lines.append(f"done: {rec.step + 1} steps (0-{rec.step}), last loss {rec.loss:.4f}, accuracy "
                         f"{rec.accuracy:.3f}{tail}")  # fmt: skip
    lines.append(f"wrote {run.path}")
    lines += [f"wrote {w.path}" for w in out.writers]
    return lines


def _open_writers(args, trainer, record_writer) -> list:
    writers = []
    if args.csv:
        writers.append(record_writer(args.csv, "csv", trainer.block_names, stream=True))
    if args.jsonl:
        writers.append(record_writer(args.jsonl, "jsonl", stream=True))
    return writers


def _check_outputs(args) -> None:
    """``--csv`` and ``--jsonl`` must be writable files, said before the model is even loaded."""
    from .core.files import check_output

    targets = [(flag, getattr(args, flag, None)) for flag in ("csv", "jsonl")]
    for flag, path in targets:
        if path:
            check_output(path, f"--{flag} records")
    if targets[0][1] and targets[0][1] == targets[1][1]:
        raise ResvizError(f"--csv and --jsonl name the same file ({targets[0][1]}); give each its own")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m resviz.train_cli MODEL ...``)."""
    parser = argparse.ArgumentParser(prog="resviz train", description="Train a model headless, with probes.")
    add_train_arguments(parser, model_args=True)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
