"""Layers written by model libraries (no shape rule here) trace fast and exactly (issue 8 §6, §4):
their ops take rules one by one, meta runs are remembered per (layer, hyper-parameters, input
shapes), and nothing remembered is ever wrong for another layer or a changed one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resviz
from resviz.core.tracing import meta_cache as metacache
from tests.nets import leaf_output_shapes


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)  # fmt: skip


class GELUTanh(nn.Module):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class PixelUnshuffleBy(nn.Module):
    """Output shape depends on a plain attribute: the cache key must include it."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return F.pixel_unshuffle(x, self.factor)


class ScaledWith(nn.Module):
    """Holds an arbitrary object: not cacheable, still right."""

    class Config:
        def __init__(self, repeat):
            self.repeat = repeat

    def __init__(self, repeat):
        super().__init__()
        self.cfg = self.Config(repeat)

    def forward(self, x):
        return torch.cat([x] * self.cfg.repeat, 1)


class InplaceScale(nn.Module):
    def forward(self, x):
        return x.mul_(0.5)


class Projection(nn.Module):
    """A hand-written 1x1 projection: no Conv in its type, a conv in what it does."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight, None, self.stride)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1)
        self.norm = LayerNorm2d(cout)
        self.act = GELUTanh()
        self.scale = InplaceScale()
        self.proj = Projection(cin, cout, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return self.scale(self.act(self.norm(self.conv(x)))) + self.proj(x)


def _net():
    return nn.Sequential(
        Block(3, 8, 1), Block(8, 8, 1), Block(8, 16, 2), Block(16, 16, 1),
        PixelUnshuffleBy(2), nn.Conv2d(64, 8, 1), ScaledWith(3), PixelUnshuffleBy(1),
    )


@pytest.mark.parametrize("size", [16, 20, 36])
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_library_layers_trace_exactly_like_eager(size, cache):
    torch.manual_seed(0)
    model = _net().eval()
    shape = (2, 3, size, size)
    if cache == "cold":
        metacache.clear()
    else:
        resviz.analyze(model, shape)
    report = resviz.analyze(model, shape)
    assert report.ok, report.errors
    traced = {(o.name, o.call_index): report.values[o.outputs[0]].shape
              for o in report.ops if o.kind == "module" and o.outputs}  # fmt: skip
    truth = leaf_output_shapes(model, torch.randn(shape))
    assert {k: v for k, v in traced.items() if k in truth} == truth
    # a hand-written projection is a conv by what it does: MACs and shortcut kind follow
    proj = report.op_named("2.proj")
    assert proj.attrs["layer"] == "conv" and proj.macs == 8 * 16 * 2 * ((size + 1) // 2) ** 2
    assert report.block("2").shortcut == "projection"


def test_a_changed_hyperparameter_is_never_answered_from_the_cache():
    layer = PixelUnshuffleBy(2)
    assert resviz.analyze(layer, (1, 4, 8, 8)).output_shapes == [(1, 16, 4, 4)]
    layer.factor = 4
    assert resviz.analyze(layer, (1, 4, 8, 8)).output_shapes == [(1, 64, 2, 2)]
    net = nn.Sequential(ScaledWith(2), ScaledWith(3))
    assert resviz.analyze(net, (1, 1, 2, 2)).output_shapes == [(1, 6, 2, 2)]
    net[1].cfg.repeat = 1
    assert resviz.analyze(net, (1, 1, 2, 2)).output_shapes == [(1, 2, 2, 2)]


def test_a_layer_that_fails_inside_reports_what_is_wrong():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), LayerNorm2d(6))
    for _ in range(2):  # and the second time, with whatever the first run remembered
        report = resviz.analyze(model, (1, 3, 8, 8))
        (e,) = report.errors
        assert e.module == "1" and e.fatal and "normalized_shape" in e.message.replace(" ", "_")


class MixedDtypes(nn.Module):
    def forward(self, x):
        i = torch.ones_like(x, dtype=torch.int64)
        return i / 2, i * 2.5, i * 3, (x - 1) * x, (i > 0) & (i < 5)


def test_ops_inside_a_layer_keep_pytorchs_dtypes():
    report = resviz.analyze(MixedDtypes(), (2, 4))
    eager = MixedDtypes()(torch.zeros(2, 4))
    assert report.ok
    outputs = next(o for o in report.ops if o.kind == "output").inputs
    assert [report.values[v].dtype for v in outputs] == [
        str(t.dtype).removeprefix("torch.") for t in eager
    ]
