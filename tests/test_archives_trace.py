"""The TorchScript and torch.export front-ends record the same trace as the eager tracer.

For a small ResNet saved the three ways a user can save one (``torch.jit.script``,
``torch.jit.trace``, ``torch.export``) and loaded back, the report built from the archive's trace
must find the blocks, the residual adds and their shortcut kinds, and the per-layer output shapes
that the eager analysis of the original model finds — and every layer's shape must be the one real
PyTorch produces on CPU. Broken networks must be diagnosed from an archive as from the live model.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resviz.core.analysis.pipeline import analyze, build_report
from resviz.core.tracing.dispatch import trace_any
from resviz.core.tracing.eager import trace_module
from resviz.core.tracing.exported import trace_exported
from resviz.core.tracing.torchscript import trace_script_module
from tests.nets import BasicBlock

SHAPE = (2, 3, 32, 32)


# ---------------------------------------------------------------------- models


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class StridedIdentityBlock(nn.Module):
    """A broken block: the residual branch downsamples, the shortcut is the identity."""

    def __init__(self, c: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class BrokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            StridedIdentityBlock(8, 1), StridedIdentityBlock(8, 2), StridedIdentityBlock(8, 1)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class PoolShortcutBlock(nn.Module):
    """Fine at even sizes; at odd ones the padded strided conv rounds up, the pool rounds down."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = nn.AvgPool2d(2)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.b1 = PoolShortcutBlock(8)
        self.b2 = PoolShortcutBlock(8)
        self.b3 = BasicBlock(8, 8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.b3(self.b2(self.b1(self.stem(x)))))


