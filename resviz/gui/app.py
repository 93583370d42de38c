"""Starting the app: ``resviz [MODEL]`` (:func:`run_app`) and ``resviz.show(model)`` (:func:`show`).

The window is shown before PyTorch is imported: torch and the analysis load on the worker thread
while the window says what it is doing. ``--screenshot`` renders offscreen, waits until the model is
drawn and nothing is left to do, saves the window as PNG and exits.
"""

from __future__ import annotations

import os
import sys
import time

from ..core.printable import MESSAGE_LIMIT, printable


def _process_age() -> float:
    """Seconds since this process started (Linux), else since this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


_T_START = time.perf_counter() - _process_age()  # timings count from the process start
_open_windows: list = []  # windows opened by show(): kept alive while they are open

# A screenshot that runs past its time limit exits 2, as a Python file past --timeout does: the
# model could not be shown as asked (3 is kept for bugs in resviz).
EXIT_OK, EXIT_BAD_INPUT, EXIT_TIMEOUT = 0, 2, 2
SCREENSHOT_TIMEOUT_S = float(os.environ.get("RESVIZ_SCREENSHOT_TIMEOUT", "300"))


def _application(offscreen: bool = False):
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from .runtime.pyside_compat import keep_dropped_objects_alive

    found = keep_dropped_objects_alive()  # before the thousands of calls the window makes
    if found and not _warned_compat:
        _warn_compat(found)
    app = QApplication.instance()
    created = app is None
    if created:
        app = QApplication([sys.argv[0] if sys.argv else "resviz"])
        app.setApplicationName("resviz")
        app.setOrganizationName("resviz")
    return app, created


_warned_compat = False


def _warn_compat(found: list[str]) -> None:
    global _warned_compat
    _warned_compat = True
    import PySide6

    print(f"resviz: PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} drops references "
          f"to {' and '.join(found)} on every call; resviz keeps them alive for this process. "
          "Install the version resviz pins (pip install -e .) to be rid of this.", file=sys.stderr)  # fmt: skip


def _size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        from ..core.errors import ResvizError

        raise ResvizError(f"--size must look like 1600x1000, got {text!r}") from None
    if not (200 <= w <= 10000 and 200 <= h <= 10000):
        from ..core.errors import ResvizError

        raise ResvizError(f"--size {text} is out of range (200 to 10000 pixels each way)")
    return w, h


def _install_tabs(window, args=None) -> None:
    """The tabs beside the graph: Training (which takes ``--train``) and Builder."""
    from . import builder
    from .training import tab as qt_training

    qt_training.install(window, args)
    builder.install(window, args)


def _check_display(screenshot: bool) -> None:
    if screenshot or not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        from ..core.errors import ResvizError

        raise ResvizError(
            "no display to open a window on (DISPLAY is not set). Use `resviz MODEL --screenshot "
            "out.png` for a picture of the app, or `resviz render MODEL -o graph.svg` / `resviz check MODEL`."
        )


def set_thread_policy(environ=None) -> int | None:
    """The app runs in its own process, so it sets torch's intra-op thread count once, here at
    start, for every thread it will have (analysis, training): ``RESVIZ_TRAIN_THREADS=N`` chooses
    N (to leave cores to other work); without it torch's default stands (a thread per core).
    Nothing later changes it: ``torch.set_num_threads`` acts on the whole process, whichever
    thread calls it. ``resviz.show`` never calls this: in a host's process, torch's settings are
    the host's. Returns the count set, or None."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("RESVIZ_TRAIN_THREADS", "").strip()
    if not chosen:
        return None
    most = 4 * (os.cpu_count() or 1)  # past that, threads only wait on each other
    if not chosen.isdigit() or not 0 < int(chosen) <= most:
        print(f"resviz: RESVIZ_TRAIN_THREADS={chosen[:20]!r} is not a thread count from 1 to {most} "
              "(this machine's cores, up to 4 each); torch's default stands", file=sys.stderr)  # fmt: skip
        return None
    threads = int(chosen)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)  # on the main thread, before any worker thread starts
    else:  # torch loads later, on the worker thread: its OpenMP and MKL read these then
        environ["OMP_NUM_THREADS"] = environ["MKL_NUM_THREADS"] = str(threads)
    return threads


