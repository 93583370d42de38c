"""The tracers' one recording API (resviz.core.tracing.builder.TraceBuilder), used directly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from resviz.core.analysis.residual import find_residual_adds
from resviz.core.tracing import shape_rules as rules
from resviz.core.tracing.builder import (
    PlainMessage,
    TraceBuilder,
    carrying_shortcut,
    clean_message,
)
from resviz.core.tracing.forks import split_add
from resviz.core.tracing.records import Trace


def _block(shortcut_shape=(1, 8, 4, 4), residual_shape=(1, 16, 2, 2)):
    """input -> model call -> block call: conv (residual) and an identity shortcut, added."""
    b = TraceBuilder((1, 8, 4, 4))
    inp = b.input()
    x = b.value((1, 8, 4, 4), torch.float32, inp.id)
    inp.outputs = [x]
    b.enter("", "Net", [x])
    cid = b.enter("block", "Block", [x])
    conv = b.op("module", "block.conv", "Conv2d", [x], params=10)
    r = b.value(residual_shape, torch.float32, conv.id)
    conv.outputs = [r]
    add = b.function("add", [r, x])
    return b, cid, add, r, x


def test_a_residual_add_that_does_not_fit_goes_on_with_the_residual_branch_and_records_nothing():
    b, cid, add, r, x = _block()
    shape = b.add(add, (1, 16, 2, 2), (1, 8, 4, 4), traced=(True, True), distinct=True, inplace=False)
    assert shape == (1, 16, 2, 2)
    assert b.errors == []  # the analysis reports it as a mismatch, with its cause
    split = split_add(b, add.id, cid)
    assert (split.fork, split.shortcut, split.residual) == (x, x, r)


def test_carrying_the_shortcut_past_an_add_the_analysis_blamed():
    b, cid, add, r, x = _block()
    with carrying_shortcut({add.id: "the next conv wants 8 channels"}):
        shape = b.add(add, (1, 16, 2, 2), (1, 8, 4, 4), traced=(True, True), distinct=True, inplace=False)
    assert shape == (1, 8, 4, 4)


def test_an_add_of_a_constant_that_does_not_fit_is_a_broadcast_error():
    b, cid, add, r, x = _block()
    const = b.value((3,), torch.float32, None)
    other = b.function("add", [r, const])
    shape = b.add(other, (1, 16, 2, 2), (3,), traced=(True, False), distinct=True, inplace=False)
    assert shape == (1, 16, 2, 2)
    [err] = b.errors
    assert (err.module, err.type, err.fatal) == ("block.add_1", "add", False)
    assert "must match the size of tensor b (3)" in err.message


def test_elementwise_goes_on_with_the_data_not_a_parameter():
    b, cid, add, r, x = _block()
    gamma = b.value((8, 1, 1), torch.float32, None)  # a layer-scale of the old width
    mul = b.function("mul", [gamma, r])
    assert b.elementwise(mul, "mul", (8, 1, 1), (1, 16, 2, 2), inplace=False) == (1, 16, 2, 2)
    assert b.errors[0].module == "block.mul" and not b.errors[0].fatal


def test_functions_are_named_in_their_call_like_torch_fx_nodes():
    b, cid, add, r, x = _block()
    assert add.name == "block.add"
    assert b.function("add", [r]).name == "block.add_1"
    b.exit(cid, [r])
    assert b.function("add", [r]).name == "add"  # in the model's own call


def test_a_failure_outside_any_op_is_charged_to_the_innermost_call():
    b, cid, add, r, x = _block()
    b.fail_in_call("ValueError: expected an RGB image")
    b.exit(cid)
    b.fail_in_call("boom", type_="view")
    assert [(e.module, e.type, e.fatal) for e in b.errors] == [("block", "Block", True), ("(model)", "view", True)]


def test_a_layer_rule_error_is_recorded_and_tracing_goes_on_with_the_shape_it_would_make():
    b, cid, add, r, x = _block()
    lin = b.op("module", "block.fc", "Linear", [r])

    def rule(module, shape):
        raise rules.RuleError("expected 64 input features, got 4", continue_shape=(1, 10))

    assert b.layer_shape(rule, None, (1, 4), lin) == (1, 10)
    assert b.errors[-1].module == "block.fc" and not b.errors[-1].fatal


def test_finish_gives_a_plain_trace_with_open_calls_closed_and_no_builder_state():
    b, cid, add, r, x = _block()
    out = b.value((1, 16, 2, 2), torch.float32, add.id)
    add.outputs = [out]
    b.add(add, (1, 16, 2, 2), (1, 8, 4, 4), traced=(True, True), distinct=True, inplace=False)
    trace = b.finish(complete=False)
    assert type(trace) is Trace
    assert {f.name for f in dataclasses.fields(trace)} == {
        "input_shape", "inputs", "dtype", "device", "values", "ops", "calls", "errors",
        "candidate_adds", "complete", "output_values", "modules",
    }  # fmt: skip
    assert not hasattr(trace, "__dict__")  # slots only: nothing else can be hung on it
    assert [c.last_op for c in trace.calls] == [add.id, add.id]
    assert trace.candidate_adds == [add.id]
    # the analysis pass, after tracing, finds the residual add and its mismatch
    [res] = find_residual_adds(trace)
    assert (res.block, res.kind, res.shapes_match) == ("block", "identity", False)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied\nmore"), "mat1 and mat2 shapes cannot be multiplied"),
        (rules.RuleError("Conv2d expects 3 input channels"), "Conv2d expects 3 input channels"),
        (PlainMessage("aten::view: shape is invalid"), "aten::view: shape is invalid"),
        (ValueError("expected an RGB image"), "ValueError: expected an RGB image"),
        (KeyError(), "KeyError: KeyError"),
    ],
)
def test_one_message_cleaner(error, text):
    assert clean_message(error) == text
