"""A residual net built from a model library's own layers, as timm, HF transformers and their kind
write them, next to its plain-PyTorch twin: same shapes, same parameters.

The library layers are what resviz has no shape rule for: subclasses of nn layers with their own
forward (a channels-first LayerNorm2d, a weight-standardised conv), fused norm + activation layers
with children, a layer-scale, an activation module calling the functional op, and an attention
layer calling ``F.scaled_dot_product_attention``. (timm is not a dependency: they are written here.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StdConv2d(nn.Conv2d):
    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)  # fmt: skip
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class BatchNormAct2d(nn.BatchNorm2d):
    def __init__(self, c, act=True):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = GELUTanh() if act else nn.Identity()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum or 0.0, self.eps)  # fmt: skip
        return self.act(self.drop(x))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GELUTanh(nn.Module):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class LayerScale2d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), 1e-5))

    def forward(self, x):
        return x.mul(self.gamma.reshape(1, -1, 1, 1))


class Attention2d(nn.Module):
    def __init__(self, c, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    def __init__(self, cin, cout, stride, library: bool):
        super().__init__()
        conv = StdConv2d if library else nn.Conv2d
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = BatchNormAct2d(cout) if library else nn.Sequential(nn.BatchNorm2d(cout), nn.GELU("tanh"))
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, act=False) if library else nn.BatchNorm2d(cout)
        self.scale = LayerScale2d(cout) if library else nn.Identity()
        self.shortcut = (nn.Sequential(conv(cin, cout, 1, stride, bias=False),
                                       BatchNormAct2d(cout, act=False) if library else nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())  # fmt: skip
        self.act = GELUTanh() if library else nn.GELU("tanh")

    def forward(self, x):
        y = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        if isinstance(self.scale, LayerScale2d):
            y = self.scale(y)
        return self.act(y + self.shortcut(x))


class AttnBlock(nn.Module):
    def __init__(self, c, library: bool):
        super().__init__()
        self.norm = LayerNorm2d(c) if library else nn.GroupNorm(1, c)
        self.attn = Attention2d(c)

    def forward(self, x):
        return x + self.attn(self.norm(x))


def library_net(library: bool = True, depth=(2, 2, 2, 2), width=32) -> nn.Module:
    """A 4-stage residual net with an attention stage; ``library=False``: its plain twin."""
    conv = StdConv2d if library else nn.Conv2d
    layers: list[nn.Module] = [conv(3, width, 3, 2, 1, bias=False),
                               BatchNormAct2d(width) if library else nn.BatchNorm2d(width)]  # fmt: skip
    cin = width
    for i, n in enumerate(depth):
        cout = width * 2**i
        stage = [Block(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1, library) for j in range(n)]
        if i == len(depth) - 1:
            stage.append(AttnBlock(cout, library))
        layers.append(nn.Sequential(*stage))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)
