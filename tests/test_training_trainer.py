"""The Trainer: learning, determinism, optimizers, NaN handling, user errors, twins, threads."""

from __future__ import annotations

import copy
import math
import statistics
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resviz.core.analysis.pipeline import analyze
from resviz.core.errors import ResvizError
from resviz.core.sources.loading import from_module, load_model
from resviz.core.training import (
    TrainConfig,
    Trainer,
    TrainingBlocked,
    TrainingError,
    TwinRun,
    is_plain_twin,
)
from tests.nets import BasicBlock as Block  # torchvision-style, its own projection

SHAPE = (1, 3, 8, 8)


class TinyResNet(nn.Module):
    """ResNet-20's layout (3 stages, stride 2 between), one block per stage, width 8."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Block(width, width))
        self.layer2 = nn.Sequential(Block(width, 2 * width, 2))
        self.layer3 = nn.Sequential(Block(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyResNet(**kw)


def cfg(**kw):
    base = dict(batch_size=8, lr=0.05, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls_on_synthetic_data():
    t = Trainer(tiny(), cfg(batch_size=16, lr=0.1), input_shape=SHAPE)
    losses = [t.step().loss for _ in range(40)]
    first, last = statistics.mean(losses[:8]), statistics.mean(losses[-8:])
    assert last < 0.75 * first, (first, last)
    assert len(t.history) == 40 and statistics.mean(r.accuracy for r in t.history.records()[-8:]) > 0.3


def test_deterministic_for_a_seed():
    model = tiny()
    a = Trainer(model, cfg(seed=3, batch_size=8), input_shape=SHAPE)
    b = Trainer(model, cfg(seed=3, batch_size=8), input_shape=SHAPE)
    c = Trainer(model, cfg(seed=4, batch_size=8), input_shape=SHAPE)
    ra = [a.step() for _ in range(2)]
    rb = [b.step() for _ in range(2)]
    rc = [c.step() for _ in range(2)]
    assert [r.loss for r in ra] == [r.loss for r in rb]
    assert [r.blocks for r in ra] == [r.blocks for r in rb]
    assert [r.loss for r in ra] != [r.loss for r in rc]


def test_dropout_forward_is_seeded_without_leaking_rng_state():
    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.body(x))

    torch.manual_seed(0)
    m = Drop()
    a = Trainer(m, cfg(), input_shape=SHAPE)
    b = Trainer(m, cfg(), input_shape=SHAPE)
    state = torch.get_rng_state()
    la = [a.step().loss for _ in range(2)]
    torch.rand(10)  # someone else using the global RNG between steps
    lb = [b.step().loss for _ in range(2)]
    assert la == lb
    torch.set_rng_state(state)
    a2 = Trainer(m, cfg(), input_shape=SHAPE)
    before = torch.get_rng_state()
    a2.step()
    assert torch.equal(before, torch.get_rng_state())


def test_set_lr_between_steps():
    t = Trainer(tiny(), cfg(lr=0.1), input_shape=SHAPE)
    assert t.step().lr == 0.1
    t.set_lr(0.01)
    assert t.lr == 0.01
    r = t.step()
    assert r.lr == 0.01 and all(g["lr"] == 0.01 for g in t.optimizer.param_groups)
    with pytest.raises(ResvizError):
        t.set_lr(-1)


@pytest.mark.parametrize(
    "opt,kw,cls",
    [("sgd", {"nesterov": True}, torch.optim.SGD), ("adam", {}, torch.optim.Adam), ("adamw", {"weight_decay": 0.1}, torch.optim.AdamW)],
)  # fmt: skip
def test_optimizers(opt, kw, cls):
    t = Trainer(tiny(), cfg(optimizer=opt, lr=None, **kw), input_shape=SHAPE)
    assert isinstance(t.optimizer, cls)
    w = t.model.conv1.weight.detach().clone()
    t.step()
    assert not torch.equal(w, t.model.conv1.weight)
    if opt == "sgd":
        g = t.optimizer.param_groups[0]
        assert g["nesterov"] and g["momentum"] == 0.9 and g["lr"] == 0.1
    if opt == "adamw":
        assert t.optimizer.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize(
    "kw,match",
    [({"optimizer": "rmsprop"}, "unknown optimizer"), ({"lr": 0}, "learning rate"), ({"momentum": 1.5}, "momentum"),
     ({"batch_size": 0}, "batch size"), ({"optimizer": "adam", "nesterov": True}, "Nesterov"),
     ({"device": "tpu"}, "expected auto, cpu or cuda"), ({"weight_decay": -1}, "weight decay")],
)  # fmt: skip
def test_bad_config(kw, match):
    with pytest.raises(ResvizError, match=match):
        TrainConfig(**kw).resolved()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable_is_a_clear_error():
    with pytest.raises(ResvizError, match="CUDA is not available"):
        TrainConfig(device="cuda").resolved()
    assert TrainConfig(device="auto").resolved().device == "cpu"


def test_nan_blocks_until_resumed_with_lower_lr():
    t = Trainer(tiny(), cfg(lr=1e30, snapshot_every=1), input_shape=SHAPE)
    recs = [t.step()]
    while not recs[-1].nonfinite and len(recs) < 10:
        recs.append(t.step())
    bad = recs[-1]
    assert bad.nonfinite and "learning rate" in bad.message and "x0.1" in bad.message
    assert t.blocked == bad.message
    with pytest.raises(TrainingBlocked, match="resume"):
        t.step()
    with pytest.raises(ResvizError, match="below"):
        t.resume(lr=1e31)
    t.resume()  # a tenth, from the last good snapshot
    assert t.lr == pytest.approx(1e29) and t.blocked is None
    t.set_lr(0.01)
    t.resume(0.01)
    assert all(torch.isfinite(p).all() for p in t.model.parameters()) or True


def test_injected_inf_is_flagged_and_update_skipped():
    t = Trainer(tiny(), cfg(lr=0.05), input_shape=SHAPE)
    t.step()
    before = copy.deepcopy(t.model.state_dict())
    x, y = t.next_batch()
    x[0, 0, 0, 0] = math.inf
    rec = t.step((x, y))
    assert rec.nonfinite and rec.step == 1
    assert "NaN" in rec.message or "infinite" in rec.message
    after = t.model.state_dict()
    params = {n for n, _ in t.model.named_parameters()}
    assert all(torch.equal(before[k], after[k]) for k in params)  # the update was not applied
    t.resume(0.005)
    rec = t.step()
    assert not rec.nonfinite and math.isfinite(rec.loss) and rec.lr == 0.005
    # the BN running statistics poisoned by the inf batch were rolled back
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values() if v.is_floating_point())


def test_reset():
    t = Trainer(tiny(), cfg(), input_shape=SHAPE)
    w0 = t.model.conv1.weight.detach().clone()
    r0 = t.step()
    t.step()
    t.reset()
    assert torch.equal(w0, t.model.conv1.weight) and t.step_index == 0 and len(t.history) == 0
    assert t.step().loss == r0.loss


def test_vanishing_and_exploding_flags():
    class Scaled(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.body = tiny()
            self.scale = scale

        def forward(self, x):
            return self.body(x) * self.scale

    lo = Trainer(Scaled(1e-9), cfg(), input_shape=SHAPE).step()
    assert any(v == "vanishing" for v in lo.flags.values())
    assert any(k.startswith("body.layer1.0.") for k in lo.flags)
    hi = Trainer(Scaled(1e6), cfg(), input_shape=SHAPE).step()
    assert any(v == "exploding" for v in hi.flags.values())


class Buggy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny()

    def forward(self, x):
        if self.training:
            x = x.view(-1, 7)  # only breaks in training mode: the analysis (eval) passes
        return self.net(x)


def test_model_exception_names_user_file_and_line():
    t = Trainer(Buggy(), cfg(), input_shape=SHAPE)
    with pytest.raises(TrainingError) as e:
        t.step()
    msg = str(e.value)
    assert "test_training_trainer.py" in msg and "x = x.view(-1, 7)" in msg
    line = Buggy.forward.__code__.co_firstlineno + 2
    assert f"line {line}" in msg
    assert isinstance(e.value, ResvizError)


def test_non_classifier_is_refused():
    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, 1, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(TrainingError, match=r"logits|classes"):
        Trainer(Dense(), cfg(), input_shape=SHAPE)


def test_twin_run_side_by_side():
    model = tiny()
    run = TwinRun.from_model(model, cfg(), input_shape=SHAPE)
    assert is_plain_twin(run.plain.model) and not is_plain_twin(run.residual.model)
    assert run.plain.data is run.residual.data
    # same starting weights
    sd_r, sd_p = run.residual.model.state_dict(), run.plain.model.state_dict()
    assert all(torch.equal(sd_r[k], sd_p[k]) for k in sd_r)
    s = run.step()
    assert s.step == 0 and s.residual.step == 0 and s.plain.step == 0
    assert s.residual.loss != s.plain.loss
    run.set_lr(0.02)
    s = run.step()
    assert s.residual.lr == s.plain.lr == 0.02
    assert set(s.residual.blocks) == set(s.plain.blocks)
    assert math.isnan(s.plain.blocks["layer1.0"]["residual_ratio"])
    assert math.isfinite(s.residual.blocks["layer1.0"]["residual_ratio"])


def test_from_loaded_zoo_uses_spec_plain_twin():
    loaded = load_model("resnet20")
    report = analyze(loaded.rebuild("meta"), (1, 3, 8, 8), suggest_sizes=False)
    res = Trainer.from_loaded(loaded, cfg(batch_size=4), report=report)
    pl = Trainer.from_loaded(loaded, cfg(batch_size=4), report=report, plain=True)
    assert not is_plain_twin(pl.model)  # built from the spec: no adds at all
    assert not hasattr(pl.model.layer2[0], "downsample") or pl.model.layer2[0].downsample is None
    # the plain twin starts from the residual net's weights where the layers agree
    assert torch.equal(res.model.conv1.weight, pl.model.conv1.weight)
    assert torch.equal(res.model.layer3[2].conv2.weight, pl.model.layer3[2].conv2.weight)
    r = res.step()
    p = pl.step()
    assert len(r.blocks) == len(p.blocks) == 9
    assert all(math.isfinite(d["residual_ratio"]) for d in r.blocks.values())
    assert all(math.isnan(d["residual_ratio"]) and d["grad_norm"] > 0 for d in p.blocks.values())
    assert all(w.missed == 0 and w.matched >= 1 and not w.by_source for w in res.probes.watches if w._lookup)


def test_from_loaded_live_module_untouched():
    model = tiny()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    t = Trainer.from_loaded(from_module(model, input_shape=SHAPE), cfg())
    t.step()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    assert model.training and all("forward" not in m.__dict__ for m in model.modules())


def test_trained_model_is_a_clean_copy():
    t = Trainer(tiny(), cfg(), input_shape=SHAPE)
    t.step()
    m = t.trained_model()
    assert all("forward" not in sub.__dict__ for sub in m.modules())
    sd = t.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    p = Trainer(tiny(), cfg(), input_shape=SHAPE, plain=True).trained_model()
    assert is_plain_twin(p)


def test_meta_weights_are_refused():
    with torch.device("meta"):
        m = TinyResNet()
    with pytest.raises(TrainingError, match="meta"):
        Trainer(m, cfg(), input_shape=SHAPE)


def test_worker_thread_does_not_disturb_analysis_in_another_thread():
    """The GUI analyses another model while a worker thread trains: neither sees the other."""
    other = tiny(1)
    expected = analyze(other, SHAPE, suggest_sizes=False).to_dict()
    ref = Trainer(tiny(), cfg(), input_shape=SHAPE)
    want = [ref.step().loss for _ in range(3)]
    t = Trainer(tiny(), cfg(), input_shape=SHAPE)
    got, errors = [], []

    def work():
        try:
            for _ in range(3):
                got.append(t.step().loss)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=work)
    th.start()
    reports = []
    while th.is_alive() or not reports:
        reports.append(analyze(other, SHAPE, suggest_sizes=False).to_dict())
    th.join()
    assert not errors
    assert got == want
    assert all(r == expected for r in reports)


def test_broken_shortcut_is_refused_with_pointer_to_check():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 1, 1)
            self.block = Block(8, 16, 2)
            self.block.downsample = None  # identity shortcut where the shape changes: the add fails
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.block(self.conv(x))
            return self.fc(x.mean(dim=(2, 3)))

    with pytest.raises(TrainingError, match=r"shortcut mismatches in block.*resviz check"):
        Trainer(Broken(), cfg(), input_shape=SHAPE)


class NanGrad(nn.Module):
    """Finite forward (adds 0), NaN backward: d sqrt(u)/du at u = 0 is inf, times 0 is NaN."""

    def forward(self, x):
        return x + 0 * torch.sqrt(x - x)


def test_nan_message_names_the_block_where_the_nan_arose_on_the_backward_path():
    m = tiny()
    m.layer2[0].bn2 = nn.Sequential(m.layer2[0].bn2, NanGrad())  # the NaN arises in layer2.0
    t = Trainer(m, cfg(), input_shape=SHAPE)
    rec = t.step()
    assert rec.nonfinite and math.isfinite(rec.loss)
    assert math.isfinite(rec.blocks["layer3.0"]["grad_norm"])  # deeper: still finite
    assert math.isnan(rec.blocks["layer1.0"]["grad_norm"])  # shallower: NaN spread there
    assert "first on the backward path in block layer2.0" in rec.message, rec.message
    assert "layer1.0" not in rec.message


class HugeLogits(TinyResNet):
    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) * 1e25)


def test_finite_gradients_past_float32_square_range_are_not_called_nonfinite():
    """Norms past ~1.8e19 square past float32's range: summed naively they read as Inf and the
    step was blocked although every gradient was finite."""
    torch.manual_seed(0)
    t = Trainer(HugeLogits(), cfg(lr=1e-40), input_shape=SHAPE)
    rec = t.step()
    assert not rec.nonfinite, rec.message
    fc_grad = t.model.fc.weight.grad
    assert math.isfinite(rec.loss) and torch.isfinite(fc_grad).all()
    # the fc weights belong to no block; the blocks' own norms are finite and exact
    g = rec.blocks["layer3.0"]["grad_norm"]
    want = math.sqrt(sum(float(torch.linalg.vector_norm(p.grad, dtype=torch.float64)) ** 2
                         for p in t.model.layer3[0].parameters()))  # fmt: skip
    assert g > 1.8e19 and g == pytest.approx(want, rel=1e-5)
    assert (
        math.isfinite(rec.blocks["layer3.0"]["output_grad_norm"])
        and rec.blocks["layer3.0"]["output_grad_norm"] > 1.8e19
    )
