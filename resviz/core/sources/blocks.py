"""ResNet building blocks and a generic ResNet assembled from a :class:`~resviz.core.sources.spec.NetSpec`.

Module and attribute names follow torchvision exactly (``conv1, bn1, relu, maxpool, layer1..,
avgpool, fc``; blocks ``conv1, bn1, conv2, bn2, conv3, bn3, relu, downsample``) so that torchvision
state dicts load into these models and users recognise the names in graphs and error messages.

Every block takes a shortcut *policy* (He et al. 2015 §3.3 options A/B/C, ResNet-D from He et al.
2019 "Bag of Tricks", and two deliberately unusual ones):

* ``"A"``  parameter-free: subsample and zero-pad the new channels (:class:`ZeroPadShortcut`);
* ``"B"``  1x1 conv (+BN) projection only where the shape changes, identity elsewhere;
* ``"C"``  always project;
* ``"D"``  average-pool, then a stride-1 1x1 conv (+BN), where the shape changes;
* ``"identity"`` identity even where the shape changes — the add fails; resviz exists to flag it;
* ``"none"`` the plain twin: no shortcut and no add at all.

Nothing here reads tensor values, so models build under ``with torch.device("meta"):``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..gcpause import gc_paused

if TYPE_CHECKING:
    from .spec import NetSpec

SHORTCUTS = ("A", "B", "C", "D", "identity", "none")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=padding, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: keep every ``stride``-th pixel and append zero channels up to ``out_channels``.

    A module rather than a lambda so that models deepcopy and pickle. Subsampling with
    ``x[:, :, ::s, ::s]`` gives ceil(H/s) pixels, the same as a 3x3 stride-s conv with padding 1.
    Zero-padding cannot remove channels: asked to go from more to fewer, it keeps them all and the
    residual add fails — a broken net built on purpose, like the "identity" policy.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.out_channels > self.in_channels:
            # F.pad's pairs run from the last dim backwards: (W, W, H, H, C_front, C_back).
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(
    policy: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    *,
    norm: bool = True,
    pool_ceil_mode: bool = True,
) -> nn.Module | None:
    """The ``downsample`` module for ``policy``, or None where the shortcut is the identity.

    ``norm=False`` drops the BN after a projection: pre-activation blocks feed the shortcut an
    already normalised input (the reference code of He et al. 2016 has a bare 1x1 conv).
    """
    if policy not in SHORTCUTS:
        raise ValueError(f"unknown shortcut policy {policy!r}; expected one of {', '.join(SHORTCUTS)}")
    changes = stride != 1 or in_channels != out_channels
    if policy in ("identity", "none") or (policy in ("A", "B", "D") and not changes):
        return None
    if policy == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if policy == "D":
        # An Identity keeps the conv at index 1 whatever the stride, as timm's ResNet-D does, so
        # state dict keys do not depend on the stage. ceil_mode=False gives floor(H/2) where the
        # residual branch's padded 3x3 conv gives ceil(H/2): a mismatch at odd sizes, on request.
        pool: nn.Module = (
            nn.AvgPool2d(stride, stride, ceil_mode=pool_ceil_mode, count_include_pad=False)
            if stride > 1
            else nn.Identity()
        )
        layers = [pool, conv1x1(in_channels, out_channels)]
    else:  # B or C
        layers = [conv1x1(in_channels, out_channels, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class _Block(nn.Module):
    """What all blocks share: the shortcut policy and the ``downsample`` attribute."""

    expansion = 1
    preact = False

    def _init_shortcut(self, policy: str, inplanes: int, stride: int, pool_ceil_mode: bool) -> None:
        self.shortcut = policy
        # The add is skipped only in plain twins; "identity" keeps it even when it cannot work.
        self.has_shortcut = policy != "none"
        self.downsample = make_shortcut(
            policy, inplanes, self.out_channels, stride, norm=not self.preact, pool_ceil_mode=pool_ceil_mode
        )

    def zero_init_last(self) -> None:
        """Make the residual branch output zero so the block starts as its shortcut."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}"


