"""Where resviz writes: through links, straight into special files, checked before any work, no
temp files left; and one exit-status rule for check, summary and render."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from resviz.cli import main
from resviz.core.errors import ResvizError
from resviz.core.files import AtomicTextFile, atomic_write_text, check_output


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_symlinked_target_is_written_through(tmp_path, streamed):
    real = tmp_path / "real" / "run.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "run.csv"
    link.symlink_to(real)
    if streamed:
        out = AtomicTextFile(link)
        out.file.write("new\n")
        out.commit()
    else:
        atomic_write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"
    assert not _temps(tmp_path) and not _temps(real.parent)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_special_file_is_written_directly_not_replaced(tmp_path, streamed):
    """What --csv /dev/stdout needs: a pipe (here a FIFO with a reader) is written into, and stays
    what it was; it is never replaced by a regular file of that name."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if streamed:
            out = AtomicTextFile(fifo)
            out.file.write("step,loss\n")
            out.commit()
        else:
            atomic_write_text(fifo, "step,loss\n")
        assert os.read(reader, 100) == b"step,loss\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert check_output(fifo) == fifo
    assert not _temps(tmp_path)


def test_check_output_says_what_is_wrong_up_front(tmp_path):
    with pytest.raises(ResvizError, match="is a directory"):
        check_output(tmp_path)
    with pytest.raises(ResvizError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.csv")
    (tmp_path / "d").mkdir()
    (tmp_path / "to_dir.csv").symlink_to(tmp_path / "d")
    with pytest.raises(ResvizError, match="links to the directory"):
        check_output(tmp_path / "to_dir.csv")
    assert check_output(tmp_path / "new.csv") == tmp_path / "new.csv"


def test_a_failed_commit_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.csv"
    out = AtomicTextFile(target)
    out.file.write("x\n")
    target.mkdir()  # becomes a directory while the run goes on
    with pytest.raises(ResvizError, match="cannot write"):
        out.commit()
    assert not _temps(tmp_path)


def test_a_run_that_fails_before_its_first_step_keeps_the_earlier_csv(tmp_path, capsys, monkeypatch):
    from resviz.core.training import Trainer

    csv = tmp_path / "run.csv"
    csv.write_text("an earlier run\n")

    def fail(self):
        raise ResvizError("the data ran out")

    monkeypatch.setattr(Trainer, "step", fail)
    code = main(["train", "resnet20", "--steps", "2", "--batch", "2", "--no-probes", "--csv", str(csv),
                 "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "the data ran out" in capsys.readouterr().err
    assert csv.read_text() == "an earlier run\n"
    assert not _temps(tmp_path)


def test_train_writes_csv_through_a_link(tmp_path, capsys):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    code = main(["train", "resnet20", "--steps", "1", "--batch", "2", "--no-probes", "--csv", str(link),
                 "--run-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert link.is_symlink() and real.read_text().startswith("step")
    assert not _temps(tmp_path)


def test_train_refuses_the_same_file_for_csv_and_jsonl(tmp_path, capsys):
    out = tmp_path / "run.txt"
    assert main(["train", "resnet20", "--csv", str(out), "--jsonl", str(out)]) == 2
    assert "same file" in capsys.readouterr().err


# --- one exit-status rule ----------------------------------------------------------------------

_FAILS_TO_TRACE = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        return self.fc(self.conv(x))  # 8x30x30 into a Linear(10): the trace stops here
'''


@pytest.mark.parametrize("case, expected", [("broken_identity", 1), ("fails_to_trace", 1), ("clean", 0)])
def test_check_summary_and_render_exit_alike(tmp_path, capsys, case, expected):
    if case == "fails_to_trace":
        model = tmp_path / "net.py"
        model.write_text(_FAILS_TO_TRACE)
        source = [str(model), "--input", "3x32x32"]
    elif case == "broken_identity":
        source = [str(Path(__file__).parent.parent / "assets" / "broken_identity.toml")]
    else:
        source = ["resnet20"]
    codes = {
        "check": main(["check", *source]),
        "summary": main(["summary", *source]),
        "summary --json": main(["summary", *source, "--json"]),
        "render": main(["render", *source, "-o", str(tmp_path / "g.dot")]),
    }
    capsys.readouterr()
    assert set(codes.values()) == {expected}, codes


@pytest.mark.parametrize("command", ["summary", "render"])
def test_a_negative_depth_is_refused_by_summary_and_render_alike(tmp_path, capsys, command):
    extra = ["-o", str(tmp_path / "g.dot")] if command == "render" else []
    assert main([command, "resnet20", "--depth", "-1", *extra]) == 2
    assert "--depth must be 0 or more, got -1" in capsys.readouterr().err
    assert not (tmp_path / "g.dot").exists()


@pytest.mark.parametrize("argv", [["codegen", "no_such_model_anywhere", "-o"],
                                  ["check", "no_such_model_anywhere", "--fix-spec"]])  # fmt: skip
def test_codegen_and_fix_spec_targets_are_checked_before_the_model_is_loaded(tmp_path, capsys, argv):
    assert main([*argv, str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
