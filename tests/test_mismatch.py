"""Shortcut mismatches: all of them in one run, explained, and the suggested fix really fixes it."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import resviz
from tests.nets import BodyShortcutBlock, LambdaLayer, Net, TinyResNet
from tests.nets_wild import ArgBlock, ChannelLastBlock, ConvNet, TextLayer, TokenBlock, TokenNet


def body(cin, cout, stride=1, pad=1, k=3):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
    )  # fmt: skip


def apply_fix(model: nn.Module, block: str, fix: str, shortcut_attr: str | None = None) -> None:
    """Paste resviz's suggested fix into a session holding the model, as a user would."""
    assert "self." not in fix.replace("# ", ""), f"the fix needs the class edited: {fix}"
    exec(fix, {"nn": nn, "torch": torch, "model": model})


def test_every_broken_block_is_reported_in_one_run():
    model = TinyResNet(broken=True)  # stage transitions keep the identity shortcut
    report = resviz.analyze(model, (1, 3, 32, 32))
    assert [m.block for m in report.mismatches] == ["layer2.0", "layer3.0"]
    m = report.mismatches[0]
    assert m.residual_shape == (1, 32, 16, 16) and m.shortcut_shape == (1, 16, 32, 32)
    assert "`layer2.0.conv1`" in m.cause and "stride 2" in m.cause and "identity" in m.cause
    assert "32 output channels" in m.cause and "residual 32×16×16 vs shortcut 16×32×32" in m.cause
    assert ("model.layer2[0].downsample = nn.Sequential(nn.Conv2d(16, 32, kernel_size=1, stride=2, "
            "bias=False), nn.BatchNorm2d(32))") in m.fix  # fmt: skip
    assert m.fix_title == "Give `layer2.0` a projection shortcut"
    assert m.fix_where.startswith("`layer2.0.downsample`, tests/nets.py:")
    # tracing went on with the residual branch: later shapes are the intended ones
    assert report.complete and report.output_shapes == [(1, 10)]
    assert report.block("layer3.1").input_shape == (1, 64, 8, 8)
    with pytest.raises(RuntimeError):  # plain PyTorch stops at the first one
        model(torch.randn(1, 3, 32, 32))


def test_suggested_projection_fixes_the_model():
    model = TinyResNet(broken=True)
    report = resviz.analyze(model, (1, 3, 32, 32))
    for m in report.mismatches:
        apply_fix(model, m.block, m.fix, "downsample")
    fixed = resviz.analyze(model, (1, 3, 32, 32))
    assert fixed.ok
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unpadded_conv_is_blamed_and_padding_fix_works():
    model = Net([BodyShortcutBlock(body(16, 16), nn.Identity()),
                 BodyShortcutBlock(body(16, 16, pad=0), nn.Identity())])  # fmt: skip
    report = resviz.analyze(model, (1, 3, 32, 32))
    (m,) = report.mismatches
    assert m.block == "blocks.1"
    assert "`blocks.1.body.0` is a 3×3 conv with padding 0: it shrinks 32 to 30" in m.cause
    assert "model.blocks[1].body[0].padding = (1, 1)" in m.fix
    assert m.culprits == ["blocks.1.body.0"] and m.input_sizes == []
    apply_fix(model, m.block, m.fix, "shortcut")
    assert resviz.analyze(model, (1, 3, 32, 32)).ok


def test_avgpool_shortcut_rounding_breaks_only_at_odd_sizes():
    shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
    model = Net([BodyShortcutBlock(body(16, 32, stride=2), shortcut)], head_in=32)
    assert resviz.analyze(model, (1, 3, 32, 32)).ok
    report = resviz.analyze(model, (1, 3, 7, 7))
    (m,) = report.mismatches
    assert (m.residual_shape, m.shortcut_shape) == ((1, 32, 4, 4), (1, 32, 3, 3))
    assert "rounds 7 down to 3" in m.cause and "rounds up to 4" in m.cause and "odd" in m.cause
    assert "`blocks.0.shortcut.0`" in m.cause and "`blocks.0.body.0`" in m.cause
    assert "ceil_mode=True" in m.fix
    assert m.input_sizes and all(s % 2 == 0 for s in m.input_sizes)
    apply_fix(model, m.block, m.fix, "shortcut")
    assert resviz.analyze(model, (1, 3, 7, 7)).ok


