"""The ``resviz`` command line.

    resviz [MODEL] [--input SHAPE]            open the desktop app (resnet18 by default)
    resviz check MODEL [--json] [--fix-spec OUT]  blocks, shortcut mismatches with causes and fixes
    resviz summary MODEL [--depth N] [--json] per-layer table with params and MACs
    resviz render MODEL -o FILE [--depth N] [--collapse blocks|stages|none] [--rollup]
                                              the block graph as SVG, PNG, PDF or DOT
    resviz zoo [--json]                       the built-in models
    resviz codegen SPEC [-o model.py]         a spec (or zoo name) as a standalone PyTorch file
    resviz train MODEL [--steps N] [--batch B] [--lr LR] [--optimizer sgd|adam|adamw]
                 [--data SOURCE] [--plain] [--device DEV] [--seed S] [--run-dir DIR] [--csv F] [--json]
                                              headless training with per-block gradient probes
    resviz follow RUN_DIR [--once]            the live summary of a run directory (steps/s, loss, flags)

Exit status, one rule for every command: 0 the model was traced to the end and every shortcut
matches; 1 it was loaded but problems were found (a shortcut mismatch, a shape error, a trace that
stopped early; for ``train``, a NaN/Inf); 2 it could not be loaded, or an argument or output file
is wrong (a Python file whose code hangs past --timeout, exits or crashes included); 3 a bug in
resviz; 130 interrupted by Ctrl-C, 143 stopped by SIGTERM. User mistakes are reported as one
paragraph, never a traceback. A Python file's code runs in a child process (resviz.core.session.isolation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .core import gcpause
from .core.errors import ResvizError, Terminated
from .core.interrupts import forget_unhandled_interrupt, import_torch, signals_unwind
from .core.printable import MESSAGE_LIMIT, printable

COMMANDS = ("check", "summary", "render", "zoo", "train", "codegen", "follow")
EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2


def _check_depth(args) -> None:
    """``--depth`` means the same to summary and render: 0 or more, checked before any work."""
    if args.depth is not None and args.depth < 0:
        raise ResvizError(f"--depth must be 0 or more, got {args.depth}")


def exit_status(report) -> int:
    """The exit status of check, summary and render for an analysed model."""
    return EXIT_OK if report.ok else EXIT_FOUND


def _model_args(p: argparse.ArgumentParser, model_required: bool = True,
                several_inputs: bool = False) -> None:  # fmt: skip
    if model_required:
        p.add_argument("model", metavar="MODEL",
                       help="zoo name, spec file (.toml/.json), file.py[:Name], or an archive "
                            "(.pt TorchScript, .pt2 torch.export)")  # fmt: skip
    if several_inputs:
        p.add_argument("--input", "-i", metavar="[NAME:]SHAPE[:DTYPE]", action="append",
                       help="an input of forward, e.g. 1x3x224x224, 3x32x32 (an image: batch 1), "
                            "1x16:int64, or ids:1x16:int64 (a keyword argument); repeat it for "
                            "several inputs")  # fmt: skip
    else:
        p.add_argument("--input", "-i", metavar="SHAPE",
                       help="input shape, e.g. 1x3x224x224 or 3x32x32 (batch 1)")  # fmt: skip
    p.add_argument("--kwargs", metavar="JSON", help="constructor arguments for a Python model, "
                   "e.g. '{\"num_classes\": 10}'")  # fmt: skip
    p.add_argument("--trust", action="store_true",
                   help="allow unpickling a whole pickled model (runs code from the file)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _timeout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="give up (exit 2) when a Python file's code runs longer than this "
                        "(import, build and trace together; starting Python is not counted)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resviz",
        description="See, check and train residual networks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="find every shortcut mismatch, with cause and fix")
    _model_args(p, several_inputs=True)
    _timeout_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--fix-spec", metavar="OUT", help="spec files: write the spec with every "
                   "mismatch fixed to OUT (.toml/.json; a TOML input keeps its comments)")  # fmt: skip

    p = sub.add_parser("summary", help="per-layer table: output shapes, params, MACs")
    _model_args(p, several_inputs=True)
    _timeout_arg(p)
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="show modules down to depth N (default: every layer)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("render", help="draw the block graph with skip edges")
    _model_args(p, several_inputs=True)
    _timeout_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output file: .svg, .png, .pdf or .dot")  # fmt: skip
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="expand modules down to depth N (default: blocks collapsed)")  # fmt: skip
    p.add_argument("--collapse", choices=("blocks", "stages", "none"), default=None,
                   help="draw each block (default) or each stage as one node, or every layer "
                        "(none; the default with --depth); a mismatch is always drawn open")  # fmt: skip
    p.add_argument("--rollup", action="store_true",
                   help="draw each run of 3+ identical blocks as one node, as the app's Roll up")
    p.add_argument("--layout", choices=("auto", "chain", "dot"), default="auto",
                   help="layout engine (dot needs Graphviz installed)")  # fmt: skip

    p = sub.add_parser("zoo", help="list the built-in models")
    p.add_argument("--json", action="store_true", help="print a JSON list")

    p = sub.add_parser("codegen", help="write a spec as a standalone PyTorch file")
    p.add_argument("model", metavar="SPEC", help="spec file (.toml/.json) or zoo name")
    p.add_argument("-o", "--output", metavar="FILE", help="the .py file to write (default: print it)")

    from .train_cli import add_train_arguments

    p = sub.add_parser("train", help="train headless with per-block gradient probes")
    _model_args(p)  # training feeds one image batch
    _timeout_arg(p)
    add_train_arguments(p)

    from .follow_cli import add_follow_arguments

    p = sub.add_parser("follow", help="print the live summary of a run directory (steps/s, loss, flags)")
    add_follow_arguments(p)
    return parser


def build_gui_parser() -> argparse.ArgumentParser:
    """``resviz [MODEL] [options]``: the app. Its help (also ``resviz --help``) lists the commands."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    p = argparse.ArgumentParser(
        prog="resviz",
        usage="resviz [MODEL] [options]          open the desktop app\n"
              "       resviz COMMAND MODEL [options]  work headless (resviz COMMAND --help)",
        description="See, check and train residual networks.",
        epilog="commands:\n" + "\n".join(f"  {c.dest:10s} {c.help}" for c in commands._choices_actions),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="model to open (default: resnet18)")  # fmt: skip
    _model_args(p, model_required=False)
    p.add_argument("--screenshot", metavar="PNG",
                   help="render offscreen once the model is drawn, save a PNG and exit")
    p.add_argument("--train", type=int, default=0, metavar="N",
                   help="with --screenshot: train N steps first so the plots are filled")
    p.add_argument("--twin", action="store_true",
                   help="with --train: train the plain twin beside the residual net")  # fmt: skip
    p.add_argument("--tab", default=None, metavar="NAME",
                   help="the tab to show, by the start of its title: issues, summary, training, ...")
    p.add_argument("--size", default="1600x1000", metavar="WxH",
                   help="window size for --screenshot (default: 1600x1000)")
    return p


