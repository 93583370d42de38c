"""Bad input of every kind gives one clear paragraph and exit status 2: never a hang, a traceback,
an internal error or memory exhausted first. Each test names the limit or the file type it hits."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from resviz.cli import main
from resviz.core.errors import ResvizError
from resviz.core.shapes import parse_shape
from resviz.core.sources.loading import parse_kwargs
from resviz.core.training import data as datamod

_SPEC = 'stem = "cifar"\n[[stages]]\nblocks = 1\nwidth = 8\n'


def _run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err
    return code, err


# --- special files as MODEL -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".pt", ".toml", ".py"])
def test_a_fifo_as_model_is_refused_without_opening_it(tmp_path, capsys, suffix):
    fifo = tmp_path / f"model{suffix}"
    os.mkfifo(fifo)
    assert _without_hanging_on(fifo, lambda: main(["check", str(fifo)])) == 2
    assert "named pipe (FIFO)" in capsys.readouterr().err


def _without_hanging_on(fifo, call):
    """Run ``call()`` in a thread; if it blocks opening ``fifo``, release it and fail."""
    result: list = []

    def run():
        try:
            result.append(call())
        except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=30)
        pytest.fail("resviz opened the FIFO and waited for a writer")
    return result[0]


@pytest.mark.parametrize("spelling", ["{}", "npz:{}"])
def test_a_fifo_as_training_data_is_refused_without_opening_it(tmp_path, spelling):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    outcome = _without_hanging_on(fifo, lambda: datamod.open_data(spelling.format(fifo), (3, 8, 8), 10))
    assert isinstance(outcome, ResvizError) and "named pipe (FIFO)" in str(outcome)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_spec_linked_to_an_endless_device_is_refused(tmp_path, capsys, device):
    link = tmp_path / "net.toml"
    link.symlink_to(device)
    code, err = _run(capsys, "check", link)
    assert code == 2 and "character device" in err and device in err


def test_an_oversized_spec_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "net.toml"
    path.write_text(_SPEC + "# " + "x" * (1024 * 1024) + "\n")
    code, err = _run(capsys, "check", path)
    assert code == 2 and "limit for a spec file" in err


# --- specs that would never finish or overflow -------------------------------------------------


def test_deeply_nested_json_and_toml_specs_are_one_message(tmp_path, capsys):
    (tmp_path / "deep.json").write_text('{"name": ' + "[" * 5000 + "]" * 5000 + "}")
    (tmp_path / "deep.toml").write_text("name = " + "[" * 5000 + "]" * 5000 + "\n")
    for name in ("deep.json", "deep.toml"):
        code, err = _run(capsys, "check", tmp_path / name)
        assert code == 2 and "nest more than" in err and name in err


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_a_5000_digit_integer_in_a_spec_is_one_message(tmp_path, capsys, fmt):
    digits = "9" * 5000
    text = (f'classes = {digits}\n{_SPEC}' if fmt == "toml" else
            f'{{"classes": {digits}, "stem": "cifar", "stages": [{{"blocks": 1, "width": 8}}]}}')  # fmt: skip
    path = tmp_path / f"net.{fmt}"
    path.write_text(text)
    code, err = _run(capsys, "check", path)
    assert code == 2 and "5000-digit number" in err


def test_a_spec_of_2000_stages_of_1000_blocks_names_the_stage_limit(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    path.write_text('stem = "cifar"\n' + "[[stages]]\nblocks = 1000\nwidth = 8\n" * 2000)
    assert path.stat().st_size < 100_000  # a small file that would build a net of 7.6 GB
    code, err = _run(capsys, "check", path)
    assert code == 2 and "limit of 64 stages" in err and "'stages'" in err


def test_a_spec_of_too_many_blocks_in_all_names_the_block_limit(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text('stem = "cifar"\n' + "[[stages]]\nblocks = 1000\nwidth = 8\n" * 10)
    code, err = _run(capsys, "check", path)
    assert code == 2 and "10000 blocks in all" in err and "limit of 5000 blocks" in err


# --- arguments ---------------------------------------------------------------------------------


def test_deeply_nested_kwargs_are_one_message(capsys):
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ResvizError, match="characters long"):
        parse_kwargs(deep)
    nested = '{"a": ' + "[" * 20_000 + "]" * 20_000 + "}"
    with pytest.raises(ResvizError, match="nests arrays or objects too deeply"):
        parse_kwargs(nested)
    code, err = _run(capsys, "check", "resnet18", "--kwargs", nested)
    assert code == 2 and "--kwargs" in err
    with pytest.raises(ResvizError, match="number too large"):
        parse_kwargs('{"num_classes": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("shape, words", [
    ("1x3x99999999999999999999x2", "more than 19 digits"),
    ("1x3x9223372036854775808x2", "limit of 2147483647"),
    ("100000x100000x100000x100000", "past the limit of 1.1e+12"),
    ("1x3x" + "9" * 5000 + "x2", "more than 19 digits"),
])  # fmt: skip
def test_input_sizes_past_the_limits_are_refused(capsys, shape, words):
    with pytest.raises(ResvizError, match=words.replace("+", r"\+").replace(".", r"\.")):
        parse_shape(shape)
    code, err = _run(capsys, "check", "resnet18", "--input", shape)
    assert code == 2 and "input shape" in err and len(err) < 600


# --- output targets ----------------------------------------------------------------------------


def test_render_to_a_directory_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    target = tmp_path / "out.svg"
    target.mkdir()
    # an unknown model would be the first error if the output were checked after loading
    code, err = _run(capsys, "render", "no_such_model_anywhere", "-o", target)
    assert code == 2 and "is a directory" in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("flag", ["--csv", "--jsonl"])
def test_train_records_to_a_directory_are_refused_before_training(tmp_path, capsys, flag):
    target = tmp_path / "runs"
    target.mkdir()
    code, err = _run(capsys, "train", "no_such_model_anywhere", flag, target)
    assert code == 2 and "is a directory" in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- data and memory ---------------------------------------------------------------------------


def test_synthetic_data_with_a_billion_classes_is_refused_up_front(capsys):
    with pytest.raises(ResvizError, match="limit of 1000000 classes"):
        datamod.open_data("synthetic:1000000000", (3, 8, 8), 10)
    code, err = _run(capsys, "train", "resnet20", "--kwargs", '{"num_classes": 1000000000}')
    assert code == 2 and "limit of 10,000,000 classes" in err


def test_an_npz_that_inflates_past_free_memory_is_refused_with_the_number(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=np.zeros((64, 3, 64, 64), np.float32), y=np.zeros(64, np.int64))
    assert path.stat().st_size < 100_000  # a few KB on disk, 3 MB once read
    monkeypatch.setattr(datamod, "available_memory", lambda device="cpu": 1_000_000)
    with pytest.raises(ResvizError) as info:
        datamod.load_npz(path, (3, 64, 64))
    assert "3 MiB once read" in str(info.value) and "977 KiB of memory is free" in str(info.value)


def test_a_batch_that_cannot_fit_is_refused_with_the_estimate(capsys, monkeypatch):
    monkeypatch.setattr(datamod, "available_memory", lambda device="cpu": 2 * 1024**3)
    code, err = _run(capsys, "train", "resnet20", "--batch", "100000", "--steps", "1")
    assert code == 2
    assert "at batch 100000 needs about" in err and "2 GiB is free" in err and "use --batch" in err
    fits = int(err.split("use --batch ")[1].split()[0])
    assert 100 < fits < 100000


# --- what reaches the terminal ----------------------------------------------------------------


def test_escape_sequences_in_a_spec_name_never_reach_the_terminal(tmp_path, capsys):
    path = tmp_path / "evil.toml"
    path.write_text('name = "\\u001b[2J\\u001b]0;owned\\u0007x"\n' + _SPEC)
    code, err = _run(capsys, "check", path)
    assert code == 2 and "control characters" in err and "'name'" in err
    assert "\x1b" not in err and "\x07" not in err
    code, err = _run(capsys, "check", "no_such\x1b[2Jmodel\x1b]0;t\x07")
    assert code == 2 and "\x1b" not in err and "\x07" not in err and "\\x1b[2J" in err


def test_printable_keeps_resviz_colours_only():
    from resviz.core.printable import printable

    assert printable("\x1b[31mred\x1b[0m", keep_colour=True) == "\x1b[31mred\x1b[0m"
    assert printable("a\x1b[2Jb\x9bc\r\n\t", keep_colour=True) == "a\\x1b[2Jb\\x9bc\\r\n\t"
    assert printable("\x1b[31m") == "\\x1b[31m"


def test_check_json_escapes_a_name_rather_than_passing_it(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text('name = "plain"\n' + _SPEC)
    assert main(["check", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize("flag, value, words", [
    ("--seed", "99999999999999999999999", "from 0 to 2^63 - 1"),
    ("--seed", "-5", "from 0 to 2^63 - 1"),
    ("--lr", "1e308", "largest float32"),
    ("--weight-decay", "1e39", "largest float32"),
])  # fmt: skip
def test_training_numbers_past_what_torch_holds_are_usage_errors(capsys, flag, value, words):
    with pytest.raises(SystemExit) as info:
        main(["train", "resnet20", flag, value])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_a_huge_argument_or_name_gives_a_paragraph_not_a_megabyte(tmp_path, capsys):
    code, err = _run(capsys, "check", "x" * 100_000)
    assert code == 2 and len(err) < 2500 and "characters left out" in err
    path = tmp_path / "long.toml"
    path.write_text(f'name = "{"a" * 500_000}"\n' + _SPEC)
    code, err = _run(capsys, "check", path)
    assert code == 2 and "past the limit of 200" in err and len(err) < 500
