"""The open model as the window sees it: source, session, fold state, and the drawn view.

:class:`QtDocument` is the window's model. It turns requests (open this, reload, use this input
shape, fold that block) into jobs for a :class:`~resviz.gui.runtime.workers.QtWorker`, and announces
results with signals; widgets subscribe and call setters. Loading, analysis, view building and
layout all run on the worker thread, so the UI never waits for torch. The engine calls are the
same as the command line's (:func:`resviz.core.session.opened_model.open_model`), so a model means the same
thing everywhere.

A Python file's code runs in a child process (:mod:`resviz.core.session.isolation`), never in the app's:
it may hang (:meth:`QtDocument.cancel_load` kills it; a newer request does too), exit or crash,
and the app keeps everything it had. Changing the input shape of such a model runs the file
again in a new child, since the app holds no live module of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QFont, QFontMetricsF

from ...core.errors import ResvizError
from ...core.shapes import parse_shape
from ...render.view import BlockGraph, ViewState, build_view, default_collapsed
from ..runtime.workers import JobError, QtWorker
from .file_watcher import QtFileWatcher

Measure = Callable[[str], float]


def text_measure(font: QFont) -> Measure:
    """A width function usable off the UI thread: glyph advances measured once, here."""
    fm = QFontMetricsF(font)
    chars = [chr(c) for c in range(32, 127)] + list("×→…·≠⊕✓—–")
    widths = {c: fm.horizontalAdvance(c) for c in chars}
    fallback = fm.averageCharWidth() * 1.2

    def measure(text: str) -> float:
        return sum(widths.get(c, fallback) for c in text)

    return measure


@dataclass
class Source:
    """What to open: a MODEL argument, or a live module from Python."""

    source: str | None = None
    kwargs_text: str | None = None
    trust: bool = False
    module: object = None
    name: str | None = None
    spec: object = None  # a NetSpec held in memory (the builder)

    @property
    def title(self) -> str:
        return self.name or self.source or type(self.module).__name__

    def file(self) -> str | None:
        """The file behind the source, to watch and reload (None for zoo names and live models)."""
        if not self.source:
            return None
        path = self.source
        head, sep, tail = path.rpartition(":")
        if sep and head.endswith(".py") and tail.isidentifier():
            path = head
        path = os.path.expanduser(path)
        return path if os.path.isfile(path) else None


@dataclass
class Drawn:
    """A finished job: the session (for model jobs), the fold state, and what to draw."""

    session: object
    state: ViewState
    graph: BlockGraph
    layout: object
    hint: dict = field(default_factory=dict)  # how the view should move: fit / keep / anchor


def open_job(src: Source, shape, state: ViewState, measures, cancel=None, on_stage=None, spare=None) -> Drawn:
    """Load (or rebuild), analyse and lay out ``src``; a Python file in a child process, which
    ``cancel`` (a :class:`~resviz.core.session.isolation.CancelToken`) kills; ``spare`` is the
    document's :class:`~resviz.core.session.isolation.SpareChild`."""
    # imports per kind: a recorded run is drawn without importing torch (or the tracers)
    from ...core.sources.python_source import split_python_source
    from ...core.training.rundir import is_run_dir

    if src.spec is None and src.module is None and is_run_dir(src.source):  # no model code runs
        from ..training.follow import open_run_session

        return view_job(open_run_session(src.source), state, measures)
    from ...core.session.opened_model import analyze_session, open_model

    if src.spec is not None:
        from ...core.sources.loading import from_spec

        session = analyze_session(from_spec(src.spec), shape)
    elif src.module is not None:
        from ...core.sources.loading import from_module

        session = analyze_session(from_module(src.module, name=src.name), shape)
    elif split_python_source(src.source) is not None:
        from ...core.session.isolation import open_python
        from ...core.sources.loading import parse_kwargs

        session = open_python(src.source, input_shape=shape, kwargs=parse_kwargs(src.kwargs_text),
                              cancel=cancel, on_stage=on_stage, spare=spare)  # fmt: skip
    else:
        session = open_model(src.source, input_shape=shape, kwargs_text=src.kwargs_text, trust=src.trust)
    return view_job(session, state, measures)


def reanalyse_job(loaded, shape, state: ViewState, measures) -> Drawn:
    from ...core.session.opened_model import analyze_session

    return view_job(analyze_session(loaded, shape), state, measures)


def view_job(session, state: ViewState, measures) -> Drawn:
    from ...render.layout import auto_layout

    graph = build_view(session.report, state)
    layout = auto_layout(graph, measures[0], measures[1])
    return Drawn(session, state, graph, layout)


