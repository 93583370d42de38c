"""Records name their module; the report finds it (issue 11: records hold names and plain
hyper-parameters, not live ``nn.Module``s).

A report made in this process finds a layer in the live model by path (one reference to the model,
none per record); a report that crossed a process boundary, or was read back from a run directory,
holds a plain stand-in per path and nothing of the user's module."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import pickle

import torch
from torch import nn
from torch.nn import functional as F

import resviz
from resviz.core.analysis.describe import hyperparams, short_label
from resviz.core.session.isolated_child import plain_report
from resviz.core.session.isolation import PlainModule, loads_records
from resviz.core.tracing.records import Call, ModuleIndex, Op
from resviz.core.training.runreport import report_from_json, report_json


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.proj = nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = F.relu(self.relu(self.conv(x)))  # a functional op named like the module beside it
        return y + (self.proj(x) if self.proj is not None else x)


def net() -> nn.Module:
    return nn.Sequential(Block(3, 8, 2), Block(8, 8))


def _live_modules(root) -> list:
    """Every nn.Module reachable from ``root`` through object references."""
    seen, todo, found = set(), [root], []
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, str, bytes, int, float)):
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.append(obj)
        todo.extend(gc.get_referents(obj))
    return found


def test_records_hold_no_module_and_the_report_finds_each_layer_in_the_live_model():
    model = net()
    report = resviz.analyze(model, (1, 3, 8, 8))
    fields = {f.name for f in dataclasses.fields(Op)} | {f.name for f in dataclasses.fields(Call)}
    assert "module" not in fields
    assert not any(_live_modules(r) for r in (*report.ops, *report.calls))  # one reference: the index's
    assert report.module("0.conv") is model[0].conv and report.module("") is model
    assert report.module("0.proj") is model[0].proj and report.module("1.proj") is None
    assert report.module("nothing.here") is None
    block = next(c for c in report.calls if c.path == "1")
    assert report.modules.of(block) is model[1]
    # `F.relu` in block 0 is named `0.relu_1` or `0.relu`: only a module op answers with a module
    fn = next(op for op in report.ops if op.kind == "function" and op.type == "relu")
    assert report.modules.of(fn) is None and short_label(fn, report.modules) == "relu"
    conv = report.op_named("0.conv")
    assert short_label(conv, report.modules) == "Conv2d 3×3/2 3→8"
    assert hyperparams(conv, report.modules)["stride"] == [2, 2]


def test_a_report_for_the_parent_pickles_without_any_live_module():
    model = net()
    report = resviz.analyze(model, (1, 3, 8, 8))
    labels = [short_label(op, report.modules) for op in report.ops]
    params = [hyperparams(op, report.modules) for op in report.ops]
    plain = plain_report(report)  # what the child sends
    data = pickle.dumps(plain)
    back = loads_records(data)  # the parent's allow-list: resviz records and builtins only
    assert not _live_modules(back) and not _live_modules(pickle.loads(data))
    assert back.modules.root is None
    assert [short_label(op, back.modules) for op in back.ops] == labels  # the same words
    assert [hyperparams(op, back.modules) for op in back.ops] == params
    conv = back.module("0.conv")
    assert isinstance(conv, PlainModule) and conv.out_channels == 8 and "torch" in conv.class_source
    model_call = back.modules.of(back.calls[0])
    assert model_call.type_name == "Sequential" and "torch" in model_call.class_source
    block = back.module("1")
    assert block.type_name == "Block"
    assert block.class_source == f"{__file__}:{inspect.getsourcelines(Block)[1]}"


def test_a_module_called_twice_or_seen_as_op_and_call_is_one_stand_in():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    plain = plain_report(resviz.analyze(nn.Sequential(shared, nn.ReLU(), shared), (1, 4, 6, 6)))
    assert [op.call_index for op in plain.ops if op.name == "0"] == [0, 1]  # recorded at its first path
    assert isinstance(plain.module("0"), PlainModule)
    layer = plain_report(resviz.analyze(nn.Conv2d(3, 4, 3), (1, 3, 8, 8)))  # a model that is one layer
    assert layer.modules.of(layer.calls[0]) is layer.modules.of(layer.op_named("")) is not None


def test_a_run_report_keeps_each_layers_hyper_parameters_and_its_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(10, 2))
    report = resviz.analyze(model, (1, 3, 8, 8), suggest_sizes=False)
    assert [e.module for e in report.errors] == ["2"]
    back = report_from_json(json.loads(json.dumps(report_json(report))))
    assert [(e.module, e.message) for e in back.errors] == [(e.module, e.message) for e in report.errors]
    assert back.to_dict()["errors"] == report.to_dict()["errors"]
    conv = back.module("0")
    assert isinstance(conv, PlainModule) and conv.stride == (2, 2) and conv.out_channels == 4
    labels = [short_label(op, report.modules) for op in report.ops]
    assert [short_label(op, back.modules) for op in back.ops] == labels
    assert not _live_modules(back)


def test_a_script_module_finds_its_layers_by_path_too():
    model = net().eval()
    scripted = torch.jit.script(model)
    report = resviz.core.analysis.pipeline.analyze_any(scripted, (1, 3, 8, 8), suggest_sizes=False)
    assert report.ok
    assert report.modules.of(report.calls[0]) is scripted  # the ScriptModule: no class source to show
    conv = report.module("0.conv")  # a layer whose hyper-parameters TorchScript keeps: its stand-in
    assert short_label(report.op_named("0.conv"), report.modules) == "Conv2d 3×3/2 3→8"
    assert conv is not None and conv.stride in ((2, 2), [2, 2])


def test_an_exported_program_has_no_live_root_only_its_layers_stand_ins():
    model = net().eval()
    exported = torch.export.export(model, (torch.zeros(1, 3, 8, 8),))  # the first export warms torch up
    ep = resviz.core.analysis.pipeline.analyze_any(exported, (1, 3, 8, 8), suggest_sizes=False)
    assert ep.modules.root is None and isinstance(ep.module("0.conv"), PlainModule)
    assert short_label(ep.op_named("0.conv"), ep.modules) == "Conv2d 3×3/2 3→8"


def test_the_index_walks_the_models_modules_and_prefers_a_stand_in():
    model = net()
    stand_in = PlainModule("Conv2d", "", {"stride": (1, 1)})
    index = ModuleIndex(model, {"0.conv": stand_in})
    assert index.get("0.conv") is stand_in and index.get("1.conv") is model[1].conv
    assert index.get("1.conv.weight") is None and index.get("0.proj.x") is None
    call = Call(0, "0.conv", "Conv2d", None, [])  # a call of the same path keeps its own module
    assert index.of(call) is model[0].conv
    assert ModuleIndex().get("") is None
