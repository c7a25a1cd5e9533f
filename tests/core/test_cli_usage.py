"""A bad command line is one stderr line naming the problem and exit code 2, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL


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
        (["token", "--ttl", "abc", "--group", "Rosetta_User"], "--ttl: expected a duration such as 30m, 1h or 2d"),
        (["demo", "generate", "--end", "2026-13"], "--end must be a month YYYY-MM (2000 or later), not '2026-13'"),
        (
            ["raw", "import", "/nonexistent/costs.csv", "--source", "cmdb", "--kind", "cost"],
            "/nonexistent/costs.csv: no such file",
        ),
        (["batch", "finops", "--allow-empty"], "allowEmpty: applies to the months named by period or from/to"),
        (["batch", "finops", "--period", "2999-01"], "period: 2999-01 is in the future (the current month is "),
        (
            ["batch", "finops", "--from", "1900-01", "--to", "2026-01"],
            "from: a run rebuilds at most 120 months; 1513 asked: split the range",
        ),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_code_2(arguments: list[str], message: str, tmp_path: Path) -> None:
    # Its own data directory: a command that got as far as its database would not touch the developer's.
    result = _rosetta(arguments, {"ROSETTA_DATA_DIR": str(tmp_path)})
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


def _rosetta(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rosetta", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def test_a_setting_that_is_not_json_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = _rosetta(["db", "current"], {"ROSETTA_DATA_DIR": str(tmp_path), "ROSETTA_DB_POOL_SIZES": "{finops: 4"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "rosetta: error: invalid configuration: ROSETTA_DB_POOL_SIZES: not valid JSON"
        " (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    ]
    nested = _rosetta(["db", "current"], {"ROSETTA_DATA_DIR": str(tmp_path), "ROSETTA_KUBERNETES__CRONJOBS": "[x"})
    assert nested.returncode == 2, nested.stderr
    assert "ROSETTA_KUBERNETES (or one of its ROSETTA_KUBERNETES__* variables): not valid JSON" in nested.stderr


def test_a_database_that_does_not_exist_is_one_line_not_a_traceback(server_url: URL, tmp_path: Path) -> None:
    missing = server_url.set(database="rosetta_no_such_db").render_as_string(hide_password=False)
    env = {"ROSETTA_DATA_DIR": str(tmp_path), "ROSETTA_FINOPS_DATABASE_URL": missing}
    for arguments in (["audit", "verify", "--db", "finops"], ["batch", "finops", "--period", "2026-01"]):
        result = _rosetta(arguments, env)
        # A wrong database name is configuration: retrying the Job would not help (exit 2, not 1 or 4).
        assert result.returncode == 2, (arguments, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("rosetta: error: ")]
        assert errors == [
            'rosetta: error: database: database "rosetta_no_such_db" does not exist (check the database URL'
            " settings; `rosetta db upgrade` creates and migrates the databases)"
        ], result.stderr
        assert "Traceback" not in result.stderr
    current = _rosetta(["db", "current", "--db", "finops"], env)
    # `db current` is what a deploy script checks: an unavailable database is not a success.
    assert current.returncode == 4, current.stderr
    assert current.stdout.startswith('finops: unavailable (database: database "rosetta_no_such_db" does not exist')


@pytest.mark.parametrize("command", [["serve", "finops"], ["dev"]])
def test_a_taken_port_is_one_line_and_exit_code_4(command: list[str], tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _rosetta([*command, "--port", str(port)], {"ROSETTA_DATA_DIR": str(tmp_path)})
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rosetta: error: ")]
    assert len(errors) == 1, result.stderr
    assert "Address already in use" in errors[0]
