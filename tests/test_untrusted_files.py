"""Opening a file never runs code it names, unless --trust is given.

Each test builds a file whose payload writes a marker file when unpickled (or evaluated), opens it
the way a user would (``resviz check FILE``, no --trust) and fails if the marker appears. A control
shows the payload is live: torch's own unrestricted loader does run it.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from resviz.cli import main
from resviz.core.sources.archives import sniff
from resviz.core.sources.loading import load_model

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save's old-format magic number


class _Payload:
    """Unpickles by evaluating ``expr``: the expression writes the marker, then gives ``value``."""

    def __init__(self, marker: Path, value: str = "None"):
        self.expr = f"(open({str(marker)!r}, 'w').close(), {value})[1]"

    def __reduce__(self):
        return (eval, (self.expr,))


def _marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


# --- class 1: a legacy-format .pt -------------------------------------------------------------


@pytest.mark.parametrize("slot", [1, 2, 3])
def test_legacy_torch_save_with_a_crafted_pickle_is_not_run(tmp_path, capsys, slot):
    """Magic number, protocol version, system info, then the object: any pickle after the magic
    number can be the crafted one, and finding out what the file is must not run it."""
    marker = _marker(tmp_path)
    parts = [_LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}, {"a": 1}]
    parts[slot] = _Payload(marker)
    path = tmp_path / "net.pt"
    path.write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in parts))
    assert sniff(path) == "legacy"

    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--trust" in err
    assert not marker.exists(), "opening the file ran its code"


def test_zip_torch_save_with_a_crafted_pickle_is_not_run(tmp_path, capsys):
    marker = _marker(tmp_path)
    path = tmp_path / "net.pt"
    torch.save({"model": _Payload(marker, "1")}, path)
    assert main(["check", str(path)]) == 2
    assert "--trust" in capsys.readouterr().err
    assert not marker.exists()


# --- classes 2 and 3: a .pt2 whose parts are pickles ------------------------------------------


def _exported(tmp_path: Path, dynamic: bool = False) -> Path:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    shapes = ({0: torch.export.Dim("batch", min=2, max=64)},) if dynamic else None
    ep = torch.export.export(net, (torch.randn(2, 3, 8, 8),), dynamic_shapes=shapes)
    path = tmp_path / "net.pt2"
    torch.export.save(ep, path)
    return path


def _rewrite(path: Path, edit) -> None:
    """Rewrite the members of the zip at ``path``: ``edit(name, data)`` returns the new data."""
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, edit(info.filename, data))


def _torch_saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _control(path: Path, marker: Path) -> None:
    """The file really is malicious: torch's own loader runs the payload."""
    try:
        torch.export.load(str(path))
    except Exception:
        pass
    assert marker.exists(), "the test's payload is not live"
    marker.unlink()


def test_export_archive_whose_weight_is_a_pickle_is_not_run(tmp_path, capsys):
    marker = _marker(tmp_path)
    path = _exported(tmp_path)

    def edit(name, data):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            entry = config["config"]["0.weight"]
            entry["use_pickle"], entry["tensor_meta"] = True, None
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):  # a payload that also returns a valid tensor
            return _torch_saved(_Payload(marker, "__import__('torch').zeros(4, 3, 3, 3)"))
        return data

    _rewrite(path, edit)
    _control(path, marker)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "0.weight" in err and "--trust" in err
    assert not marker.exists(), "opening the archive ran its code"


def test_export_archive_whose_sample_inputs_are_a_pickle_is_not_run(tmp_path, capsys):
    marker = _marker(tmp_path)
    path = _exported(tmp_path)
    valid = "((__import__('torch').zeros(2, 3, 8, 8),), {})"

    def edit(name, data):
        if name.endswith("data/sample_inputs/model.pt"):
            return _torch_saved(_Payload(marker, valid))
        return data

    _rewrite(path, edit)
    _control(path, marker)
    assert main(["check", str(path)]) == 0  # the graph is fine; only the sample inputs are skipped
    captured = capsys.readouterr()
    assert "sample inputs" in captured.err
    assert "2×3×8×8" in captured.out
    assert not marker.exists(), "opening the archive ran its code"