class BasicBlock(_Block):
    """Two 3x3 convs, post-activation (He et al. 2015, Fig. 2)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        padding: int = 1,
        pool_ceil_mode: bool = True,
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64 (as torchvision)")
        self.out_channels = planes
        self.conv1 = conv3x3(inplanes, planes, stride, padding=padding)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, padding=padding)
        self.bn2 = nn.BatchNorm2d(planes)
        self._init_shortcut(shortcut, inplanes, stride, pool_ceil_mode)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.has_shortcut:
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity

        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 expand; ResNet v1.5: the stride sits on the 3x3 conv, as torchvision."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        padding: int = 1,
        pool_ceil_mode: bool = True,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.out_channels = planes * self.expansion
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, padding=padding)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, self.out_channels)
        self.bn3 = nn.BatchNorm2d(self.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self._init_shortcut(shortcut, inplanes, stride, pool_ceil_mode)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.has_shortcut:
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity

        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(_Block):
    """BN-ReLU before each 3x3 conv, nothing after the add (He et al. 2016, Fig. 1b).

    When the block projects, the shortcut takes the pre-activated input, as in the paper's
    reference code; an identity shortcut carries the raw input.
    """

    expansion = 1
    preact = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        padding: int = 1,
        pool_ceil_mode: bool = True,
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("PreActBasicBlock only supports groups=1 and base_width=64")
        self.out_channels = planes
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride, padding=padding)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, padding=padding)
        self._init_shortcut(shortcut, inplanes, stride, pool_ceil_mode)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.bn1(x)
        out = self.relu(out)
        if self.has_shortcut and self.downsample is not None:
            identity = self.downsample(out)

        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)

        if self.has_shortcut:
            out += identity
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(_Block):
    """Pre-activation bottleneck (He et al. 2016); stride on the 3x3 conv as in fb.resnet.torch."""

    expansion = 4
    preact = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        padding: int = 1,
        pool_ceil_mode: bool = True,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(inplanes, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, padding=padding)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, self.out_channels)
        self._init_shortcut(shortcut, inplanes, stride, pool_ceil_mode)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.bn1(x)
        out = self.relu(out)
        if self.has_shortcut and self.downsample is not None:
            identity = self.downsample(out)

        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        out = self.relu(out)
        out = self.conv3(out)

        if self.has_shortcut:
            out += identity
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


BLOCKS: dict[str, type[_Block]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact": PreActBasicBlock,
    "preact-bottleneck": PreActBottleneck,
}


_META = torch.device("meta")


def _clone_on_meta(module: nn.Module) -> nn.Module:
    """A structural copy of a freshly built meta module, with new meta parameters and buffers.

    Equivalent to ``copy.deepcopy`` for the plain modules built here (containers copied, so a hook
    registered on one block does not appear on its siblings), without deepcopy's or ``__init__``'s
    per-tensor overhead, which dominates building resnet1202 on meta. Torch-function modes (the
    ``with torch.device(...)`` context) are off meanwhile: every tensor here names its device, and
    the mode would otherwise intercept each ``.shape`` read.
    """
    with torch._C.DisableTorchFunction():
        return _clone(module)


def _clone(module: nn.Module) -> nn.Module:
    new = module.__class__.__new__(module.__class__)
    d = new.__dict__
    for k, v in module.__dict__.items():
        d[k] = v.copy() if isinstance(v, (dict, set, list)) else v
    d["_parameters"] = {
        k: None
        if p is None
        else nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=_META), p.requires_grad)
        for k, p in module._parameters.items()
    }
    d["_buffers"] = {
        k: None if b is None else torch.empty(b.shape, dtype=b.dtype, device=_META)
        for k, b in module._buffers.items()
    }
    d["_modules"] = {k: None if c is None else _clone(c) for k, c in module._modules.items()}
    return new


class ResNet(nn.Module):
    """Stem, stages ``layer1..layerN`` and head, as described by a validated ``NetSpec``.

    Pre-activation nets get a final ``bn_final`` + ReLU after the last stage (the blocks end on a
    bare add) and, by default, a stem without BN-ReLU (each block normalises its own input).
    """

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        with gc_paused():
            self._build(spec)

    def _build(self, spec: NetSpec) -> None:
        stem = spec.stem
        self.conv1 = nn.Conv2d(
            spec.input_shape[1], stem.channels, stem.kernel, stem.stride, stem.kernel // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(stem.channels) if stem.norm else None
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem.pool else None

        inplanes = stem.channels
        on_meta = self.conv1.weight.is_meta
        block_cls: type[_Block] = BasicBlock
        self.stage_names: tuple[str, ...] = tuple(f"layer{i + 1}" for i in range(len(spec.stages)))
        for i, stage in enumerate(spec.stages):
            block_cls = BLOCKS[spec.block_of(i)]
            layers: list[nn.Module] = []
            for j in range(stage.blocks):
                policy = spec.shortcut_of_block(i, j)
                if j >= 2 and on_meta and policy == spec.shortcut_of_block(i, 1):
                    # Blocks after the second of a stage are identical; on meta there are no
                    # values to initialise, so copying the skeleton is ~7x cheaper than __init__.
                    layers.append(_clone_on_meta(layers[1]))
                    continue
                layers.append(
                    block_cls(
                        inplanes,
                        stage.width,
                        stage.stride if j == 0 else 1,
                        shortcut=policy,
                        groups=spec.groups,
                        base_width=spec.width_per_group,
                        padding=stage.padding,
                        pool_ceil_mode=stage.pool_ceil_mode,
                    )
                )
                inplanes = stage.width * block_cls.expansion
            setattr(self, self.stage_names[i], nn.Sequential(*layers))

        self.bn_final = nn.BatchNorm2d(inplanes) if block_cls.preact else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, spec.classes)
        self._init_weights(spec.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's scheme; BatchNorm already starts at weight 1, bias 0. Meta tensors have no
        # values to set, and torch's meta normal_ costs ~1 ms a call (1.2 s for resnet1202).
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, _Block):
                    m.zero_init_last()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.bn1(x)
            x = self.relu(x)
        if self.maxpool is not None:
            x = self.maxpool(x)

        for name in self.stage_names:
            x = getattr(self, name)(x)

        if self.bn_final is not None:
            x = self.bn_final(x)
            x = self.relu(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)
