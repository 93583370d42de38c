"""The model zoo and the building blocks: parameter counts, shapes, names, shortcuts, plain twins."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import time

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from resviz.core.errors import LoadError
from resviz.core.sources import spec as specmod
from resviz.core.sources import zoo
from resviz.core.sources.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ZeroPadShortcut,
    make_shortcut,
)
from resviz.core.sources.spec import spec_to_dict

# torchvision.models.<name>() parameter counts (torchvision cannot be installed here).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}

# He et al. 2015, Table 6: 0.27M / 0.46M / 0.66M / 0.85M / 1.7M / 19.4M with option A shortcuts.
CIFAR_OPTION_A = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}
# The often-quoted 272,474 / ... / 19,424,026 are the same nets with option B: the two stage
# transitions then hold 1x1 conv + BN projections, 16*32 + 2*32 + 32*64 + 2*64 = 2,752 parameters.
CIFAR_OPTION_B = {
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet44": 661_338,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet1202": 19_424_026,
}


def residual_entries():
    return [e for e in zoo.entries() if e.kind != "plain"]


# A small CIFAR net with bottleneck blocks, for checks that need a CPU forward of one.
SMALL_BOTTLENECK = {
    "name": "small-bottleneck", "block": "bottleneck", "shortcut": "B", "stem": {"kind": "cifar"},
    "stages": [{"blocks": 2, "width": 16}, {"blocks": 2, "width": 32, "stride": 2}],
}  # fmt: skip


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stage_shapes(model: nn.Module, input_shape) -> dict[str, tuple[int, ...]]:
    """Output shape of conv1, maxpool, each stage and fc, recorded by forward hooks."""
    shapes: dict[str, tuple[int, ...]] = {}
    names = ["conv1", "maxpool", *model.stage_names, "fc"]
    handles = []
    for name in names:
        mod = getattr(model, name)
        if mod is not None:
            handles.append(
                mod.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
            )
    with torch.no_grad():
        model.eval()(torch.randn(input_shape))
    for h in handles:
        h.remove()
    return shapes


class CountAdds(TorchFunctionMode):
    """Counts tensor additions (`a + b`, `a += b`, torch.add) made during a forward."""

    ADDS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__iadd__,
            torch.Tensor.__radd__}  # fmt: skip

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.ADDS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_adds(model: nn.Module, input_shape) -> int:
    """Adds made by a forward on meta tensors: the same Python code runs, with no arithmetic."""
    # eval(): in training mode BatchNorm adds 1 to num_batches_tracked, which is not a residual add.
    with torch.no_grad(), CountAdds() as mode:
        model.eval()(torch.empty(input_shape, device="meta"))
    return mode.count


# ------------------------------------------------------------------------------ parameter counts


# Whole tables compared at once: a failure shows every model that is off, side by side.


def test_imagenet_param_counts_equal_torchvision():
    assert {name: zoo.param_count(name) for name in TORCHVISION_PARAMS} == TORCHVISION_PARAMS


def test_cifar_param_counts_match_the_paper_with_option_a():
    assert {name: zoo.param_count(name) for name in CIFAR_OPTION_A} == CIFAR_OPTION_A
    assert {zoo.get(name).spec.shortcut for name in CIFAR_OPTION_A} == {"A"}


def test_cifar_counts_with_projections_are_option_b():
    counts = {}
    for name in CIFAR_OPTION_B:
        spec = dataclasses.replace(zoo.get(name).spec, shortcut="B")
        counts[name] = n_params(specmod.build(spec, device="meta"))
    assert counts == CIFAR_OPTION_B


def test_preact_cifar_counts_are_near_the_paper():
    # He et al. 2016, Table 2: ResNet-164 1.7M, ResNet-1001 10.2M.
    assert zoo.param_count("preact_resnet164") == pytest.approx(1.7e6, rel=0.01)
    assert zoo.param_count("preact_resnet1001") == pytest.approx(10.2e6, rel=0.02)


def test_depth_is_the_number_in_the_name():
    for entry in zoo.entries():
        depth = int(re.search(r"(?:resnet|resnext|plain)(\d+)", entry.name).group(1))
        assert entry.spec.depth == depth, entry.name


# ------------------------------------------------------------------------------- meta and speed


def test_build_on_meta_allocates_nothing():
    for name in ["resnet152", "resnext101_32x8d", "resnet1202", "preact_resnet1001"]:
        model = zoo.build(name)
        tensors = [*model.parameters(), *model.buffers()]
        assert tensors and all(t.is_meta for t in tensors), name


def test_build_under_meta_device_context():
    with torch.device("meta"):
        model = zoo.build("resnet56", device=None)
    assert all(p.is_meta for p in model.parameters())


def test_resnet1202_builds_fast_on_meta():
    zoo.build("resnet20")  # warm-up: first use of each torch op
    best = min(_timed(lambda: zoo.build("resnet1202")) for _ in range(3))
    # ~0.2 s here; torch's own init on meta (normal_ is ~1 ms a call) would take over 1 s.
    assert best < 1.0, f"building resnet1202 on meta took {best:.2f} s"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_meta_model_has_the_same_structure_as_a_cpu_model():
    meta, cpu = zoo.build("resnet20"), zoo.build("resnet20", device="cpu")
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in cpu.named_parameters()
    ]
    assert [(n, b.shape, b.dtype) for n, b in meta.named_buffers()] == [
        (n, b.shape, b.dtype) for n, b in cpu.named_buffers()
    ]
    # The meta model materialises and takes the CPU model's weights.
    real = meta.to_empty(device="cpu")
    real.load_state_dict(cpu.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(real.eval()(x), cpu.eval()(x))


def test_repeated_blocks_do_not_share_state():
    model = zoo.build("resnet56")
    a, b = model.layer1[3], model.layer1[4]
    assert a.conv1.weight is not b.conv1.weight
    handle = a.register_forward_hook(lambda *args: None)
    assert not b._forward_hooks
    handle.remove()
    assert len({id(p) for p in model.parameters()}) == len(list(model.named_parameters()))


# ------------------------------------------------------------------------------- names and init


def test_resnet50_state_dict_keys_are_torchvisions():
    keys = list(zoo.build("resnet50").state_dict())
    assert len(keys) == 320  # len(torchvision.models.resnet50().state_dict())
    for key in ["conv1.weight", "bn1.running_mean", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.num_batches_tracked", "layer4.2.bn3.bias", "fc.weight", "fc.bias"]:  # fmt: skip
        assert key in keys
    children = [n for n, _ in zoo.build("resnet50").named_children()]
    assert children == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]


def test_resnet18_state_dict_has_torchvisions_122_entries():
    sd = zoo.build("resnet18").state_dict()
    assert len(sd) == 122
    assert "layer2.0.downsample.1.running_var" in sd and "layer1.0.downsample.0.weight" not in sd


def test_kaiming_init_and_zero_init_residual():
    model = zoo.build("resnet18", device="cpu")
    w = model.layer4[1].conv2.weight  # fan_out = 512 * 9
    assert w.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.05)
    assert torch.all(model.layer1[0].bn2.weight == 1)

    model = specmod.build(specmod.parse_spec({**SMALL_BOTTLENECK, "zero_init_residual": True}), device="cpu")
    assert all(torch.all(b.bn3.weight == 0) and torch.all(b.bn1.weight == 1) for b in model.layer2)
    assert torch.all(zoo.build("preact_resnet20", device="cpu").layer1[0].conv2.weight != 0)


# ----------------------------------------------------------------------------------- shapes (CPU)


def test_resnet18_stage_shapes():
    shapes = stage_shapes(zoo.build("resnet18", device="cpu"), (1, 3, 224, 224))
    assert shapes == {
        "conv1": (1, 64, 112, 112),
        "maxpool": (1, 64, 56, 56),
        "layer1": (1, 64, 56, 56),
        "layer2": (1, 128, 28, 28),
        "layer3": (1, 256, 14, 14),
        "layer4": (1, 512, 7, 7),
        "fc": (1, 1000),
    }


def test_resnet50_stage_shapes():
    shapes = stage_shapes(zoo.build("resnet50", device="cpu"), (1, 3, 224, 224))
    assert shapes["conv1"] == (1, 64, 112, 112)
    assert [shapes[f"layer{i}"] for i in range(1, 5)] == [
        (1, 256, 56, 56),
        (1, 512, 28, 28),
        (1, 1024, 14, 14),
        (1, 2048, 7, 7),
    ]
    assert shapes["fc"] == (1, 1000)


@pytest.mark.parametrize("name", ["resnet20", "plain20", "preact_resnet20", "plain_preact_resnet20"])
def test_cifar_basic_stage_shapes(name):
    model = zoo.build(name, device="cpu")
    assert model.maxpool is None
    assert stage_shapes(model, (1, 3, 32, 32)) == {
        "conv1": (1, 16, 32, 32),
        "layer1": (1, 16, 32, 32),
        "layer2": (1, 32, 16, 16),
        "layer3": (1, 64, 8, 8),
        "fc": (1, 10),
    }


def test_cifar_preact_bottleneck_stage_shapes():
    # preact_resnet164's layout with 2 blocks a stage instead of 18: same shapes, 1/9 of the work.
    spec = zoo.get("preact_resnet164").spec
    spec = dataclasses.replace(spec, stages=tuple(dataclasses.replace(s, blocks=2) for s in spec.stages))
    shapes = stage_shapes(specmod.build(spec, device="cpu"), (1, 3, 32, 32))
    assert [shapes[f"layer{i}"] for i in (1, 2, 3)] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]


def test_every_entry_declares_its_input_and_classes():
    for e in zoo.entries():
        assert e.input_shape == e.spec.input_shape
        assert e.input_shape == ((1, 3, 224, 224) if e.family == "imagenet" else (1, 3, 32, 32))
        assert e.spec.classes == (1000 if e.family == "imagenet" else 10)


def test_meta_forward_gives_logits():
    # resviz traces on meta tensors, so the models' forward must run there.
    assert zoo.build("plain20")(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 10)


# ------------------------------------------------------------------------------------ plain twins


def test_every_residual_net_has_a_plain_twin_and_the_short_aliases_exist():
    names = {e.name for e in zoo.entries()}
    for e in residual_entries():
        assert f"plain_{e.name}" in names
    for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110, 1202):
        alias, twin = zoo.get(f"plain{d}"), zoo.get(f"plain_resnet{d}")
        assert spec_to_dict(alias.spec) | {"name": "", "description": ""} == spec_to_dict(twin.spec) | {
            "name": "",
            "description": "",
        }


@pytest.mark.parametrize(
    "name, shape, adds",
    [("resnet20", (1, 3, 32, 32), 9), ("preact_resnet20", (1, 3, 32, 32), 9), ("resnet18", (1, 3, 64, 64), 8),
     (SMALL_BOTTLENECK, (1, 3, 32, 32), 4)],
    ids=["resnet20", "preact_resnet20", "resnet18", "bottleneck"],
)  # fmt: skip
def test_plain_twins_make_no_add(name, shape, adds):
    if isinstance(name, dict):
        spec = specmod.parse_spec(name)
        net, twin = specmod.build(spec, device="meta"), specmod.build(spec, plain=True, device="meta")
    else:
        net, twin = zoo.build(name), zoo.build(f"plain_{name}")
    assert count_adds(net, shape) == adds
    assert count_adds(twin, shape) == 0


def test_plain_twin_is_the_net_minus_its_projections():
    # One net of each structure: deeper ones differ only in how many times a block repeats.
    for entry in (e for e in residual_entries() if e.spec.depth <= 56 or e.name == "preact_resnet164"):
        net, twin = zoo.build(entry.name), zoo.build(f"plain_{entry.name}")
        projection = sum(p.numel() for n, p in net.named_parameters() if ".downsample." in n)
        assert n_params(net) - n_params(twin) == projection, entry.name
        assert n_params(twin) == zoo.param_count(f"plain_{entry.name}"), entry.name
        # Same layers, same names, same order: only the shortcut modules are gone.
        kept = [n for n, _ in net.named_parameters() if ".downsample." not in n]
        assert kept == [n for n, _ in twin.named_parameters()], entry.name
        blocks = [b for s in twin.stage_names for b in getattr(twin, s)]
        assert all(b.downsample is None and not b.has_shortcut for b in blocks), entry.name


# ---------------------------------------------------------------------------------------- shortcuts


def test_option_a_subsamples_and_zero_pads():
    sc = ZeroPadShortcut(3, 5, stride=2)
    x = torch.randn(2, 3, 6, 7)
    y = sc(x)
    assert y.shape == (2, 5, 3, 4)  # ceil(6/2), ceil(7/2): what a 3x3 stride-2 padded conv gives
    assert torch.equal(y[:, :3], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 3:]) == 0


def test_option_a_model_deepcopies_and_pickles():
    model = zoo.build("resnet20", device="cpu").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(copy.deepcopy(model)(x), expected)
        assert torch.equal(pickle.loads(pickle.dumps(model))(x), expected)


@pytest.mark.parametrize(
    "policy, cin, cout, stride, expected",
    [
        ("A", 16, 16, 1, None),
        ("A", 16, 32, 2, ["ZeroPadShortcut"]),
        ("B", 64, 64, 1, None),
        ("B", 64, 128, 2, ["Conv2d", "BatchNorm2d"]),
        ("C", 64, 64, 1, ["Conv2d", "BatchNorm2d"]),
        ("D", 64, 128, 2, ["AvgPool2d", "Conv2d", "BatchNorm2d"]),
        ("D", 64, 256, 1, ["Identity", "Conv2d", "BatchNorm2d"]),
        ("D", 64, 64, 1, None),
        ("identity", 64, 128, 2, None),
        ("none", 64, 128, 2, None),
    ],
)
def test_shortcut_policies(policy, cin, cout, stride, expected):
    sc = make_shortcut(policy, cin, cout, stride)
    if expected is None:
        assert sc is None
    elif expected == ["ZeroPadShortcut"]:
        assert isinstance(sc, ZeroPadShortcut)
    else:
        assert [type(m).__name__ for m in sc] == expected
        conv = next(m for m in sc if isinstance(m, nn.Conv2d))
        assert conv.kernel_size == (1, 1) and conv.stride == ((1, 1) if policy == "D" else (stride, stride))


def test_shortcut_d_pool_settings():
    pool = make_shortcut("D", 64, 128, 2)[0]
    assert (pool.kernel_size, pool.stride, pool.ceil_mode, pool.count_include_pad) == (2, 2, True, False)
    assert make_shortcut("D", 64, 128, 2, pool_ceil_mode=False)[0].ceil_mode is False


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown shortcut policy"):
        make_shortcut("E", 16, 32, 2)


def test_option_a_cannot_remove_channels_so_the_add_fails():
    block = BasicBlock(32, 16, 1, shortcut="A").eval()
    with (
        pytest.raises(RuntimeError, match=r"tensor a \(16\) must match the size of tensor b \(32\)"),
        torch.no_grad(),
    ):
        block(torch.randn(1, 32, 8, 8))


def test_preact_projection_takes_the_preactivated_input_and_has_no_bn():
    block = PreActBasicBlock(16, 32, 2, shortcut="B").eval()
    assert [type(m).__name__ for m in block.downsample] == ["Conv2d"]
    seen = {}
    block.downsample.register_forward_hook(lambda m, i, o: seen.update(input=i[0].clone()))
    block.bn1.register_forward_hook(lambda m, i, o: seen.update(bn1=o.clone()))
    with torch.no_grad():
        block(torch.randn(1, 16, 8, 8))
    assert torch.equal(seen["input"], torch.relu(seen["bn1"]))


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck])
def test_identity_policy_at_a_stride_2_block_fails_on_the_add(cls):
    block = cls(64, 32, 2, shortcut="identity").eval()
    assert block.downsample is None
    with pytest.raises(RuntimeError, match="must match the size"), torch.no_grad():
        block(torch.randn(1, 64, 16, 16))


@pytest.mark.parametrize("cls, size", [(BasicBlock, 28), (Bottleneck, 30)])
def test_padding_zero_shrinks_the_map_and_breaks_the_add(cls, size):
    cin = 16 * cls.expansion
    block = cls(cin, 16, 1, shortcut="B", padding=0).eval()
    # Each unpadded 3x3 conv takes 2 pixels: two in a basic block, one in a bottleneck.
    with (
        pytest.raises(RuntimeError, match=rf"\({size}\) must match the size of tensor b \(32\)"),
        torch.no_grad(),
    ):
        block(torch.randn(1, cin, 32, 32))
    with torch.no_grad():  # the default padding keeps 32x32
        assert cls(cin, 16, 1, shortcut="B")(torch.randn(1, cin, 32, 32)).shape == (1, cin, 32, 32)


def test_shortcut_d_without_ceil_mode_breaks_only_at_odd_sizes():
    block = BasicBlock(64, 128, 2, shortcut="D", pool_ceil_mode=False).eval()
    with torch.no_grad():
        assert block(torch.randn(1, 64, 28, 28)).shape == (1, 128, 14, 14)
        with pytest.raises(RuntimeError, match="must match the size"):
            block(torch.randn(1, 64, 29, 29))
        ok = BasicBlock(64, 128, 2, shortcut="D").eval()
        assert ok(torch.randn(1, 64, 29, 29)).shape == (1, 128, 15, 15)


def test_basic_blocks_refuse_groups_like_torchvision():
    with pytest.raises(ValueError, match="groups=1"):
        BasicBlock(64, 64, groups=32)


# --------------------------------------------------------------------------------------- zoo API


def test_get_unknown_name_suggests_close_matches_and_the_zoo_command():
    with pytest.raises(LoadError) as info:
        zoo.get("resnt50")
    msg = str(info.value)
    assert "'resnt50'" in msg and "resnet50" in msg and "resviz zoo" in msg


def test_get_forgives_case_and_dashes():
    assert zoo.get("ResNet-50").name == "resnet50"
    assert zoo.get("Wide-ResNet50-2").name == "wide_resnet50_2"


def test_build_with_num_classes():
    model = zoo.build("resnet18", num_classes=100)
    assert model.fc.out_features == 100 and model.fc.weight.is_meta
    assert zoo.param_count("resnet18") == TORCHVISION_PARAMS["resnet18"]  # the cache is untouched
    with pytest.raises(LoadError):
        zoo.build("resnet18", num_classes=0)


def test_entries_are_unique_described_and_filterable():
    all_entries = zoo.entries()
    assert len({e.name for e in all_entries}) == len(all_entries)
    assert all(e.description and e.spec.name == e.name for e in all_entries)
    assert {e.kind for e in all_entries} == {"resnet", "preact", "plain", "resnext", "wide"}
    assert all(e.family == "cifar" for e in zoo.entries(family="cifar"))
    assert {e.name for e in zoo.entries(kind="wide")} == {"wide_resnet50_2", "wide_resnet101_2"}
    assert (
        "ResNet-50" in zoo.get("resnet50").description and "He et al. 2015" in zoo.get("resnet50").description
    )


def test_param_count_is_cached():
    zoo.param_count("resnet1202")
    assert _timed(lambda: zoo.param_count("resnet1202")) < 0.01
