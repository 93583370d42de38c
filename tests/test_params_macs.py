"""Every parameter and MAC where it belongs (issue 8 §4): per-block counts equal the block's own
``parameters()``, attention projections are counted, and layers are classified by type."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resviz
from resviz.core.analysis.layer_table import layer_rows
from resviz.render.view import build_view


class LayerScaleBlock(nn.Module):
    """ConvNeXt-style: depthwise conv, channels-last LayerNorm, MLP, a layer-scale gamma."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class BatchNormAct2d(nn.BatchNorm2d):
    """A fused norm + activation as model libraries write them: a BatchNorm2d with children."""

    def __init__(self, c):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                         self.eps)  # fmt: skip
        return self.act(self.drop(x))


class StdConv2d(nn.Conv2d):
    """A weight-standardised conv: a Conv2d subclass with its own forward."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)  # fmt: skip
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Proj(nn.Conv2d):
    """A shortcut projection whose class name does not start with "Conv"."""


class FusedBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = StdConv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = BatchNormAct2d(cout)
        self.conv2 = StdConv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout)
        self.shortcut = Proj(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        return self.bn2(self.conv2(self.bn1(self.conv1(x)))) + self.shortcut(x)


class RelPosAttention(nn.Module):
    """Windowed attention with a relative-position bias table read by the block itself."""

    def __init__(self, dim, heads=2, window=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        n = window * window
        self.register_buffer("index", torch.randint(0, (2 * window - 1) ** 2, (n, n)))

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        a = (q @ k.transpose(-2, -1) + bias).softmax(-1)
        return x + self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, dim=32, depth=2, heads=4, patch=8):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 17, dim))
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.blocks(x)[:, 0])


def _convnext():
    return nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerScaleBlock(16), LayerScaleBlock(16))


def _fused():
    return nn.Sequential(FusedBlock(3, 8, 1), FusedBlock(8, 16, 2), FusedBlock(16, 16, 1))


def _relpos():
    return nn.Sequential(RelPosAttention(16), RelPosAttention(16))


MODELS = {
    "layer-scale": (_convnext, (2, 3, 32, 32)),
    "fused norm+act, weight-standardised conv": (_fused, (1, 3, 16, 16)),
    "relative-position table": (_relpos, (2, 16, 16)),
    "vit (MultiheadAttention)": (ViT, (2, 3, 32, 32)),
}


@pytest.mark.parametrize("name", MODELS)
def test_each_block_counts_exactly_its_own_parameters(name):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build()
    report = resviz.analyze(model, shape)
    assert report.ok and report.blocks
    modules = dict(model.named_modules())
    for b in report.blocks:
        assert b.params == sum(p.numel() for p in modules[b.name].parameters()), b.name
    # the summary's module rows agree with the modules, and nothing is counted twice
    for row in layer_rows(report):
        if not row.leaf:
            assert row.params == sum(p.numel() for p in modules[row.name].parameters()), row.name
    # and so do the folded block nodes of the picture
    for node in build_view(report).nodes.values():
        if node.id.startswith("c"):
            assert node.params == sum(p.numel() for p in modules[node.name].parameters()), node.name
    counted = sum(o.params for o in report.ops) + sum(c.params for c in report.calls)
    assert counted == report.total_params == sum(p.numel() for p in model.parameters())


def test_multihead_attention_projections_are_counted():
    torch.manual_seed(0)
    dim, tokens, batch = 32, 17, 2
    model = ViT(dim=dim)
    report = resviz.analyze(model, (batch, 3, 32, 32))
    attn = report.op_named("blocks.0.attn")
    assert attn is not None and attn.params == sum(p.numel() for p in model.blocks[0].attn.parameters())
    # every projection weight (q, k, v and out_proj, with biases) once per token, as a Linear
    assert attn.macs == 4 * (dim * dim + dim) * tokens * batch
    linear = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.Linear)
                 and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear))  # fmt: skip
    head = model.head.weight.numel() + model.head.bias.numel()
    expected = (
        (linear - head) * tokens * batch + head * batch       # MLPs on tokens, head on the CLS
        + 2 * 4 * (dim * dim + dim) * tokens * batch          # both attentions
        + (model.embed.weight.numel() + dim) * 16 * batch     # patch embedding: 4x4 positions
        + 2 * 2 * 2 * dim * batch                             # 4 LayerNorms: weights x batch
    )  # fmt: skip
    assert report.macs == expected


class ConvNextLayerNorm(nn.Module):
    """A channels-first LayerNorm whose class name contains "Conv"."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias)
        return x.permute(0, 3, 1, 2)


def test_layers_are_classified_by_type_not_name():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ConvNextLayerNorm(8), FusedBlock(8, 16, 2))
    report = resviz.analyze(model, (2, 3, 16, 16))
    norm = report.op_named("1")
    assert norm.attrs["layer"] != "conv" and norm.macs == 16 * 2  # weights x batch, not x H x W
    proj = report.op_named("2.shortcut")
    assert proj.attrs["layer"] == "conv" and proj.macs == 8 * 16 * 2 * 8 * 8
    assert report.block("2").shortcut == "projection"
    assert report.op_named("2.conv1").macs == 8 * 16 * 9 * 2 * 8 * 8


def test_linear_on_token_and_channels_last_inputs_counts_every_position():
    lin = nn.Linear(16, 32)
    for shape in [(2, 16), (2, 5, 16), (2, 4, 4, 16)]:
        report = resviz.analyze(nn.Sequential(lin), shape)
        positions = math.prod(shape[:-1])
        assert report.macs == (16 * 32 + 32) * positions


def test_fused_and_parametrized_layers_count_the_macs_of_their_plain_twins():
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)

    def net(fused: bool):
        conv = nn.Conv2d(3, 8, 3, padding=1)
        return nn.Sequential(weight_norm(conv) if fused else conv,
                             BatchNormAct2d(8) if fused else nn.Sequential(nn.BatchNorm2d(8), nn.ReLU()))  # fmt: skip

    shape = (2, 3, 8, 8)
    fused, plain = resviz.analyze(net(True), shape), resviz.analyze(net(False), shape)
    assert fused.ok and plain.ok
    assert fused.macs == plain.macs == (8 * 3 * 9 + 8) * 2 * 8 * 8 + 2 * 8 * 2
    assert fused.op_named("0").macs == plain.op_named("0").macs
    assert [r.macs for r in layer_rows(fused) if r.name == "1"] == [2 * 8 * 2]
