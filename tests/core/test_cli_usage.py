"""A bad command line is one stderr line naming the problem and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["serve", "billing"], "Invalid value for 'target': Value error, 'billing' is not one of 'ref', 'finops'"),
        (
            ["serve", "finops", "--workers", "0"],
            "Invalid value for '--workers': Input should be greater than or equal to 1",
        ),
        (["serve"], "Missing argument 'target'"),
        (["nosuch"], "No such command 'nosuch'."),
        (["audit", "verify", "--db", "billing"], "Invalid value for '--db'"),
        (["batch", "finops", "--period", "2026-13"], "expected a month as YYYY-MM, got '2026-13'"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_code_2(arguments: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rosetta", *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rosetta: error: ")
    assert message in lines[0]


def test_help_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rosetta", "batch", "finops", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--period" in result.stdout
