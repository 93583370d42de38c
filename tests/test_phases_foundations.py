"""The phases of shape and input parsing, each on its own (issue 11: split functions are tested
alone, not only through the whole pipeline)."""

import pytest
import torch

from resviz.core.errors import ResvizError, ShapeSyntaxError
from resviz.core.inputs import (
    Input,
    _args_before_kwargs,
    _checked_names,
    _input_from_shape,
    _inputs_from_values,
)
from resviz.core.shapes import MAX_DIM, _check_dims, _dims_from_sequence, _dims_from_text


@pytest.mark.parametrize(
    ("text", "dims"),
    [
        ("1x3x32x32", (1, 3, 32, 32)),
        ("(3, 32, 32)", (3, 32, 32)),
        ("2 × 4", (2, 4)),
        ("[7]", (7,)),
        ("0x-1", (0, -1)),
    ],
)
def test_typed_dims_are_read_without_range_checks(text, dims):
    assert _dims_from_text(text) == dims


@pytest.mark.parametrize(
    ("text", "words"), [("  ", "empty"), ("3xa", "not a list of integers"), ("1" * 20, "more than 19 digits")]
)
def test_typed_dims_that_are_not_integers_say_so(text, words):
    with pytest.raises(ShapeSyntaxError, match=words):
        _dims_from_text(text)


def test_sequence_dims_take_ints_and_reject_the_rest():
    assert _dims_from_sequence([1, 2.0, torch.tensor(3)]) == (1, 2, 3)
    with pytest.raises(ShapeSyntaxError, match="not a sequence of integers"):
        _dims_from_sequence([1, "a"])
    with pytest.raises(ShapeSyntaxError, match="not a sequence of integers"):
        _dims_from_sequence(5)


@pytest.mark.parametrize(
    ("dims", "words"),
    [
        ((), "1 to 5 dimensions"),
        ((1,) * 6, "1 to 5 dimensions"),
        ((1, 0), "not positive"),
        ((MAX_DIM + 1,), "past the limit"),
        ((2**20, 2**21), "elements"),
    ],
)
def test_dims_out_of_range_are_refused(dims, words):
    with pytest.raises(ShapeSyntaxError, match=words):
        _check_dims(dims)


def test_dims_in_range_pass():
    _check_dims((1, 3, 224, 224))
    _check_dims((MAX_DIM,))


def test_a_shape_gives_one_float_input_unless_dtype_or_input_is_given():
    assert _input_from_shape((1, 3), None) == Input((1, 3), torch.float32)
    assert _input_from_shape((1, 3), torch.int64) == Input((1, 3), torch.int64)
    named = Input((2,), torch.bool, "mask")
    assert _input_from_shape(named, torch.int64) is named
    with pytest.raises(ResvizError, match="give the input"):
        _input_from_shape(None, None)


def test_values_become_inputs_named_by_mapping_keys():
    ids = torch.zeros(1, 4, dtype=torch.long)
    assert _inputs_from_values(ids, None) == [Input((1, 4), torch.int64)]
    assert _inputs_from_values({"ids": ids, "n": (2,)}, torch.int32) == [
        Input((1, 4), torch.int64, "ids"),
        Input((2,), torch.int32, "n"),
    ]
    with pytest.raises(ResvizError, match="empty"):
        _inputs_from_values([], None)
    with pytest.raises(ResvizError, match="got a str"):
        _inputs_from_values("1x3", None)


def test_an_argument_named_twice_is_refused():
    a = Input((1,), name="a")
    assert _checked_names([a, Input((2,))]) == [a, Input((2,))]
    with pytest.raises(ResvizError, match="twice: a, a"):
        _checked_names([a, Input((2,), name="a")])


def test_positional_inputs_come_first_each_kind_in_its_order():
    a, b, x, y = Input((1,), name="a"), Input((2,), name="b"), Input((3,)), Input((4,))
    assert _args_before_kwargs([a, x, b, y]) == [x, y, a, b]
    assert _args_before_kwargs([x, y, a]) == [x, y, a]
