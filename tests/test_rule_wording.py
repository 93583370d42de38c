"""One shape error, one wording, whichever front-end traced the model.

The eager tracer (a live ``nn.Module``), the TorchScript interpreter (``torch.jit.script`` and
``torch.jit.trace`` archives) and the torch.export front-end check shapes through the same rule
objects (``shape_rules``), so the same wrong input must read the same in all of them: as a layer
(``nn.Linear`` given the wrong width), as a function inside a library-style layer
(``F.linear(x, self.weight)``), and at an add whose operands do not broadcast.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resviz.core.tracing import shape_rules as rules
from resviz.core.tracing.eager import trace_module
from resviz.core.tracing.exported import trace_exported
from resviz.core.tracing.torchscript import aten_eval, trace_script_module
from resviz.core.tracing.torchscript.common import TracedTensor


class FunctionalLinear(nn.Module):
    """A library-style layer: no children, its own weight, a torch function."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        return F.linear(x, self.weight)


class FunctionalConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, None, 1, 1)


class FunctionalBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("var", torch.ones(3))

    def forward(self, x):
        return F.batch_norm(x, self.mean, self.var, None, None, False, 0.1, 1e-5)


class PooledShortcut(nn.Module):
    """conv(stride 2) + avg_pool(2): equal at an even size, off by one at an odd one."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 3, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight, None, 2) + F.avg_pool2d(x, 2)


class InplaceAdd(nn.Module):
    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, (1, 8))
        y += x
        return y


class AddBias(nn.Module):
    """A non-residual add in a module with children: recorded as an op of its own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bias = nn.Parameter(torch.zeros(1, 4, 8, 8))

    def forward(self, x):
        return self.conv(x) + self.bias


class Wrap(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.inner(x))


# (model, shape it is saved at, wrong shape, the words every front-end must use)
CASES = {
    "Linear in_features": (lambda: Wrap(nn.Linear(8, 4)), (2, 8), (2, 6),
                           "Linear expects 8 input features but got 6 (input 2×6)"),
    "Conv2d in_channels": (lambda: Wrap(nn.Conv2d(3, 8, 3, padding=1)), (1, 3, 8, 8), (1, 4, 8, 8),
                           "Conv2d expects 3 input channels but got 4 (input 1×4×8×8)"),
    "BatchNorm2d channels": (lambda: Wrap(nn.BatchNorm2d(3)), (1, 3, 4, 4), (1, 5, 4, 4),
                             "BatchNorm2d expects 3 channels but got 5 (input 1×5×4×4)"),
    "F.linear in_features": (lambda: Wrap(FunctionalLinear()), (2, 8), (2, 6),
                             "linear expects 8 input features but got 6 (input 2×6)"),
    "F.conv2d in_channels": (lambda: Wrap(FunctionalConv()), (1, 3, 8, 8), (1, 4, 8, 8),
                             "conv2d expects 3 input channels but got 4 (input 1×4×8×8)"),
    "F.batch_norm channels": (lambda: Wrap(FunctionalBatchNorm()), (1, 3, 4, 4), (1, 5, 4, 4),
                              "batch_norm expects 3 channels but got 5 (input 1×5×4×4)"),
    "add in a layer": (lambda: Wrap(PooledShortcut()), (1, 3, 8, 8), (1, 3, 9, 9),
                       "the size of tensor a (5) must match the size of tensor b (4) at non-singleton dimension 2"),
    "in-place add in a layer": (lambda: Wrap(InplaceAdd()), (1, 3, 1, 8), (1, 3, 2, 8),
                                "in-place add: output with shape 1×3×1×8 doesn't match the broadcast shape 1×3×2×8"),
    "add in a module": (lambda: AddBias(), (1, 3, 8, 8), (1, 3, 16, 16),
                        "the size of tensor a (16) must match the size of tensor b (8) at non-singleton dimension 2"),
}  # fmt: skip


def _jit_roundtrip(module):
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _messages(make, good, bad) -> dict[str, list[str]]:
    torch.manual_seed(0)
    model = make().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = _jit_roundtrip(torch.jit.script(model))
        traced = _jit_roundtrip(torch.jit.trace(model, torch.randn(*good)))
        exported = torch.export.export(model, (torch.randn(*good),))
    traces = {
        "eager": trace_module(model, bad),
        "jit.script": trace_script_module(scripted, bad),
        "jit.trace": trace_script_module(traced, bad),
        "torch.export": trace_exported(exported, bad),
    }
    return {name: [e.message for e in t.errors] for name, t in traces.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_same_error_same_words_in_every_front_end(case):
    make, good, bad, words = CASES[case]
    messages = _messages(make, good, bad)
    assert messages == {name: [words] for name in messages}


def test_aten_and_functional_rules_are_the_same_objects():
    """Where aten's schema is the function's, the aten-level table holds the very rule object."""
    from resviz.core.tracing.torchscript.aten import ATEN_RULES

    for name in ("conv2d", "linear", "layer_norm", "group_norm"):
        assert ATEN_RULES[name] is rules.OP_RULES[name] is rules.FUNC_RULES[getattr(F, name)]


def test_aten_convolution_says_it_as_the_conv_layer_does():
    """``aten::_convolution`` (what ``torch.jit.trace`` records for a conv) names the conv2d."""
    w = torch.empty(8, 3, 3, 3, device="meta")
    op = torch.ops.aten._convolution.default
    with pytest.raises(rules.RuleError, match=r"^conv2d expects 3 input channels but got 4 \(input 1×4×8×8\)$"):
        aten_eval(op, [TracedTensor((1, 4, 8, 8), torch.float32), w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                       False, False, True, True], {})  # fmt: skip
