"""Per-block parameter counts in TorchScript and torch.export archives equal the blocks' own
``parameters()`` too, a layer-scale gamma and a fused norm's affine included (issue 8 §4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resviz
from tests.test_params_macs import FusedBlock, LayerScaleBlock


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_archive_blocks_count_their_own_parameters(kind):
    torch.manual_seed(0)
    model = nn.Sequential(FusedBlock(3, 8, 1), LayerScaleBlock(8), FusedBlock(8, 8, 2)).eval()
    shape = (1, 3, 8, 8)
    x = torch.zeros(shape)
    archive = torch.jit.trace(model, x) if kind == "torchscript" else torch.export.export(model, (x,))
    report = resviz.analyze(archive, shape, suggest_sizes=False)
    assert report.ok and report.blocks
    modules = dict(model.named_modules())
    assert {b.name: b.params for b in report.blocks} == {
        b.name: sum(p.numel() for p in modules[b.name].parameters()) for b in report.blocks
    }
