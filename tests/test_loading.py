"""Where models come from: zoo names, spec files, Python files, archives and live modules."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from resviz.core.errors import LoadError, ResvizError
from resviz.core.sources.loading import (
    LoadedModel,
    from_module,
    load_model,
    parse_kwargs,
    python_candidates,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _forget_user_modules(tmp_path):
    """Modules imported from a test's files must not leak into other tests."""
    yield
    prefix = str(tmp_path.resolve())
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]


def write(directory: Path, name: str, text: str) -> Path:
    """Write a dedented file; a leading HEADER (not indented) is kept as it is."""
    header = ""
    if text.startswith(HEADER):
        header, text = HEADER.lstrip("\n"), text[len(HEADER) :]
    path = directory / name
    path.write_text(header + textwrap.dedent(text).lstrip("\n"))
    return path


def load_error(source, **kw) -> str:
    with pytest.raises(LoadError) as info:
        load_model(str(source), **kw)
    message = str(info.value)
    assert "Traceback" not in message
    return message


def first_param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


HEADER = """
import torch
from torch import nn
"""


# --------------------------------------------------------------------------------------------
# --kwargs


def test_parse_kwargs_accepts_objects_and_nothing():
    assert parse_kwargs(None) == {}
    assert parse_kwargs("  ") == {}
    assert parse_kwargs('{"num_blocks": [2, 2], "width": 8}') == {"num_blocks": [2, 2], "width": 8}


def test_parse_kwargs_bad_json_shows_the_position():
    with pytest.raises(ResvizError) as info:
        parse_kwargs('{"width": 8,}')
    message = str(info.value)
    assert "not valid JSON" in message and "column 13" in message and "^" in message


def test_parse_kwargs_single_quotes_get_a_hint():
    with pytest.raises(ResvizError, match="double quotes"):
        parse_kwargs("{'width': 8}")


def test_parse_kwargs_must_be_an_object():
    with pytest.raises(ResvizError, match="JSON object.*not a list"):
        parse_kwargs("[1, 2]")


# --------------------------------------------------------------------------------------------
# Python files: choosing what to build


def test_single_no_argument_class_is_picked(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(x)
    """,
    )
    loaded = load_model(str(path))
    assert isinstance(loaded, LoadedModel)
    assert loaded.kind == "python" and loaded.name == "model.py:Net"
    assert loaded.path == path.resolve() and loaded.source == str(path)
    assert first_param(loaded.module).device.type == "meta"  # default device: meta
    assert loaded.input_shape is None and loaded.plain_twin is None
    fresh = loaded.rebuild("cpu")
    assert isinstance(fresh, nn.Module) and first_param(fresh).device.type == "cpu"


def test_blocks_used_by_the_net_are_set_aside(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        from torch.nn import Identity  # imported classes are not candidates

        class Block(nn.Module):
            def __init__(self, c=8):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 3, padding=1)

            def forward(self, x):
                return x + self.conv(x)

        class Net(nn.Module):
            def __init__(self, width=8):
                super().__init__()
                self.body = nn.Sequential(Block(width), Block(width), Identity())

            def forward(self, x):
                return self.body(x)

        def helper(x):
            print(x)  # returns nothing: not a candidate
    """,
    )
    assert load_model(str(path)).name == "model.py:Net"
    names = [c.name for c in python_candidates(path)]
    assert names == ["Block", "Net"]


def test_name_after_colon_class_and_factory(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self, widths):
                super().__init__()
                self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

        def small():
            return Net([4, 3, 2])

        def large():
            return Net([4, 64, 64, 2])
    """,
    )
    small = load_model(f"{path}:small")
    assert small.name == "model.py:small" and len(small.module.layers) == 2
    large = load_model(f"{path}:large", device="cpu")
    assert len(large.module.layers) == 3 and first_param(large.module).device.type == "cpu"
    net = load_model(f"{path}:Net", kwargs={"widths": [4, 5]})
    assert net.module.layers[0].out_features == 5 and net.kwargs == {"widths": [4, 5]}
    again = net.rebuild("meta")
    assert again is not net.module and again.layers[0].out_features == 5


def test_kwargs_reach_the_class(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.fc = nn.Linear(4, width)
    """,
    )
    loaded = load_model(str(path), kwargs={"width": 7})  # picked: kwargs satisfy its arguments
    assert loaded.module.fc.out_features == 7


