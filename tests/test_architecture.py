"""The engine is headless: importing and using it never loads Qt (napari's rule)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_analysis_rendering_and_training_do_not_import_qt():
    """One fresh interpreter (torch's import is most of its time) for the three headless uses."""
    code = (
        "import sys, resviz\n"
        "from resviz.core.analysis.pipeline import analyze\n"
        "from resviz.render import view, layout, dot, text\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"  # tiny tensors: threads only wait on each other (conftest)
        "r = resviz.analyze(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (1, 3, 8, 8))\n"
        "assert r.ok\n"
        "import resviz.train_cli, resviz.core.training as t\n"
        "from resviz.core.sources import zoo\n"
        "tr = t.Trainer(zoo.build('resnet20', device='cpu'), t.TrainConfig(batch_size=2), input_shape=(1, 3, 8, 8))\n"
        "tr.step()\n"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'resviz.gui'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_contracts_hold():
    """import-linter: resviz.core and resviz.render never import the GUI or Qt."""
    try:
        from importlinter.cli import lint_imports
    except ImportError:  # pragma: no cover - dev dependency
        pytest.skip("import-linter not installed")
    assert lint_imports(config_filename="pyproject.toml") == 0


def test_complexity_and_broad_except_rules_hold():
    """ruff's C90 (complexity 10) and BLE rules, as pyproject configures them: a long function is
    split into phases, and a broad except says why (``# noqa: BLE001 - ...``) or is narrowed."""
    import shutil
    from pathlib import Path

    ruff = shutil.which("ruff")
    if ruff is None:  # pragma: no cover - dev dependency
        pytest.skip("ruff not installed")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([ruff, "check", "--select", "C90,BLE", "resviz", "benchmarks"], cwd=root,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_dynamic_import_hides_qt_from_the_contracts():
    """import-linter sees only import statements: an ``import_module("resviz.gui...")`` in the
    headless packages would let them need Qt at run time while the contract reports "kept"."""
    import ast
    from pathlib import Path

    import resviz

    root = Path(resviz.__file__).parent
    hidden = []
    for pkg in ("core", "render"):
        for file in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if not isinstance(node, ast.Call):
                    continue
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name not in ("import_module", "__import__"):
                    continue
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and str(arg.value).startswith(
                        ("resviz.gui", "PySide6", "pyqtgraph")
                    ):
                        hidden.append(f"{file.relative_to(root)}:{node.lineno} {arg.value}")
    assert not hidden, hidden
