"""Process roles: one context per `serve`, readiness follows the databases, `db upgrade` is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from litestar.testing import AsyncTestClient

from rosetta.cli import build_app
from rosetta.core.http import create_app
from rosetta.core.settings import Settings
from rosetta.finops.api import context_api as finops_api


async def test_serving_finops_serves_only_finops_paths(settings: Settings) -> None:
    async with AsyncTestClient(app=build_app("finops")) as client:
        assert (await client.get("/api/finops/v1/openapi.json")).status_code == 200
        assert (await client.get("/readyz")).json()["checks"] == {"finops": "ok"}
        for other in ("ref", "monitoring"):
            response = await client.get(f"/api/{other}/v1/openapi.json")
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_all_serves_the_three_prefixes_with_identical_paths(settings: Settings) -> None:
    async with AsyncTestClient(app=build_app("all")) as client:
        for name in ("ref", "finops", "monitoring"):
            assert (await client.get(f"/api/{name}/v1/openapi.json")).status_code == 200


async def test_readiness_fails_when_the_database_is_down(tmp_path: Path) -> None:
    # A Unix-socket directory where no server listens: the engine is created, connections fail.
    down = Settings(
        finops_database_url=f"postgresql://postgres@/finops_db?host={tmp_path}", db_statement_timeout_ms=1000
    )
    app = create_app([finops_api()], process="test", settings=down)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["checks"]["finops"].startswith("unavailable")


def _rosetta(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    env["ROSETTA_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "rosetta", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_db_upgrade_on_an_empty_server_creates_and_migrates_all_four_then_changes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = _rosetta("db", "upgrade", data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    for name in ("platform_ref_db", "finops_db", "monitoring_db", "raw_db"):
        assert f"created database {name}" in first.stdout
    for role in ("ref", "finops", "monitoring", "raw"):
        assert f"{role}: upgraded" in first.stdout or f"{role}: already at head" in first.stdout

    second = _rosetta("db", "upgrade", data_dir=data_dir)
    assert second.returncode == 0, second.stderr
    assert "created database" not in second.stdout
    assert second.stdout.count("already at head") == 4

    current = _rosetta("db", "current", data_dir=data_dir)
    assert current.returncode == 0, current.stderr
    assert current.stdout.count("up to date") == 4
