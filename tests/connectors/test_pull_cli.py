"""The commands' failures are one stderr line and a non-zero exit code; ``rosetta simulate`` serves for real."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cli_support import cli_env, rosetta
from litestar.testing import AsyncTestClient

from rosetta.cli import build_app
from rosetta.core.settings import Settings, get_settings
from rosetta.simulators.dataset import Dataset, write_dataset
from rosetta.simulators.servicenow import ServiceNowSimulator
from simulators.world import fixture_dataset, serving


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rosetta: error: ")
    return lines[0]


async def test_simulator_down_is_one_line_and_exit_code_4(raw_settings: Settings) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    fields = {"url": url, "username": "rosetta", "password": "rosetta", "max_retries": "1"}
    result = await rosetta("raw", "pull", "servicenow", env=cli_env(raw_settings, servicenow=fields))

    assert result.returncode == 4
    line = _one_line(result)
    assert line.startswith("rosetta: error: servicenow pull failed at incident (after landing 0 new record(s)): ")
    assert "failed after 2 attempt(s): connection failed (ConnectError" in line


async def test_missing_configuration_is_one_line_and_exit_code_2(raw_settings: Settings) -> None:
    no_url = await rosetta("raw", "pull", "cmdb", env=cli_env(raw_settings))
    no_token = await rosetta(
        "raw", "pull", "dynatrace", env=cli_env(raw_settings, dynatrace={"url": "http://x/api/v2"})
    )
    bad_since = await rosetta("raw", "pull", "argocd", "--since", "yesterday", env=cli_env(raw_settings))

    assert (no_url.returncode, no_token.returncode, bad_since.returncode) == (2, 2, 2)
    assert _one_line(no_url) == "rosetta: error: no URL configured for servicenow: set ROSETTA_SERVICENOW__URL"
    assert _one_line(no_token) == "rosetta: error: no API token configured for dynatrace: set ROSETTA_DYNATRACE__TOKEN"
    assert "--since" in _one_line(bad_since)


async def test_rejected_credentials_are_one_line_and_exit_code_2(world: Dataset, raw_settings: Settings) -> None:
    simulator = ServiceNowSimulator(world.servicenow)
    with serving(simulator.app.asgi) as server:
        fields = {"url": server.url, "username": "rosetta", "password": "wrong"}
        result = await rosetta("raw", "pull", "servicenow", env=cli_env(raw_settings, servicenow=fields))

    assert result.returncode == 2
    assert _one_line(result).endswith(
        "was refused with HTTP 401: User Not Authenticated: Required to provide Auth information"
    )


async def test_rosetta_simulate_serves_a_dataset_directory_and_refuses_a_taken_port(
    tmp_path: Path, raw_settings: Settings
) -> None:
    write_dataset(tmp_path, fixture_dataset())
    env = cli_env(raw_settings)
    port = _free_port()
    command = [sys.executable, "-m", "rosetta", "simulate", "all", "--port", str(port), "--data", str(tmp_path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", auth=("rosetta", "rosetta")) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = await client.get(
                        "/_sim/servicenow/api/now/table/incident", params={"sysparm_limit": "3"}
                    )
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "rosetta simulate did not start"
                    await asyncio.sleep(0.2)
            taken = await rosetta("simulate", "servicenow", "--port", str(port), "--data", str(tmp_path), env=env)
            missing = await rosetta("simulate", "--data", str(tmp_path / "nope"), env=env)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)

    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "1234"
    assert len(response.json()["result"]) == 3
    assert f"rosetta simulate: dynatrace at http://127.0.0.1:{port}/_sim/dynatrace/api/v2" in stderr
    assert taken.returncode == 4
    assert "address already in use" in _one_line(taken).lower()
    assert missing.returncode == 2
    assert _one_line(missing).endswith("nope: not a directory")


async def test_rosetta_dev_app_mounts_the_simulators_and_points_unconfigured_connectors_at_them(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset(tmp_path / "simulators", fixture_dataset())
    monkeypatch.setenv("ROSETTA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ROSETTA_ARGOCD__URL", "https://argocd.example")
    get_settings.cache_clear()
    try:
        app = build_app("all", dev=True, dev_url="http://127.0.0.1:8123")
    finally:
        get_settings.cache_clear()
    configured: Settings = app.state.settings
    async with AsyncTestClient(app=app) as client:
        incidents = await client.get(
            "/_sim/servicenow/api/now/table/incident", params={"sysparm_limit": "1"}, auth=("rosetta", "rosetta")
        )
        document = (await client.get("/api/monitoring/v1/openapi.json")).json()

    assert configured.servicenow.url == "http://127.0.0.1:8123/_sim/servicenow"
    assert configured.dynatrace.url == "http://127.0.0.1:8123/_sim/dynatrace/api/v2"
    assert configured.argocd.url == "https://argocd.example"  # configured: left alone
    assert incidents.status_code == 200
    assert incidents.headers["X-Total-Count"] == "1234"
    assert not any(path.startswith("/_sim") for path in document["paths"])
