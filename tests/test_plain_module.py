"""One stand-in for a live module wherever a report has none: a child process's report, a run's
``report.json`` read back, a TorchScript/export archive's layers."""

from __future__ import annotations

import pickle

from resviz.core.session.isolation import PlainModule, loads_records
from resviz.core.tracing.plain_module import plain_module
from resviz.core.tracing.torchscript import hyper_object
from resviz.core.training.runreport import report_from_json, report_json


def test_the_stand_in_reads_as_the_module_and_crosses_the_child_allow_list():
    conv = plain_module("Conv2d", "nets/model.py:12", {"kernel_size": (3, 3), "stride": (2, 2), "bias": None})
    assert isinstance(conv, PlainModule) and type(conv).__name__ == "Conv2d"
    assert conv.kernel_size == (3, 3) and conv.bias is None and conv.class_source == "nets/model.py:12"
    back = loads_records(pickle.dumps({"m": conv}))["m"]  # by value, through resviz's allow-list
    assert back == conv and type(back) is type(conv)
    assert type(plain_module("my layer", "", {})).__name__ == "Layer"


def test_run_reports_and_archives_use_the_same_stand_in():
    import torch

    from resviz import analyze

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, bias=False), torch.nn.ReLU())
    stored = report_from_json(report_json(analyze(net, (1, 3, 8, 8))))
    conv = next(stored.module(op.name) for op in stored.ops if op.type == "Conv2d")
    assert isinstance(conv, PlainModule) and type(conv).__name__ == "Conv2d"
    assert conv.stride == (2, 2) and conv.bias is None and conv.out_channels == 4
    assert isinstance(hyper_object("Conv2d", {"stride": (1, 1)}), PlainModule)