def test_unknown_kwarg_names_the_accepted_ones(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self, width=4):
                super().__init__()
                self.fc = nn.Linear(4, width)
    """,
    )
    message = load_error(f"{path}:Net", kwargs={"widht": 7})
    assert "widht" in message and "width" in message


def test_several_candidates_are_listed(tmp_path):
    path = write(
        tmp_path,
        "several.py",
        HEADER
        + """
        class NetA(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

        class NetB(nn.Module):
            def __init__(self, depth=2):
                super().__init__()
                self.fc = nn.Linear(4, depth)

        class Wide(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.fc = nn.Linear(4, width)
    """,
    )
    message = load_error(path)
    assert "several models" in message
    assert "NetA()" in message and "NetB(depth=2)" in message and "Wide(width)" in message
    assert f"{path}:NetA" in message
    assert "--kwargs '{\"width\": ...}'" in message
    cands = {c.name: c for c in python_candidates(path)}
    assert cands["NetB"].kind == "class" and cands["NetB"].signature == "(depth=2)"
    assert cands["NetB"].builds_without_args and not cands["Wide"].builds_without_args
    assert cands["NetA"].line == 3
    assert python_candidates(path, kwargs={"width": 3})[2].builds_without_args


def test_no_candidate_at_all(tmp_path):
    path = write(
        tmp_path,
        "empty_model.py",
        HEADER
        + """
        from torch.nn import Conv2d
        X = 3
    """,
    )
    message = load_error(path)
    assert "defines no nn.Module subclass" in message


def test_unknown_name_suggests_close_one(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class ResNet(nn.Module):
            pass
    """,
    )
    message = load_error(f"{path}:Resnet")
    assert "has no 'Resnet'" in message and "did you mean 'ResNet'" in message


def test_factory_returning_something_else(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        def make():
            return {"layers": 3}

        def forgot():
            nn.Linear(2, 2)
            return None if False else 0
    """,
    )
    message = load_error(f"{path}:make")
    assert "model.py:make is a function that returned a dict, not an nn.Module" in message
    assert "returned an int" in load_error(f"{path}:forgot")


def test_module_level_instance(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    """,
    )
    loaded = load_model(f"{path}:model")
    assert isinstance(loaded.module, nn.Sequential)
    assert first_param(loaded.module).device.type == "meta"


# --------------------------------------------------------------------------------------------
# Python files: errors in words


def test_wrong_super_class_type_error(tmp_path):
    path = write(
        tmp_path,
        "blocks.py",
        HEADER
        + """
        class BasicBlock(nn.Module):
            def __init__(self, c=4):
                super(BasicBlock, self).__init__()
                self.conv = nn.Conv2d(c, c, 3)

        class Bottleneck(nn.Module):
            def __init__(self, c=4):
                super(BasicBlock, self).__init__()
                self.conv = nn.Conv2d(c, c, 1)
    """,
    )
    message = load_error(f"{path}:Bottleneck")
    assert f"{path}:10 in Bottleneck.__init__" in message
    assert "names the class BasicBlock" in message and "class Bottleneck" in message
    assert "super().__init__()" in message
    assert "super(BasicBlock, self).__init__()" in message  # the offending line is shown


def test_wrong_super_class_name_error(tmp_path):
    path = write(
        tmp_path,
        "blocks.py",
        HEADER
        + """
        class Bottleneck(nn.Module):
            def __init__(self, c=4):
                super(ResBlock, self).__init__()
                self.conv = nn.Conv2d(c, c, 1)
    """,
    )
    message = load_error(path)
    assert f"{path}:5 in Bottleneck.__init__" in message
    assert "ResBlock" in message and "does not exist" in message and "Bottleneck" in message
    assert "super().__init__()" in message


def test_syntax_error_points_at_line_and_column(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def forward(self x):
                return x
    """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}:4:22: ")
    assert "syntax error" in message and "def forward(self x):" in message and "^" in message


def test_missing_module_import(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        """
        import torch
        import resviz_no_such_package_xyz
    """,
    )
    message = load_error(path)
    assert f"{path} line 2 imports resviz_no_such_package_xyz, which is not installed" in message


def test_torchvision_import_points_to_the_zoo(tmp_path):
    if "torchvision" in sys.modules or _importable("torchvision"):
        pytest.skip("torchvision is installed here")
    path = write(tmp_path, "model.py", "from torchvision.models import resnet18\n")
    message = load_error(path)
    assert "imports torchvision" in message and "resviz check resnet18" in message


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_missing_required_arguments_show_kwargs(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class ResNet(nn.Module):
            def __init__(self, block, num_blocks, num_classes=10):
                super().__init__()
    """,
    )
    message = load_error(f"{path}:ResNet")
    assert "block, num_blocks" in message
    assert '--kwargs \'{"block": ..., "num_blocks": ...}\'' in message
    assert "model.py line 3" in message


def test_kwargs_can_name_a_class_of_the_file(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class BasicBlock(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 3, padding=1)

        class ResNet(nn.Module):
            def __init__(self, block, num_blocks, width=8):
                super().__init__()
                self.blocks = nn.Sequential(*[block(width) for _ in range(num_blocks)])
    """,
    )
    message = load_error(f"{path}:ResNet")
    assert '--kwargs \'{"block": "BasicBlock", "num_blocks": ...}\'' in message
    loaded = load_model(f"{path}:ResNet", kwargs={"block": "BasicBlock", "num_blocks": 3})
    assert len(loaded.module.blocks) == 3 and type(loaded.module.blocks[0]).__name__ == "BasicBlock"
    assert loaded.kwargs == {"block": "BasicBlock", "num_blocks": 3}
    assert any("BasicBlock" in note for note in loaded.notes)


def test_forgotten_super_init(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(2, 2)
    """,
    )
    message = load_error(path)
    assert f"{path}:5 in Net.__init__" in message
    assert "super().__init__()" in message and "first line of Net.__init__" in message


def test_exception_while_building_names_file_line_and_type(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, groups=3)
    """,
    )
    message = load_error(path)
    assert f"{path}:6 in Net.__init__: ValueError:" in message
    assert "divisible by groups" in message and "nn.Conv2d(3, 8, 3, groups=3)" in message


def test_name_error_suggests_a_close_name(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self, width=4):
                super().__init__()
                self.fc = nn.Linear(4, widht)
    """,
    )
    message = load_error(path)
    assert "name 'widht' is not defined" in message and "did you mean 'width'" in message


