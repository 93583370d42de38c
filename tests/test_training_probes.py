"""Probes against plain autograd; the plain twin against a hand-written no-shortcut forward."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resviz.core.analysis.pipeline import analyze
from resviz.core.training import TrainConfig, Trainer, is_plain_twin, plain_twin
from resviz.core.training.data import SyntheticData
from resviz.core.training.probes import BlockWatch, ProbeSet
from tests.nets import BasicBlock


class IAddBlock(BasicBlock):
    """torchvision style: `out += identity`, ReLU(inplace=True), BatchNorm, optional projection."""

    def no_shortcut(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class AddFirstBlock(nn.Module):
    """Shortcut as the *first* operand of a functional add, then an in-place ReLU on the sum."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn(self.conv(x))
        y = torch.add(x, out)
        return self.act(y)

    def no_shortcut(self, x):
        return self.act(self.bn(self.conv(x)))


class TwoAdd(nn.Module):
    """Two residual adds in one block; the inner `scale` is a non-residual add on the same line."""

    def __init__(self, c):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c))
        self.g = nn.Conv2d(c, c, 1)
        self.bias = nn.Parameter(torch.full((1, c, 1, 1), 0.1))

    def forward(self, x):
        x = x + self.f(x)
        x = (x + self.bias) + self.g(x + 0.0)  # a scalar add and a parameter add on the same line
        return x

    def no_shortcut(self, x):
        return self.g(self.f(x))  # both shortcuts (x, then x + bias) dropped


class PreActInplace(nn.Module):
    """An in-place ReLU on the block's own input: the hooked input tensor is mutated later."""

    def __init__(self, c):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        out = self.conv(self.relu(x))  # x itself now holds relu(x): the shortcut is relu(x)
        return out + x

    def no_shortcut(self, x):
        return self.conv(self.relu(x))


class ProbeNet(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(IAddBlock(8, 8), AddFirstBlock(8))
        self.layer2 = nn.Sequential(IAddBlock(8, 16, 2), TwoAdd(16), PreActInplace(16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def no_shortcut(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2):
            for b in stage:
                x = b.no_shortcut(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


BLOCKS = ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer2.2"]
SHAPE = (1, 3, 8, 8)


def _model(seed=0):
    torch.manual_seed(seed)
    return ProbeNet()


def reference_probes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict[str, float]]:
    """The same quantities with plain autograd on an independent copy, no resviz code involved."""
    ref = copy.deepcopy(model).train()
    ins, outs, res_sq, sc_sq = {}, {}, {}, {}
    handles = []
    for name in BLOCKS:
        block = ref.get_submodule(name)

        def pre(mod, args, name=name):
            ins[name] = args[0]
            return (args[0].clone(),)  # later in-place ops hit the clone, not the tensor we keep

        def post(mod, args, out, name=name):
            outs[name] = out
            return out.clone()

        handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    # residual branch and shortcut operands, measured before the add can mutate them
    l10, l11, l20, l21, l22 = (ref.get_submodule(n) for n in BLOCKS)

    def norm_sq(key, store):
        def hook(mod, args, out):
            store[key] = store.get(key, 0.0) + float(out.detach().norm()) ** 2

        return hook

    handles.append(l10.bn2.register_forward_hook(norm_sq("layer1.0", res_sq)))
    handles.append(
        l10.register_forward_pre_hook(
            lambda m, a: sc_sq.__setitem__("layer1.0", float(a[0].detach().norm()) ** 2)
        )
    )
    handles.append(l11.bn.register_forward_hook(norm_sq("layer1.1", res_sq)))
    handles.append(
        l11.register_forward_pre_hook(
            lambda m, a: sc_sq.__setitem__("layer1.1", float(a[0].detach().norm()) ** 2)
        )
    )
    handles.append(l20.bn2.register_forward_hook(norm_sq("layer2.0", res_sq)))
    handles.append(l20.downsample.register_forward_hook(norm_sq("layer2.0", sc_sq)))
    # TwoAdd: F1 = f(x) with shortcut x; F2 = g(x1) with shortcut x1 + bias (g's input is x1)
    handles.append(l21.f.register_forward_hook(norm_sq("layer2.1", res_sq)))
    handles.append(l21.g.register_forward_hook(norm_sq("layer2.1", res_sq)))
    handles.append(
        l21.register_forward_pre_hook(
            lambda m, a: sc_sq.__setitem__("layer2.1", float(a[0].detach().norm()) ** 2)
        )
    )

    def g_input(mod, args):
        sc_sq["layer2.1"] += float((args[0] + l21.bias).detach().norm()) ** 2

    handles.append(l21.g.register_forward_pre_hook(g_input))
    handles.append(l22.conv.register_forward_hook(norm_sq("layer2.2", res_sq)))
    handles.append(l22.relu.register_forward_hook(norm_sq("layer2.2", sc_sq)))
    logits = ref(x)
    loss = F.cross_entropy(logits, y)
    names = list(BLOCKS)
    grads = torch.autograd.grad(loss, [ins[n] for n in names] + [outs[n] for n in names], retain_graph=True)
    loss.backward()
    for h in handles:
        h.remove()
    out = {}
    for i, n in enumerate(names):
        block = ref.get_submodule(n)
        g = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in block.parameters() if p.grad is not None))
        gin, gout = float(grads[i].norm()), float(grads[len(names) + i].norm())
        out[n] = {
            "grad_norm": g,
            "input_grad_norm": gin,
            "output_grad_norm": gout,
            "residual_ratio": math.sqrt(res_sq[n]) / math.sqrt(sc_sq[n]),
            "gain": gin / gout,
        }
    return out


def _close(a, b, rel=2e-4):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


@pytest.mark.parametrize("match", ["auto", "index", "source"])
def test_probes_equal_plain_autograd(match):
    model = _model()
    report = analyze(model, SHAPE)
    assert [b.name for b in report.blocks] == BLOCKS
    data = SyntheticData(SHAPE[1:], 5, seed=3)
    t = Trainer(model, TrainConfig(batch_size=16, lr=0.05), report=report, data=data, probe_match=match)
    x, y = data.batch(0, 16)
    expected = reference_probes(model, x, y)
    rec = t.step()
    assert set(rec.blocks) == set(BLOCKS)
    for name in BLOCKS:
        for probe, want in expected[name].items():
            got = rec.blocks[name][probe]
            assert _close(got, want), (name, probe, got, want)
    assert all(w.missed == 0 for w in t.probes.watches)


def test_probe_positions_and_sources():
    """The shortcut is operand 0 in torch.add(x, out), 1 in out += identity; our lines are used."""
    model = _model()
    report = analyze(model, SHAPE)
    ps = ProbeSet(copy.deepcopy(model), report)
    sites = {w.sites.name: w.sites for w in ps.watches if w.sites}
    assert [s.shortcut_pos for s in sites["layer1.0"].sites] == [1]
    assert [s.shortcut_pos for s in sites["layer1.1"].sites] == [0]
    assert len(sites["layer2.1"].sites) == 2
    assert all(bs.by_source for bs in sites.values())  # the blocks' own forward lines


def test_second_step_probes_follow_updated_weights():
    model = _model()
    data = SyntheticData(SHAPE[1:], 5, seed=4)
    t = Trainer(
        model, TrainConfig(batch_size=8, lr=0.1, momentum=0.0, weight_decay=0.0), input_shape=SHAPE, data=data
    )
    t.step()
    # reference at the weights after one update
    after = copy.deepcopy(t.model)
    for m in after.modules():
        m.__dict__.pop("forward", None)
    x, y = data.batch(1, 8)
    expected = reference_probes(after, x, y)
    rec = t.step()
    for name in BLOCKS:
        for probe in ("grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio"):
            assert _close(rec.blocks[name][probe], expected[name][probe], 1e-3), (name, probe)


def test_user_model_untouched_and_no_hooks_left():
    model = _model()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = Trainer(model, TrainConfig(batch_size=8, lr=0.5), input_shape=SHAPE)
    for _ in range(3):
        t.step()
    # the copy did change
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.training is False
    for m in model.modules():
        assert "forward" not in m.__dict__
        for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, d), (m, d)
    assert all(p.grad is None for p in model.parameters())
    assert type(model).forward is ProbeNet.forward and IAddBlock.forward.__name__ == "forward"