def main(argv: list[str] | None = None) -> int:
    with gcpause.owning_process():  # resviz's own process: the engine may pause the gc (gcpause.py)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] not in COMMANDS:  # the app; its --help lists the commands too
            args = build_gui_parser().parse_args(argv)
            return _run_gui(args)
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_OK
        with signals_unwind():  # Ctrl-C and SIGTERM unwind, and are never lost (interrupts.py)
            return COMMAND_FUNCS[args.command](args)
    except ResvizError as e:
        print(printable(f"resviz: {e}", limit=MESSAGE_LIMIT), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        forget_unhandled_interrupt()  # exit 130 as documented, not by SIGINT (interrupts.py)
        print("resviz: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
        return 130
    except Terminated:
        print("resviz: stopped by SIGTERM; nothing was written", file=sys.stderr)
        return 143
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # a bug in resviz: one line, the traceback only on request
        if os.environ.get("RESVIZ_DEBUG"):
            raise
        print(printable(
            f"resviz: internal error: {type(e).__name__}: {e}\n"
            "(this is a bug in resviz; run with RESVIZ_DEBUG=1 for the traceback)"),
            file=sys.stderr,
        )  # fmt: skip
        return 3


def open_source(args):
    """The Session for ``args.model``; a Python file's code runs in a child process first (its
    import-time hangs, exits and prints are caught there: exit 2, this process untouched)."""
    from .core.sources.python_source import split_python_source

    if split_python_source(args.model) is not None:  # user code: run it in a child process
        from .core.session.isolation import open_python

        kwargs = None
        if args.kwargs:  # (its module imports torch: otherwise that waits for the child to start)
            import_torch()
            from .core.sources.loading import parse_kwargs

            kwargs = parse_kwargs(args.kwargs)
        return open_python(args.model, input_shape=args.input, kwargs=kwargs,
                           timeout=getattr(args, "timeout", None))  # fmt: skip
    import_torch()  # a Ctrl-C during torch's start-up is held until it is done (interrupts.py)
    from .core.session.opened_model import open_model

    return open_model(args.model, input_shape=args.input, kwargs_text=args.kwargs, trust=args.trust)


def cmd_check(args) -> int:
    from .render.text import Style, format_check

    if args.fix_spec:
        from .core.files import check_output

        check_output(args.fix_spec, "fixed spec")  # a directory or missing folder: said first
    session = open_source(args)
    report = session.report
    if args.fix_spec and session.loaded.kind != "spec":
        raise ResvizError(f"--fix-spec needs a spec file (.toml/.json); {args.model} is a "
                          f"{session.loaded.kind} model. Its fixes are PyTorch code, shown by `resviz check`.")  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for note in session.notes:
            print(printable(f"note: {note}"), file=sys.stderr)
        style = Style.for_stream()
        print(printable(format_check(report, style), keep_colour=style.enabled))
    if args.fix_spec:
        _write_fixed_spec(session, args.fix_spec)
    return exit_status(report)


def _write_fixed_spec(session, out: str) -> None:
    from .core.fixes.spec_edits import fix_spec_file

    fixed = fix_spec_file(session.loaded.path, out, input_shape=session.input_shape)
    said = "; ".join(e.describe() for e in fixed.edits) or "nothing to change"
    print(printable(f"wrote {out}: {said}"), file=sys.stderr)
    if fixed.remaining:
        print(printable(f"resviz: no spec edit found for {', '.join(fixed.remaining)}; those blocks are "
                        "still broken in the written spec (see the code fixes above)"), file=sys.stderr)  # fmt: skip


def cmd_summary(args) -> int:
    from .core.analysis.layer_table import layer_rows, summary_dict
    from .render.text import Style, format_summary

    _check_depth(args)
    session = open_source(args)
    report = session.report
    if args.json:
        print(json.dumps(summary_dict(report, args.depth), indent=2))
    else:
        for note in session.notes:
            print(printable(f"note: {note}"), file=sys.stderr)
        style = Style.for_stream()
        print(printable(format_summary(report, layer_rows(report, args.depth), style), keep_colour=style.enabled))
    return exit_status(report)


def cmd_render(args) -> int:
    from .core.files import check_output
    from .render.formats import needs_qt

    _check_depth(args)
    qt = needs_qt(args.output)  # a wrong extension is refused before the model is loaded
    check_output(args.output, "picture")  # and so is a directory or a missing folder
    session = open_source(args)
    folds = {"depth": args.depth, "collapse": args.collapse, "rollup": args.rollup}
    notes: list[str] = list(session.notes)
    if qt:  # SVG, PNG and PDF are painted by the app's scene: the one place Qt is allowed
        from .gui.graph.scene_export import render_report

        path = render_report(session.report, args.output, engine=args.layout, notes=notes, **folds)
    else:
        from .render.dot import write_dot

        path = write_dot(session.report, args.output, **folds)
    for note in notes:
        print(printable(f"note: {note}"), file=sys.stderr)
    print(printable(f"wrote {path}"))
    return exit_status(session.report)


def cmd_zoo(args) -> int:
    from .core.sources import zoo
    from .render.text import Style, human, shape_str, table

    entries = zoo.entries()
    if args.json:
        print(json.dumps([
            {"name": e.name, "family": e.family, "kind": e.kind,
             "input_shape": list(e.input_shape), "params": zoo.param_count(e.name),
             "description": e.description}
            for e in entries
        ], indent=2))  # fmt: skip
        return EXIT_OK
    style = Style.for_stream()
    rows = [
        [e.name, shape_str(e.input_shape), human(zoo.param_count(e.name)), e.description]
        for e in entries
    ]
    print(table(["name", "input", "params", "description"], rows, "llrl", style))
    return EXIT_OK


def cmd_codegen(args) -> int:
    from .core.design.codegen import generate, spec_for
    from .core.files import atomic_write_text, check_output

    if args.output:
        check_output(args.output, "generated code")
    spec, label = spec_for(args.model)
    code = generate(spec, source=label)
    if not args.output:
        sys.stdout.write(code)
        return EXIT_OK
    path = atomic_write_text(args.output, code)
    print(printable(f"wrote {path}"))
    return EXIT_OK


def cmd_follow(args) -> int:
    from .follow_cli import run_follow

    return run_follow(args)


def cmd_train(args) -> int:
    from .train_cli import run_train

    return run_train(args)


COMMAND_FUNCS = {
    "check": cmd_check,
    "summary": cmd_summary,
    "render": cmd_render,
    "zoo": cmd_zoo,
    "train": cmd_train,
    "follow": cmd_follow,
    "codegen": cmd_codegen,
}


def _run_gui(args) -> int:
    from .gui.app import run_app

    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