def test_wrong_projection_channels_are_blamed_on_the_projection():
    shortcut = nn.Sequential(nn.Conv2d(16, 24, 1, 2, bias=False), nn.BatchNorm2d(24))
    model = Net([BodyShortcutBlock(body(16, 32, stride=2), shortcut)], head_in=32)
    report = resviz.analyze(model, (1, 3, 16, 16))
    (m,) = report.mismatches
    assert "projection `blocks.0.shortcut.0` outputs 24 channels" in m.cause
    assert m.culprits == ["blocks.0.shortcut.0"]
    apply_fix(model, m.block, m.fix, "shortcut")
    assert resviz.analyze(model, (1, 3, 16, 16)).ok


def test_projection_with_wrong_stride():
    shortcut = nn.Sequential(nn.Conv2d(16, 32, 1, 1, bias=False), nn.BatchNorm2d(32))
    model = Net([BodyShortcutBlock(body(16, 32, stride=2), shortcut)], head_in=32)
    report = resviz.analyze(model, (1, 3, 16, 16))
    (m,) = report.mismatches
    assert "stride 2" in m.cause and "model.blocks[0].shortcut[0].stride = (2, 2)" in m.fix
    assert m.fix_title == "Set `blocks.0.shortcut.0`'s stride to 2"
    apply_fix(model, m.block, m.fix, "shortcut")
    assert resviz.analyze(model, (1, 3, 16, 16)).ok


def test_broadcasting_add_is_flagged_though_pytorch_runs_it():
    class Gate(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Conv2d(c, c, 1)

        def forward(self, x):
            return x + self.fc(self.pool(x))

    model = Net([Gate(16)])
    model(torch.randn(1, 3, 8, 8))  # runs silently in PyTorch
    report = resviz.analyze(model, (1, 3, 8, 8))
    (m,) = report.mismatches
    assert m.broadcastable and m.residual_shape == (1, 16, 1, 1)
    assert "`blocks.0.pool`" in m.cause and "broadcasts" in m.cause
    assert "x * gate" in m.fix


def test_other_shape_errors_name_the_module_and_suggest_sizes():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 2, 1)
            self.fc = nn.Linear(8 * 16 * 16, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    report = resviz.analyze(Fixed(), (1, 3, 64, 64))
    (e,) = report.errors
    assert e.module == "fc" and "expects 2048 input features but got 8192" in e.message
    assert report.suggested_sizes == [32] and "32" in e.suggestion
    assert report.complete  # tracing continued past the Linear


def test_channel_mismatch_in_a_conv_keeps_going():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(16, 4, 3), nn.Conv2d(4, 4, 3))
    report = resviz.analyze(model, (1, 3, 16, 16))
    assert [e.module for e in report.errors] == ["1"]
    assert report.complete and report.output_shapes == [(1, 4, 10, 10)]


# ----------------------------------------------------------------- property-based