def test_plain_twin_has_no_shortcut():
    model = _model()
    report = analyze(model, SHAPE)
    twin = plain_twin(model, report)
    assert is_plain_twin(twin) and not is_plain_twin(model)
    assert all("forward" not in m.__dict__ for m in model.modules())
    x = torch.randn(4, *SHAPE[1:])
    model.train()
    twin.train()
    with torch.no_grad():
        want = copy.deepcopy(model).no_shortcut(x)
        got = twin(x)
        full = copy.deepcopy(model)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, full, atol=1e-3)  # the shortcut really was there before
    # gradients flow through the twin, and a deep copy of it is still plain
    twin(x).sum().backward()
    assert twin.conv1.weight.grad is not None
    twin2 = copy.deepcopy(twin)
    with torch.no_grad():
        torch.testing.assert_close(twin2(x), got, rtol=1e-5, atol=1e-6)


def test_plain_trainer_trains_the_twin_and_measures_gradients():
    model = _model()
    data = SyntheticData(SHAPE[1:], 5, seed=1)
    t = Trainer(model, TrainConfig(batch_size=8), input_shape=SHAPE, data=data, plain=True)
    assert is_plain_twin(t.model)
    rec = t.step()
    for name in BLOCKS:
        d = rec.blocks[name]
        assert d["input_grad_norm"] > 0 and d["output_grad_norm"] > 0 and d["grad_norm"] > 0
        assert math.isnan(d["residual_ratio"])
    # the plain twin's probes equal autograd on the hand-written no-shortcut network
    ref = copy.deepcopy(model).train()
    x, y = data.batch(0, 8)
    loss = F.cross_entropy(ref.no_shortcut(x), y)
    loss.backward()
    assert _close(rec.loss, float(loss), 1e-5)
    g = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in ref.layer1[0].parameters()))
    assert _close(rec.blocks["layer1.0"]["grad_norm"], g, 1e-4)


def test_watch_is_instance_only():
    model = _model()
    report = analyze(model, SHAPE)
    t = Trainer(model, TrainConfig(batch_size=4), report=report)
    assert isinstance(t.model.layer1[0].__dict__["forward"], BlockWatch)
    assert "forward" not in IAddBlock.__dict__ or IAddBlock.__dict__["forward"] is IAddBlock.forward
    other = IAddBlock(8, 8)
    assert "forward" not in other.__dict__
    t.remove_probes()
    assert all("forward" not in m.__dict__ for m in t.model.modules())
