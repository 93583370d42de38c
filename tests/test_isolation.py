"""A Python file's code cannot hang, end or pollute resviz: it runs in a child process.

Tests that start a child (Python + torch, ~2 s each) are few and share nothing they need not; the
words of each failure are tested in this process, through the same code the child runs.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest

from resviz.cli import main
from resviz.core.errors import LoadError
from resviz.core.session import isolated_child
from resviz.core.session.isolation import PlainModule, loads_records
from resviz.core.sources import pyfile_errors
from resviz.core.sources.loading import load_model

NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        {init}

    def forward(self, x):
        {forward}
        return x.repeat(1, 4 // 3 + 1, 1, 1)[:, :4] + self.conv(x)
"""


def write(tmp_path, name="model.py", init="pass", forward="pass", top="") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(top) + NET.format(init=init, forward=forward))
    return str(path)


@pytest.fixture
def hang_guard():
    """A regression that runs the user's endless loop in this process fails here, not hangs."""

    def give_up(signum, frame):
        pytest.fail("resviz hung: the user's code ran in resviz's own process")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def check(capfd, *argv):
    code = main(["check", *argv])
    out, err = capfd.readouterr()
    return code, out, err


def in_child_open(path: str, monkeypatch):
    """What the child does for `resviz check path`, run here: the words of each failure."""
    monkeypatch.setattr(pyfile_errors, "IN_CHILD", True)
    return isolated_child._open({"source": path, "input_shape": "1x3x8x8", "kwargs": {}})


# ---------------------------------------------------------------------------- in a child


def test_os_exit_at_import_is_a_load_failure_naming_the_file(capfd, tmp_path):
    path = write(tmp_path, top="import os\nos._exit(7)\n")
    code, out, err = check(capfd, path)
    assert code == 2 and out == ""
    assert "model.py ended the process with status 7 while resviz was importing" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_os_exit_0_in_forward_is_not_clean(capfd, tmp_path):
    path = write(tmp_path, top="import os\n", forward="os._exit(0)")
    code, _, err = check(capfd, path, "--input", "3x8x8")
    assert code == 2 and "status 0 while resviz was tracing" in err and "model.py:Net" in err


@pytest.mark.parametrize("where", [
    "forward",
    pytest.param("import", marks=pytest.mark.slow),
    pytest.param("init", marks=pytest.mark.slow),
])  # fmt: skip
def test_endless_loop_stops_at_the_timeout(capfd, tmp_path, where, hang_guard):
    loop = "while True: pass"
    path = write(tmp_path, top=loop + "\n" if where == "import" else "",
                 init=loop if where == "init" else "pass", forward=loop if where == "forward" else "pass")
    code, out, err = check(capfd, path, "--input", "3x8x8", "--timeout", "0.5")
    assert code == 2 and out == ""
    doing = {"import": "importing", "init": "building", "forward": "tracing"}[where]
    assert "did not finish within 0.5 s" in err and f"resviz was {doing}" in err
    assert not [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == path]  # never here


