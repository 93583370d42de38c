"""Named ResNets from the papers and torchvision, each defined as a :class:`NetSpec`.

* ImageNet (torchvision's layouts, shortcut B; parameter counts equal torchvision's exactly):
  resnet18..152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, wide_resnet50_2/101_2.
* CIFAR-10 (He et al. 2015 §4.2: 3 stages of 16/32/64 planes, n blocks each, depth 6n+2, option A
  shortcuts): resnet20/32/44/56/110/1202, 269,722 .. 19,421,274 parameters. The often-quoted
  272,474 .. 19,424,026 count 1x1 conv + BN projections at the two stage transitions (option B,
  2,752 parameters more); the paper's 0.27M .. 19.4M fit both.
* Pre-activation (He et al. 2016): preact_resnet18..152 (ImageNet), preact_resnet20/56/110 (CIFAR,
  basic, option A), preact_resnet164/1001 (CIFAR, bottleneck, depth 9n+2, projections).
* The plain twin of every net, ``plain_<name>``, and the paper's short names of the plain baselines
  (``plain18`` .. ``plain152``, ``plain20`` .. ``plain1202``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LoadError
from . import spec as specmod
from .spec import NetSpec, StageSpec, StemSpec


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str  # 'imagenet' | 'cifar'
    kind: str  # 'resnet' | 'preact' | 'plain' | 'resnext' | 'wide'
    input_shape: tuple[int, ...]
    spec: NetSpec
    description: str


_IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def _imagenet(name: str, block: str, layers: tuple[int, ...], **kw) -> NetSpec:
    stages = tuple(StageSpec(n, w, s) for n, w, s in zip(layers, (64, 128, 256, 512), (1, 2, 2, 2)))
    stem = StemSpec.preset("imagenet", norm=not specmod.is_preact(block))
    return NetSpec(name, (1, 3, 224, 224), stages, classes=1000, block=block, stem=stem, **kw)


def _cifar(name: str, block: str, n: int, shortcut: str) -> NetSpec:
    stages = tuple(StageSpec(n, w, s) for w, s in ((16, 1), (32, 2), (64, 2)))
    stem = StemSpec.preset("cifar", norm=not specmod.is_preact(block))
    return NetSpec(name, (1, 3, 32, 32), stages, classes=10, block=block, shortcut=shortcut, stem=stem)


def _residual_entries() -> list[ZooEntry]:
    out: list[ZooEntry] = []

    def add(spec: NetSpec, family: str, kind: str, description: str) -> None:
        spec = dataclasses.replace(spec, description=description)
        out.append(ZooEntry(spec.name, family, kind, spec.input_shape, spec, description))

    for d, (block, layers) in _IMAGENET_LAYERS.items():
        add(
            _imagenet(f"resnet{d}", block, layers),
            "imagenet", "resnet", f"ResNet-{d}, {block}, ImageNet, He et al. 2015",
        )  # fmt: skip
    for d, g, w in ((50, 32, 4), (101, 32, 8), (101, 64, 4)):
        add(
            _imagenet(f"resnext{d}_{g}x{w}d", "bottleneck", _IMAGENET_LAYERS[d][1], groups=g, width_per_group=w),
            "imagenet", "resnext", f"ResNeXt-{d} {g}x{w}d, grouped bottleneck, ImageNet, Xie et al. 2017",
        )  # fmt: skip
    for d in (50, 101):
        add(
            _imagenet(f"wide_resnet{d}_2", "bottleneck", _IMAGENET_LAYERS[d][1], width_per_group=128),
            "imagenet", "wide", f"Wide ResNet-{d}-2, bottleneck with 2x inner width, ImageNet, Zagoruyko & Komodakis 2016",
        )  # fmt: skip
    for d in _CIFAR_DEPTHS:
        add(
            _cifar(f"resnet{d}", "basic", (d - 2) // 6, "A"),
            "cifar", "resnet", f"ResNet-{d}, basic, CIFAR-10, option A shortcuts, He et al. 2015",
        )  # fmt: skip
    for d, (block, layers) in _IMAGENET_LAYERS.items():
        pblock = "preact" if block == "basic" else "preact-bottleneck"
        add(
            _imagenet(f"preact_resnet{d}", pblock, layers),
            "imagenet", "preact", f"Pre-activation ResNet-{d}, {block}, ImageNet, He et al. 2016",
        )  # fmt: skip
    # CIFAR pre-activation nets: basic ones keep option A, to compare with resnet20..110 as the
    # paper does; the bottleneck ones widen 16 -> 64 channels in stage 1 and project, as the
    # paper's reference code (a bare 1x1 conv on the pre-activated input).
    for d in (20, 56, 110):
        add(
            _cifar(f"preact_resnet{d}", "preact", (d - 2) // 6, "A"),
            "cifar", "preact", f"Pre-activation ResNet-{d}, basic, CIFAR-10, option A, He et al. 2016",
        )  # fmt: skip
    for d in (164, 1001):
        add(
            _cifar(f"preact_resnet{d}", "preact-bottleneck", (d - 2) // 9, "B"),
            "cifar", "preact", f"Pre-activation ResNet-{d}, bottleneck, CIFAR-10, He et al. 2016",
        )  # fmt: skip
    return out


def _plain_entries(residual: list[ZooEntry]) -> list[ZooEntry]:
    out = []
    for e in residual:
        description = f"plain twin of {e.name}: the same layers without shortcuts or projections"
        twin = dataclasses.replace(e.spec.plain(), description=description)
        out.append(ZooEntry(twin.name, e.family, "plain", e.input_shape, twin, description))
    # The paper's plain baselines by their short names (He et al. 2015, Fig. 4 and Fig. 6).
    for d in (*_IMAGENET_LAYERS, *_CIFAR_DEPTHS):
        family = "imagenet" if d in _IMAGENET_LAYERS else "cifar"
        description = (
            f"Plain-{d}, ResNet-{d} without shortcuts, {'ImageNet' if family == 'imagenet' else 'CIFAR-10'}, "
            f"He et al. 2015 (same as plain_resnet{d})"
        )
        twin = dataclasses.replace(
            _by_name(out, f"plain_resnet{d}").spec, name=f"plain{d}", description=description
        )
        out.append(ZooEntry(twin.name, family, "plain", twin.input_shape, twin, description))
    return out


def _by_name(items: list[ZooEntry], name: str) -> ZooEntry:
    return next(e for e in items if e.name == name)


@functools.cache
def _registry() -> dict[str, ZooEntry]:
    residual = _residual_entries()
    return {e.name: e for e in (*residual, *_plain_entries(residual))}


def entries(*, family: str | None = None, kind: str | None = None) -> list[ZooEntry]:
    """All models, optionally only one ``family`` ('imagenet', 'cifar') or ``kind``."""
    return [
        e
        for e in _registry().values()
        if (family is None or e.family == family) and (kind is None or e.kind == kind)
    ]


def get(name: str) -> ZooEntry:
    """The entry called ``name`` (case and dashes forgiven); LoadError naming close matches."""
    reg = _registry()
    key = name.strip().lower()
    # "ResNet-50" and "wide-resnet50-2" are how people write them; the dash means '' or '_'.
    for candidate in (key, key.replace("-", "_"), key.replace("-", "")):
        if candidate in reg:
            return reg[candidate]
    key = key.replace("-", "_")
    close = difflib.get_close_matches(key, list(reg), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise LoadError(f"unknown model {name!r}.{hint} Run `resviz zoo` to list all {len(reg)} models.")


def build(
    name: str, *, device: str | torch.device | None = "meta", num_classes: int | None = None
) -> nn.Module:
    """Build the zoo model ``name`` on ``device`` (meta by default: no memory, no init cost)."""
    spec = get(name).spec
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise LoadError(f"num_classes must be a positive integer; got {num_classes!r}")
        spec = dataclasses.replace(spec, classes=num_classes)
    return specmod.build(spec, device=device)


@functools.cache
def _param_count(name: str) -> int:
    return sum(p.numel() for p in build(name, device="meta").parameters())


def param_count(name: str) -> int:
    """Number of parameters of ``name`` (with its default classes), computed once per name."""
    return _param_count(get(name).name)