def test_export_archive_with_a_pickled_object_constant_is_not_run(tmp_path, capsys):
    marker = _marker(tmp_path)
    path = _exported(tmp_path)
    root = path.stem

    def edit(name, data):
        if name.endswith("model_constants_config.json"):
            return json.dumps({"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False,
                                                  "use_pickle": True, "tensor_meta": None}}}).encode()
        return data

    _rewrite(path, edit)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{root}/data/constants/opaque_obj_0", pickle.dumps(_Payload(marker)))
    _control(path, marker)
    assert main(["check", str(path)]) == 2
    assert "--trust" in capsys.readouterr().err
    assert not marker.exists()


def test_export_archive_with_code_in_a_shape_expression_is_not_run(tmp_path, capsys):
    """torch hands shape expressions to sympy.sympify, which evaluates them as Python."""
    marker = _marker(tmp_path)
    path = _exported(tmp_path, dynamic=True)
    code = f"(open({str(marker)!r}, 'w').close(), Symbol('s99'))[1]"

    def edit(name, data):
        if name.endswith("models/model.json"):
            text = data.decode()
            start = text.index('"expr_str": "') + len('"expr_str": "')
            end = text.index('"', start)
            return (text[:start] + code.replace('"', '\\"') + text[end:]).encode()
        return data

    _rewrite(path, edit)
    _control(path, marker)
    assert main(["check", str(path)]) == 2
    assert "shape expression" in capsys.readouterr().err
    assert not marker.exists()


def test_untrusted_export_archive_reads_shapes_without_weights(tmp_path):
    path = _exported(tmp_path, dynamic=True)
    loaded = load_model(path)
    assert loaded.kind == "export" and loaded.input_shape == (2, 3, 8, 8)
    assert all(t.is_meta for t in loaded.exported.state_dict.values())
    trusted = load_model(path, trust=True)  # --trust: torch's own loader, real weights
    assert not any(t.is_meta for t in trusted.exported.state_dict.values())


def test_a_safetensors_header_nested_thousands_deep_is_one_message(tmp_path, capsys):
    import struct

    header = b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "header is corrupt" in err and "internal error" not in err


def test_a_torch_save_zip_bomb_is_refused_before_it_is_inflated(tmp_path, capsys, monkeypatch):
    from resviz.core.sources import archives

    path = tmp_path / "bomb.pt"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setattr(archives, "_MAX_PICKLE_BYTES", 16)  # stands for 1 GiB: the real pickle is larger
    assert main(["check", str(path)]) == 2
    assert "data.pkl inflates to" in capsys.readouterr().err


@pytest.mark.parametrize("expr, safe", [
    ("Symbol('s31', positive=True, integer=True)", True),
    ("Add(Mul(Integer(2), Symbol('s0', positive=True, integer=True)), Integer(1))", True),
    ("Mul(Float('1.5', precision=53), Symbol('s0', positive=True, integer=True))", True),
    ("((s0 - 1)//2) + 1", True),
    ("FloorDiv(s0, 2)", True),
    ("Pow(Symbol('s0', positive=True), Integer(2))", True),
    ("__import__('os').system('true')", False),
    ("exec('1')", False),
    ("'x'.join('y')", False),
    ("Symbol('s0').args", False),
    ("(1).real", False),
    ("Pow(Integer(10), Integer(999999999))", False),  # would compute a billion-digit number
    ("Pow(Pow(Integer(9), Integer(9)), Integer(9))", False),
])  # fmt: skip
def test_only_arithmetic_on_shape_symbols_reaches_sympify(expr, safe):
    from resviz.core.sources.pt2_reader import _safe_expression

    assert _safe_expression(expr) is safe