class QtDocument(QObject):
    sourceChanged = Signal(object)  # Source: a new model is being opened
    sessionChanged = Signal(object)  # Session: a new report (new model, reload, input shape)
    graphChanged = Signal(object)  # Drawn: draw this (graph, layout, view hint)
    loadFailed = Signal(str, bool)  # message, whether the last good graph stays (greyed)
    busyChanged = Signal(bool, str)  # busy, what it is doing
    idle = Signal()  # nothing queued or running, the latest result is applied
    cancellableChanged = Signal(bool)  # whether a Python file's code is running (cancel_load stops it)
    _stage = Signal(object, str)  # from the worker thread: (token, what the child is doing)

    def __init__(self, measures: tuple[Measure, Measure], parent: QObject | None = None):
        super().__init__(parent)
        self.measures = measures
        self.src: Source | None = None
        self.session = None  # the last good Session
        self.drawn: Drawn | None = None
        self.state = ViewState()
        self.shape_text: str | None = None  # the input shape the user asked for, if any
        self.error: str | None = None  # the last load error, while it stands
        self.trust_needed: str | None = None  # the file that last failed only for want of trust
        self.trusted_paths: set[str] = set()  # files the user chose to trust, this session only
        self.worker = QtWorker("resviz-model", self)
        from ...core.session.isolation import SpareChild

        self.spare = SpareChild()  # a child started ahead for the next Python file; closed in stop()
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.busyChanged.connect(self._on_busy)
        self.watcher = QtFileWatcher(self)
        self.watcher.changed.connect(lambda _path: self.reload())
        self._watch = False
        self._doing = ""
        self._reading = False  # a model job that reads the source is queued or running
        self._read_hint: dict = {"mode": "fit", "fresh": True}
        self._token = None  # the CancelToken of the newest model job (a Python file's child)
        self._other_tokens: set = set()  # see user_code_started
        self._stage.connect(self._on_stage)

    # -------------------------------------------------------------- requests

    def open_source(self, source: str, *, input_shape: str | None = None, kwargs_text: str | None = None,
                    trust: bool = False) -> None:  # fmt: skip
        src = Source(source=str(source), kwargs_text=kwargs_text, trust=trust)
        src.trust = trust or _trust_key(src) in self.trusted_paths
        self._open(src, input_shape)

    def trust_and_reload(self) -> bool:
        """Open the file that needed trust again, unpickling it (which runs any code it holds):
        only after the user confirmed. The file is trusted for the rest of this session, and never
        remembered beyond it. False when the last failure was not for want of trust."""
        if self.trust_needed is None or self.src is None or _trust_key(self.src) != self.trust_needed:
            return False
        self.trusted_paths.add(self.trust_needed)
        self.trust_needed = None
        self.src = replace(self.src, trust=True)
        self._submit_model(open_job, self.src, {"mode": "fit"}, f"Opening {self.src.title} (trusted)…", fresh=True)
        return True

    def open_module(self, module, input_shape=None, name: str | None = None) -> None:
        if input_shape is not None and not isinstance(input_shape, str):
            input_shape = "x".join(str(int(d)) for d in input_shape)
        self._open(Source(module=module, name=name or type(module).__name__), input_shape)

    def open_spec(self, spec, *, keep_view: bool = False) -> None:
        """Draw a spec held in memory (the builder); ``keep_view`` keeps folds and scroll (an
        edit of the spec on screen rather than a new model)."""
        src = Source(spec=spec, name=spec.name)
        shape = "x".join(str(d) for d in spec.input_shape)
        if not (keep_view and self.src is not None and self.src.spec is not None):
            self._open(src, shape)
            return
        self.src, self.shape_text = src, shape
        self._submit_model(open_job, src, {"mode": "keep"}, f"Analysing {src.title}…")

    def _open(self, src: Source, input_shape: str | None) -> None:
        if input_shape is not None:
            parse_shape(input_shape)  # a bad --input is the caller's error, raised now
        self.src = src
        self.shape_text = input_shape
        self.state = ViewState()
        self.sourceChanged.emit(src)
        self._update_watch()
        self._submit_model(open_job, src, {"mode": "fit"}, f"Opening {src.title}…", fresh=True)

    def reload(self) -> None:
        """Read the file again (or rebuild the zoo/live model) with the same input and folds."""
        if self.src is None:
            return
        hint = {"mode": "keep"} if self.session is not None else {"mode": "fit", "fresh": True}
        self._submit_model(open_job, self.src, hint, f"Reloading {self.src.title}…")

    def set_input_shape(self, text: str) -> str | None:
        """Re-analyse at ``text``; returns an error message (and changes nothing) when invalid."""
        try:
            parse_shape(text)
        except ResvizError as exc:
            return str(exc)
        if self.session is not None and getattr(self.session.loaded, "kind", "") == "run":
            return "a recorded run is drawn at the input shape it was trained at"
        self.shape_text = text.strip()
        if self.session is None or self._reading:
            if self.src is not None:  # a file is being read: read it again, at the new shape
                self._submit_model(open_job, self.src, self._read_hint, self._doing)
            return None
        if getattr(self.session.loaded, "isolated", False):  # no live module here: run the file again
            self._submit_model(open_job, self.src, {"mode": "keep"}, f"Analysing at {self.shape_text}…")
            return None
        loaded, state, measures, shape = (
            self.session.loaded,
            self.state.copy(),
            self.measures,
            self.shape_text,
        )
        self.worker.cancel("view")
        self._doing = f"Analysing at {shape}…"
        self.busyChanged.emit(True, self._doing)
        self.worker.submit(
            "model", lambda: _tag(reanalyse_job(loaded, shape, state, measures), {"mode": "keep"})
        )
        return None

    def set_state(self, state: ViewState, hint: dict | None = None) -> None:
        """Fold/unfold: rebuild the view (off the UI thread) for the current report."""
        if self.session is None:
            return
        session, measures = self.session, self.measures
        state = state.copy()
        self._doing = "Drawing…"
        self.worker.submit("view", lambda: _tag(view_job(session, state, measures), hint or {"mode": "keep"}))

    def fold(self, name: str, hint: dict | None = None) -> None:
        """Draw module ``name`` (a block or stage) as one node."""
        state = self.current_state()
        state.collapsed.add(name)
        self.set_state(state, hint)

    def unfold(self, name: str, hint: dict | None = None) -> None:
        state = self.current_state()
        state.collapsed.discard(name)
        self.set_state(state, hint)

    def unroll(self, name: str, hint: dict | None = None) -> None:
        """Show the blocks of the roll-up holding block ``name`` one by one again."""
        state = self.current_state()
        state.rolled = {s for s in state.rolled if not name.startswith(s + ".")}
        self.set_state(state, hint)

    def reveal(self, name: str) -> None:
        """Unfold and unroll whatever holds module ``name`` (not the module itself)."""
        state = self.current_state()
        parts = name.split(".")
        for i in range(1, len(parts)):
            state.collapsed.discard(".".join(parts[:i]))
        state.rolled = {s for s in state.rolled if not name.startswith(s + ".")}
        self.set_state(state, {"mode": "keep"})

    def expand_all(self) -> None:
        state = self.current_state()
        state.collapsed, state.rolled = set(), set()
        self.set_state(state, {"mode": "keep"})

    def collapse_all(self) -> None:
        if self.session is None:
            return
        state = self.current_state()
        state.collapsed = {b.name for b in self.session.report.blocks if b.name != "(model)"}
        self.set_state(state, {"mode": "fit"})

    def set_rolled(self, on: bool) -> None:
        """Roll runs of identical blocks into one node per run (all stages), or unroll them."""
        if self.session is None:
            return
        report = self.session.report
        state = self.current_state()
        state.rolled = {s.name for s in report.stages} if on else set()
        if on:  # roll-ups are made of folded blocks
            state.collapsed |= {b.name for b in report.blocks if not b.broken and b.name != "(model)"}
        self.set_state(state, {"mode": "fit" if on else "keep"})

    def current_state(self) -> ViewState:
        """The fold state with the default spelled out (the set of collapsed blocks)."""
        s = self.state.copy()
        if s.collapsed is None and self.session is not None:
            s.collapsed = default_collapsed(self.session.report)
        elif s.collapsed is None:
            s.collapsed = set()
        s.collapsed -= s.expanded
        s.expanded = set()
        return s

    def set_watching(self, on: bool) -> None:
        self._watch = bool(on)
        self._update_watch()

    @property
    def watching(self) -> bool:
        return self._watch

    def is_busy(self) -> bool:
        return self.worker.busy

    def can_cancel(self) -> bool:
        """Whether a Python file's code is running now, which :meth:`cancel_load` can stop."""
        model = self._token is not None and not self._token.cancelled and self.worker.busy
        return model or any(not t.cancelled for t in self._other_tokens)

    def cancel_load(self) -> bool:
        """Stop the Python file's code running for the newest load (its child process is killed);
        the load then fails with "cancelled" and the last good graph stays. False when there is
        nothing to cancel (zoo models and specs run no user code and finish on their own)."""
        if not self.can_cancel():
            return False
        for token in [self._token, *self._other_tokens]:
            if token is not None:
                token.cancel()
        self._other_tokens.clear()
        self.cancellableChanged.emit(False)
        return True

    def user_code_started(self, token) -> None:
        """Other work that runs a Python file in a child (listing its models for File → Open):
        Cancel stops it too, until :meth:`user_code_ended`."""
        self._other_tokens.add(token)
        self.cancellableChanged.emit(True)

    def user_code_ended(self, token) -> None:
        self._other_tokens.discard(token)
        self.cancellableChanged.emit(self.can_cancel())

    def stop(self) -> None:
        self.watcher.unwatch()
        for token in [self._token, *self._other_tokens]:
            if token is not None:
                token.cancel()  # never wait for the user's endless loop to close the window
        self.worker.stop()
        self.spare.close()

    # -------------------------------------------------------------- internals

    def _submit_model(self, job, src: Source, hint: dict, doing: str, fresh: bool = False) -> None:
        shape, state, measures = self.shape_text, self.state.copy(), self.measures
        if fresh:
            hint = dict(hint, fresh=True)
        self._reading = True  # until this (or a newer) model job ends
        self._read_hint = hint
        self.worker.cancel("view")
        self._doing = doing
        self.busyChanged.emit(True, doing)
        from ...core.session.isolation import CancelToken
        from ...core.sources.python_source import split_python_source

        if self._token is not None:
            self._token.cancel()  # its result is stale now; do not let a hang hold up this one
        runs_user_code = src.module is None and split_python_source(src.source or "") is not None
        token = self._token = CancelToken() if runs_user_code else None
        self.cancellableChanged.emit(runs_user_code)

        def on_stage(text: str) -> None:  # on the worker thread: queued to the UI thread
            self._stage.emit(token, text)

        self.worker.submit(
            "model", lambda: _tag(job(src, shape, state, measures, cancel=token, on_stage=on_stage, spare=self.spare), hint)
        )

    def _update_watch(self) -> None:
        path = self.src.file() if (self._watch and self.src is not None) else None
        if path != self.watcher.path:
            self.watcher.watch(path)

    def _end_user_code(self) -> None:
        if self._token is not None:
            self._token = None
            self.cancellableChanged.emit(False)

    def _on_finished(self, channel: str, drawn: Drawn) -> None:
        if channel == "model":
            self._end_user_code()
            self._reading = False
            self.worker.cancel("view")  # views of the old report are stale now
            self.session = drawn.session
            self.error = None
            self.trust_needed = None
            self.sessionChanged.emit(drawn.session)
        elif drawn.session is not self.session:
            return
        self.state = drawn.state
        self.drawn = drawn
        self.graphChanged.emit(drawn)

    def _on_failed(self, channel: str, error: JobError) -> None:
        message = error.message if error.user else f"internal error: {error.message}"
        if not error.user and os.environ.get("RESVIZ_DEBUG"):
            print(error.details)
        if channel == "model":
            self._end_user_code()
            self._reading = False
            self.error = message
            self.trust_needed = _trust_key(self.src) if error.needs_trust and self.src is not None else None
            self.loadFailed.emit(message, self.session is not None)
        else:
            self.loadFailed.emit(f"could not draw the graph: {message}", True)

    def _on_stage(self, token, text: str) -> None:
        if token is self._token and not token.cancelled and self.worker.busy:
            path = self.src.file() if self.src is not None else None
            if path:  # 'importing /long/path/model.py' → 'importing model.py'
                text = text.replace(path, os.path.basename(path))
            self.busyChanged.emit(True, f"{self._doing.rstrip('…')}: {text}…")

    def _on_busy(self, busy: bool) -> None:
        self.busyChanged.emit(busy, self._doing if busy else "")
        if not busy:
            self.cancellableChanged.emit(False)
            self.idle.emit()


def _trust_key(src: Source) -> str | None:
    """The file a source's trust is for: its real path (a link and its target are one file)."""
    path = src.file()
    return os.path.realpath(path) if path else None


def _tag(drawn: Drawn, hint: dict) -> Drawn:
    drawn.hint = hint
    return drawn
