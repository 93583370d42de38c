"""`resviz codegen`: every zoo entry and spec becomes a standalone PyTorch file that builds the
same network (same blocks, shapes and parameter count as resviz's own build)."""

from __future__ import annotations

import ast
import dataclasses
import types
from pathlib import Path

import pytest
import torch

from resviz.cli import main
from resviz.core.analysis.pipeline import analyze
from resviz.core.design.codegen import class_name, generate
from resviz.core.sources import zoo
from resviz.core.sources.spec import build, load_spec, parse_spec

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Building 1000+ blocks through nn.Module.__init__ costs seconds even on meta; same code paths as
# their shallower siblings, so they run with the slow tests only.
DEEP = {e.name for e in zoo.entries() if sum(s.blocks for s in e.spec.stages) >= 300}


def _structure(spec):
    return dataclasses.replace(spec, name="", description="")


# The paper's short names (plain18, plain20, ...) are the plain twins under another name: the same
# spec apart from name and description, so one round trip covers both (checked below).
_FIRST_WITH_SPEC: dict = {}
for _e in zoo.entries():
    _FIRST_WITH_SPEC.setdefault(_structure(_e.spec), _e.name)
ALIASES = {e.name: _FIRST_WITH_SPEC[_structure(e.spec)] for e in zoo.entries()
           if _FIRST_WITH_SPEC[_structure(e.spec)] != e.name}  # fmt: skip
ZOO_PARAMS = [
    pytest.param(e.name, marks=pytest.mark.slow) if e.name in DEEP else e.name
    for e in zoo.entries()
    if e.name not in ALIASES
]


def load_generated(code: str, name: str = "generated") -> types.ModuleType:
    """Import generated code as a module of its own (no resviz in its namespace)."""
    module = types.ModuleType(name)
    exec(compile(code, f"<{name}>", "exec"), module.__dict__)
    return module


def block_facts(report):
    return [(b.name, b.type, b.stage, b.input_shape, b.output_shape, b.shortcut, b.params, b.broken)
            for b in report.blocks]  # fmt: skip


def assert_same_network(spec, code: str) -> None:
    module = load_generated(code)
    with torch.device("meta"):
        generated = module.build_model()
    ours = analyze(build(spec, device="meta"), spec.input_shape)
    theirs = analyze(generated, tuple(module.INPUT_SHAPE))
    assert theirs.total_params == ours.total_params
    assert block_facts(theirs) == block_facts(ours)
    assert [(s.name, s.input_shape, s.output_shape) for s in theirs.stages] == [
        (s.name, s.input_shape, s.output_shape) for s in ours.stages
    ]
    assert theirs.output_shapes == ours.output_shapes
    assert theirs.input_shape == ours.input_shape
    assert [(m.block, m.residual_shape, m.shortcut_shape) for m in theirs.mismatches] == [
        (m.block, m.residual_shape, m.shortcut_shape) for m in ours.mismatches
    ]
    return theirs


@pytest.mark.parametrize("name", ZOO_PARAMS)
def test_every_zoo_entry_round_trips_through_generated_code(name):
    spec = zoo.get(name).spec
    code = generate(spec, source=name)
    assert "resviz" not in code.split('"""', 2)[2]  # only the docstring says where it came from
    report = assert_same_network(spec, code)
    assert report.total_params == zoo.param_count(name)


def test_zoo_aliases_are_the_same_spec_as_an_entry_tested_above():
    assert {"plain18", "plain20", "plain1202"} <= set(ALIASES)
    for alias, twin in ALIASES.items():
        assert _structure(zoo.get(alias).spec) == _structure(zoo.get(twin).spec)


@pytest.mark.parametrize("path", sorted(ASSETS.glob("*.to*")) + sorted(ASSETS.glob("*.json")),
                         ids=lambda p: p.name)  # fmt: skip
def test_spec_files_round_trip_broken_ones_included(path):
    spec = load_spec(path)
    assert_same_network(spec, generate(spec, source=path.name))


def test_per_block_shortcuts_padding_groups_survive_codegen():
    spec = parse_spec({
        "name": "odd one", "input": "3x64x64", "block": "bottleneck", "groups": 4,
        "width_per_group": 16, "shortcut": "D",
        "stages": [
            {"blocks": 3, "width": 16, "stride": 1, "block_shortcuts": {"1": "C"}},
            {"blocks": 2, "width": 32, "stride": 2, "shortcut": "A", "padding": 0},
            {"blocks": 2, "width": 32, "stride": 2, "pool_ceil_mode": False,
             "block_shortcuts": {"0": "identity"}},
        ],
    })  # fmt: skip
    code = generate(spec)
    assert "overrides={1: 'C'}" in code and "padding=0" in code and "groups=4" in code
    assert_same_network(spec, code)


def test_generated_code_reads_like_a_person_wrote_it():
    spec = zoo.get("resnet50").spec
    code = generate(spec, source="resnet50")
    tree = ast.parse(code)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["Bottleneck", "Resnet50"]  # only what the net uses, named by role
    assert "ZeroPadShortcut" not in code and "nn.AvgPool2d" not in code  # policy B only
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in n.names} | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}  # fmt: skip
    assert not any("resviz" in (i or "") for i in imports)


def test_generated_code_computes_what_the_engine_build_computes():
    spec = parse_spec({"input": "3x16x16", "classes": 3, "shortcut": "A", "stem": {"kind": "cifar", "channels": 4}, "stages": [
        {"blocks": 1, "width": 4}, {"blocks": 2, "width": 8, "stride": 2}]})  # fmt: skip
    torch.manual_seed(0)
    model = load_generated(generate(spec)).build_model()
    ours = build(spec, device="cpu")
    assert set(model.state_dict()) == set(ours.state_dict())
    model.load_state_dict(ours.state_dict())  # interchangeable weights
    ours.eval(), model.eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), ours(x))


def test_class_names_are_python_identifiers():
    assert class_name("cifar-resnet20") == "CifarResnet20"
    assert class_name("20 layers") == "Net20Layers"
    assert class_name("BasicBlock") == "BasicBlockNet"
    assert class_name("---") == "ResNet"


def test_cli_codegen_writes_a_file_resviz_check_agrees_with(tmp_path, capsys):
    out = tmp_path / "model.py"
    assert main(["codegen", str(ASSETS / "cifar_resnet20.toml"), "-o", str(out)]) == 0
    assert main(["check", str(out), "--input", "3x32x32"]) == 0
    printed = capsys.readouterr().out
    ref = analyze(build(load_spec(ASSETS / "cifar_resnet20.toml"), device="meta"), (1, 3, 32, 32))
    assert f"{len(ref.blocks)} blocks" in printed


def test_cli_codegen_refuses_python_files_and_unknown_names(tmp_path, capsys):
    model = tmp_path / "model.py"
    model.write_text("import torch\n")
    assert main(["codegen", str(model)]) == 2
    assert "spec file" in capsys.readouterr().err
    assert main(["codegen", "resnt18"]) == 2
    assert "resnet18" in capsys.readouterr().err
    assert main(["codegen", "resnet18", "-o", str(tmp_path / "missing" / "m.py")]) == 2
    assert not (tmp_path / "missing").exists()
