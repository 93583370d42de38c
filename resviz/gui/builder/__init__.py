"""The Builder tab, plugged into the window by :func:`install` (``resviz.gui.app`` calls it).

Importing this package is cheap (no torch): the tab's contents, a
:class:`~resviz.gui.builder.panel.QtBuilderPanel`, are built the first time the tab is
shown or a fix is applied, so the app opens as fast as before. Closing the window with unsaved
builder edits asks first (``QtMainWindow.close_checks``).
"""

from __future__ import annotations

from ..window.lazy_tab import LazyTab

TAB_TITLE = "Builder"


class BuilderTab(LazyTab):
    """A light shell that builds the builder panel on first use."""

    def make_panel(self):
        from .panel import QtBuilderPanel

        return QtBuilderPanel(self.window_, self)

    def may_close(self) -> bool:
        """False when the user chose to keep the window open (unsaved edits, Cancel)."""
        return self._panel is None or self._panel.maybe_discard("closing")

    def busy(self) -> bool:
        return self._panel is not None and self._panel.pending()


def install(window, args=None) -> BuilderTab:
    """Add the Builder tab to ``window`` and hook it into closing and the issues' Apply fix."""
    tab = BuilderTab(window)
    window.add_tab(tab, TAB_TITLE)
    window.builder_tab = tab
    checks = getattr(window, "close_checks", None)
    if checks is not None:
        checks.append(tab.may_close)
    busy = getattr(window, "busy_checks", None)
    if busy is not None:
        busy.append(tab.busy)
    issues = getattr(window, "issues", None)
    if issues is not None and hasattr(issues, "fixRequested"):
        issues.fix_available = lambda m: fix_tooltip(window, m)
        issues.fixRequested.connect(lambda m: apply_fix(window, tab, m))
    return tab


def fix_tooltip(window, mismatch) -> str | None:
    """What "Apply fix" would do for ``mismatch`` in the model on screen; None: no button."""
    session = window.session
    if session is None:
        return None
    if mismatch.spec_edits and getattr(session.loaded, "spec", None) is not None:
        return "Make this spec edit in the Builder tab (undo there with Ctrl+Z); the net is analysed again"
    if getattr(session.loaded, "kind", "") in ("python", "live") and mismatch.fix_edits:
        from ...core.fixes.python_patch import parse_fix

        if parse_fix("\n".join(mismatch.fix_edits), mismatch.block) is not None:
            return ("Fix a copy of the model in memory and analyse it again (your model and file are not "
                    "changed); the code to paste into your file is shown above the graph")  # fmt: skip
    return None


def apply_fix(window, tab: BuilderTab, mismatch) -> None:
    """Apply the fix of ``mismatch`` to the model on screen."""
    from ...core.fixes.spec_edits import edits_of

    session = window.session
    spec = getattr(session.loaded, "spec", None) if session is not None else None
    if spec is not None and mismatch.spec_edits:
        tab.panel.apply_spec_fix(spec, edits_of(mismatch), f"fix {mismatch.block}")
        window.statusBar().showMessage(
            f"Fixed {mismatch.block} in the Builder: {mismatch.fix.removeprefix('in the spec: ')}", 8000
        )
        return
    if session is not None:
        apply_patch(window, session, mismatch)


def apply_patch(window, session, mismatch) -> None:
    """A Python or live model: open a patched copy (verified) and show the code to paste."""
    from ...core.errors import ResvizError
    from ...core.fixes.python_patch import patch_for

    loaded = session.loaded
    try:
        # a fresh copy with real weights (a Python file's model is analysed in a child process)
        model = loaded.module if loaded.kind == "live" else loaded.rebuild("cpu")
        result = patch_for(model, session.report, mismatch)
    except ResvizError as exc:
        window.banner.show_message("error", f"Could not apply the fix to {mismatch.block}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - the user's code (rebuild, copy) may raise anything: the banner says which, the graph stays
        window.banner.show_message(
            "error", f"Could not rebuild the model to patch it: {type(exc).__name__}: {exc}"
        )
        return
    name = loaded.name if loaded.name.endswith("(patched)") else f"{loaded.name} (patched)"
    window.last_patch = result
    message = (f"Showing a patched copy of the model with {mismatch.block} fixed; your model and file are "
               f"unchanged, and the Training tab trains this copy. To fix your code:\n{result.code}")  # fmt: skip

    def announce(new_session) -> None:  # after the window has shown the patched copy's notes
        if getattr(new_session.loaded, "module", None) is result.model:
            window.sessionChanged.disconnect(announce)
            window.banner.show_message("note", message)

    window.sessionChanged.connect(announce)
    window.open_module(result.model, session.input_shape, name=name)
