"""Spec files: the shipped examples, round trips, defaults, and the messages for bad specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resviz.core.errors import LoadError, SpecError
from resviz.core.sources import zoo
from resviz.core.sources.spec import BLOCK_KINDS, NetSpec, build, load_spec, parse_spec, spec_to_dict

ASSETS = Path(__file__).resolve().parent.parent / "assets"
ASSET_FILES = sorted(p for p in ASSETS.iterdir() if p.suffix in (".toml", ".json"))
BROKEN = {"broken_identity.toml", "broken_padding.toml", "resnet_d_odd.toml"}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


# ------------------------------------------------------------------------------------ the assets


def test_all_promised_assets_ship():
    names = {p.name for p in ASSET_FILES}
    assert names >= {"cifar_resnet20.toml", "resnet50_like.json", "preact_bottleneck.toml"} | BROKEN


@pytest.mark.parametrize("path", ASSET_FILES, ids=lambda p: p.name)
def test_asset_loads_builds_and_says_what_it_shows(path):
    spec = load_spec(path)
    model = build(spec, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.fc.out_features == spec.classes
    text = path.read_text()
    # A header explains the file: TOML comments, or the description field in JSON.
    assert text.startswith("#") if path.suffix == ".toml" else len(spec.description) > 80


@pytest.mark.parametrize("path", ASSET_FILES, ids=lambda p: p.name)
def test_asset_round_trips(path, tmp_path):
    spec = load_spec(path)
    assert parse_spec(spec_to_dict(spec)) == spec
    again = write(tmp_path, "again.json", json.dumps(spec_to_dict(spec)))
    assert load_spec(again) == spec


def test_cifar_resnet20_asset_is_the_zoo_resnet20():
    spec = load_spec(ASSETS / "cifar_resnet20.toml")
    assert (spec.name, spec.input_shape, spec.classes, spec.depth) == (
        "cifar-resnet20",
        (1, 3, 32, 32),
        10,
        20,
    )
    assert n_params(build(spec, device="meta")) == zoo.param_count("resnet20") == 269_722


def test_resnet50_json_asset_matches_torchvision():
    assert n_params(build(load_spec(ASSETS / "resnet50_like.json"), device="meta")) == 25_557_032


def test_preact_asset_is_preact_resnet164():
    spec = load_spec(ASSETS / "preact_bottleneck.toml")
    assert spec.depth == 164 and not spec.stem.norm
    assert n_params(build(spec, device="meta")) == zoo.param_count("preact_resnet164")


@pytest.mark.parametrize(
    "name, message",
    [
        ("broken_identity.toml", r"tensor a \(16\) must match the size of tensor b \(32\)"),
        ("broken_padding.toml", r"tensor a \(28\) must match the size of tensor b \(32\)"),
        ("resnet_d_odd.toml", r"tensor a \(29\) must match the size of tensor b \(28\)"),
    ],
)
def test_broken_assets_build_but_fail_at_the_add(name, message):
    spec = load_spec(ASSETS / name)
    model = build(spec, device="cpu").eval()
    with pytest.raises(RuntimeError, match=message), torch.no_grad():
        model(torch.randn(spec.input_shape))


def test_broken_identity_breaks_only_at_the_stage_transitions():
    spec = load_spec(ASSETS / "broken_identity.toml")
    model = build(spec, device="meta")
    assert [spec.shortcut_of(i) for i in range(3)] == ["A", "identity", "identity"]
    assert model.layer2[0].downsample is None and model.layer2[0].has_shortcut
    assert model.layer2[0].stride == 2


def test_resnet_d_odd_runs_at_an_even_size():
    spec = load_spec(ASSETS / "resnet_d_odd.toml")
    model = build(spec, device="meta")
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        model(torch.empty(1, 3, 225, 225, device="meta"))


# ---------------------------------------------------------------------------- defaults and twins


def test_defaults_follow_the_stem(tmp_path):
    cifar = load_spec(
        write(tmp_path, "tiny.toml", '[stem]\nkind = "cifar"\n[[stages]]\nblocks = 1\nwidth = 16\n')
    )
    assert (cifar.name, cifar.input_shape, cifar.classes) == ("tiny", (1, 3, 32, 32), 10)
    assert (cifar.block, cifar.shortcut, cifar.stem.channels, cifar.stem.pool) == ("basic", "B", 16, False)
    imagenet = parse_spec({"stages": [{"blocks": 1, "width": 64}]})
    assert (imagenet.input_shape, imagenet.classes, imagenet.stem.kernel) == ((1, 3, 224, 224), 1000, 7)


def test_stem_overrides_and_shorthand():
    spec = parse_spec(
        {"stem": {"kind": "imagenet", "channels": 32, "pool": False}, "stages": [{"blocks": 1, "width": 32}]}
    )
    assert (spec.stem.channels, spec.stem.kernel, spec.stem.pool) == (32, 7, False)
    model = build(spec, device="meta")
    assert model.conv1.out_channels == 32 and model.maxpool is None
    assert parse_spec({"stem": "cifar", "stages": [{"blocks": 1, "width": 16}]}).stem.kind == "cifar"


def test_input_shapes_and_channels():
    spec = parse_spec({"input": [1, 32, 32], "stages": [{"blocks": 1, "width": 64}]})
    assert spec.input_shape == (1, 1, 32, 32)
    assert build(spec, device="meta").conv1.in_channels == 1


def test_names_are_forgiving_about_case_and_underscores():
    spec = parse_spec({"block": "Preact_Bottleneck", "shortcut": "b", "stages": [{"blocks": 1, "width": 16}]})
    assert (spec.block, spec.shortcut) == ("preact-bottleneck", "B")


def test_per_stage_overrides_reach_the_blocks():
    spec = parse_spec(
        {"block": "basic", "shortcut": "B", "stages": [
            {"blocks": 1, "width": 64},
            {"blocks": 2, "width": 128, "stride": 2, "shortcut": "D", "pool_ceil_mode": False, "padding": 0},
            {"blocks": 1, "width": 64, "stride": 2, "block": "bottleneck", "shortcut": "C"},
        ]}
    )  # fmt: skip
    model = build(spec, device="meta")
    b = model.layer2[0]
    assert b.shortcut == "D" and b.downsample[0].ceil_mode is False and b.conv1.padding == (0, 0)
    assert type(model.layer3[0]).__name__ == "Bottleneck" and model.layer3[0].downsample is not None
    assert model.fc.in_features == 256


def test_plain_twin_spec():
    spec = load_spec(ASSETS / "broken_identity.toml")
    twin = spec.plain()
    assert twin.name == "plain_broken-identity" and twin.is_plain and twin.plain() == twin
    assert all(twin.shortcut_of(i) == "none" for i in range(len(twin.stages)))
    model = build(spec, plain=True, device="cpu").eval()
    with torch.no_grad():  # no add, so nothing to mismatch
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert isinstance(twin, NetSpec) and spec_to_dict(
        build(spec, plain=True, device="meta").spec
    ) == spec_to_dict(twin)


def test_zoo_specs_round_trip():
    for entry in zoo.entries():
        assert parse_spec(spec_to_dict(entry.spec)) == entry.spec, entry.name


def test_extension_is_sniffed(tmp_path):
    as_json = write(
        tmp_path, "net.spec", json.dumps({"stages": [{"blocks": 1, "width": 8}], "stem": "cifar"})
    )
    as_toml = write(tmp_path, "net.txt", 'stem = "cifar"\n[[stages]]\nblocks = 1\nwidth = 8\n')
    assert load_spec(as_json) == load_spec(as_toml)
    assert load_spec(as_json).name == "net"


# --------------------------------------------------------------------------------- hypothesis


stage_st = st.fixed_dictionaries(
    {"blocks": st.integers(1, 3), "width": st.sampled_from([4, 8, 16]), "stride": st.integers(1, 2)},
    optional={
        "shortcut": st.sampled_from(["B", "C", "D", "identity", "none"]),
        "padding": st.integers(0, 2),
        "pool_ceil_mode": st.booleans(),
    },
)
spec_st = st.fixed_dictionaries(
    {"stages": st.lists(stage_st, min_size=1, max_size=4)},
    optional={
        "block": st.sampled_from(BLOCK_KINDS),
        "classes": st.integers(1, 100),
        "input": st.sampled_from(["3x32x32", "1x3x64x48", [2, 1, 16, 16]]),
        "stem": st.fixed_dictionaries(
            {"kind": st.sampled_from(["imagenet", "cifar"])},
            optional={
                "channels": st.integers(1, 32),
                "kernel": st.sampled_from([1, 3, 7]),
                "pool": st.booleans(),
            },
        ),
        "zero_init_residual": st.booleans(),
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_st)
def test_any_valid_spec_round_trips_and_builds_what_it_says(data):
    spec = parse_spec(data)
    assert parse_spec(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    model = build(spec, device="meta")
    assert model.conv1.in_channels == spec.input_shape[1]
    assert [len(getattr(model, f"layer{i + 1}")) for i in range(len(spec.stages))] == [
        s.blocks for s in spec.stages
    ]
    assert model.fc.in_features == spec.out_channels(len(spec.stages) - 1)
    assert model.fc.out_features == spec.classes


# ---------------------------------------------------------------------------------- bad specs

BASE = '[stem]\nkind = "cifar"\n'
STAGE = "[[stages]]\nblocks = 2\nwidth = 16\n"


@pytest.mark.parametrize(
    "text, field, line, fragments",
    [
        (
            'block = "bottlenek"\n' + STAGE, "block", 1,
            ["expected one of basic, bottleneck, preact, preact-bottleneck", "'bottlenek'", "did you mean 'bottleneck'"],
        ),
        (BASE + STAGE + STAGE + "stride = -1\n", "stages[1].stride", 9, ["from 1 to 4", "got -1"]),
        (BASE + STAGE + "stride = 9\n", "stages[0].stride", 6, ["from 1 to 4", "got 9"]),
        ('name = "x"\n', "stages", None, ["missing", "[[stages]]"]),
        ("stages = []\n" + BASE, "stages", 1, ["at least one stage"]),
        (BASE + "[stages]\nblocks = 2\nwidth = 16\n", "stages", 3, ["[[stages]], not [stages]"]),
        (BASE + '[[stages]]\nblocks = "two"\nwidth = 16\n', "stages[0].blocks", 4, ["expected an integer", "'two' (a string)"]),
        (BASE + "[[stages]]\nwidth = 16\n", "stages[0].blocks", 3, ["missing required field"]),
        (BASE + STAGE + "blcoks = 2\n", "stages[0].blcoks", 6, ["unknown field 'blcoks'", "blocks, width, stride", "did you mean 'blocks'"]),
        ('[stem]\nkind = "cifar"\npool = 1\n' + STAGE, "stem.pool", 3, ["expected true or false", "1 (an integer)"]),
        ('[stem]\nkind = "cifra"\n' + STAGE, "stem.kind", 2, ["imagenet, cifar", "did you mean 'cifar'"]),
        ("stage = 1\n" + STAGE, "stage", 1, ["unknown field 'stage'", "did you mean 'stages'"]),
        ('input = "3x32"\n' + STAGE, "input", 1, ["C×H×W or N×C×H×W", "3x32"]),
        ('input = "3xfoo"\n' + STAGE, "input", 1, ["not a list of integers"]),
        ("groups = 32\n" + STAGE, "groups", 1, ["need bottleneck blocks", "groups = 32"]),
        ('block = "bottleneck"\nwidth_per_group = 4\n' + "[[stages]]\nblocks = 1\nwidth = 8\n", "stages[0].width", 5, ["0 channels per group"]),
        (BASE + STAGE + "padding = -1\n", "stages[0].padding", 6, ["from 0 to 3"]),
        (BASE + STAGE + "[[stages]]\nblocks = 1001\nwidth = 16\n", "stages[1].blocks", 7, ["from 1 to 1000"]),
    ],
)  # fmt: skip
def test_bad_toml_fields(tmp_path, text, field, line, fragments):
    path = write(tmp_path, "bad.toml", text)
    err = load_error(path)
    assert (err.path, err.field, err.line) == (str(path), field, line)
    msg = str(err)
    assert msg.startswith(str(path)) and f"field '{field}'" in msg
    for fragment in fragments:
        assert fragment in msg


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        ({"stages": [{"blocks": 2, "width": 16.0}]}, "stages[0].width", "16.0 (a float)"),
        ({"stages": [{"blocks": True, "width": 16}]}, "stages[0].blocks", "true (a boolean)"),
        ({"stages": {"blocks": 2}}, "stages", "[[stages]], not [stages]"),
        ({"stages": [3]}, "stages[0]", "expected a table"),
        ({"classes": 0, "stages": [{"blocks": 1, "width": 4}]}, "classes", "got 0"),
        ({"stem": [1], "stages": [{"blocks": 1, "width": 4}]}, "stem", "expected a table"),
        ({"description": 3, "stages": [{"blocks": 1, "width": 4}]}, "description", "expected a string"),
        ({"shortcut": "E", "stages": [{"blocks": 1, "width": 4}]}, "shortcut", "A, B, C, D, identity, none"),
    ],
)
def test_bad_json_fields(tmp_path, data, field, fragment):
    path = write(tmp_path, "bad.json", json.dumps(data))
    err = load_error(path)
    assert err.field == field and fragment in str(err) and str(path) in str(err)


def test_parse_spec_without_a_file_still_names_the_field():
    with pytest.raises(SpecError, match=r"^<spec>: field 'stages\[0\].stride'"):
        parse_spec({"stages": [{"blocks": 1, "width": 4, "stride": 0}]})


def test_toml_syntax_error_has_the_line(tmp_path):
    path = write(tmp_path, "syntax.toml", 'name = "x"\n[[stages]]\nblocks 2\n')
    err = load_error(path)
    assert err.line == 3 and err.field is None
    assert (
        str(err).startswith(f"{path}:3: TOML syntax error")
        and "line 3" in str(err)
        and "'blocks 2'" in str(err)
    )


def test_json_syntax_error_has_the_line(tmp_path):
    path = write(tmp_path, "syntax.json", '{\n  "stages": [\n    {"blocks": 2, "width": 16},\n  ]\n}\n')
    err = load_error(path)
    assert err.line == 4 and str(err).startswith(f"{path}:4: JSON syntax error") and "line 4" in str(err)


def test_json_must_be_an_object(tmp_path):
    assert "JSON object" in str(load_error(write(tmp_path, "list.json", "[1, 2]")))


def test_empty_file(tmp_path):
    for content in ["", "   \n\n", b"\xef\xbb\xbf"]:  # nothing, blank lines, a lone UTF-8 BOM
        err = load_error(write(tmp_path, "empty.toml", content))
        assert "is empty" in str(err) and "empty.toml" in str(err)


def test_missing_file_directory_and_binary(tmp_path):
    assert "no such file" in str(load_error(tmp_path / "nope.toml"))
    assert "is a directory" in str(load_error(tmp_path))
    err = load_error(write(tmp_path, "latin1.toml", 'name = "r\xe9seau"\n'.encode("latin-1")))
    assert "not UTF-8" in str(err) and err.line == 1


def test_spec_errors_are_load_errors():
    # The command line catches ResvizError/LoadError and prints the message without a traceback.
    assert issubclass(SpecError, LoadError)