def run_app(args) -> int:
    """``resviz [MODEL] [--input] [--kwargs] [--trust] [--screenshot PNG] [--size WxH] [--tab]``."""
    set_thread_policy()  # the app's own process: before anything imports torch
    screenshot = getattr(args, "screenshot", None)
    size = _size(getattr(args, "size", None))
    if getattr(args, "input", None):
        from ..core.shapes import parse_shape

        parse_shape(args.input)  # a bad --input is an argument error (exit 2), before any window
    _check_display(bool(screenshot))
    app, _created = _application(offscreen=bool(screenshot))
    from .window.main_window import QtMainWindow

    window = QtMainWindow()
    window.t0 = _T_START
    _install_tabs(window, args)
    from .runtime.heap import settle_after_loads

    settle_after_loads(window)  # this process is the app's: full collections stay short (qt_heap)
    if getattr(args, "tab", None) and not window.select_tab(args.tab):  # a bad argument: exit 2, no window
        tabs = ", ".join(window.tabs.tabText(i) for i in range(window.tabs.count()))
        print(printable(f"resviz: no tab called {args.tab!r}; tabs: {tabs}"), file=sys.stderr)
        window.shutdown()
        window.deleteLater()
        return EXIT_BAD_INPUT
    if size:
        window.resize(*size)
    if _is_run_dir(getattr(args, "model", None)) and not getattr(args, "tab", None):
        window.select_tab("Training")  # a recorded run: its steps are what there is to see
    window.show()
    window.open_source(getattr(args, "model", None) or "resnet18", input_shape=getattr(args, "input", None),
                       kwargs_text=getattr(args, "kwargs", None), trust=bool(getattr(args, "trust", False)))  # fmt: skip
    result = {"code": EXIT_OK}
    if screenshot:
        _arm_screenshot(window, screenshot, result, getattr(args, "tab", None))
    code = app.exec()
    if os.environ.get("RESVIZ_TIMING"):
        t = window.timings
        print(f"resviz: window shown after {t.get('shown', float('nan')):.2f} s, model drawn after "
              f"{t.get('drawn', float('nan')):.2f} s, picture written after "
              f"{t.get('written', float('nan')):.2f} s", file=sys.stderr)  # fmt: skip
    window.shutdown()
    if window.isVisible():
        window.close()
    window.deleteLater()
    return result["code"] if screenshot else code


def _is_run_dir(source) -> bool:
    from ..core.training.rundir import is_run_dir

    return bool(source) and is_run_dir(os.path.expanduser(str(source)))


def _arm_screenshot(window, path: str, result: dict, tab: str | None) -> None:
    """Once the window is idle (model drawn, no background work), save it and quit."""
    from PySide6.QtCore import QTimer

    shot = _Screenshot(window, path, result, tab)
    window.document.idle.connect(lambda: QTimer.singleShot(0, shot.check))
    poll = QTimer(window)
    poll.setInterval(200)
    poll.timeout.connect(shot.check)
    poll.start()
    QTimer.singleShot(int(SCREENSHOT_TIMEOUT_S * 1000), shot.timeout)


def screenshot_outcome(document) -> tuple[int, str | None] | None:
    """Whether an idle window is ready for its picture: None while the model is neither drawn nor
    failed, else the exit code and the message to print (for a model that could not be loaded)."""
    if document.drawn is None and document.error is None:
        return None
    if document.error is None:
        return EXIT_OK, None
    message = None
    if document.session is None:  # nothing loaded: say why, in the app's own words
        message = document.error
        if document.trust_needed:  # and the flag that trusts
            message += " Pass --trust to open it anyway (only for a file you trust)."
    return EXIT_BAD_INPUT, message


