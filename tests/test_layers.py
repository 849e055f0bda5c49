"""The import contracts of docs/architecture.md (pyproject.toml [tool.importlinter]) hold."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_import_contracts():
    pytest.importorskip("importlinter")
    # `lint-imports` of the interpreter running the tests, on this checkout's dpcal (cwd first on sys.path).
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout
