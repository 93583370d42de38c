"""The phases of model sources (sniffing, zoo matching, user files), each on its own, and the
broad excepts that used to hide what went wrong (issue 11)."""

import zipfile

import pytest
import torch
from torch import nn

from resviz.core.errors import LoadError
from resviz.core.sources import archives, zoo
from resviz.core.sources.archives import (
    _kind_of_head,
    _read_head,
    _zoo_fit,
    _zoo_names_to_compare,
    zoo_match,
)

# --- sniffing -------------------------------------------------------------------------------


def test_the_head_is_read_with_the_size(tmp_path):
    f = tmp_path / "m.pt"
    f.write_bytes(b"x" * 100)
    head, size = _read_head(f, "m.pt")
    assert (head, size) == (b"x" * 64, 100)


def test_reading_the_head_names_what_is_wrong_with_the_path(tmp_path):
    with pytest.raises(LoadError, match="no such file: gone.pt"):
        _read_head(tmp_path / "gone.pt", "gone.pt")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.py").write_text("")
    with pytest.raises(LoadError, match=r"is a directory.*model\.py"):
        _read_head(tmp_path / "d", str(tmp_path / "d"))


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (archives._LEGACY_MAGIC + b"\0" * 10, "legacy"),
        (b"\x80\x04\x95" + b"\0" * 10, "pickle"),
        ((2).to_bytes(8, "little") + b"{}" + b"\0" * 4, "safetensors"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 8, "hdf5"),
        (b"hello world, not a model", None),
        (b"\x80\x09" + b"\0" * 10, None),
    ],
)
def test_the_kind_of_a_file_is_read_off_its_first_bytes(head, kind):
    assert _kind_of_head(head, 1000) == kind


# --- zoo matching ---------------------------------------------------------------------------


def _zoo_weights(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in zoo.build(name, device="meta").state_dict().items()}


def test_a_zoo_fit_is_exact_a_number_of_classes_or_none():
    have = {"fc.weight": (1000, 512), "fc.bias": (1000,), "conv.weight": (64, 3, 7, 7)}
    assert _zoo_fit(have, dict(have)) == "exact"
    assert _zoo_fit(have, {**have, "fc.weight": (10, 512), "fc.bias": (10,)}) == 10
    assert _zoo_fit(have, {**have, "conv.weight": (64, 3, 3, 3)}) is None
    assert _zoo_fit(have, {"fc.weight": (1000, 512)}) is None


def test_only_zoo_models_with_the_same_blocks_per_stage_are_compared():
    candidates = [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3)), ("resnet50", (3, 4, 6, 3))]
    assert _zoo_names_to_compare((3, 4, 6, 3), candidates) == ["resnet34", "resnet50"]
    assert _zoo_names_to_compare((1, 1), candidates) == []
    # weights that do not name their blocks layerN.M cannot be any zoo model (which all do)
    assert _zoo_names_to_compare(None, candidates) == []


def test_zoo_weights_are_named_even_with_another_classifier_size():
    weights = _zoo_weights("resnet18")
    assert "try `resviz check resnet18`" in zoo_match(weights)
    weights.update({"fc.weight": (7, 512), "fc.bias": (7,)})
    assert '{"num_classes": 7}' in zoo_match(weights)


def test_a_broken_zoo_is_a_bug_that_shows_not_a_silent_no_match(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("stages")

    monkeypatch.setattr(zoo, "entries", broken)
    with pytest.raises(KeyError):
        zoo_match(_zoo_weights("resnet18"))


# --- TorchScript example inputs -------------------------------------------------------------


def _traced_archive(tmp_path, traced_inputs: bytes | None):
    good = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8)), str(good))
    if traced_inputs is None:
        return good
    bad = tmp_path / "damaged.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, traced_inputs if info.filename.endswith("/traced_inputs.pkl") else data)
    return bad


def test_a_traced_archive_gives_its_example_input_shape(tmp_path):
    result = archives.load_archive(_traced_archive(tmp_path, None))
    assert result.input_shape == (1, 3, 8, 8)
    assert result.notes == []


def test_an_unreadable_example_input_is_said_not_silently_dropped(tmp_path):
    result = archives.load_archive(_traced_archive(tmp_path, b"\x80\x02garbage"))
    assert result.input_shape is None
    assert result.module is not None
    (note,) = result.notes
    assert "example input saved in" in note and "could not be read" in note and "--input" in note


# --- torch.export archives read without trust -----------------------------------------------


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 8, 8),)), path)
    return path