class CheckedNet(nn.Module):
    """User code that checks its input shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)

    def forward(self, x):
        if x.size(1) != 3:
            raise ValueError("expected an RGB image")
        return self.conv(x)


# ---------------------------------------------------------------------- archives


def _jit_roundtrip(module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _export_roundtrip(model, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, (torch.randn(*shape),))
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        buf.seek(0)
        return torch.export.load(buf)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyResNet().eval()


@pytest.fixture(scope="module")
def archives(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(*SHAPE))
    return {
        "script": _jit_roundtrip(torch.jit.script(model)),
        "trace": _jit_roundtrip(traced),
        "export": _export_roundtrip(model, SHAPE),
    }


def _trace(kind, archive, shape):
    if kind == "export":
        return trace_exported(archive, shape)
    return trace_script_module(archive, shape)


def _leaf_shapes(trace) -> dict[tuple[str, int], tuple[int, ...]]:
    return {
        (op.name, op.call_index): trace.values[op.outputs[0]].shape for op in trace.ops if op.kind == "module"
    }


def _hook_shapes(model, shape) -> dict[tuple[str, int], tuple[int, ...]]:
    """What real PyTorch produces on CPU, per leaf layer call."""
    out: dict[tuple[str, int], tuple[int, ...]] = {}
    counts: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if name and not list(m.children()):

            def hook(mod, args, result, name=name):
                n = counts.get(name, 0)
                counts[name] = n + 1
                out[(name, n)] = tuple(result.shape)

            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.randn(*shape))
    finally:
        for h in handles:
            h.remove()
    return out


def _adds(report) -> list[tuple[str, str, tuple, tuple]]:
    return [
        (a.block, a.kind, report.values[a.residual].shape, report.values[a.shortcut].shape)
        for a in report.residual_adds
    ]


# ---------------------------------------------------------------------- same report as eager


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
def test_archive_report_matches_eager(model, archives, kind):
    eager = analyze(model, SHAPE, suggest_sizes=False)
    trace = _trace(kind, archives[kind], SHAPE)
    assert trace.complete and not trace.errors
    report = build_report(trace, None, kind)

    assert [b.name for b in report.blocks] == [b.name for b in eager.blocks]
    assert [b.name for b in report.blocks] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert [b.shortcut for b in report.blocks] == ["identity", "identity", "projection", "identity"]
    assert [s.name for s in report.stages] == [s.name for s in eager.stages]
    assert _adds(report) == _adds(eager)
    assert not report.mismatches
    assert report.output_shapes == eager.output_shapes == [(2, 10)]

    mine, theirs = _leaf_shapes(trace), _leaf_shapes(trace_module(model, SHAPE))
    assert mine == theirs
    assert mine == _hook_shapes(model, SHAPE)
    # parameters and MACs per layer follow the eager tracer's (torchinfo's) conventions
    per_op = {(o.name, o.call_index): (o.type, o.params, o.macs) for o in report.ops if o.kind == "module"}
    assert per_op == {
        (o.name, o.call_index): (o.type, o.params, o.macs) for o in eager.ops if o.kind == "module"
    }
    assert sum(o.params for o in report.ops) == sum(p.numel() for p in model.parameters())

    # and underneath, the very same graph: ops, values, module calls
    eager = trace_module(model, SHAPE)
    mine = [(c.path, c.type, c.parent, c.inputs, c.outputs, c.first_op, c.last_op) for c in trace.calls]
    theirs = [(c.path, c.type, c.parent, c.inputs, c.outputs, c.first_op, c.last_op) for c in eager.calls]
    assert mine == theirs
    ops = [(o.kind, o.name, o.type, o.scope, o.inputs, o.outputs) for o in trace.ops]
    assert ops == [(o.kind, o.name, o.type, o.scope, o.inputs, o.outputs) for o in eager.ops]
    add = next(o for o in trace.ops if o.name == "layer1.0.add")
    assert add.source is not None and add.source[0] == BasicBlock.forward.__code__.co_filename


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_at_other_input_sizes(model, archives, kind):
    """The archive is not tied to the size it was traced at: every layer as in real PyTorch."""
    for shape in [(1, 3, 16, 16), (1, 3, 17, 17), (3, 3, 40, 40), (1, 3, 45, 45)]:
        trace = trace_script_module(archives[kind], shape)
        assert trace.complete and not trace.errors
        assert _leaf_shapes(trace) == _hook_shapes(model, shape), shape


def test_script_load_on_meta_device(model):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    buf.seek(0)
    meta = torch.jit.load(buf, map_location="meta")
    trace = trace_script_module(meta, SHAPE)
    assert trace.complete and _leaf_shapes(trace) == _hook_shapes(model, SHAPE)


# ---------------------------------------------------------------------- broken archives


def test_scripted_broken_net_reports_mismatch_and_continues():
    """Scripting never runs forward, so a broken network can be scripted and saved."""
    archive = _jit_roundtrip(torch.jit.script(BrokenNet().eval()))
    trace = trace_script_module(archive, (1, 3, 16, 16))
    assert trace.complete
    report = build_report(trace, None, "broken")
    assert [m.block for m in report.mismatches] == ["blocks.1"]
    m = report.mismatches[0]
    assert m.residual_shape == (1, 8, 8, 8) and m.shortcut_shape == (1, 8, 16, 16)
    assert "blocks.1.conv1" in m.culprits or "blocks.1.conv1" in m.cause
    # tracing went on with the residual branch's shape through the later blocks
    assert [b.name for b in report.blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    assert report.block("blocks.2").input_shape == (1, 8, 8, 8)
    assert report.output_shapes == [(1, 4)]
    # exactly what the eager tracer says about the live model
    eager = analyze(BrokenNet().eval(), (1, 3, 16, 16), suggest_sizes=False)
    assert [(x.block, x.residual_shape, x.shortcut_shape) for x in eager.mismatches] == [
        (x.block, x.residual_shape, x.shortcut_shape) for x in report.mismatches
    ]


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
def test_mismatch_only_at_another_input_size(kind):
    """Saved at 32x32 where it works; analysed at 33x33 the pooled shortcuts come out smaller."""
    torch.manual_seed(0)
    net = PoolNet().eval()
    if kind == "script":
        archive = _jit_roundtrip(torch.jit.script(net))
    elif kind == "trace":
        archive = _jit_roundtrip(torch.jit.trace(net, torch.randn(1, 3, 32, 32)))
    else:
        archive = _export_roundtrip(net, (1, 3, 32, 32))
    ok = _trace(kind, archive, (1, 3, 32, 32))
    assert ok.complete and not build_report(ok, None, "pool").mismatches

    trace = _trace(kind, archive, (1, 3, 33, 33))
    assert trace.complete
    assert not [e for e in trace.errors if e.fatal]
    report = build_report(trace, None, "pool")
    found = [(m.block, m.residual_shape, m.shortcut_shape) for m in report.mismatches]
    assert found == [("b1", (1, 8, 17, 17), (1, 8, 16, 16)), ("b2", (1, 8, 9, 9), (1, 8, 8, 8))]
    assert [b.shortcut for b in report.blocks] == ["pool", "pool", "identity"]
    assert report.block("b3").input_shape == (1, 8, 9, 9)
    assert report.output_shapes == [(1, 4)]


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
def test_wrong_channels_is_recorded_and_tracing_goes_on(archives, kind):
    trace = _trace(kind, archives[kind], (2, 4, 32, 32))
    assert trace.complete
    assert len(trace.errors) == 1
    err = trace.errors[0]
    assert err.module == "conv1" and "3 input channels" in err.message and not err.fatal
    assert trace.values[trace.output_values[0]].shape == (2, 10)


def test_script_raise_in_user_code_is_a_shape_error():
    archive = _jit_roundtrip(torch.jit.script(CheckedNet()))
    trace = trace_script_module(archive, (1, 1, 8, 8))
    assert not trace.complete
    assert [(e.module, e.fatal) for e in trace.errors] == [("(model)", True)]
    assert "expected an RGB image" in trace.errors[0].message
    assert trace_script_module(archive, (1, 3, 8, 8)).complete


# ---------------------------------------------------------------------- torch.export shapes


def test_export_at_other_shapes(model, archives):
    ep = archives["export"]
    default = trace_exported(ep)  # the exported shape
    assert default.input_shape == SHAPE and default.complete
    for shape in [(2, 3, 64, 64), (2, 3, 17, 17)]:
        trace = trace_exported(ep, shape)
        assert trace.complete and not trace.errors
        assert _leaf_shapes(trace) == _hook_shapes(model, shape)


def test_export_baked_in_size_is_a_clear_shape_error(archives):
    """A decomposed program holds ``view(x, [2, 32])`` for flatten: another batch cannot run it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = archives["export"].run_decompositions()
    trace = trace_exported(ep, (3, 3, 32, 32))  # must not raise
    assert not trace.complete
    fatal = [e for e in trace.errors if e.fatal]
    assert len(fatal) == 1 and fatal[0].type == "view" and "invalid for input" in fatal[0].message
    assert "exported for input 2×3×32×32" in fatal[0].suggestion
    report = build_report(trace, None, "ep")  # everything up to the failure is still there
    assert [b.name for b in report.blocks] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    # the same program at its own shape is fine
    assert trace_exported(ep, SHAPE).complete


# ---------------------------------------------------------------------- dispatch


def test_trace_any_dispatches(model, archives):
    for obj in (model, archives["script"], archives["trace"], archives["export"]):
        trace = trace_any(obj, SHAPE)
        assert trace.complete
        assert [b.name for b in build_report(trace, None, "m").blocks][-1] == "layer2.1"
    assert trace_any(archives["export"], None).input_shape == SHAPE
