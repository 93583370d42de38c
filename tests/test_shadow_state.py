"""The shadow model never writes through to the user's objects, and layer hyper-parameters are
read in every form PyTorch accepts (issue 7, issue 8 §5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resviz
from resviz.core.sources import zoo


def _snapshot(obj, seen=None):
    """A deep, comparable picture of an object's state: tensors by value, containers by content."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        return ("tensor", obj.dtype, tuple(obj.shape), obj.detach().cpu().tolist())
    if isinstance(obj, nn.Module):
        if id(obj) in seen:
            return ("seen", id(obj))
        seen.add(id(obj))
        return ("module", type(obj).__name__,
                {k: _snapshot(v, seen) for k, v in vars(obj).items() if not k.endswith("hooks")})
    if isinstance(obj, dict):
        return {k: _snapshot(v, seen) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [type(obj).__name__] + [_snapshot(v, seen) for v in obj]
    if isinstance(obj, set):
        return ("set", sorted(map(repr, obj)))
    if hasattr(obj, "__dict__") and not callable(obj):
        return ("object", type(obj).__name__, _snapshot(vars(obj), seen))
    return obj


class Counter:
    def __init__(self):
        self.n = 0
        self.seen = []


class Stateful(nn.Module):
    """A forward that updates everything a module can hold besides parameters and buffers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.calls = torch.zeros(1)
        self.history = {"shapes": [], "nested": {"t": torch.ones(2)}}
        self.log = []
        self.tensors = [torch.zeros(3)]
        self.counter = Counter()

    def forward(self, x):
        self.calls.add_(1)
        self.history["shapes"].append(tuple(x.shape))
        self.history["nested"]["t"].mul_(3)
        self.history["count"] = 1
        self.log.append("forward")
        self.tensors[0].add_(1)
        self.tensors.append(x)
        self.counter.n += 1
        self.counter.seen.append(1)
        return self.conv(x) + x


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Stateful()
        self.b = Stateful()
        self.shared = self.a.history  # one dict reachable from two modules

    def forward(self, x):
        self.shared["outer"] = True
        return self.b(self.a(x))


@pytest.mark.parametrize("build", [Stateful, Outer], ids=["one module", "nested, shared state"])
def test_forward_that_updates_plain_attributes_leaves_the_model_unchanged(build):
    torch.manual_seed(0)
    model = build()
    before = _snapshot(model)
    report = resviz.analyze(model, (1, 4, 8, 8))
    assert report.complete and not report.errors
    assert _snapshot(model) == before
    # and the eager model still behaves as its author wrote it
    model(torch.zeros(1, 4, 8, 8))
    assert model.__dict__.get("calls", getattr(model, "a", model).calls).item() == 1


def _net_with_int_hyperparams():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.MaxPool2d(2), nn.Identity(),
        nn.Conv2d(8, 16, 3), nn.ConvTranspose2d(16, 8, 3), nn.AvgPool2d(3),
    )
    net[0].stride, net[0].padding, net[0].dilation, net[0].kernel_size = 2, 1, 1, 3
    net[1].kernel_size, net[1].stride = (3, 3), [2, 2]
    net[3].stride, net[3].padding = [2], (1,)  # a list or tuple of one: PyTorch repeats it
    net[4].stride, net[4].dilation = 2, 1
    net[5].stride = 1
    return net


@pytest.mark.parametrize("size", [17, 32, 45])
def test_conv_and_pool_hyperparameters_set_to_plain_ints_trace_like_eager(size):
    net = _net_with_int_hyperparams()
    report = resviz.analyze(net, (1, 3, size, size), suggest_sizes=False)
    assert report.ok, report.errors
    with torch.no_grad():
        eager = net(torch.zeros(1, 3, size, size))  # the edited model runs: the forms are legal
    assert report.output_shapes == [tuple(eager.shape)]


def test_int_stride_on_a_broken_block_is_diagnosed_not_crashed():
    m = zoo.build("resnet18", device="meta")
    m.layer2[0].downsample[0].stride = 1  # plain int: the shortcut no longer downsamples
    report = resviz.analyze(m, (1, 3, 64, 64), suggest_sizes=False)
    assert [x.block for x in report.mismatches] == ["layer2.0"]
    assert "stride=2" in report.mismatches[0].fix
    from resviz.render.text import Style, format_check

    assert "layer2.0" in format_check(report, Style(False))
