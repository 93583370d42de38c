"""Inputs that are not one float image (issue 8 §5): shapes taken as given from Python, integer
and several inputs, the hint for token models, and input sizes that really work."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

import resviz
from resviz.cli import main
from resviz.core.errors import ResvizError
from resviz.core.inputs import Input, parse_input


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


def test_the_size_sweep_skips_sizes_that_cannot_be_traced_and_says_when_it_breaks():
    from resviz.core.analysis import pipeline as analysis
    from resviz.core.tracing.eager import trace_module

    model = _RefusesLargeInputs()
    report = resviz.analyze(model, (1, 3, 99, 99), suggest_sizes=False)

    def cannot_at_32(m, shape):
        if shape[-1] == 32:
            raise ResvizError("cannot trace at this size")
        return trace_module(m, shape)

    analysis._suggest_sizes(model, report, 30, tracer=cannot_at_32)
    assert report.suggested_sizes == [64, 96]  # a size resviz cannot trace does not work there

    def bug_at_96(m, shape):
        if shape[-1] == 96:
            raise KeyError("oops")
        return trace_module(m, shape)

    with pytest.warns(RuntimeWarning, match=r"input size 96×96 .*\(KeyError: 'oops'\); this is a bug"):
        analysis._suggest_sizes(model, report, 30, tracer=bug_at_96)
    assert report.suggested_sizes == [32, 64]  # what was found before it, and no more tries
    assert report.mismatches[0].input_sizes == [32, 64]


# ---------------------------------------------------------------- shapes from Python are literal


class TokenMixer(nn.Module):
    """(batch, tokens, channels) in, same out: a 3-D input that is not an image."""

    def __init__(self, tokens=16, channels=100):
        super().__init__()
        self.mix = nn.Linear(tokens, tokens)
        self.mlp = nn.Linear(channels, channels)

    def forward(self, x):
        x = x + self.mix(x.transpose(1, 2)).transpose(1, 2)
        return x + self.mlp(x)


@pytest.mark.parametrize(
    "model, shape",
    [(TokenMixer(), (2, 16, 100)), (nn.Conv1d(16, 4, 3), (1, 16, 100)), (nn.Linear(5, 3), (4, 5)),
     (nn.Conv2d(3, 4, 3), (2, 3, 9, 9))],
)  # fmt: skip
def test_a_shape_from_python_is_the_shape_given(model, shape):
    report = resviz.analyze(model, shape)
    assert report.ok and report.input_shape == shape
    with torch.no_grad():
        assert report.output_shapes == [tuple(model(torch.zeros(shape)).shape)]


def test_a_live_module_opened_from_python_keeps_its_shape():
    from resviz.core.session.opened_model import analyze_session
    from resviz.core.sources.loading import from_module

    session = analyze_session(from_module(TokenMixer(), input_shape=(2, 16, 100)))
    assert session.report.ok and session.input_shape == (2, 16, 100)
    assert from_module(nn.Conv2d(3, 4, 3), input_shape="3x32x32").input_shape == (1, 3, 32, 32)


def test_the_image_shorthand_belongs_to_typed_text_only():
    assert parse_input("3x224x224") == Input((1, 3, 224, 224))
    assert parse_input("16x100:float32") == Input((16, 100))  # a dtype: taken as given
    assert parse_input("2x16x100:float32") == Input((2, 16, 100))
    assert parse_input("ids:1x16:int64") == Input((1, 16), torch.int64, "ids")
    assert parse_input("mask : 1x16 : bool") == Input((1, 16), torch.bool, "mask")
    assert parse_input("1x16:long") == Input((1, 16), torch.int64)
    for bad, words in [("1x16:int65", "unknown dtype"), ("a:b:1x2:int64", "[NAME:]SHAPE[:DTYPE]"), ("1x2:3x4", "unknown dtype"),
                       ("ids:", "[NAME:]SHAPE[:DTYPE]"), ("ids:1xq", "not a list of integers")]:  # fmt: skip
        with pytest.raises(ResvizError, match=re.escape(words)):
            parse_input(bad)


# ---------------------------------------------------------------- integer, several and keyword inputs


class TextNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, ids, mask=None, *, scale=None):
        x = self.emb(ids)
        if scale is not None:
            x = x * scale
        return self.head(self.block(x, src_key_padding_mask=mask)[:, 0])


def _eager(model, args, kwargs):
    with torch.no_grad():
        model.eval()
        return tuple(model(*args, **kwargs).shape)


@pytest.mark.parametrize(
    "inputs, args, kwargs",
    [
        ("dtype", (torch.zeros(2, 7, dtype=torch.long),), {}),
        (lambda a, k: a[0], (torch.zeros(3, 5, dtype=torch.int32),), {}),
        (lambda a, k: a, (torch.zeros(2, 7, dtype=torch.long), torch.zeros(2, 7, dtype=torch.bool)), {}),
        (lambda a, k: k, (), {"ids": torch.zeros(1, 4, dtype=torch.long), "scale": torch.ones(1, 4, 16)}),
        (lambda a, k: [Input((2, 6), torch.int64), Input((2, 6), torch.bool, "mask")],
         (torch.zeros(2, 6, dtype=torch.long),), {"mask": torch.zeros(2, 6, dtype=torch.bool)}),
    ],
    ids=["shape and dtype", "one tensor", "two positional", "keywords", "Input specs"],
)  # fmt: skip
def test_integer_several_and_keyword_inputs_trace_like_eager(inputs, args, kwargs):
    torch.manual_seed(0)
    model = TextNet()
    if inputs == "dtype":
        report = resviz.analyze(model, tuple(args[0].shape), dtype=torch.int64)
    else:
        report = resviz.analyze(model, inputs=inputs(args, kwargs))
    assert report.ok, report.errors
    assert report.output_shapes == [_eager(model, args, kwargs)]
    assert [b.name for b in report.blocks] == ["block"]
    assert [i["dtype"] for i in report.to_dict()["inputs"]][:1] == [
        str((list(args) + list(kwargs.values()))[0].dtype).removeprefix("torch.")
    ]


def test_a_float_input_to_an_embedding_gets_a_hint_naming_the_dtype():
    report = resviz.analyze(TextNet(), (1, 16))
    (e,) = report.errors
    assert e.module == "emb" and "int64" in e.suggestion and "--input 1x16:int64" in e.suggestion


def test_inputs_are_checked_with_one_clear_message():
    with pytest.raises(ResvizError, match="either input_shape or inputs"):
        resviz.analyze(TextNet(), (1, 16), inputs=torch.zeros(1, 16))
    with pytest.raises(ResvizError, match="give the input"):
        resviz.analyze(TextNet())
    with pytest.raises(ResvizError, match="input 'ids' is a str"):
        resviz.analyze(TextNet(), inputs={"ids": "1x16"})


@pytest.mark.slow  # a Python file is loaded in a child process: one torch import
def test_cli_takes_several_typed_inputs(capsys, tmp_path):
    f = tmp_path / "text.py"
    f.write_text(
        "from torch import nn\n"
        "class TextNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb = nn.Embedding(50, 16)\n"
        "        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)\n"
        "    def forward(self, ids, mask=None):\n"
        "        return self.block(self.emb(ids), src_key_padding_mask=mask)\n"
    )
    code = main(["check", f"{f}:TextNet", "--input", "1x9:int64", "--input", "mask:1x9:bool", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] and out["output_shapes"] == [[1, 9, 16]]
    assert out["inputs"] == [{"name": None, "shape": [1, 9], "dtype": "int64"},
                             {"name": "mask", "shape": [1, 9], "dtype": "bool"}]  # fmt: skip
    code = main(["summary", f"{f}:TextNet", "--input", "ids:1x9:int64", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["inputs"] == [{"name": "ids", "shape": [1, 9], "dtype": "int64"}]
    code = main(["check", "resnet20", "--input", "1x16:int65"])
    assert code == 2 and "unknown dtype" in capsys.readouterr().err


def test_a_session_without_input_guesses_token_ids_and_typed_float_gets_the_hint():
    from resviz.core.session.opened_model import analyze_session
    from resviz.core.sources.loading import from_module

    loaded = from_module(TextNet())
    session = analyze_session(loaded)  # no --input: token ids are guessed, not 1x16 floats
    assert session.report.ok and "token ids 1x16:int64" in session.notes[-1]
    assert session.inputs == [Input((1, 16), torch.int64)]
    session = analyze_session(loaded, ["1x16"])
    (e,) = session.report.errors
    assert "--input 1x16:int64" in e.suggestion
    session = analyze_session(loaded, ["2x5:int32", "mask:2x5:bool"])
    assert session.report.ok and session.report.output_shapes == [(2, 3)]
