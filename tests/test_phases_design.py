"""The phases of the spec editor, the code generator and the one-click fixes, each on its own
(issue 11)."""

import pytest
import torch
from torch import nn

from resviz.core.design.codegen import _forward_lines, _stage_args, _stem_layers
from resviz.core.design.spec_editor import _locate, _slot, _toml_text
from resviz.core.errors import ResvizError
from resviz.core.sources import zoo
from resviz.core.sources.spec import StemSpec


def test_a_path_part_names_a_container_and_key():
    data = {"stem": {"kind": "cifar"}, "stages": [{"blocks": 2, "block_shortcuts": {"1": "B"}}]}
    assert _slot(data, "stages[0]", last=False, create=False) == (data["stages"], 0)
    assert _slot(data, "stages[3]", last=False, create=False) is None
    assert _slot(data["stages"][0]["block_shortcuts"], "1", last=True, create=False) == (
        data["stages"][0]["block_shortcuts"],
        "1",
    )
    assert _slot(data, "head", last=True, create=False) == (data, "head")  # a last key may be new
    assert _slot(data, "head", last=False, create=False) is None
    assert _slot([], "stem", last=True, create=False) is None
    assert _slot(data, "not a name", last=True, create=False) is None


def test_a_missing_table_on_the_way_is_made_only_when_asked():
    data: dict = {}
    assert _locate(data, "stem.kind", create=False) == (None, None)
    assert data == {}
    parent, key = _locate(data, "stem.kind", create=True)
    assert (parent, key) == ({}, "kind") and data == {"stem": {}}
    stages = {"stages": [{"block_shortcuts": {"0": "A"}}]}
    assert _locate(stages, "stages[0].block_shortcuts.0", create=False) == (
        stages["stages"][0]["block_shortcuts"],
        "0",
    )
    assert _locate(stages, "stages[0].width", create=False) == (stages["stages"][0], "width")
    assert _locate(stages, "", create=False) == (None, None)


def test_stage_arguments_name_only_what_differs_from_the_defaults():
    spec = zoo.get("resnet18").spec
    assert _stage_args(spec, 1, 64) == [
        "BasicBlock",
        "64",
        "128",
        "blocks=2",
        "stride=2",
        f"shortcut={spec.shortcut_of(1)!r}",
    ]
    grouped = _stage_args(zoo.get("resnext50_32x4d").spec, 0, 64)
    assert grouped[0] == "Bottleneck" and grouped[-2:] == ["groups=32", "base_width=4"]
    import dataclasses

    odd = dataclasses.replace(spec.stages[0], padding=0, pool_ceil_mode=False)
    odd_spec = dataclasses.replace(spec, stages=(odd, *spec.stages[1:]))
    assert _stage_args(odd_spec, 0, 64)[-2:] == ["padding=0", "pool_ceil_mode=False"]


def test_the_stem_and_forward_follow_the_spec():
    spec = zoo.get("resnet18").spec
    stem = _stem_layers(spec)
    assert stem[0].startswith("        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3")
    assert any("self.maxpool" in line for line in stem) and any("self.bn1" in line for line in stem)
    forward = _forward_lines(spec, preact_end=False)
    assert [line.strip() for line in forward[-3:]] == [
        "x = self.avgpool(x)",
        "x = torch.flatten(x, 1)",
        "return self.fc(x)",
    ]
    assert sum("self.layer" in line for line in forward) == len(spec.stages)
    assert not any("bn_final" in line for line in forward)
    assert any("bn_final" in line for line in _forward_lines(spec, preact_end=True))
    import dataclasses

    bare = dataclasses.replace(spec, stem=StemSpec.preset("cifar", norm=False))
    assert not any("bn1" in line for line in _stem_layers(bare) + _forward_lines(bare, False))


def test_toml_that_tomlkit_cannot_keep_is_written_fresh_and_other_errors_show(monkeypatch):
    assert _toml_text({"name": "net"}, "name = [unclosed") == 'name = "net"\n'
    assert _toml_text({"name": "net"}, '# mine\nname = "old"\n') == '# mine\nname = "net"\n'
    import tomlkit

    def broken(text):
        raise KeyError("a bug, not a TOML problem")

    monkeypatch.setattr(tomlkit, "parse", broken)
    with pytest.raises(KeyError):
        _toml_text({"name": "net"}, 'name = "old"\n')


def test_a_block_that_cannot_run_on_meta_tensors_says_why():
    import torch.fx as fx

    from resviz.core.fixes.python_patch import _operand_shapes

    class Block(nn.Module):
        def forward(self, x):
            return x + x.sum().item()

    with pytest.raises(ResvizError, match=r"could not run the block to find its add \(\w+Error: .+\)"):
        _operand_shapes(fx.symbolic_trace(Block()), (1, 3))
    assert torch.is_grad_enabled()