def test_json_stays_json_whatever_the_code_prints_and_a_thread_it_starts_ends_with_resviz(tmp_path):
    top = """
    import threading
    print("imported, says the model")
    threading.Thread(target=threading.Event().wait).start()  # never ends, not a daemon
    """
    path = write(tmp_path, top=top, forward='print("forward was here")')
    proc = subprocess.run([sys.executable, "-m", "resviz", "check", path, "--input", "3x8x8", "--json"],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    assert "forward was here" in proc.stderr and "imported, says the model" in proc.stderr


@pytest.mark.parametrize("sig, code, words", [
    (signal.SIGTERM, 143, "SIGTERM"),
    pytest.param(signal.SIGINT, 130, "Ctrl-C", marks=pytest.mark.slow),
])  # fmt: skip
def test_signals_stop_resviz_and_the_child_cleanly(tmp_path, sig, code, words):
    top = """
    import os, sys
    print("child", os.getpid(), file=sys.stderr, flush=True)
    while True:
        pass
    """
    path = write(tmp_path, top=top)
    proc = subprocess.Popen([sys.executable, "-m", "resviz", "check", path], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stderr.readline()  # blocks until the user's code runs in the child
        assert line.startswith("child "), line
        child = int(line.split()[1])
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=180)  # a loaded machine imports torch slowly
    finally:
        proc.kill()
    assert proc.returncode == code and words in err and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and reaped, not left looping


# ---------------------------------------------------------------------------- the words, here


def test_sys_exit_in_forward_is_a_failure_pointing_at_the_line(tmp_path, monkeypatch):
    path = write(tmp_path, top="import sys\n", forward="sys.exit(0)")
    with pytest.raises(LoadError) as e:
        in_child_open(path, monkeypatch)
    msg = str(e.value)
    assert "model.py:" in msg and "exits the program (SystemExit 0)" in msg and "tracing" in msg


@pytest.mark.parametrize("raised, words", [
    ("GeneratorExit('done')", "raises GeneratorExit (done) while tracing"),
    ("Stop('custom')", "raises Stop (custom) while tracing"),
])  # fmt: skip
def test_base_exceptions_from_forward_are_one_paragraph(tmp_path, monkeypatch, raised, words):
    path = write(tmp_path, top="class Stop(BaseException):\n    pass\n", forward=f"raise {raised}")
    with pytest.raises(LoadError) as e:
        in_child_open(path, monkeypatch)
    msg = str(e.value)
    assert words in msg and "not an Exception" in msg and "Traceback" not in msg
    assert msg.count("\n") <= 2 and f"raise {raised}" in msg


def test_base_exception_at_import_is_one_paragraph(tmp_path):
    path = write(tmp_path, top="raise GeneratorExit\n")
    with pytest.raises(LoadError) as e:
        load_model(path)
    assert "model.py:1 at module level: the code raises GeneratorExit while importing" in str(e.value)


def test_keyboard_interrupt_raised_by_init_is_not_taken_for_ctrl_c(tmp_path, monkeypatch):
    path = write(tmp_path, init="raise KeyboardInterrupt")
    with pytest.raises(LoadError) as e:  # in the child, only the user's code can raise it
        in_child_open(path, monkeypatch)
    assert "raises KeyboardInterrupt itself while building" in str(e.value)
    assert "no Ctrl-C was pressed" in str(e.value)
    monkeypatch.setattr(pyfile_errors, "IN_CHILD", False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    with pytest.raises(LoadError, match="no Ctrl-C was pressed"):  # here too: no SIGINT came
        load_model(path)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # as it was


def test_a_real_ctrl_c_while_the_code_runs_stays_a_ctrl_c(tmp_path, monkeypatch):
    monkeypatch.setattr(pyfile_errors, "IN_CHILD", False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    path = write(tmp_path, init="import signal; signal.raise_signal(signal.SIGINT)")
    with pytest.raises(KeyboardInterrupt):  # the SIGINT arrived: it is the user's Ctrl-C
        load_model(path)


def test_the_answer_holds_only_plain_records(tmp_path, monkeypatch):
    path = write(tmp_path, top="class Knob:\n    pass\n", init="self.conv.knob = Knob()")
    answer = in_child_open(path, monkeypatch)
    data = pickle.dumps(answer)
    back = loads_records(data)  # the allow-list: resviz records and builtins only
    report = back["report"]
    conv = report.module(next(op for op in report.ops if op.type == "Conv2d").name)
    assert isinstance(conv, PlainModule) and conv.out_channels == 4
    assert conv.class_source.endswith(".py:" + conv.class_source.rsplit(":", 1)[1])
    model = report.modules.of(report.calls[0])
    assert model.type_name == "Net" and "model.py:" in model.class_source
    assert report.modules.root is None  # the live model stayed in the child (the allow-list refuses nn)
    from fractions import Fraction

    with pytest.raises(pickle.UnpicklingError):  # any other class is refused, never imported
        loads_records(pickle.dumps({"x": Fraction(1, 3)}))


# ---------------------------------------------------------------------------- which class


PARTS = """
from torch import nn

class Block(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)

class ResNet(nn.Module):
    def __init__(self, widths, num_classes):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(w) for w in widths])

    def forward(self, x):
        return self.blocks(x)
"""


def test_a_block_is_never_checked_in_place_of_the_network_that_needs_arguments(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(PARTS)
    with pytest.raises(LoadError) as e:
        load_model(str(path))
    msg = str(e.value)
    assert "Block looks like a part of the network" in msg
    assert "ResNet(widths, num_classes)" in msg and "Block(c=8)" in msg
    assert f"{path}:ResNet --kwargs" in msg and f"`resviz check {path}:Block`" in msg
    assert load_model(f"{path}:Block").name == "model.py:Block"  # named: checked as asked


def test_the_class_taken_is_said_with_why(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(PARTS.replace("def __init__(self, widths, num_classes)",
                                  "def __init__(self, widths=(8, 8), num_classes=10)"))
    loaded = load_model(str(path))
    assert loaded.name == "model.py:ResNet"
    assert any("checked ResNet" in n and "Block is used by the others" in n for n in loaded.notes)


@pytest.mark.slow
def test_processes_the_code_starts_end_with_its_child(capfd, tmp_path, hang_guard):
    top = """
    import subprocess, sys
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    print("grandchild", grandchild.pid, file=sys.stderr, flush=True)
    while True:
        pass
    """
    path = write(tmp_path, top=top)
    code, _, err = check(capfd, path, "--timeout", "0.5")
    assert code == 2 and "did not finish within 0.5 s" in err
    pid = int(err.split("grandchild ", 1)[1].split()[0])
    try:  # killed with the child's process group (reaped by init: it may linger as a zombie)
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().split()[2] == "Z"
    except FileNotFoundError:
        pass


def test_a_missing_file_is_said_without_starting_a_child(capfd, tmp_path, monkeypatch):
    from resviz.core.session import isolation

    monkeypatch.setattr(isolation, "_spawn", lambda *a, **k: pytest.fail("a child was started"))
    code, _, err = check(capfd, str(tmp_path / "modle.py"))
    assert code == 2 and "no such file" in err


@pytest.mark.slow
def test_the_spare_child_serves_the_next_load_and_ends_with_its_owner(tmp_path, hang_guard):
    """The app's spare child belongs to its owner (no process-wide registry, no atexit): a load
    takes it, a new spare starts for the next, and closing the owner's spare ends it for good."""
    from resviz.core.session.isolation import SpareChild, open_python

    spare = SpareChild()
    spare.refill()
    assert spare.wait_ready(120)
    first = spare._proc
    session = open_python(write(tmp_path), input_shape=(1, 3, 8, 8), spare=spare)
    assert session.report.ok and first.poll() is not None  # the spare ran this load and ended
    second = spare._proc
    assert second is not None and second is not first and second.poll() is None  # the next one
    spare.close()
    assert second.poll() is not None and spare._proc is None
    spare.refill()  # a closed spare starts nothing more
    assert spare._proc is None
