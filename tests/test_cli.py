"""The command line: exit codes, JSON contracts, readable output, no tracebacks for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from resviz.cli import main

BROKEN_PY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + x)


    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 1, 1)
            self.stage1 = nn.Sequential(Block(16, 16), Block(16, 16))
            self.stage2 = nn.Sequential(Block(16, 32, 2), Block(32, 32))
            self.stage3 = nn.Sequential(Block(32, 64, 2), Block(64, 64))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

        def forward(self, x):
            return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))
    """
)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_clean_model_exits_0_with_a_block_table(capsys):
    code, out, err = run(capsys, "check", "resnet18")
    assert code == 0, err
    assert "layer2.0" in out and "projection" in out and "64×56×56 → 128×28×28" in out
    assert "every shortcut matches" in out
    assert "\033[" not in out  # no colour codes when not writing to a terminal


def test_check_json_contract_for_a_broken_file(capsys, tmp_path):
    f = tmp_path / "net.py"
    f.write_text(BROKEN_PY)
    code, out, err = run(capsys, "check", f"{f}:Net", "--input", "3x32x32", "--json",
                         "--kwargs", '{"num_classes": 5}')  # fmt: skip
    assert code == 1, err
    d = json.loads(out)
    for key in ("ok", "input_shape", "blocks", "mismatches", "errors"):
        assert key in d
    assert d["ok"] is False and d["input_shape"] == [1, 3, 32, 32]
    assert {"name", "shortcut", "input_shape", "output_shape"} <= set(d["blocks"][0])
    assert [m["block"] for m in d["mismatches"]] == ["stage2.0", "stage3.0"]
    m = d["mismatches"][0]
    assert {"block", "residual_shape", "shortcut_shape", "cause", "fix"} <= set(m)
    assert m["residual_shape"] == [1, 32, 16, 16] and m["shortcut_shape"] == [1, 16, 32, 32]
    assert "stage2.0.body.0" in m["cause"] and "nn.Conv2d(16, 32" in m["fix"]
    assert d["output_shapes"] == [[1, 5]]


def test_check_json_equals_report_to_dict(capsys):
    import resviz
    from resviz.core.sources import zoo

    code, out, _ = run(capsys, "check", "resnet20", "--json")
    expected = resviz.analyze(zoo.build("resnet20"), (1, 3, 32, 32), name="resnet20").to_dict()
    assert code == 0 and json.loads(out) == expected


def test_summary_totals_agree_with_torchinfo(capsys):
    torchinfo = pytest.importorskip("torchinfo")
    from resviz.core.sources import zoo

    code, out, err = run(capsys, "summary", "resnet50", "--json", "--depth", "2")
    assert code == 0, err
    d = json.loads(out)
    assert d["total_params"] == 25_557_032
    info = torchinfo.summary(zoo.build("resnet50", device="cpu"), (1, 3, 224, 224), verbose=0)
    assert abs(d["macs"] - info.total_mult_adds) <= 0.01 * info.total_mult_adds
    names = [row["name"] for row in d["layers"]]
    assert "layer1" in names and "layer1.0" in names and "layer1.0.conv1" not in names
    row = next(r for r in d["layers"] if r["name"] == "layer3")
    assert row["output_shape"] == [1, 1024, 14, 14]


def test_summary_table_text(capsys):
    code, out, _ = run(capsys, "summary", "resnet20", "--depth", "1")
    assert code == 0
    assert "layer2" in out and "total params" in out and "32×16×16" in out


def test_zoo_lists_models_with_params(capsys):
    code, out, _ = run(capsys, "zoo", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["resnet50"]["params"] == 25_557_032
    assert entries["resnet56"]["input_shape"] == [1, 3, 32, 32]
    assert "plain20" in entries and "preact_resnet18" in entries


@pytest.mark.parametrize("ext", ["dot", "svg", "png", "pdf"])
def test_render_writes_each_format(capsys, tmp_path, ext):
    out_file = tmp_path / f"g.{ext}"
    code, out, err = run(capsys, "render", "resnet20", "-o", str(out_file))
    assert code == 0, err
    data = out_file.read_bytes()
    assert len(data) > 500
    magic = {"dot": b"digraph", "svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF"}[ext]
    assert data.startswith(magic)
    if ext == "dot":
        text = data.decode()
        assert "layer2.0" in text and "16×32×32" in text


def test_render_svg_labels_are_text_not_images(capsys, tmp_path):
    import xml.etree.ElementTree as ET

    out_file = tmp_path / "g.svg"
    code, _, err = run(capsys, "render", "resnet20", "-o", str(out_file))
    assert code == 0, err
    root = ET.parse(out_file).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert not list(root.iter(f"{ns}image"))  # nothing drawn as a bitmap
    texts = {(t.text or "").strip() for t in root.iter(f"{ns}text")}
    for name in ("input", "conv1", "layer1.0", "layer2.0", "layer3.2", "fc", "16×32×32"):
        assert name in texts, name


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["check", "resnet_18"], "resnet18"),  # unknown name: suggests the close match
        (["check", "resnet18", "--input", "3xfoo"], "1x3x224x224"),
        (["check", "resnet18", "--input", "0x3x2"], "not positive"),
        (["render", "resnet20", "-o", "out.jpeg"], ".svg, .png, .pdf or .dot"),
        (["check", "/nonexistent/model.pt"], "model.pt"),
        (["summary", "resnet20", "--depth", "-1"], "--depth"),
    ],
)
def test_bad_input_exits_2_with_one_clear_paragraph(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and err.count("\n") <= 12


def test_bad_kwargs_json(capsys, tmp_path):
    f = tmp_path / "net.py"
    f.write_text(BROKEN_PY)
    code, _, err = run(capsys, "check", f"{f}:Net", "--kwargs", "{num_classes: 5}")
    assert code == 2 and "--kwargs" in err and "Traceback" not in err


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "resviz", "check", "resnet20", "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


def test_written_files_get_normal_permissions_and_replace_atomically(capsys, tmp_path):
    import os

    target = tmp_path / "g.dot"
    target.write_text("old")
    os.chmod(target, 0o640)
    code, _, _ = run(capsys, "render", "resnet20", "-o", str(target))
    assert code == 0 and target.read_text().startswith("digraph")
    assert os.stat(target).st_mode & 0o777 == 0o640  # an existing file keeps its permissions
    fresh = tmp_path / "g.svg"
    run(capsys, "render", "resnet20", "-o", str(fresh))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(fresh).st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
