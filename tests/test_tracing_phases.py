"""The phases the tracers and the pipeline are split into, each on its own: the eager shadow's
private copies, the torch.export signature reading, and the input-size sweep."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from torch import nn

import resviz
from resviz.core.analysis import pipeline
from resviz.core.errors import ResvizError
from resviz.core.tracing import eager, exported
from resviz.core.tracing.eager import trace_module

# ---------------------------------------------------------------------- eager: private copies


def test_stateless_values_are_shared_and_state_is_copied():
    assert eager._is_stateless(3) and eager._is_stateless("relu") and eager._is_stateless(len)
    assert eager._is_stateless(nn.ReLU())  # a module is code, not state
    assert not eager._is_stateless([1]) and not eager._is_stateless(torch.zeros(1))


def test_contents_are_copied_at_every_depth_and_shared_ones_once():
    shared = [1, 2]
    val = {"a": shared, "b": shared, "t": torch.zeros(2)}
    out = dict(val)
    eager._copy_contents(val, out, torch.device("meta"), {})
    assert out["a"] is out["b"] and out["a"] is not shared and out["a"] == shared
    assert out["t"].is_meta and not val["t"].is_meta


def test_an_object_that_cannot_be_copied_stays_the_users_own():
    lock = threading.Lock()
    assert eager._private_copy(lock, torch.device("meta"), {}) is lock
    assert eager._private_tensor(torch.empty(2, device="meta"), torch.device("meta")).is_meta


# ---------------------------------------------------------------------- torch.export: signature


class _Gamma(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.gamma = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x):
        return self.conv(x) * self.gamma


@pytest.fixture(scope="module")
def program():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(nn.Sequential(_Gamma()).eval(), (torch.randn(1, 3, 8, 8),))


def test_signature_phases_read_inputs_owners_outputs_and_the_root(program):
    users, params, owners = exported._read_inputs(program.graph_signature, program.state_dict)
    assert len(users) == 1
    assert params == {"0.conv.weight": 12, "0.conv.bias": 4, "0.gamma": 4}
    assert owners == {"0.conv", "0"}
    assert exported._own_params(params) == {"0.conv": 16, "0": 4}
    assert exported._parent_paths(program.graph, owners) == {"0"}
    assert exported._root_type(program.graph) == "Sequential"
    assert len(exported._user_outputs(program.graph, program.graph_signature)) == 1
    sig = exported._Signature(program)
    assert sig.exported_shape == (1, 3, 8, 8) and sig.dtype == torch.float32


def test_the_exported_model_call_is_named_after_its_class(program):
    trace = exported.trace_exported(program, (2, 3, 8, 8))
    assert trace.complete and trace.calls[0].type == "Sequential"
    assert [c.path for c in trace.calls] == ["", "0"] and trace.calls[1].params == 4


# ---------------------------------------------------------------------- the input-size sweep


class _OnlySmall(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 64 * 64, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_traces_clean_says_works_fails_or_stop():
    report = resviz.analyze(_OnlySmall(), (1, 3, 32, 32), suggest_sizes=False)
    assert pipeline._traces_clean(_OnlySmall(), report, trace_module, 64) is True
    assert pipeline._traces_clean(_OnlySmall(), report, trace_module, 96) is False

    def refuses(m, shape):
        raise ResvizError("cannot trace")

    def bug(m, shape):
        raise KeyError("oops")

    assert pipeline._traces_clean(_OnlySmall(), report, refuses, 64) is False
    with pytest.warns(RuntimeWarning, match="this is a bug in resviz"):
        assert pipeline._traces_clean(_OnlySmall(), report, bug, 64) is None


def test_sizes_that_work_skip_the_reports_own_size_and_stop_at_a_bug():
    report = resviz.analyze(_OnlySmall(), (1, 3, 32, 32), suggest_sizes=False)
    assert pipeline._sizes_that_work(_OnlySmall(), report, 30, trace_module) == [64]

    def bug_after_64(m, shape):
        if shape[-1] > 64:
            raise KeyError("oops")
        return trace_module(m, shape)

    with pytest.warns(RuntimeWarning):
        assert pipeline._sizes_that_work(_OnlySmall(), report, 30, bug_after_64) == [64]


def test_one_pipeline_for_eager_modules_and_archives(program):
    eager_report = resviz.analyze(nn.Sequential(_Gamma()).eval(), (1, 3, 8, 8), suggest_sizes=False)
    archive_report = pipeline.analyze_any(program, (1, 3, 8, 8), suggest_sizes=False)
    assert archive_report.total_params == eager_report.total_params == 20
    assert archive_report.ok and eager_report.ok
    with pytest.raises(ResvizError, match="one positional float32 input"):
        pipeline.analyze_any(program, (1, 3, 8, 8), dtype=torch.int64)
