"""The bounded-context boundaries are import-linter contracts; a planted cross-context import is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_the_contracts_hold_on_the_code_base() -> None:
    result = _lint_imports(REPO, REPO / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: " in result.stdout
    assert "0 broken" in result.stdout


def test_a_planted_cross_context_import_is_caught(tmp_path: Path) -> None:
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "src" / "rosetta" / "ref" / "planted.py"
    planted.write_text('"""A forbidden shortcut."""\n\nimport rosetta.finops.models  # noqa: F401\n')
    result = _lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode != 0
    assert "rosetta.ref.planted -> rosetta.finops.models" in result.stdout
    assert "BROKEN" in result.stdout
