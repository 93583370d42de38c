"""Starting the app (``resviz --screenshot``, ``resviz.show``), background workers, theme, zoo."""

from __future__ import annotations

import sys
import threading
import time

import pytest

pytest.importorskip("PySide6")

from PySide6.QtGui import QColor, QImage, QPalette  # noqa: E402

from resviz.gui.runtime.workers import QtWorker  # noqa: E402

TIMEOUT = 30_000


# ---------------------------------------------------------------------------- workers


def test_worker_newest_request_wins(qtbot):
    worker = QtWorker("test-worker")
    got, failed = [], []
    worker.finished.connect(lambda ch, r: got.append((ch, r)))
    worker.failed.connect(lambda ch, e: failed.append(e))
    gate = threading.Event()
    worker.submit("model", lambda: gate.wait(5) and "old")  # running while the next one is asked
    worker.submit("model", lambda: "new")
    worker.submit("view", lambda: "view")  # other channels are independent
    gate.set()
    qtbot.waitUntil(lambda: not worker.busy, timeout=5000)
    assert got == [("model", "new"), ("view", "view")] or sorted(got) == [("model", "new"), ("view", "view")]
    assert not failed
    assert worker.stop() and not worker.is_running()


def test_worker_reports_errors_in_words(qtbot):
    from resviz.core.errors import ResvizError

    worker = QtWorker("test-worker")
    errors = []
    worker.failed.connect(lambda ch, e: errors.append(e))

    def user_mistake():
        raise ResvizError("no such model")

    worker.submit("a", user_mistake)
    worker.submit("b", lambda: 1 / 0)
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=5000)
    assert errors[0].user and errors[0].message == "no such model"
    assert not errors[1].user and "ZeroDivisionError" in errors[1].message and errors[1].details
    worker.stop()


def test_stop_waits_for_the_running_job(qtbot):
    worker = QtWorker("test-worker")
    started, done = threading.Event(), []

    def job():
        started.set()
        time.sleep(0.2)  # the job's own work, still going on when stop() is called
        done.append(True)

    worker.submit("x", job)
    assert started.wait(5)
    assert worker.stop()
    assert done and not worker.is_running()
    assert worker.submit("x", lambda: 1) == -1  # a stopped worker takes no more work


# ---------------------------------------------------------------------------- command line


def test_screenshot_from_the_command_line(qapp, tmp_path):
    from resviz.cli import main

    path = tmp_path / "shot.png"
    assert main(["resnet20", "--screenshot", str(path), "--size", "900x700", "--tab", "issues"]) == 0
    image = QImage(str(path))
    assert not image.isNull() and (image.width(), image.height()) == (900, 700)


