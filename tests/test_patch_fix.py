"""Apply fix for models from Python: a verified patched copy, the user's model never touched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from resviz.core.analysis.pipeline import analyze
from resviz.core.errors import ResvizError
from resviz.core.fixes.python_patch import build_expr, parse_fix, patch_for


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1, pad=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        out += x  # an identity shortcut written inline: no module to replace
        return torch.relu(out)


class ProjBlock(Block):
    def __init__(self, cin, cout, stride):
        super().__init__(cin, cout, stride)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.downsample(x))


class Net(nn.Module):
    """Three kinds of broken block: unpadded convs, an identity on a stride-2 block, a projection
    with the wrong stride."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Block(8, 8), Block(8, 8, pad=0))
        self.layer2 = nn.Sequential(Block(8, 16, 2), ProjBlock(16, 32, 2))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


def test_each_mismatch_gets_a_verified_patched_copy_and_the_model_is_untouched():
    torch.manual_seed(0)
    net = Net()
    before = snapshot(net)
    report = analyze(net, (1, 3, 32, 32))
    assert [m.block for m in report.mismatches] == ["layer1.1", "layer2.0", "layer2.1"]
    kinds = {}
    for m in report.mismatches:
        result = patch_for(net, report, m)
        assert m.block not in {x.block for x in result.report.mismatches}
        assert result.code == m.fix and "model." in result.code or "self." in result.code
        kinds[m.block] = [p.kind for p in result.patches]
    assert kinds == {"layer1.1": ["set", "set"], "layer2.0": ["insert"], "layer2.1": ["set"]}
    after = snapshot(net)
    assert after[1] == before[1] and all(torch.equal(before[0][k], v) for k, v in after[0].items())
    assert net.layer1[1].conv1.padding == (0, 0) and net.layer2[1].downsample[0].stride == (1, 1)


def test_fixing_one_block_after_another_gives_a_model_that_trains():
    torch.manual_seed(0)
    model = Net()
    for _ in range(3):
        report = analyze(model, (1, 3, 32, 32))
        if not report.mismatches:
            break
        model = patch_for(model, report, report.mismatches[0]).model
    assert analyze(model, (1, 3, 32, 32)).ok
    out = model(torch.randn(4, 3, 32, 32))  # really runs: the shapes add up
    out.sum().backward()
    inserted = model.layer2[0].resviz_shortcut_fix
    assert inserted[0].weight.grad is not None and inserted[0].stride == (2, 2)
    assert type(model.layer2[0]).__name__ == "Block"  # the rewritten block keeps its class name


def test_a_copy_of_a_live_module_keeps_its_weights():
    torch.manual_seed(0)
    net = Net()
    report = analyze(net, (1, 3, 32, 32))
    patched = patch_for(net, report, report.mismatches[2]).model
    assert torch.equal(patched.layer1[0].conv1.weight, net.layer1[0].conv1.weight)
    assert patched.layer1[0].conv1.weight is not net.layer1[0].conv1.weight


def test_only_nn_calls_with_numbers_are_built():
    assert (
        parse_fix("nn.Sequential(nn.Conv2d(3, 4, kernel_size=1, stride=2, bias=False))", "b")[0].kind
        == "insert"
    )
    assert parse_fix("layer1.0.conv1: padding=1", "layer1.0")[0].attrs == {"padding": 1}
    for bad in ("nn.Sequential(__import__('os').system('true'))", "os.system('true')",
                "x: nn.Conv2d(eval('1'), 2, 3)", "remove the squeeze — or multiply instead", "nn.Foo(1)"):  # fmt: skip
        assert parse_fix(bad, "b") is None
    with pytest.raises(ResvizError):
        build_expr("nn.Sequential(open('x'))")
    assert isinstance(build_expr("nn.BatchNorm2d(4)"), nn.BatchNorm2d)


def test_advice_is_not_applied():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x).mean((2, 3), keepdim=True)  # broadcasts: advice only

    class N(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Gate()

        def forward(self, x):
            return self.block(x)

    net = N()
    report = analyze(net, (1, 4, 8, 8))
    m = report.mismatches[0]
    if parse_fix("\n".join(m.fix_edits), m.block) is None:
        with pytest.raises(ResvizError, match="advice"):
            patch_for(copy.deepcopy(net), report, m)