def test_error_at_import_time_in_a_sibling_file(tmp_path):
    write(
        tmp_path,
        "layers.py",
        """
        WIDTH = 4
        raise RuntimeError("layers are broken")
    """,
    )
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        from layers import WIDTH
    """,
    )
    message = load_error(path)
    assert "layers.py:2 at module level: RuntimeError: layers are broken" in message


def test_script_code_does_not_run_but_sys_exit_is_explained(tmp_path):
    path = write(
        tmp_path,
        "train.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 2)

        if __name__ == "__main__":
            raise SystemExit("training must not start")
    """,
    )
    assert load_model(str(path)).name == "train.py:Net"
    bad = write(tmp_path, "script.py", "import sys\nsys.exit(3)\n")
    assert "__main__" in load_error(bad)


def test_missing_python_file(tmp_path):
    write(tmp_path, "model.py", "")
    message = load_error(tmp_path / "modle.py")
    assert "no such file" in message and "model.py" in message


# --------------------------------------------------------------------------------------------
# Python files: fresh imports, nothing written, meta device


def test_reload_sees_edits_to_the_file_and_its_siblings(tmp_path):
    write(tmp_path, "widths.py", "WIDTH = 3\n")
    code = (
        HEADER
        + """
        from widths import WIDTH

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, WIDTH + OFFSET)

        OFFSET = {offset}
    """
    )
    path = write(tmp_path, "model.py", code.format(offset=0))
    assert load_model(str(path)).module.fc.out_features == 3
    write(tmp_path, "model.py", code.format(offset=10))
    assert load_model(str(path)).module.fc.out_features == 13
    write(tmp_path, "widths.py", "WIDTH = 5\n")
    assert load_model(str(path)).module.fc.out_features == 15
    assert str(tmp_path) not in sys.path


