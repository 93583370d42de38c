"""The tracer: shapes equal eager PyTorch's, residual adds found and classified, model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resviz
from tests.nets import (
    Net,
    OptionABlock,
    PosEmbed,
    PreActBlock,
    TinyResNet,
    TVBasicBlock,
    TwoAddBlock,
    leaf_output_shapes,
)

MODELS = {
    "tiny_resnet": (lambda: TinyResNet(), (2, 3, 32, 32)),
    "option_a": (lambda: Net([OptionABlock(16, 16), OptionABlock(16, 32, 2), OptionABlock(32, 32)],
                             head_in=32), (1, 3, 32, 32)),  # fmt: skip
    "preact": (lambda: Net([PreActBlock(16, 16), PreActBlock(16, 32, 2)], head_in=32), (1, 3, 20, 20)),
    "two_adds": (lambda: Net([TwoAddBlock(16)]), (1, 3, 9, 9)),
    "odd_size": (lambda: TinyResNet(), (1, 3, 33, 31)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_leaf_shape_equals_eager_pytorch(name):
    build, shape = MODELS[name]
    model = build()
    report = resviz.analyze(model, shape)
    assert report.ok, report.to_dict()["errors"]
    truth = leaf_output_shapes(model, torch.randn(shape))
    traced = {(op.name, op.call_index): report.values[op.outputs[0]].shape
              for op in report.ops if op.kind == "module"}  # fmt: skip
    assert traced == truth
    with torch.no_grad():
        assert report.output_shapes == [tuple(model(torch.randn(shape)).shape)]


def test_residual_adds_and_shortcut_kinds():
    report = resviz.analyze(TinyResNet(), (1, 3, 32, 32))
    kinds = {b.name: b.shortcut for b in report.blocks}
    assert kinds == {
        "layer1.0": "identity", "layer1.1": "identity",
        "layer2.0": "projection", "layer2.1": "identity",
        "layer3.0": "projection", "layer3.1": "identity",
    }  # fmt: skip
    assert [s.name for s in report.stages] == ["layer1", "layer2", "layer3"]
    assert report.stages[1].output_shape == (1, 32, 16, 16)
    add = report.residual_adds[2]
    assert [report.ops[i].name for i in add.shortcut_ops] == ["layer2.0.downsample.0",
                                                              "layer2.0.downsample.1"]  # fmt: skip
    assert "Conv2d 1×1/2 16→32" in add.detail


def test_option_a_lambda_shortcut_is_zero_pad():
    model = Net([OptionABlock(16, 16), OptionABlock(16, 32, 2)], head_in=32)
    report = resviz.analyze(model, (1, 3, 32, 32))
    assert [b.shortcut for b in report.blocks] == ["identity", "zero-pad"]


def test_preact_projection_forks_after_shared_activation():
    model = Net([PreActBlock(16, 32, 2)], head_in=32)
    report = resviz.analyze(model, (1, 3, 16, 16))
    (add,) = report.residual_adds
    assert add.kind == "projection"
    fork_op = report.ops[report.values[add.fork].producer]
    assert fork_op.type == "relu"  # the shortcut reads the pre-activated input
    assert [report.ops[i].name for i in add.shortcut_ops] == ["blocks.0.shortcut.0"]


def test_adds_of_parameters_and_constants_are_not_residual():
    model = Net([PosEmbed(16, 8, 8)])
    report = resviz.analyze(model, (1, 3, 8, 8))
    assert report.residual_adds == []
    assert report.ok


def test_two_residual_adds_in_one_block():
    report = resviz.analyze(Net([TwoAddBlock(16)]), (1, 3, 8, 8))
    (block,) = report.blocks
    assert len(block.adds) == 2
    assert block.shortcut == "identity"


def test_operand_order_does_not_decide_the_shortcut():
    class Swapped(TVBasicBlock):
        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(x + out)

    report = resviz.analyze(Net([Swapped(16, 16)]), (1, 3, 8, 8))
    (add,) = report.residual_adds
    assert add.kind == "identity"
    assert report.ops[report.values[add.residual].producer].name == "blocks.0.bn2"


def test_user_model_is_not_changed():
    model = TinyResNet().train()
    calls = []
    handle = model.layer1.register_forward_hook(lambda *a: calls.append(1))
    before = copy.deepcopy(model.state_dict())
    hooks_before = {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks))
                    for n, m in model.named_modules()}  # fmt: skip
    resviz.analyze(model, (1, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert calls == []  # the user's hook was not run on meta tensors
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu" and torch.equal(v, before[k]), k
    assert {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks))
            for n, m in model.named_modules()} == hooks_before  # fmt: skip
    handle.remove()


def test_analysis_of_a_model_on_meta_device_allocates_nothing():
    with torch.device("meta"):
        model = TinyResNet()
    report = resviz.analyze(model, (1, 3, 32, 32))
    assert report.ok and report.total_params == sum(p.numel() for p in TinyResNet().parameters())


def test_macs_equal_torchinfo():
    torchinfo = pytest.importorskip("torchinfo")
    model = TinyResNet()
    report = resviz.analyze(model, (2, 3, 32, 32))
    info = torchinfo.summary(model, (2, 3, 32, 32), verbose=0)
    assert report.total_params == info.total_params
    assert abs(report.macs - info.total_mult_adds) <= 0.01 * info.total_mult_adds


def test_functional_ops_are_nodes_and_graph_is_networkx():
    report = resviz.analyze(TinyResNet(), (1, 3, 32, 32))
    g = report.graph
    flat = report.op_named("flatten")
    assert flat is not None and flat.kind == "function"
    assert g.number_of_nodes() == len(report.ops)
    skips = [d for _, _, d in g.edges(data=True) if d.get("skip")]
    assert len(skips) == len(report.residual_adds)
    assert {d["shortcut"] for d in skips} == {"identity", "projection"}


def test_unknown_leaf_modules_run_on_meta():
    class Scale(nn.Module):  # no shape rule: executed on meta tensors
        def __init__(self):
            super().__init__()
            self.g = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return F.interpolate(x, scale_factor=0.5) * self.g

    model = Net([Scale()])
    report = resviz.analyze(model, (1, 3, 16, 16))
    op = report.op_named("blocks.0")
    assert report.values[op.outputs[0]].shape == (1, 16, 8, 8)
    assert op.params == 1


def test_cat_and_chunk_in_forward_code():
    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(16, 8, 3, 1, 1)
            self.b = nn.Conv2d(16, 8, 1)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], 1)
            left, right = torch.chunk(y, 2, dim=1)
            return x + torch.cat((right, left), dim=1)

    model = Net([Split()])
    report = resviz.analyze(model, (1, 3, 8, 8))
    assert report.ok, report.errors
    assert [b.shortcut for b in report.blocks] == ["identity"]
    assert report.output_shapes == [tuple(model(torch.randn(1, 3, 8, 8)).shape)]
