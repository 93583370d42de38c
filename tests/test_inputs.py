"""Inputs that are not one float image (issue 8 §5): shapes taken as given from Python, integer
and several inputs, the hint for token models, and input sizes that really work."""

from __future__ import annotations

from torch import nn

import resviz


class _OddSizeBlock(nn.Module):
    """Residual branch: a padded 3x3 stride-2 conv (ceil(H/2)); shortcut: a 2x2 average pool
    (floor(H/2)). They agree at even sizes only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, 2, 1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.conv(x) + self.pool(x)


class _RefusesLargeInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block = _OddSizeBlock()

    def forward(self, x):
        if x.shape[-1] > 100:
            raise ValueError("this model takes images up to 100 pixels")
        return self.block(self.stem(x))


def test_input_sizes_that_work_are_sizes_where_the_whole_net_traces_clean():
    report = resviz.analyze(_RefusesLargeInputs(), (1, 3, 99, 99), size_budget_s=30)
    (m,) = report.mismatches
    # above 100 the trace stops in forward before reaching the block: those sizes do not work
    assert m.input_sizes == [32, 64, 96]
    assert report.suggested_sizes == [32, 64, 96]
    for size in m.input_sizes:
        assert resviz.analyze(_RefusesLargeInputs(), (1, 3, size, size)).ok
