"""Which path of a mismatched add is broken: the residual branch is blamed when the network around
the block says so, in any layout, and the fix pasted into the model mends it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import resviz
from resviz.core.analysis.pipeline import analyze_any
from resviz.core.sources import zoo


def paste(model, fix):
    exec(fix, {"nn": nn, "torch": torch, "model": model})


def test_a_bottleneck_with_a_wrong_last_conv_is_one_mismatch_at_that_conv():
    m = zoo.build("resnet50", device="meta")
    m.layer1[1].conv3 = nn.Conv2d(64, 128, 1, bias=False, device="meta")
    m.layer1[1].bn3 = nn.BatchNorm2d(128, device="meta")
    report = resviz.analyze(m, (1, 3, 64, 64), suggest_sizes=False)
    (mm,) = report.mismatches  # not layer1.2 as well
    assert mm.block == "layer1.1" and mm.broken_path == "residual"
    assert "`layer1.1.conv3` has out_channels 128 but 256 are expected" in mm.cause
    assert "`layer1.2.conv1`" in mm.cause  # the evidence: what the next block takes
    assert mm.culprits == ["layer1.1.conv3", "layer1.1.bn3"]
    assert report.complete and not report.errors
    assert "model.layer1[1].conv3 = nn.Conv2d(64, 256, kernel_size=1, bias=False)" in mm.fix
    assert "blocks.py:" in mm.fix_where
    paste(m, mm.fix)
    assert resviz.analyze(m, (1, 3, 64, 64), suggest_sizes=False).ok


class LayerScaleBlock(nn.Module):
    """ConvNeXt: channel-last MLP, layer-scale gamma, permuted back, plus the input."""

    def __init__(self, dim, out=None):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, out or dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def test_a_channel_last_linear_with_the_wrong_width_is_blamed_not_a_permute():
    model = nn.Sequential(nn.Conv2d(3, 8, 4, 4), LayerScaleBlock(8), LayerScaleBlock(8, out=12),
                          LayerScaleBlock(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))  # fmt: skip
    report = resviz.analyze(model, (1, 3, 16, 16), suggest_sizes=False)
    (mm,) = report.mismatches
    assert mm.block == "2" and mm.culprits == ["2.pwconv2"] and "permute" not in mm.cause
    assert "`2.pwconv2` has out_features 12 but 8 are expected" in mm.cause
    assert "`2.mul`" in mm.cause and not report.errors and report.complete  # gamma: same cause
    paste(model, mm.fix)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)


class Attention(nn.Module):
    """timm's ViT attention: one qkv Linear, dot-product attention, a projection (written out:
    the first meta call of F.scaled_dot_product_attention in a process costs seconds)."""

    def __init__(self, d, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    def __init__(self, d, out=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, out or d)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, d=8, outs=(None, None, None, None)):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.blocks = nn.Sequential(*[ViTBlock(d, o) for o in outs])
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(x).mean(1))


def test_token_blocks_are_diagnosed_by_out_features_and_a_second_broken_block_is_found():
    model = ViT(outs=(None, 12, None, 4))
    report = resviz.analyze(model, (1, 3, 16, 16), suggest_sizes=False)
    assert [(m.block, m.culprits[0]) for m in report.mismatches] == [
        ("blocks.1", "blocks.1.fc2"), ("blocks.3", "blocks.3.fc2")]  # fmt: skip
    assert all("strides" not in m.cause and "Conv1d" not in m.fix for m in report.mismatches)
    assert report.complete and not report.errors
    for m in report.mismatches:
        paste(model, m.fix)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_a_token_block_that_widens_without_a_projection_gets_a_linear_shortcut():
    class Widen(nn.Module):
        def __init__(self, d, out):
            super().__init__()
            self.fc = nn.Linear(d, out)

        def forward(self, x):
            return x + self.fc(x)

    model = nn.Sequential(Widen(8, 12), nn.LayerNorm(12), nn.Linear(12, 3))  # 12 is intended
    report = resviz.analyze(model, (1, 5, 8), suggest_sizes=False)
    (mm,) = report.mismatches
    assert mm.broken_path == "shortcut" and "`0.fc` has out_features 12" in mm.cause
    # an inline skip: the module to add in __init__ and the line to change in forward
    assert "self.shortcut = nn.Linear(8, 12, bias=False)" in mm.fix
    assert "return self.shortcut(x) + self.fc(x)" in mm.fix
    assert "test_blame.py:" in mm.fix_where and "Widen.__init__" in mm.fix_where


def test_torchscript_front_end_blames_the_same_layer():
    from tests.nets import TVBasicBlock

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), TVBasicBlock(8, 8), TVBasicBlock(8, 8),
                      TVBasicBlock(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))  # fmt: skip
    m[2].conv2, m[2].bn2 = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
    eager = resviz.analyze(m, (1, 3, 16, 16), suggest_sizes=False)
    scripted = analyze_any(torch.jit.script(m), (1, 3, 16, 16), suggest_sizes=False)
    for report in (eager, scripted):
        (mm,) = report.mismatches
        assert mm.block == "2" and mm.culprits[0] == "2.conv2", mm.cause
        assert mm.broken_path == "residual" and report.complete
        assert mm.culprits == ["2.conv2", "2.bn2"]
    # no Python class behind a scripted layer: the fix is said, for the code it was made from
    assert "give `2.conv2` out_channels=8" in scripted.mismatches[0].fix
    assert "model[2].conv2 = nn.Conv2d(8, 8, kernel_size=3, padding=1, bias=False)" in eager.mismatches[0].fix


def test_a_spec_nets_fix_title_and_place_are_the_spec_edit():
    from resviz.core.fixes.spec_edits import attach_spec_fixes
    from resviz.core.sources.spec import build, load_spec

    spec = load_spec("assets/broken_identity.toml")
    report = resviz.analyze(build(spec, device="meta"), spec.input_shape, suggest_sizes=False)
    attach_spec_fixes(spec, report)
    m = report.mismatches[0]
    assert m.fix.startswith("in the spec:") and "model.layer2[0].downsample" in m.code_fix
    assert m.fix_title == "Edit the spec: stages[1].shortcut"