class _Screenshot:
    """``--screenshot``: saves the window once, when it is idle, or when the time limit is up."""

    def __init__(self, window, path: str, result: dict, tab: str | None):
        self.window, self.path, self.result, self.tab = window, path, result, tab
        self.done = False

    def check(self) -> None:
        if self.done or not self.window.is_idle():
            return
        outcome = screenshot_outcome(self.window.document)
        if outcome is None:
            return
        code, message = outcome
        if message is not None:
            print(printable(f"resviz: {message}", limit=MESSAGE_LIMIT), file=sys.stderr)
        self.finish(code)

    def timeout(self) -> None:
        if self.done:
            return
        print(printable(f"resviz: --screenshot gave up after {SCREENSHOT_TIMEOUT_S:.0f} s "
                        f"(RESVIZ_SCREENSHOT_TIMEOUT sets the limit) waiting for {_waiting_for(self.window)}; "
                        "saving the window as it is"), file=sys.stderr)  # fmt: skip
        self.finish(EXIT_TIMEOUT)

    def finish(self, code: int) -> None:
        from PySide6.QtWidgets import QApplication

        if self.done:
            return
        self.done = True
        if self.tab:
            self.window.select_tab(self.tab)
        QApplication.processEvents()  # layouts and posted updates first: the overview's size
        self.window.view.overview.render_now()
        _grab(self.window, self.path, self.result, code)


def _waiting_for(window) -> str:
    """What a screenshot that timed out was waiting for: the model (loading, analysing, drawing)
    or the training (--train N)."""
    if window.document.is_busy() or window.document.drawn is None:
        return "the model (loading, analysing and drawing it)"
    tab = getattr(window, "training_tab", None)
    if tab is not None and tab.busy():
        return tab.waiting_for()
    return "the window to finish its work"


def _grab(window, path: str, result: dict, code: int) -> None:
    from PySide6.QtWidgets import QApplication

    from .graph.scene_export import atomic_write

    QApplication.processEvents()
    pixmap = window.grab()

    def write(tmp: str) -> None:
        if not pixmap.save(tmp, "PNG"):
            raise OSError(f"could not write {path}")

    try:
        atomic_write(path, write)
        window.timings["written"] = time.perf_counter() - window.t0
        print(printable(f"wrote {path}"), file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - report, then exit with an error status
        print(printable(f"resviz: could not save the screenshot: {exc}", limit=MESSAGE_LIMIT), file=sys.stderr)
        code = EXIT_BAD_INPUT
    result["code"] = code
    window.shutdown()
    QApplication.instance().exit(code)


def show(model, input_shape=None, *, name: str | None = None, block: bool | None = None):
    """Open the resviz window on a live ``nn.Module``; returns the window.

    With a running Qt application (Jupyter's ``%gui qt``, napari, another Qt app) the window is
    shown and this returns at once. In a plain script it runs the event loop until the window is
    closed (``block=False`` returns at once; keep a reference and run the loop yourself).
    """
    app, created = _application()
    if created and block is None and _in_ipython():
        block = not _ipython_qt_loop()
    from .window.main_window import QtMainWindow

    window = QtMainWindow()
    window.setAttribute(_delete_on_close(), True)
    _install_tabs(window)  # as in the app
    window.open_module(model, input_shape, name=name)
    window.show()
    window.raise_()
    _open_windows.append(window)
    window.destroyed.connect(lambda *_: _forget(window))
    if block if block is not None else created:
        app.exec()
    return window


def _forget(window) -> None:
    try:
        _open_windows.remove(window)
    except ValueError:
        pass


def _delete_on_close():
    from PySide6.QtCore import Qt

    return Qt.WA_DeleteOnClose


def _in_ipython() -> bool:
    return (
        "IPython" in sys.modules
        and getattr(sys.modules["IPython"], "get_ipython", lambda: None)() is not None
    )


def _ipython_qt_loop() -> bool:
    """Ask IPython to run Qt's event loop alongside the prompt (``%gui qt``); True if it does."""
    try:
        ip = sys.modules["IPython"].get_ipython()
        ip.enable_gui("qt")
        return True
    except Exception as exc:  # noqa: BLE001 - IPython raises what its GUI hook raises (no Qt hook, a bad backend): said, then the window runs its own loop
        print(f"resviz: IPython could not run Qt's event loop ({type(exc).__name__}: {exc}); "
              "the window runs its own until it is closed", file=sys.stderr)  # fmt: skip
        return False
