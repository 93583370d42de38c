"""How a report reads: one order of shapes, one way to write them, plurals, a short repr."""

from __future__ import annotations

import re

from torch import nn

import resviz
from resviz.core.session.opened_model import open_model
from resviz.render.text import Style, format_check, verdict
from tests.nets import BodyShortcutBlock


def _one_broken_block():
    body = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16))
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BodyShortcutBlock(body, nn.Identity()))


def test_a_single_mismatch_reads_in_the_singular():
    report = resviz.analyze(_one_broken_block(), (1, 3, 16, 16))
    assert len(report.mismatches) == 1 and len(report.blocks) == 1
    assert verdict(report) == "1 shortcut mismatch in 1 block"
    assert format_check(report, Style(False)).splitlines()[-1] == "✗ 1 shortcut mismatch in 1 block"


def test_a_net_without_residual_adds_says_it_has_no_shortcuts():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten())
    report = resviz.analyze(plain, (1, 3, 16, 16))
    assert report.ok and not report.residual_adds
    line = format_check(report, Style(False)).splitlines()[-1]
    assert "no residual adds" in line and "every shortcut matches" not in line
    twin = open_model("plain20").report  # blocks, but none with a shortcut
    assert verdict(twin) == "9 blocks, none with a shortcut: the network has no residual adds"


def test_the_cause_and_the_headline_give_the_shapes_in_one_order_and_one_notation():
    report = open_model("assets/broken_identity.toml").report
    text = format_check(report, Style(False))
    for m in report.mismatches:
        assert "residual 32×16×16 vs shortcut 16×32×32" in m.cause or m.block != "layer2.0"
    assert "residual 32×16×16 vs shortcut 16×32×32" in text
    shapes = re.findall(r"\b\d+[x×]\d+[x×]\d+(?:[x×]\d+)*\b", text)  # tensors, not kernels
    assert shapes and all("x" not in s for s in shapes), [s for s in shapes if "x" in s]
    assert report.to_dict()["mismatches"][0]["residual_shape"] == [1, 32, 16, 16]  # JSON: lists


def test_printing_a_report_is_one_short_line():
    report = open_model("assets/broken_identity.toml").report
    assert repr(report) == "<Report broken-identity 1×3×32×32: 9 blocks, 2 mismatches, not ok>"
    assert str(report) == repr(report)
