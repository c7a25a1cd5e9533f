"""ServiceNow over OAuth: tokens from ``/oauth_token.do``, renewed on expiry, refusals as one-line errors.

Against the ServiceNow simulator over real HTTP: the ``rosetta raw pull`` command end to end, and the
client directly where the test must end a token between two requests.
"""

from __future__ import annotations

import json

import pytest
from cli_support import cli_env, rosetta

from rosetta.connectors.servicenow import ServiceNowClient
from rosetta.connectors.transport import ExternalAuthError, RetryPolicy
from rosetta.core.settings import ExternalSystem, Settings
from rosetta.simulators.dataset import Dataset
from rosetta.simulators.servicenow import ServiceNowSimulator
from simulators.world import serving

CLIENT = {"client_id": "rosetta-integration", "client_secret": "oauth-secret"}


def _oauth_calls(simulator: ServiceNowSimulator) -> list[tuple[str, int]]:
    return [(entry.path, entry.status) for entry in simulator.faults.requests()]


async def test_a_pull_over_oauth_takes_one_token_for_every_page(world: Dataset, raw_settings: Settings) -> None:
    simulator = ServiceNowSimulator(
        {"change_request": world.servicenow["change_request"]}, oauth_clients={CLIENT["client_id"]: "oauth-secret"}
    )
    with serving(simulator.app.asgi) as server:
        fields = {"url": server.url, "username": "rosetta", "password": "rosetta", "page_size": "50", **CLIENT}
        result = await rosetta("raw", "pull", "servicenow", "--json", env=cli_env(raw_settings, servicenow=fields))

    assert result.returncode == 0, result.stderr
    streams = json.loads(result.stdout)["streams"]
    assert [(stream["kind"], stream["read"]) for stream in streams] == [("incident", 0), ("change_request", 300)]
    calls = _oauth_calls(simulator)
    assert calls[0] == ("/oauth_token.do", 200)
    assert [call for call in calls if call[0] == "/oauth_token.do"] == [("/oauth_token.do", 200)]
    assert {status for path, status in calls if path.startswith("/api/now/table/")} == {200}
    assert len([path for path, _ in calls if path == "/api/now/table/change_request"]) >= 300 // 50


async def test_an_expired_token_is_renewed_with_the_refresh_token_and_the_request_resent(world: Dataset) -> None:
    simulator = ServiceNowSimulator(
        {"incident": world.servicenow["incident"]}, oauth_clients={CLIENT["client_id"]: "oauth-secret"}
    )
    with serving(simulator.app.asgi) as server:
        config = ExternalSystem.model_validate(
            {"url": server.url, "username": "rosetta", "password": "rosetta", **CLIENT}
        )
        client = ServiceNowClient.from_settings(config, retry=RetryPolicy(max_retries=0))
        try:
            first = await client.get_page("incident", query="ORDERBYsys_id", offset=0, limit=10)
            simulator.expire_access_tokens()
            second = await client.get_page("incident", query="ORDERBYsys_id", offset=10, limit=10)
        finally:
            await client.aclose()

    assert len(first.records) == len(second.records) == 10
    assert first.records[0]["sys_id"] != second.records[0]["sys_id"]
    assert _oauth_calls(simulator) == [
        ("/oauth_token.do", 200),
        ("/api/now/table/incident", 200),
        ("/api/now/table/incident", 401),
        ("/oauth_token.do", 200),
        ("/api/now/table/incident", 200),
    ]


async def test_a_refused_client_is_one_line_and_exit_code_2(world: Dataset, raw_settings: Settings) -> None:
    simulator = ServiceNowSimulator({}, oauth_clients={CLIENT["client_id"]: "the-real-secret"})
    with serving(simulator.app.asgi) as server:
        fields = {"url": server.url, "username": "rosetta", "password": "rosetta", **CLIENT}
        result = await rosetta("raw", "pull", "servicenow", env=cli_env(raw_settings, servicenow=fields))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the OAuth token request was refused with HTTP 401: access_denied" in lines[0]
    assert "oauth-secret" not in result.stderr
    assert all(path == "/oauth_token.do" for path, _ in _oauth_calls(simulator))


@pytest.mark.parametrize("allowed", [True, False])
async def test_client_credentials_work_only_where_the_instance_allows_them(world: Dataset, allowed: bool) -> None:
    simulator = ServiceNowSimulator(
        {"incident": world.servicenow["incident"]},
        oauth_clients={CLIENT["client_id"]: "oauth-secret"},
        client_credentials_grant=allowed,
    )
    with serving(simulator.app.asgi) as server:
        # No user: the client's own identity (Washington DC and later).
        client = ServiceNowClient.from_settings(ExternalSystem.model_validate({"url": server.url, **CLIENT}))
        try:
            if allowed:
                page = await client.get_page("incident", query="ORDERBYsys_id", offset=0, limit=5)
                assert len(page.records) == 5
            else:
                with pytest.raises(ExternalAuthError, match="HTTP 400: unsupported grant_type 'client_credentials'"):
                    await client.get_page("incident", query="ORDERBYsys_id", offset=0, limit=5)
        finally:
            await client.aclose()
