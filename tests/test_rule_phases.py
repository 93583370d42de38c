"""The phases of shape checking and of reading an archive's layers, each on its own: the one
check per concept in ``shape_rules`` (shape, message, the shape tracing goes on with), the rule
objects' needs, and the TorchScript interpreter's pieces (an aten op evaluated, a layer's
attributes read off its aten call or its graph, ``isinstance`` on TorchScript type names)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from resviz.core.tracing import shape_rules as rules
from resviz.core.tracing.torchscript.aten import _constant_eval, _rule_eval, result_dtype
from resviz.core.tracing.torchscript.common import TracedTensor
from resviz.core.tracing.torchscript.interp import is_instance_of
from resviz.core.tracing.torchscript.layers import hyper_from_aten, scan_layer_graph

# ---------------------------------------------------------------------- one check per concept


def test_conv_shape_goes_on_with_the_layers_output_at_wrong_channels():
    assert rules.conv_shape((1, 3, 9, 9), 3, 8, (3, 3), (2, 2), (1, 1), (1, 1)) == (1, 8, 5, 5)
    assert rules.conv_shape((1, 3, 9, 9), 3, 8, (3, 3), (1, 1), "same", (1, 1)) == (1, 8, 9, 9)
    assert rules.conv_shape((3, 4, 4), 3, 8, (1, 1), (1, 1), (0, 0), (1, 1), True, (0, 0)) == (8, 4, 4)  # unbatched
    with pytest.raises(rules.RuleError, match=r"^conv2d expects 3 input channels but got 4 \(input 1×4×9×9\)$") as e:
        rules.conv_shape((1, 4, 9, 9), 3, 8, (3, 3), (2, 2), (1, 1), (1, 1))
    assert e.value.continue_shape == (1, 8, 5, 5)
    with pytest.raises(rules.RuleError, match="too small for kernel 5×5 with padding 0×0") as e:
        rules.conv_shape((1, 3, 3, 3), 3, 8, (5, 5), (1, 1), (0, 0), (1, 1), layer="Conv2d")
    assert e.value.continue_shape is None  # nothing sensible to go on with
    with pytest.raises(rules.RuleError, match=r"^Conv2d expects a 3D \(unbatched\) or 4D \(batched\) input"):
        rules.conv_shape((3, 3), 3, 8, (3, 3), (1, 1), (1, 1), (1, 1), layer="Conv2d")


def test_conv_weight_shape_reads_channels_off_the_weight_and_groups():
    assert rules.conv_weight_shape((1, 8, 4, 4), (8, 2, 3, 3), 1, 1, 1, groups=4) == (1, 8, 4, 4)
    assert rules.conv_weight_shape((1, 8, 9, 9), (8, 8, 3, 3), [2], "valid", (1, 1)) == (1, 8, 4, 4)
    assert rules.conv_weight_shape((1, 8, 4, 4), (8, 3, 2, 2), 2, 0, 1, 1, True) == (1, 3, 8, 8)


def test_linear_shape_says_the_width_and_suspects_a_missing_flatten():
    assert rules.linear_shape((2, 5, 8), 8, (4,)) == (2, 5, 4)
    assert rules.linear_shape((2, 8), 8, ()) == (2,)  # a 1-D weight
    with pytest.raises(rules.RuleError) as e:
        rules.linear_shape((2, 3, 4, 4), 48, (10,), "Linear")
    assert str(e.value) == "Linear expects 48 input features but got 4 (input 2×3×4×4) (was the input flattened?)"
    assert e.value.continue_shape == (2, 3, 4, 10)
    with pytest.raises(rules.RuleError, match="scalar"):
        rules.linear_shape((), 8, (4,))


def test_batch_norm_shape_and_which_statistics_name_the_channels():
    assert rules.batch_norm_shape((2, 3, 4), 3) == (2, 3, 4)
    with pytest.raises(rules.RuleError, match=r"^batch_norm expects 3 channels but got 5 \(input 1×5\)$"):
        rules.batch_norm_shape((1, 5), 3)
    with pytest.raises(rules.RuleError, match="at least 2D"):
        rules.batch_norm_shape((5,), 5)
    # the statistic that disagrees is the one named, whichever comes first
    with pytest.raises(rules.RuleError, match="expects 7 channels but got 5"):
        rules.batch_norm_rule((1, 5, 2), [None, (5,), (7,), None])
    assert rules.batch_norm_rule((1, 5, 2), [None, None]) == (1, 5, 2)  # no statistics: no check


def test_pool_shape_checks_padding_and_size():
    assert rules.pool_shape((1, 2, 9, 9), 3, None, 1, 1, False, 2, "max_pool2d") == (1, 2, 3, 3)
    assert rules.pool_shape((1, 2, 9, 9), 2, 2, 0, 1, True, 2, "max_pool2d") == (1, 2, 5, 5)
    with pytest.raises(rules.RuleError, match="^MaxPool2d: padding 2 should be at most half of kernel size 3$"):
        rules.pool_shape((1, 2, 9, 9), 3, 1, 2, 1, False, 2, "MaxPool2d")
    with pytest.raises(rules.RuleError, match="^avg_pool2d: input 2×2 is too small for kernel 3×3$"):
        rules.pool_shape((1, 2, 2, 2), 3, 1, 0, 1, False, 2, "avg_pool2d")


def test_in_place_ops_are_named_alike_however_they_are_spelt():
    for name in ("add_", "add"):
        assert rules.binary_error(name, (1, 3, 1), (1, 3, 4), (1, 3, 4)).startswith("in-place add: ")
    rule = rules.elementwise_rule(torch.Tensor.__imul__)
    with pytest.raises(rules.RuleError, match="^in-place mul: output with shape 2×1 "):
        rule([(2, 1), (2, 3)], {})


# ---------------------------------------------------------------------- rule objects


def test_module_rules_say_what_they_need_of_a_layer():
    layer = nn.Conv2d(3, 4, 3)
    conv = rules.module_rule(layer)
    assert conv is rules.CONV_RULE and "groups" in conv.reads and conv(layer, (1, 3, 5, 5)) == (1, 4, 3, 3)
    attrs = {"in_channels": 3, "out_channels": 4, "kernel_size": (3, 3), "stride": (1, 1), "padding": (0, 0)}
    assert not conv.can_run(attrs)  # no dilation
    assert conv.can_run({**attrs, "dilation": (1, 1)})
    pool = rules.POOL_RULE
    full = {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": False}
    assert pool.can_run(full) and pool.needs_met({**full, "return_indices": True})
    assert not pool.can_run({**full, "return_indices": True})  # values and indices: not one tensor
    assert rules.module_rule(nn.MaxPool2d(2, return_indices=True)) is None
    assert rules.SAME_RULE.can_run({})


# ---------------------------------------------------------------------- the interpreter's phases


def test_isinstance_on_torchscript_type_names():
    t = TracedTensor((1, 2), torch.float32)
    cases = [
        (t, "Tensor", True), (torch.zeros(1), "Tensor", True), (None, "NoneType", True),
        (3, "int", True), (True, "int", False), (True, "bool", True), (1.5, "float", True),
        ("a", "str", True), ([1], "List[int]", True), ([1], "int[]", True), ((1,), "Tuple[int]", True),
        ((1,), "(int, int)", True), ({}, "Dict[str, int]", True), ([1], "Tuple[int]", False),
        (t, "Foo", False),
    ]  # fmt: skip
    assert [is_instance_of(v, name) for v, name, _ in cases] == [want for _, _, want in cases]


def test_aten_rule_eval_and_result_dtypes():
    x = TracedTensor((2, 3), torch.int64)
    y = TracedTensor((2, 3), torch.float16)
    assert result_dtype("add", [x, y]) == torch.float16
    assert result_dtype("div", [x, 2]) == torch.get_default_dtype()
    assert result_dtype("relu", [x]) == torch.int64
    out = _rule_eval("add", [x, y], {})
    assert out.shape == (2, 3) and out.dtype == torch.float16
    assert _rule_eval("relu_", [x], {}) is x  # in place: the input itself
    assert _rule_eval("no_such_op", [x], {}) is None  # no rule: the caller runs it on meta
    assert _rule_eval("view", [x, [-1, -1]], {}) is None  # the rule declines two -1s


def test_a_tensor_made_inside_forward_is_made_on_meta():
    out = _constant_eval(torch.ops.aten.zeros.default, [[2, 3]], {}, [])
    assert out.device.type == "meta" and out.shape == (2, 3)
    real = _constant_eval(torch.ops.aten.add.Tensor, [torch.ones(2), torch.ones(2)], {}, [])
    assert real.device.type == "cpu" and real.tolist() == [2.0, 2.0]


def test_layer_attributes_from_its_aten_call():
    w = torch.empty(8, 3, 3, 3)
    conv = hyper_from_aten("conv2d", [None, w, None, [2, 2], [1, 1], [1, 1], 1], False)
    assert conv["in_channels"] == 3 and conv["out_channels"] == 8 and conv["stride"] == (2, 2)
    assert conv["bias"] is None and conv["kernel_size"] == (3, 3)
    wt = torch.empty(4, 2, 2, 2)  # a transposed conv's weight: in, out / groups, k...
    up = hyper_from_aten("_convolution", [None, wt, None, [2, 2], [0, 0], [1, 1], True, [0, 0], 1], False)
    assert (up["in_channels"], up["out_channels"], up["output_padding"]) == (4, 2, (0, 0))
    assert hyper_from_aten("max_pool2d", [None, [3, 3], [2, 2], [1, 1], [1, 1], False], False) == {
        "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1, "ceil_mode": False, "return_indices": False,
    }  # fmt: skip
    assert hyper_from_aten("addmm", [None, None, torch.empty(8, 4)], False) == {
        "in_features": 8, "out_features": 4, "bias": True,
    }  # fmt: skip
    assert hyper_from_aten("batch_norm", [None, None, None, torch.empty(6), None], False) == {"num_features": 6}
    assert hyper_from_aten("batch_norm", [None, None, None, None, None], False) is None
    assert hyper_from_aten("adaptive_avg_pool2d", [None, [1, 1]], False)["output_size"] == 1
    assert hyper_from_aten("relu_", [None], True) == {"inplace": True}
    assert hyper_from_aten("conv2d", [None, w], False) is None  # another overload's arguments
    assert hyper_from_aten("no_such_op", [None], False) is None


def test_a_traced_layers_graph_shows_its_call_and_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated; archives made with it are not
        traced = torch.jit.trace(nn.Conv2d(3, 8, 3, stride=2, bias=False), torch.zeros(1, 3, 8, 8))
    base, spec = scan_layer_graph(traced._c._get_method("forward").graph)
    assert base == "_convolution"
    kinds = [k for k, _ in spec]
    assert kinds[:3] == ["input", "attr", "const"]  # x, self.weight, bias=None
    assert spec[1][1] == "weight" and spec[3] == ("const", [2, 2])  # stride