def test_screenshot_of_a_model_that_does_not_load(qapp, tmp_path, capsys):
    from resviz.cli import main

    path = tmp_path / "shot.png"
    assert main(["no_such_model_xyz", "--screenshot", str(path), "--size", "800x600"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert not QImage(str(path)).isNull()  # the window, showing the error


def test_a_screenshot_past_its_time_limit_says_what_it_waited_for_and_exits_2(qapp, tmp_path, capsys,
                                                                              monkeypatch):
    import resviz.gui.app as app
    from resviz.cli import main

    model = tmp_path / "slow.py"
    model.write_text("while True:\n    pass\n")  # its import never ends: the model is never drawn
    monkeypatch.setattr(app, "SCREENSHOT_TIMEOUT_S", 0.05)
    path = tmp_path / "shot.png"
    assert main([str(model), "--screenshot", str(path), "--size", "800x600"]) == 2
    err = capsys.readouterr().err
    assert "gave up after" in err and "waiting for the model" in err
    assert not QImage(str(path)).isNull()  # the window as it was


def test_bad_arguments_exit_2_before_any_window(qapp, tmp_path, capsys):
    from resviz.cli import main

    assert main(["resnet18", "--input", "1x3xfoo", "--screenshot", str(tmp_path / "a.png")]) == 2
    assert main(["resnet18", "--size", "huge", "--screenshot", str(tmp_path / "b.png")]) == 2
    assert main(["resnet18", "--tab", "Foo", "--screenshot", str(tmp_path / "c.png")]) == 2
    assert "no tab called 'Foo'; tabs: " in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no picture taken


def test_help_shows_the_apps_own_options_and_the_commands(capsys):
    from resviz.cli import main

    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as stop:
            main([flag])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        for word in ("MODEL", "--screenshot", "--train", "--twin", "--tab", "--size", "--input"):
            assert word in out, word
        for command in ("check", "summary", "render", "zoo", "train"):
            assert f"\n  {command} " in out, command


# ---------------------------------------------------------------------------- resviz.show


def test_show_opens_a_live_module_without_blocking(qtbot):
    torch = pytest.importorskip("torch")
    import resviz

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten())
    window = resviz.show(model, (1, 3, 16, 16))  # a QApplication exists: returns at once
    qtbot.waitUntil(lambda: window.is_idle() and window.document.drawn is not None, timeout=TIMEOUT)
    assert window.session.input_shape == (1, 3, 16, 16)
    assert window.isVisible() and len(window.scene.node_items) >= 5
    assert next(model.parameters()).device.type == "cpu"  # the user's model was not moved
    window.close()
    assert not window.document.worker.is_running()


# ---------------------------------------------------------------------------- theme, zoo


def test_dark_palette_gives_dark_scene(qapp):
    from resviz.gui.window.theme import is_dark_palette, scene_theme
    from resviz.render.theme import DARK, LIGHT

    dark = QPalette()
    dark.setColor(QPalette.Window, QColor("#202124"))
    light = QPalette()
    light.setColor(QPalette.Window, QColor("#f0f0f0"))
    assert is_dark_palette(dark) and not is_dark_palette(light)
    assert scene_theme(dark) is DARK and scene_theme(light) is LIGHT


def test_zoo_picker_searches_and_opens(qtbot):
    from resviz.gui.window.main_window import QtMainWindow

    w = QtMainWindow()
    qtbot.addWidget(w)
    w.show()
    w.actions_.ask_zoo()
    qtbot.waitUntil(lambda: w.actions_._zoo_dialog is not None, timeout=TIMEOUT)
    dlg = w.actions_._zoo_dialog
    dlg.search.setText("resnet20")
    assert dlg.chosen() == "resnet20"
    dlg.accept()
    qtbot.waitUntil(lambda: w.document.drawn is not None and w.is_idle(), timeout=TIMEOUT)
    assert w.session.report.model_name == "resnet20"
    w.close()  # also stops the parameter counting still running for the dialog
    assert not w.aux.is_running()


def test_recent_files_are_remembered(qtbot, tmp_path):
    from resviz.gui.window.main_window import QtMainWindow

    spec = tmp_path / "r.toml"
    spec.write_text(
        'name = "r"\ninput = "3x32x32"\n[stem]\nkind = "cifar"\n[[stages]]\nblocks = 1\nwidth = 8\n'
    )
    w = QtMainWindow()
    qtbot.addWidget(w)
    w.open_source(str(spec))
    assert w.actions_._recent()[0] == str(spec)
    w.actions_._fill_recent()
    assert any(a.text() == str(spec) for a in w.actions_.recent_menu.actions())
    qtbot.waitUntil(lambda: w.is_idle(), timeout=TIMEOUT)
    w.close()


def test_cyclic_garbage_is_collected_on_the_ui_thread_only(qtbot):
    """Python collects in whichever thread allocates; collecting Qt wrappers from a worker thread
    crashes PySide6. While a worker runs, collections happen on the UI thread, and Python's
    automatic collector is back once no worker is left."""
    import gc

    from resviz.gui.runtime import ui_thread_gc as qt_gc

    where = []

    def on_gc(phase, info):
        if phase == "start":
            where.append(threading.get_ident())

    def make_cycles():
        for _ in range(200_000):  # far past gen-0's threshold: would collect in this thread
            a = []
            a.append(a)
        return "done"

    worker = QtWorker("test-worker")
    assert qt_gc.installed() and not gc.isenabled()
    gc.callbacks.append(on_gc)
    try:
        got = []
        worker.finished.connect(lambda ch, r: got.append(r))
        worker.submit("gc", make_cycles)
        qtbot.waitUntil(lambda: got == ["done"], timeout=10_000)
        qtbot.waitUntil(lambda: len(where) > 0, timeout=5_000)  # the UI thread's timer collected
    finally:
        gc.callbacks.remove(on_gc)
        worker.stop()
    assert set(where) == {threading.main_thread().ident}
    qtbot.waitUntil(lambda: not qt_gc.installed(), timeout=5_000)  # the worker is gone
    assert gc.isenabled()


def test_the_ui_thread_collector_gives_back_a_host_collector_that_was_off(qtbot):
    """``resviz.show`` in a program that runs with gc disabled: after the window's workers end,
    the collector is off again, as the program had it."""
    import gc

    from resviz.gui.runtime import ui_thread_gc as qt_gc

    gc.disable()
    try:
        worker = QtWorker("test-worker")
        assert qt_gc.installed() and not gc.isenabled()
        worker.stop()
        qtbot.waitUntil(lambda: not qt_gc.installed(), timeout=5_000)
        assert not gc.isenabled()
    finally:
        gc.enable()


# ---------------------------------------------------------------------------- PySide6 compatibility


def test_the_installed_pyside6_survives_many_void_calls_and_emits():
    """The pinned PySide6 keeps its references: 20,000 void calls and Signal.emit()s in a fresh
    interpreter that never imports resviz (6.12.0's abi3 wheel on Python 3.11 aborts here)."""
    import subprocess

    code = (
        "from PySide6.QtCore import QObject, QTimer, Signal\n"
        "class O(QObject):\n    s = Signal()\n"
        "o, t = O(), QTimer()\n"
        "for _ in range(20000):\n    o.s.emit(); t.setInterval(5)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_importing_the_window_and_its_tabs_changes_nothing_and_loads_no_torch():
    """The window is drawn while torch imports on a worker thread (cold start), so its modules, the
    Training tab's included, import neither torch nor pyqtgraph; and importing resviz.gui leaves
    the reference counts of None, True and False alone (no process-wide workaround on import)."""
    import subprocess

    code = (
        "import sys\n"
        "before = [sys.getrefcount(o) for o in (None, True, False)]\n"
        "import resviz.gui, resviz.gui.app, resviz.gui.window.main_window\n"
        "import resviz.gui.training.tab, resviz.gui.training.run_model\n"
        "after = [sys.getrefcount(o) for o in (None, True, False)]\n"
        "print(all(a < b + 10**6 for a, b in zip(after, before)), 'torch' in sys.modules,"
        " 'pyqtgraph' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr


def test_the_compatibility_step_acts_only_on_dropped_references():
    import ctypes

    from resviz.gui.runtime import pyside_compat as qt_compat

    obj = object()
    held = [obj] * 1000  # references enough for the fake leak below to take some
    assert not qt_compat.drops_references(obj, lambda: None)
    assert qt_compat.drops_references(obj, lambda: ctypes.pythonapi.Py_DecRef(ctypes.py_object(obj)))
    assert sys.getrefcount(obj) < 1000 + 10
    qt_compat.make_immortal(obj)
    assert sys.getrefcount(obj) > 1 << 49
    assert qt_compat.pyside_drops_references() == []  # the installed PySide6: the step does nothing
    del held



def test_the_apps_messages_reach_the_terminal_without_raw_control_characters(qapp, tmp_path, capsys):
    """A load error quotes the user's file name; the app prints it through ``printable``."""
    from resviz.cli import main

    bad = tmp_path / "bad\x1b]0;pwned\x07\x1b[2J.toml"
    bad.write_text("name = 3\n")
    shot = tmp_path / "shot\x1b[2J.png"
    assert main([str(bad), "--screenshot", str(shot), "--size", "800x600"]) == 2
    err = capsys.readouterr().err
    assert "bad" in err and "wrote" in err
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b" in err  # shown, escaped


def test_a_pickled_model_in_a_screenshot_points_at_the_apps_trust_flag(qapp, tmp_path, capsys):
    from resviz.cli import main

    torch = pytest.importorskip("torch")
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), path)
    assert main([str(path), "--screenshot", str(tmp_path / "a.png"), "--size", "800x600"]) == 2
    err = capsys.readouterr().err
    assert "unpickling" in err and "Pass --trust" in err
    assert main([str(path), "--trust", "--input", "1x3x8x8", "--screenshot", str(tmp_path / "b.png")]) == 0
