"""Small hand-written residual networks used across the engine tests.

They cover the ways people write residual blocks: torchvision style (`out += identity`,
`downsample`), a body/shortcut pair, option-A zero padding, pre-activation with a projection taken
after the shared BN-ReLU, functional adds, and deliberately broken variants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TVBasicBlock(nn.Module):
    """torchvision's BasicBlock, verbatim in structure."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class BasicBlock(TVBasicBlock):
    """TVBasicBlock that makes its own 1x1 conv + BN projection where the stride or the width
    changes, as torchvision's ``_make_layer`` hands it one (layers made in the same order)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__(cin, cout, stride)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class TinyResNet(nn.Module):
    """A 3-stage CIFAR-style ResNet built from TVBasicBlock; `broken=True` drops the projections."""

    def __init__(self, widths=(16, 32, 64), blocks=2, num_classes=10, broken=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, w in enumerate(widths):
            layers = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if (stride != 1 or cin != w) and not broken:
                    down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                layers.append(TVBasicBlock(cin, w, stride, down))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.n_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class OptionABlock(nn.Module):
    """The CIFAR option-A block as commonly written (akamaster's resnet.py): a lambda shortcut."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = planes // 4
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class PreActBlock(nn.Module):
    """Pre-activation block whose projection takes the pre-activated input (He et al. 2016)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.add(out, shortcut)


class Net(nn.Module):
    """A sequence of blocks between a stem and a head, for assembling test networks."""

    def __init__(self, blocks: list[nn.Module], cin=3, width=16, num_classes=10, head_in=None):
        super().__init__()
        self.stem = nn.Conv2d(cin, width, 3, 1, 1)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_in or width, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class PosEmbed(nn.Module):
    """Adds a learned parameter: an add, but not a residual one."""

    def __init__(self, c, h, w):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, c, h, w))
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        x = x + self.pos
        return self.conv(x) + 1.0


class TwoAddBlock(nn.Module):
    """Transformer-style: two residual adds in one module."""

    def __init__(self, c):
        super().__init__()
        self.f = nn.Conv2d(c, c, 3, 1, 1)
        self.g = nn.Conv2d(c, c, 1)

    def forward(self, x):
        x = x + self.f(x)
        x = x + self.g(x)
        return x


class BodyShortcutBlock(nn.Module):
    """`body(x) + shortcut(x)` with any body and shortcut: used for random broken blocks."""

    def __init__(self, body: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def leaf_output_shapes(model: nn.Module, x: torch.Tensor) -> dict[tuple[str, int], tuple]:
    """Eager ground truth: output shape of every leaf-module call, keyed by (name, call index)."""
    seen: dict[str, int] = {}
    out: dict[tuple[str, int], tuple] = {}
    handles = []
    for name, m in model.named_modules():
        if list(m.children()):
            continue

        def hook(mod, inp, output, name=name):
            k = seen.get(name, 0)
            seen[name] = k + 1
            if isinstance(output, torch.Tensor):
                out[(name, k)] = tuple(output.shape)

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return out