def _archive(path):
    from resviz.core.sources.pt2_reader import _Archive

    return _Archive(zipfile.ZipFile(path), "net.pt2")


def test_each_weight_of_a_pt2_is_a_meta_tensor_of_its_recorded_shape(pt2):
    from resviz.core.sources.pt2_reader import _payload, _payload_config

    reader = _archive(pt2)
    config = _payload_config(reader, "weights")
    weights = {fqn: _payload(reader, "weights", fqn, meta) for fqn, meta in config.config.items()}
    assert weights["0.weight"].shape == (4, 3, 3, 3) and weights["0.weight"].is_meta
    assert isinstance(weights["0.weight"], nn.Parameter)
    assert weights["1.running_mean"].shape == (4,)


def test_a_pt2_payload_list_that_is_missing_or_bad_is_said(pt2, tmp_path):
    from resviz.core.sources.pt2_reader import _payload_config

    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("model_constants_config.json"):
                continue
            data = src.read(info)
            dst.writestr(info, b"[1, 2" if info.filename.endswith("model_weights_config.json") else data)
    reader = _archive(bad)
    assert _payload_config(reader, "constants") is None  # a program may have no constants
    with pytest.raises(LoadError, match="model_weights_config.json is not a valid payload list"):
        _payload_config(reader, "weights")


def test_a_payload_without_a_shape_or_a_pickled_constant_is_refused(pt2):
    from types import SimpleNamespace

    from resviz.core.errors import NeedsTrust
    from resviz.core.sources.pt2_reader import _payload

    reader = _archive(pt2)
    no_shape = SimpleNamespace(path_name="weight_9", use_pickle=False, tensor_meta=None, is_param=True)
    with pytest.raises(LoadError, match="its weight fc.w has no recorded shape"):
        _payload(reader, "weights", "fc.w", no_shape)
    obj = SimpleNamespace(path_name="custom_obj_0", use_pickle=True, tensor_meta=None, is_param=False)
    with pytest.raises(NeedsTrust, match="constant c is a pickled Python object"):
        _payload(reader, "constants", "c", obj)


def test_skipped_sample_inputs_say_why(pt2, tmp_path):
    from resviz.core.sources.pt2_reader import load_export_untrusted

    bad = tmp_path / "inputs.pt2"
    with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b"not a pickle" if info.filename.endswith("sample_inputs/model.pt") else data)
    _, notes = load_export_untrusted(bad, "inputs.pt2")
    (note,) = notes
    assert "sample inputs" in note and "refused them: " in note


# --- the user's Python file -----------------------------------------------------------------


def _site(code_line: str, message: str, qualname: str = "Block.__init__"):
    import sys

    from resviz.core.sources.pyfile_errors import _enclosing_class, _Site

    return _Site(
        filename="/proj/model.py",
        lineno=7,
        qualname=qualname,
        frame=sys._getframe(1),  # the calling test: its locals are the "defined names"
        where="model.py:7",
        scope=f"in {qualname}",
        code_line=code_line,
        shown=f"\n    {code_line}",
        message=message,
        cls=_enclosing_class(qualname),
    )


def _user(tmp_path):
    from resviz.core.sources.pyfile_import import _UserFile

    return _UserFile(tmp_path / "model.py")


def test_a_super_call_naming_another_class_is_explained(tmp_path):
    from resviz.core.sources.pyfile_errors import _wrong_super

    line = "super(Basic, self).__init__()"
    site = _site(line, "super(type, obj): obj must be an instance or subtype of type", "Bottle.__init__")
    text = _wrong_super(TypeError(site.message), site, _user(tmp_path))
    assert "`super(Basic, self)` names the class Basic, but it is inside class Bottle" in text
    assert "super(Bottle, self).__init__()" in text
    assert _wrong_super(TypeError("other"), _site(line, "other"), _user(tmp_path)) is None
    assert _wrong_super(ValueError(site.message), site, _user(tmp_path)) is None


def test_a_forgotten_super_init_is_explained():
    from resviz.core.sources.pyfile_errors import _module_not_initialised

    msg = "cannot assign module before Module.__init__() call"
    text = _module_not_initialised(AttributeError(msg), _site("self.conv = nn.Conv2d(3, 4, 3)", msg), None)
    assert "Add `super().__init__()` as the first line of Block.__init__" in text
    assert _module_not_initialised(AttributeError("x"), _site("", "x"), None) is None


