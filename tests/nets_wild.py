"""Small versions of residual nets written the way model libraries write them.

Each keeps the structure that matters to resviz (where the skip is made, how it reaches its add,
which layer sets which width) at a few channels, so eager runs in the tests stay fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------- skips passed as arguments


class Inner(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, sc):
        return self.conv(x) + sc


class Outer(nn.Module):
    """The skip is made by the caller and handed to the module that adds it."""

    def __init__(self, c=8):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)
        self.inner = Inner(c)

    def forward(self, x):
        return self.inner(x, self.proj(x))


class SelfOutput(nn.Module):
    """A transformer's ``output(hidden, input_tensor)``: dense, then add the layer's input."""

    def __init__(self, d_in, d):
        super().__init__()
        self.dense = nn.Linear(d_in, d)
        self.LayerNorm = nn.LayerNorm(d)

    def forward(self, hidden, input_tensor):
        return self.LayerNorm(self.dense(hidden) + input_tensor)


class TextLayer(nn.Module):
    def __init__(self, d, out=None):
        super().__init__()
        self.intermediate = nn.Linear(d, 2 * d)
        self.output = SelfOutput(2 * d, d)
        if out:  # the dense layer makes the wrong width; its LayerNorm is still right
            self.output.dense = nn.Linear(2 * d, out)

    def forward(self, x):
        return self.output(F.gelu(self.intermediate(x)), x)


class TextEncoder(nn.Module):
    """Token-shaped (batch, tokens, features) layers whose skips arrive as arguments."""

    def __init__(self, d=16, n=3, bad=()):
        super().__init__()
        self.layer = nn.ModuleList([TextLayer(d, 24 if i in bad else None) for i in range(n)])
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        for layer in self.layer:
            x = layer(x)
        return self.head(x)


class TreeBasic(nn.Module):
    """DLA's BasicBlock: its skip is its own input unless the tree hands it one."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)

    def forward(self, x, residual=None):
        if residual is None:
            residual = x
        out = self.conv2(F.relu(self.conv1(x)))
        out += residual
        return F.relu(out)


class TreeRoot(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, *xs):
        return F.relu(self.conv(torch.cat(xs, 1)))


class Tree(nn.Module):
    """A one-level DLA tree: the projection of the tree's input is tree1's skip."""

    def __init__(self, cin, cout, stride=1, project_out=None):
        super().__init__()
        self.tree1 = TreeBasic(cin, cout, stride)
        self.tree2 = TreeBasic(cout, cout)
        self.root = TreeRoot(2 * cout, cout)
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else None
        self.project = None
        if cin != cout or project_out:
            self.project = nn.Conv2d(cin, project_out or cout, 1, bias=False)

    def forward(self, x):
        bottom = self.downsample(x) if self.downsample is not None else x
        residual = self.project(bottom) if self.project is not None else bottom
        x1 = self.tree1(x, residual)
        x2 = self.tree2(x1)
        return self.root(x2, x1)


class TreeNet(nn.Module):
    def __init__(self, widths=(8, 16, 16), strides=(2, 1), project_out=None):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.level1 = Tree(widths[0], widths[1], strides[0], project_out=project_out)
        self.level2 = Tree(widths[1], widths[2], strides[1])

    def forward(self, x):
        return self.level2(self.level1(self.stem(x)))


# ----------------------------------------------------------------- adds that are not the skip


class Bottle2neck(nn.Module):
    """Res2Net: hierarchical adds between the splits of one conv's output, then the skip."""

    def __init__(self, cin, planes, scale=4, project=False):
        super().__init__()
        width = planes // scale
        self.width, self.scale = width, scale
        self.conv1 = nn.Conv2d(cin, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1, bias=False)
                                    for _ in range(scale - 1)])  # fmt: skip
        self.conv3 = nn.Conv2d(width * scale, planes * 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.downsample = None
        if project:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 2, 1, bias=False),
                                            nn.BatchNorm2d(planes * 2))  # fmt: skip

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        outs = []
        sp = spx[0]
        for i in range(self.scale - 1):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = self.relu(self.convs[i](sp))
            outs.append(sp)
        outs.append(spx[-1])
        out = self.conv3(torch.cat(outs, 1))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


class Res2Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Bottle2neck(8, 8, project=True), Bottle2neck(16, 8))

    def forward(self, x):
        return self.layer1(self.stem(x))


# ----------------------------------------------------------------- for the property tests


class ArgInner(nn.Module):
    """Adds a skip it is handed: ``relu(bn(conv(relu(bn(conv(x))))) + sc)``."""

    def __init__(self, cin, cout, stride=1, body_out=None):
        super().__init__()
        out = body_out or cout
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)

    def forward(self, x, sc):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + sc)


class ArgBlock(nn.Module):
    """The block makes the shortcut and hands it to ``inner``, which adds it."""

    def __init__(self, cin, cout, stride=1, proj_out=None, body_out=None):
        super().__init__()
        self.proj = None
        if cin != cout or stride != 1 or proj_out:
            self.proj = nn.Conv2d(cin, proj_out or cout, 1, stride, bias=False)
        self.inner = ArgInner(cin, cout, stride, body_out)

    def forward(self, x):
        return self.inner(x, self.proj(x) if self.proj is not None else x)


class ChannelLastBlock(nn.Module):
    """ConvNeXt: depthwise conv, then channel-last LayerNorm and MLP, permuted back, plus x."""

    def __init__(self, c, out=None):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pwconv1 = nn.Linear(c, 2 * c)
        self.pwconv2 = nn.Linear(2 * c, out or c)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNet(nn.Module):
    def __init__(self, blocks, width, head_in, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(head_in, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class TokenBlock(nn.Module):
    """A pre-norm transformer MLP block on (batch, tokens, features): ``x + mlp(norm(x))``."""

    def __init__(self, d, out=None):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, out or d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class TokenNet(nn.Module):
    """Patches to tokens, token blocks, mean over tokens, a head."""

    def __init__(self, blocks, d, classes=3):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(x).mean(1))