def test_nothing_is_written_next_to_the_users_file(tmp_path):
    write(tmp_path, "helpers.py", "def width():\n    return 4\n")
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        import helpers

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, helpers.width())
    """,
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    load_model(str(path))
    python_candidates(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "__pycache__").exists()


def test_meta_failure_falls_back_to_cpu(tmp_path):
    path = write(
        tmp_path,
        "model.py",
        HEADER
        + """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                self.scale = float(self.fc.weight.abs().max().item())  # needs real data
    """,
    )
    loaded = load_model(str(path))
    assert first_param(loaded.module).device.type == "cpu"
    assert loaded.notes and "meta" in loaded.notes[0]
    assert first_param(loaded.rebuild("meta")).device.type == "cpu"


def test_relative_imports_inside_a_package(tmp_path):
    pkg = tmp_path / "proj" / "nets"
    pkg.mkdir(parents=True)
    write(tmp_path / "proj", "__init__.py", "")
    write(pkg, "__init__.py", "from .resnet import Net\n")
    write(pkg, "blocks.py", "WIDTH = 6\n")
    path = write(
        pkg,
        "resnet.py",
        HEADER
        + """
        from .blocks import WIDTH

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, WIDTH)
    """,
    )
    loaded = load_model(str(path))
    assert loaded.module.fc.out_features == 6
    assert type(loaded.module).__module__ == "proj.nets.resnet"
    write(pkg, "blocks.py", "WIDTH = 8\n")
    assert load_model(str(path)).module.fc.out_features == 8
    assert not list(tmp_path.rglob("__pycache__"))

    loose = write(tmp_path, "loose.py", "from .blocks import WIDTH\n")
    message = load_error(loose)
    assert "relative import" in message and "__init__.py" in message


def test_user_modules_are_distinct_per_directory(tmp_path):
    for sub, width in (("a", 2), ("b", 3)):
        (tmp_path / sub).mkdir()
        write(
            tmp_path / sub,
            "net.py",
            HEADER
            + f"""
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(4, {width})
        """,
        )
        write(tmp_path / sub, "widths.py", f"EXTRA = {width * 10}\n")
        write(
            tmp_path / sub,
            "model.py",
            HEADER
            + """
            from widths import EXTRA

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(4, EXTRA)
        """,
        )
    assert load_model(str(tmp_path / "a" / "net.py")).module.fc.out_features == 2
    assert load_model(str(tmp_path / "b" / "net.py")).module.fc.out_features == 3
    # a sibling module of the same name in another project is not reused
    assert load_model(str(tmp_path / "a" / "model.py")).module.fc.out_features == 20
    assert load_model(str(tmp_path / "b" / "model.py")).module.fc.out_features == 30


# --------------------------------------------------------------------------------------------
# Archives


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_torchscript_scripted_and_traced(tmp_path):
    scripted = tmp_path / "scripted.pt"
    traced = tmp_path / "traced.model"  # the extension does not matter
    torch.jit.save(torch.jit.script(Tiny()), scripted)
    torch.jit.save(torch.jit.trace(Tiny(), torch.randn(3, 4)), traced)
    for path in (scripted, traced):
        loaded = load_model(str(path))
        assert loaded.kind == "torchscript" and isinstance(loaded.module, torch.jit.ScriptModule)
        assert loaded.name == path.name and loaded.path == path.resolve()
        assert loaded.module(torch.randn(1, 4)).shape == (1, 2)
        assert isinstance(loaded.rebuild("cpu"), torch.jit.ScriptModule)
    assert load_model(str(traced)).input_shape == (3, 4)


def test_exported_program(tmp_path):
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(Tiny(), (torch.randn(5, 4),)), path)
    loaded = load_model(str(path))
    assert loaded.kind == "export" and loaded.module is None
    assert isinstance(loaded.exported, torch.export.ExportedProgram)
    assert loaded.input_shape == (5, 4) and loaded.rebuild is None


def test_state_dict_and_checkpoint_say_weights_only(tmp_path):
    sd = tmp_path / "weights.pth"
    torch.save(Tiny().state_dict(), sd)
    message = load_error(sd)
    assert "weights.pth holds only weights" in message and "2 tensors" in message
    assert "fc.weight 2x4" in message and "model.py:ResNet" in message

    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": Tiny().state_dict(), "best": 0.5}, ckpt)
    message = load_error(ckpt)
    assert "holds only weights" in message and "'state_dict'" in message and "epoch" in message


def test_zoo_weights_are_recognised(tmp_path):
    from resviz.core.sources import zoo

    weights = zoo.build("resnet20", device="cpu").state_dict()
    path = tmp_path / "cifar.pth"
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}}, path)
    assert "try `resviz check resnet20`" in load_error(path)

    ten = zoo.build("resnet20", device="cpu", num_classes=7).state_dict()
    torch.save(ten, path)
    assert "resviz check resnet20 --kwargs '{\"num_classes\": 7}'" in load_error(path)


def _helper_module(tmp_path: Path) -> tuple[str, Path]:
    name = f"resviz_test_tinynet_{uuid.uuid4().hex[:8]}"
    path = write(
        tmp_path,
        f"{name}.py",
        HEADER
        + """
        class TinyNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(x)
    """,
    )
    return name, path


def test_pickled_model_needs_trust(tmp_path, monkeypatch):
    name, helper = _helper_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    archive = tmp_path / "whole.pt"
    torch.save(module.TinyNet(), archive)
    sys.modules.pop(name)
    monkeypatch.undo()

    message = load_error(archive)
    assert "--trust" in message and f"{name}.TinyNet" in message
    assert name not in sys.modules  # reading the message imported nothing

    try:
        loaded = load_model(str(archive), trust=True, device="cpu")
        assert loaded.kind == "pickle" and type(loaded.module).__name__ == "TinyNet"
        assert first_param(loaded.module).device.type == "cpu"
        assert type(loaded.rebuild("meta")).__name__ == "TinyNet"
    finally:
        sys.modules.pop(name, None)

    helper.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "whole.pt"
    archive.rename(moved)
    message = load_error(moved, trust=True)
    assert f"'{name}'" in message and "PYTHONPATH" in message


def test_empty_truncated_random_directory_and_missing(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "empty.pt is empty" in load_error(empty)

    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(Tiny()), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    message = load_error(truncated)
    assert "truncated.pt" in message and "truncated or corrupt" in message

    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(256).replace(b"PK", b"pk").replace(b"\x80", b"\x81"))
    message = load_error(noise)
    assert "noise.pth is not a model file" in message and "TorchScript" in message

    assert f"{tmp_path} is a directory" in load_error(tmp_path)
    message = load_error(tmp_path / "absent.pt")
    assert "no such file" in message and "absent.pt" in message


def test_permission_denied_is_a_load_error(tmp_path, monkeypatch):
    from resviz.core.sources import archives

    path = tmp_path / "locked.pt"
    torch.save({"w": torch.zeros(1)}, path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(archives, "open", refuse, raising=False)  # root can read anything
    message = load_error(path)
    assert "cannot read" in message and "locked.pt" in message and "permission denied" in message


def test_zip_that_is_not_a_torch_archive(tmp_path):
    path = tmp_path / "stuff.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    message = load_error(path)
    assert "stuff.zip is a zip archive but not one written by torch" in message


def test_kwargs_are_refused_for_archives(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Tiny()), path)
    assert "--kwargs cannot be applied" in load_error(path, kwargs={"width": 3})


# --------------------------------------------------------------------------------------------
# Zoo names, spec files, live modules


def test_zoo_model():
    loaded = load_model("resnet18")
    assert loaded.kind == "zoo" and loaded.name == "resnet18" and loaded.path is None
    assert loaded.input_shape == (1, 3, 224, 224)
    assert first_param(loaded.module).device.type == "meta"
    plain = loaded.plain_twin("meta")
    assert isinstance(plain, nn.Module)
    assert sum(p.numel() for p in plain.parameters()) <= sum(p.numel() for p in loaded.module.parameters())
    assert load_model("resnet18", kwargs={"num_classes": 10}).module.fc.out_features == 10


def test_zoo_errors():
    assert "resnet18" in load_error("resnt18")
    assert "num_classes" in load_error("resnet18", kwargs={"width": 3})


def test_spec_file(tmp_path):
    path = write(
        tmp_path,
        "net.toml",
        """
        name = "tiny-cifar"
        input = "3x32x32"
        block = "basic"
        shortcut = "A"

        [stem]
        kind = "cifar"

        [[stages]]
        blocks = 1
        width = 16
    """,
    )
    loaded = load_model(str(path), kwargs={"num_classes": 5})
    assert loaded.kind == "spec" and loaded.name == "tiny-cifar"
    assert loaded.input_shape == (1, 3, 32, 32) and loaded.path == path.resolve()
    assert isinstance(loaded.plain_twin("meta"), nn.Module)
    assert isinstance(loaded.rebuild("cpu"), nn.Module)


def test_spec_errors_propagate(tmp_path):
    from resviz.core.errors import SpecError

    path = write(tmp_path, "bad.json", '{"name": "x", "stages": [{"blocks": "two", "width": 16}]}')
    with pytest.raises(SpecError) as info:
        load_model(str(path))
    assert "bad.json" in str(info.value) and "stages[0].blocks" in str(info.value)


def test_live_module():
    model = Tiny()
    loaded = from_module(model, name="tiny", input_shape="1x4")
    assert loaded.kind == "live" and loaded.module is model and loaded.input_shape == (1, 4)
    copy = loaded.rebuild("meta")
    assert copy is not model and first_param(copy).device.type == "meta"
    assert first_param(model).device.type == "cpu"


NET_BEFORE_ITS_BLOCK = (
    HEADER
    + """
    class Net(nn.Module):  # defined before its block: Python looks Block up when Net is built
        def __init__(self, width=8):
            super().__init__()
            self.body = nn.Sequential(Block(width), Block(width))

        def forward(self, x):
            return self.body(x)

    class Block(nn.Module):
        def __init__(self, c=8):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)
"""
)


def test_the_network_is_offered_first_not_its_block_even_when_the_block_comes_last(tmp_path):
    from resviz.core.sources.pyfile import preferred_candidate

    cands = python_candidates(write(tmp_path, "model.py", NET_BEFORE_ITS_BLOCK))
    assert [(c.name, c.used_by) for c in cands] == [("Net", ()), ("Block", ("Net",))]
    assert cands[preferred_candidate(cands)].name == "Net"  # the app's picker and the CLI agree
    assert load_model(str(tmp_path / "model.py")).name == "model.py:Net"
