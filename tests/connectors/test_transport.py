"""The shared transport over real HTTP: Retry-After, backoff, timeouts, the concurrency bound, errors.

Waits are measured from the simulator's request log (when each request arrived), never by timing the client.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime

import httpx
import pytest

from rosetta.connectors.servicenow import ServiceNowClient
from rosetta.connectors.transport import (
    ExternalApiError,
    ExternalAuthError,
    ExternalUnavailableError,
    RetryPolicy,
    retry_after_seconds,
)
from rosetta.core.settings import ExternalSystem
from rosetta.simulators.dataset import Dataset
from rosetta.simulators.faults import FaultInjector, FaultRule
from rosetta.simulators.servicenow import ServiceNowSimulator
from simulators.world import serving

FAST = RetryPolicy(max_retries=3, base_delay=0.05, max_delay=0.2)


def _client(url: str, *, retry: RetryPolicy = FAST, password: str = "rosetta", **fields: object) -> ServiceNowClient:
    config = ExternalSystem(url=url, username="rosetta", password=password, page_size=50, **fields)  # type: ignore[arg-type]
    return ServiceNowClient.from_settings(config, retry=retry)


def _simulator(world: Dataset, *rules: FaultRule) -> ServiceNowSimulator:
    return ServiceNowSimulator({"incident": world.servicenow["incident"][:120]}, faults=FaultInjector(rules, seed=3))


async def test_retry_after_is_honoured_before_the_next_request(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="rate_limit", path="incident", times=1, retry_after=1))
    with serving(simulator.app.asgi) as server:
        client = _client(server.url)
        try:
            page = await client.get_page("incident", query="", offset=0, limit=10)
        finally:
            await client.aclose()

    assert len(page.records) == 10
    first, second = simulator.faults.requests()
    assert (first.status, first.fault, second.status) == (429, "rate_limit", 200)
    assert second.at - first.at >= 1.0


async def test_servicenow_429_carries_retry_after_and_rate_limit_headers(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="rate_limit", path="incident", retry_after=2))
    with serving(simulator.app.asgi) as server:
        async with httpx.AsyncClient(base_url=server.url, auth=("rosetta", "rosetta")) as raw_client:
            response = await raw_client.get("/api/now/table/incident")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert all(name in response.headers for name in ("X-RateLimit-Limit", "X-RateLimit-Reset", "X-RateLimit-Rule"))
    assert response.json() == {
        "error": {"message": "Rate limit exceeded", "detail": "Too many requests for this user"},
        "status": "failure",
    }


async def test_5xx_without_retry_after_backs_off_and_recovers(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="error", status=502, path="incident", times=2, retry_after=None))
    with serving(simulator.app.asgi) as server:
        client = _client(server.url)
        try:
            await client.get_page("incident", query="", offset=0, limit=5)
        finally:
            await client.aclose()

    log = simulator.faults.requests()
    assert [entry.status for entry in log] == [502, 502, 200]
    # Exponential backoff with jitter: the second wait is at least half of base * 2.
    assert log[1].at - log[0].at >= FAST.base_delay / 2
    assert log[2].at - log[1].at >= FAST.base_delay


async def test_retries_are_bounded_and_the_error_names_the_system_and_the_request(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="error", status=503, path="incident", retry_after=None))
    with serving(simulator.app.asgi) as server:
        client = _client(server.url)
        try:
            with pytest.raises(ExternalUnavailableError) as caught:
                await client.get_page("incident", query="", offset=0, limit=5)
        finally:
            await client.aclose()

    assert len(simulator.faults.requests()) == FAST.max_retries + 1
    assert caught.value.detail == (
        "servicenow: GET /api/now/table/incident failed after 4 attempt(s): HTTP 503: Simulated server error: HTTP 503"
    )


async def test_a_retry_after_longer_than_allowed_fails_at_once(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="rate_limit", path="incident", retry_after=3600))
    with serving(simulator.app.asgi) as server:
        client = _client(server.url)
        try:
            with pytest.raises(ExternalUnavailableError, match="asks to retry after 3600 s"):
                await client.get_page("incident", query="", offset=0, limit=5)
        finally:
            await client.aclose()

    assert len(simulator.faults.requests()) == 1


async def test_a_timeout_is_retried(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="timeout", path="incident", times=1, delay_seconds=3))
    with serving(simulator.app.asgi) as server:
        client = _client(server.url, timeout_seconds=0.5)
        try:
            page = await client.get_page("incident", query="", offset=0, limit=5)
        finally:
            await client.aclose()
        await asyncio.sleep(0)

    assert len(page.records) == 5
    statuses = [(entry.fault, entry.status) for entry in simulator.faults.requests()]
    assert (None, 200) in statuses
    assert statuses.count(("timeout", 504)) <= 1  # the held request may still be open when the server stops


async def test_concurrent_requests_are_bounded_by_max_concurrency(world: Dataset) -> None:
    simulator = _simulator(world, FaultRule(action="latency", path="incident", delay_seconds=0.2))
    with serving(simulator.app.asgi) as server:
        client = _client(server.url, max_concurrency=2)
        try:
            await asyncio.gather(*(client.get_page("incident", query="", offset=i, limit=1) for i in range(8)))
        finally:
            await client.aclose()

    log = simulator.faults.requests()
    assert len(log) == 8
    events = sorted([(entry.at, 1) for entry in log] + [(entry.at + entry.duration, -1) for entry in log])
    in_flight = peak = 0
    for _, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak == 2


async def test_bad_credentials_are_a_configuration_error_with_the_systems_message(world: Dataset) -> None:
    simulator = _simulator(world)
    with serving(simulator.app.asgi) as server:
        client = _client(server.url, password="wrong")
        try:
            with pytest.raises(ExternalAuthError) as caught:
                await client.get_page("incident", query="", offset=0, limit=5)
        finally:
            await client.aclose()

    assert caught.value.status == 401
    assert caught.value.detail == (
        "servicenow: GET /api/now/table/incident was refused with HTTP 401: "
        "User Not Authenticated: Required to provide Auth information"
    )
    assert len(simulator.faults.requests()) == 1  # a 401 is not retried


async def test_a_client_error_is_not_retried(world: Dataset) -> None:
    simulator = _simulator(world)
    with serving(simulator.app.asgi) as server:
        client = _client(server.url)
        try:
            with pytest.raises(ExternalApiError, match="HTTP 400: Invalid table nope"):
                await client.get_page("nope", query="", offset=0, limit=5)
        finally:
            await client.aclose()

    assert len(simulator.faults.requests()) == 1


async def test_a_server_that_is_down_is_unavailable_after_the_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(
            ExternalUnavailableError, match=r"failed after 4 attempt\(s\): connection failed \(ConnectError"
        ):
            await client.get_page("incident", query="", offset=0, limit=5)
    finally:
        await client.aclose()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Sun, 01 Mar 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Sun, 01 Mar 2026 11:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