@st.composite
def random_net(draw):
    n = draw(st.integers(1, 4))
    size = draw(st.integers(6, 40))
    c = draw(st.sampled_from([4, 8]))
    blocks = []
    for _ in range(n):
        cout = draw(st.sampled_from([4, 8, 12]))
        stride = draw(st.sampled_from([1, 1, 2]))
        k = draw(st.sampled_from([1, 3, 5]))
        pad = draw(st.sampled_from([k // 2, k // 2, 0]))
        kind = draw(st.sampled_from(["identity", "project", "project_bad", "pool", "zeropad"]))
        if kind == "identity":
            sc = nn.Identity()
        elif kind == "project":
            sc = nn.Sequential(nn.Conv2d(c, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        elif kind == "project_bad":
            sc = nn.Sequential(nn.Conv2d(c, draw(st.sampled_from([4, 8, 12])), 1,
                                         draw(st.sampled_from([1, 2])), bias=False))  # fmt: skip
        elif kind == "pool":
            ceil = draw(st.booleans())
            sc = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=ceil), nn.Conv2d(c, cout, 1))
        else:
            extra = max(cout - c, 0)
            sc = LambdaLayer(lambda x, s=stride, e=extra: nn.functional.pad(
                x[:, :, ::s, ::s], (0, 0, 0, 0, e // 2, e - e // 2)))  # fmt: skip
        blocks.append(BodyShortcutBlock(body(c, cout, stride, pad, k), sc))
        c = cout
    return Net(blocks, width=blocks[0].body[0].in_channels, head_in=c), size


@settings(max_examples=int(__import__("os").environ.get("RESVIZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_net())
def test_reported_mismatches_are_exactly_the_blocks_whose_paths_disagree(case):
    model, size = case
    model.eval()
    x = torch.randn(1, 3, size, size)
    broken = {}
    with torch.no_grad():
        try:
            h = model.stem(x)
            for i, block in enumerate(model.blocks):
                r, s = block.body(h), block.shortcut(h)
                if r.shape != s.shape:
                    broken[f"blocks.{i}"] = (tuple(r.shape), tuple(s.shape))
                try:
                    h = torch.relu(r + s)
                except RuntimeError:
                    h = torch.relu(r)  # resviz carries on with the residual branch
        except RuntimeError:
            assume(False)  # a body too small for its kernel: not a shortcut question
    report = resviz.analyze(model, (1, 3, size, size), suggest_sizes=False)
    found = {m.block: (m.residual_shape, m.shortcut_shape) for m in report.mismatches}
    assert found == broken
    assert all(m.cause and m.fix for m in report.mismatches)
    # each suggested fix, pasted into the model, mends its own block
    for m in report.mismatches:
        if m.broadcastable:
            continue
        fixed = copy.deepcopy(model)
        apply_fix(fixed, m.block, m.fix, "shortcut")
        after = resviz.analyze(fixed, (1, 3, size, size), suggest_sizes=False)
        assert m.block not in {a.block for a in after.mismatches}, (m.cause, m.fix)


# ----------------------------------------------------------------- broken residual branches,
# skips passed as arguments, token and channel-last layouts


@st.composite
def net_with_broken_layers(draw):
    """A net that is right by its own widths, with one or two layers given a wrong width: the last
    layer of a residual branch, or the projection a block hands to the module that adds it."""
    family = draw(st.sampled_from(["conv", "token"]))
    n = draw(st.integers(2, 4))
    broken = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=2))
    expected = {}
    if family == "token":
        d = draw(st.sampled_from([8, 12]))
        blocks = []
        for i in range(n):
            kind = draw(st.sampled_from(["mlp", "output"]))
            bad = draw(st.sampled_from([d - 4, d + 4])) if i in broken else None
            if kind == "mlp":
                blocks.append(TokenBlock(d, bad))
                expected[f"blocks.{i}"] = ("residual", f"blocks.{i}.fc2")
            else:
                blocks.append(TextLayer(d, bad))
                expected[f"blocks.{i}"] = ("residual", f"blocks.{i}.output.dense")
        return TokenNet(blocks, d), {k: v for k, v in expected.items() if int(k[7:]) in broken}, 16
    c = draw(st.sampled_from([4, 8]))
    width, blocks = c, []
    for i in range(n):
        kind = draw(st.sampled_from(["arg", "arg", "channel_last"]))
        if kind == "channel_last":
            bad = draw(st.sampled_from([c + 4, c * 2])) if i in broken else None
            blocks.append(ChannelLastBlock(c, bad))
            expected[f"blocks.{i}"] = ("residual", f"blocks.{i}.pwconv2")
            continue
        cout = draw(st.sampled_from([c, c, 2 * c]))
        stride = draw(st.sampled_from([1, 2]))
        wrong = draw(st.sampled_from([cout + 4, cout * 2]))
        path = draw(st.sampled_from(["residual", "shortcut"]))
        if i in broken and path == "shortcut":
            blocks.append(ArgBlock(c, cout, stride, proj_out=wrong))
            expected[f"blocks.{i}.inner"] = ("shortcut", f"blocks.{i}.proj")
        else:
            blocks.append(ArgBlock(c, cout, stride, body_out=wrong if i in broken else None))
            expected[f"blocks.{i}.inner"] = ("residual", f"blocks.{i}.inner.conv2")
        if i not in broken:
            del expected[f"blocks.{i}.inner"]
        c = cout
    expected = {k: v for k, v in expected.items() if k.startswith(tuple(f"blocks.{i}" for i in broken))}
    return ConvNet(blocks, width, c), expected, draw(st.sampled_from([8, 12, 16]))


@settings(max_examples=int(__import__("os").environ.get("RESVIZ_EXAMPLES", 30)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net_with_broken_layers())
def test_the_broken_path_is_blamed_and_every_fix_mends_the_eager_model(case):
    model, expected, size = case
    model.eval()
    x = torch.randn(1, 3, size, size)
    with pytest.raises(RuntimeError), torch.no_grad():
        model(x)  # eager stops at the first broken block
    report = resviz.analyze(model, (1, 3, size, size), suggest_sizes=False)
    found = {m.block: (m.broken_path, m.culprits[0]) for m in report.mismatches}
    assert found == expected, [m.cause for m in report.mismatches]
    assert report.complete and not report.errors  # nothing after a broken block is blamed
    for m in report.mismatches:
        apply_fix(model, m.block, m.fix)
    model.eval()  # a pasted fix brings new BatchNorms in training mode: 1×1 maps at batch 1 need eval
    with torch.no_grad():
        assert model(x).shape == (1, 3)  # every fix pasted: the eager model runs
    assert resviz.analyze(model, (1, 3, size, size), suggest_sizes=False).ok