def test_import_problems_are_told_apart(tmp_path):
    from resviz.core.sources.pyfile_errors import _import_problem

    user = _user(tmp_path)
    relative = "attempted relative import with no known parent package"
    text = _import_problem(ImportError(relative), _site("from .blocks import B", relative), user)
    assert "relative import, which works only inside a package" in text
    missing = ModuleNotFoundError("No module named 'timm'", name="timm")
    text = _import_problem(missing, _site("x = load()", str(missing)), user)
    assert "imports timm, which is not installed" in text and "pip install timm" in text
    assert _import_problem(NameError("x"), _site("", "x"), user) is None


def test_an_undefined_name_suggests_the_closest_defined_one():
    from resviz.core.sources.pyfile_errors import _undefined_name

    BasicBlock = object()  # noqa: F841 - the name the suggestion should find in the frame
    exc = NameError("name 'BasicBlok' is not defined", name="BasicBlok")
    text = _undefined_name(exc, _site("b = BasicBlok()", str(exc)), None)
    assert "the name 'BasicBlok' is not defined (did you mean 'BasicBlock'?)" in text
    assert _undefined_name(TypeError("x"), _site("", "x"), None) is None


def test_a_call_missing_arguments_is_explained():
    from resviz.core.sources.pyfile_errors import _missing_arguments

    msg = "Block.__init__() missing 2 required positional arguments: 'cin' and 'cout'"
    text = _missing_arguments(TypeError(msg), _site("b = Block()", msg), None)
    assert "Block.__init__() is called without 2 required arguments ('cin' and 'cout')" in text
    assert _missing_arguments(ValueError(msg), _site("", msg), None) is None


def test_the_source_is_read_as_utf8_and_says_where_it_is_not(tmp_path):
    from resviz.core.sources.pyfile_import import _compile_source, _read_source

    user = _user(tmp_path)
    with pytest.raises(LoadError, match="no such file"):
        _read_source(user)
    (tmp_path / "model.py").write_bytes(b"x = 1\ny = '\xff'\n")
    with pytest.raises(LoadError, match=r"line 2 is not valid UTF-8 text \(byte 0xff\)"):
        _read_source(user)
    (tmp_path / "model.py").write_bytes("\ufeffx = 'é'\n".encode())
    assert _read_source(user) == "x = 'é'\n"
    tree, code = _compile_source(user, "x = 1\n")
    assert tree.body and code.co_filename == str(user.real)
    with pytest.raises(LoadError, match="syntax error"):
        _compile_source(user, "def f(:\n")
    with pytest.raises(LoadError, match="null bytes"):  # a SyntaxError or ValueError by Python version
        _compile_source(user, "x = 1\0\n")


def test_candidates_are_models_and_public_model_functions_defined_in_the_file():
    import ast
    import types

    from resviz.core.sources.pyfile import _candidate_kind

    module = types.ModuleType("usermod")
    source = (
        "import torch.nn as nn\nclass Net(nn.Module): pass\nclass Cfg: pass\n"
        "def build(): return Net()\ndef _helper(): return 1\ndef setup(): pass\n"
        "def config() -> int: return 1\n"
    )
    exec(compile(source, "usermod.py", "exec"), module.__dict__)
    kinds = {
        n.name: _candidate_kind(n, module.__dict__[n.name], module)
        for n in ast.parse(source).body
        if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }
    assert kinds == {
        "Net": "class",
        "Cfg": None,
        "build": "function",
        "_helper": None,
        "setup": None,
        "config": None,
    }


def test_each_candidate_knows_which_others_use_it():
    import ast

    from resviz.core.sources.pyfile import Candidate, _Found, _with_users

    tree = ast.parse("class Block: pass\nclass Net:\n    def __init__(self): self.b = Block()\n")
    found = [
        _Found(
            Candidate(name=n.name, kind="class", signature="()", builds_without_args=True, line=n.lineno),
            None,
            n,
        )
        for n in tree.body
    ]
    assert [f.candidate.used_by for f in _with_users(found)] == [("Net",), ()]


def test_a_trusted_pickle_that_cannot_move_to_meta_stays_on_the_cpu_and_says_so(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "resviz_test_stubborn.py").write_text(
        "from torch import nn\n"
        "class Stubborn(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "    def to(self, *args, **kwargs):\n"
        "        raise RuntimeError('pinned to the CPU')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "resviz_test_stubborn", raising=False)
    stubborn = importlib.import_module("resviz_test_stubborn")
    path = tmp_path / "whole.pt"
    torch.save(stubborn.Stubborn(), path)
    result = archives.load_archive(path, trust=True, device="meta")
    assert not result.module.conv.weight.is_meta
    (note,) = result.notes
    assert "could not be moved to the meta device (RuntimeError: pinned to the CPU)" in note
