"""A BatchNorm output's norm from the layer's statistics (no read of the output), and the sink's
deferred batch that takes those norms before the optimizer can change the layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resviz.core.training import probes
from resviz.core.training.probes import ProbeSink, _batchnorm_later, _batchnorm_values, _output_batchnorm


def read_sq(t: torch.Tensor) -> float:
    return t.detach().double().square().sum().item()


def later_value(t, bn):
    later = _batchnorm_later(t, bn)
    assert later is not None
    return _batchnorm_values([later])[0]


def randomized(bn: nn.Module) -> nn.Module:
    if bn.weight is not None:
        with torch.no_grad():
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-0.7, 0.7)
    return bn.train()


@pytest.mark.parametrize(
    "bn, shape",
    [
        (nn.BatchNorm2d(8), (6, 8, 5, 5)),
        (nn.BatchNorm2d(8, affine=False), (6, 8, 5, 5)),
        (nn.BatchNorm1d(5), (7, 5)),
        (nn.BatchNorm1d(5), (7, 5, 9)),
        (nn.BatchNorm3d(3, eps=1e-3), (2, 3, 4, 3, 2)),
        (nn.BatchNorm2d(4, track_running_stats=False), (3, 4, 6, 6)),
    ],
)
def test_the_norm_from_the_statistics_equals_a_read_of_the_output(bn, shape):
    torch.manual_seed(0)
    bn = randomized(bn)
    x = (torch.randn(shape) * 3 + 2).requires_grad_(True)  # a mean far from zero, a wide spread
    y = bn(x)
    assert later_value(y, bn) == pytest.approx(read_sq(y), rel=1e-5)


def test_a_channel_without_variance_and_a_batch_of_two_are_exact_too():
    torch.manual_seed(1)
    bn = randomized(nn.BatchNorm2d(3))
    x = torch.randn(2, 3, 4, 4)
    x[:, 1] = 5.0  # a dead channel: its normalised values are all zero, its output is beta
    x.requires_grad_(True)
    y = bn(x)
    assert later_value(y, bn) == pytest.approx(read_sq(y), rel=1e-5)


def test_outputs_that_are_not_shown_to_be_the_layers_training_output_are_read_instead():
    torch.manual_seed(2)
    bn, other = randomized(nn.BatchNorm2d(4)), randomized(nn.BatchNorm2d(4))
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    assert _batchnorm_later(other(x), bn) is None  # another layer's output (its own weight)
    changed = bn(x)
    changed.add_(1.0)
    assert _batchnorm_later(changed, bn) is None  # changed in place since the layer made it
    assert _batchnorm_later(bn(x) * 2, bn) is None  # not a batch-norm node at all
    assert _batchnorm_later(bn(x.detach()).detach(), bn) is None  # no autograd node
    assert _batchnorm_later(bn.eval()(x), bn) is None  # running statistics: the formula is wrong
    bn64 = randomized(nn.BatchNorm2d(4)).double()
    assert _batchnorm_later(bn64(x.double()), bn64) is None  # float32 only (the tested tolerance)


def test_the_layer_is_found_behind_a_sequential_but_not_behind_a_forward_of_its_own():
    bn = nn.BatchNorm2d(4)
    assert _output_batchnorm(bn) is bn
    projection = nn.Sequential(nn.Conv2d(2, 4, 1), bn)
    assert _output_batchnorm(projection) is bn
    assert _output_batchnorm(nn.Sequential(bn, nn.ReLU())) is None  # the ReLU's output is returned

    class Scaled(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    assert _output_batchnorm(Scaled(4)) is None
    patched = nn.BatchNorm2d(4)
    patched.forward = lambda x: x  # the user's own instance forward
    assert _output_batchnorm(patched) is None


def test_a_layer_changed_before_the_batch_goes_unmeasured_never_wrong():
    torch.manual_seed(3)
    bn = randomized(nn.BatchNorm2d(4))
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    later = _batchnorm_later(bn(x), bn)
    with torch.no_grad():
        bn.weight.mul_(2.0)  # an optimizer step before the value was taken
    assert _batchnorm_values([later]) == [None]


def test_the_sink_takes_deferred_norms_in_one_batch_at_the_first_gradient():
    torch.manual_seed(4)
    bn = randomized(nn.BatchNorm2d(4))
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    y = bn(x)
    sink = ProbeSink(2)
    sink.begin()
    later = sink.measure(y, bn)
    assert isinstance(later, probes._BatchNormLater)
    sink.commit([(2, later), (3, 1.5)])
    assert sink.later
    sink.grad_hook(1, torch.ones(4))
    assert not sink.later
    assert sink.slots == [2, 3, 1]
    assert sink.vals[0] == pytest.approx(read_sq(y), rel=1e-5)
    assert sink.vals[1:] == [1.5, 4.0]


def test_a_failure_in_the_batch_leaves_only_numbers_in_the_sink(monkeypatch):
    bn = randomized(nn.BatchNorm2d(4))
    y = bn(torch.randn(3, 4, 5, 5, requires_grad=True))
    sink = ProbeSink(1)
    sink.begin()
    sink.commit([(2, sink.measure(y, bn)), (3, 2.0)])

    def broken(items):
        raise RuntimeError("boom")

    monkeypatch.setattr(probes, "_batchnorm_values", broken)
    with pytest.raises(RuntimeError, match="boom"):
        sink.flush()
    assert sink.vals == [2.0] and sink.slots == [3]  # the deferred one dropped: its slot unmeasured
    assert sink.reduce_host() is not None  # the step can still be reduced


def test_a_monitored_run_takes_the_residual_norms_from_batchnorm_and_records_what_a_read_gives(
    tmp_path, monkeypatch
):
    import copy

    import torch.nn.functional as F

    import resviz
    from tests.test_training_monitor import BLOCKS, SHAPE, batches, net

    def run(model, run_dir):
        recs = []
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with resviz.monitor(model, run_dir, input_shape=SHAPE) as mon:
            for x, y in batches(3):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()  # before mon.step: the layers' weights have changed by then
                recs.append(mon.step(loss))
        return recs

    model = net()
    twin = copy.deepcopy(model)
    batches_taken = []
    real = probes._batchnorm_values
    monkeypatch.setattr(probes, "_batchnorm_values", lambda items: batches_taken.append(len(items)) or real(items))
    fast = run(model, tmp_path / "fast")
    assert batches_taken and all(n >= len(BLOCKS) for n in batches_taken)  # every block's residual
    monkeypatch.setattr(probes, "_output_batchnorm", lambda module: None)  # every norm by a read
    read = run(twin, tmp_path / "read")
    for a, b in zip(fast[1:], read[1:]):  # step 0 learns the plan with reads in both
        for block in BLOCKS:
            assert a.blocks[block]["residual_ratio"] == pytest.approx(b.blocks[block]["residual_ratio"], rel=1e-5)
