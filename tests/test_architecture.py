"""The engine is headless: importing and using it never loads Qt (napari's rule)."""

from __future__ import annotations

import subprocess
import sys


def test_core_and_cli_analysis_do_not_import_qt():
    code = (
        "import sys, resviz\n"
        "from resviz.core.analysis import analyze\n"
        "from resviz.render import view, layout, dot, text\n"
        "import torch\n"
        "r = resviz.analyze(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (1, 3, 8, 8))\n"
        "assert r.ok\n"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'resviz.gui'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_contracts_hold():
    """import-linter: resviz.core and resviz.render never import the GUI or Qt."""
    try:
        from importlinter.cli import lint_imports
    except ImportError:  # pragma: no cover - dev dependency
        import pytest

        pytest.skip("import-linter not installed")
    assert lint_imports(config_filename="pyproject.toml") == 0
