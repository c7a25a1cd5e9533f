"""Dynatrace and Argo CD connectors against their simulators over real HTTP, and their pulls into the raw zone."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from rosetta.connectors.argocd import ApplicationNotVisibleError, ArgoCdClient
from rosetta.connectors.dynatrace import DynatraceClient
from rosetta.connectors.transport import ExternalAuthError, RetryPolicy
from rosetta.core.settings import ExternalSystem
from rosetta.raw.pull import pull_argocd, pull_dynatrace
from rosetta.raw.store import RawStore
from rosetta.simulators import argocd as argocd_simulator
from rosetta.simulators import dynatrace as dynatrace_simulator
from rosetta.simulators.argocd import ArgoCdSimulator
from rosetta.simulators.dataset import Dataset
from rosetta.simulators.dynatrace import DynatraceSimulator
from simulators.world import DT_NOW_MS, DT_START_MS, HOUR_MS, serving

FAST = RetryPolicy(max_retries=1, base_delay=0.05)
DAY_MS = 86_400_000
NOW = datetime.fromtimestamp(DT_NOW_MS / 1000, UTC)


def _dynatrace(url: str, *, page_size: int = 500, token: str = dynatrace_simulator.DEFAULT_TOKEN) -> DynatraceClient:
    config = ExternalSystem(url=f"{url}/api/v2", token=SecretStr(token), page_size=page_size)
    return DynatraceClient.from_settings(config, retry=FAST)


def _argocd(url: str, **credentials: str) -> ArgoCdClient:
    values = credentials or {"token": argocd_simulator.DEFAULT_TOKEN}
    return ArgoCdClient.from_settings(ExternalSystem(url=url, **values), retry=FAST)  # type: ignore[arg-type]


async def test_dynatrace_later_pages_send_only_next_page_key_and_problems_repeat_fields(world: Dataset) -> None:
    simulator = DynatraceSimulator(world.dynatrace, clock=lambda: DT_NOW_MS)
    with serving(simulator.app.asgi) as server:
        client = _dynatrace(server.url, page_size=2)
        try:
            problems = [
                p async for page in client.problems(from_ms=DT_NOW_MS - 7 * DAY_MS, to_ms=DT_NOW_MS) for p in page
            ]
            entities = [
                e async for page in client.entities('type("SERVICE")', from_ms=DT_NOW_MS - 30 * DAY_MS) for e in page
            ]
            slos = [s async for page in client.slos() for s in page]
        finally:
            await client.aclose()

    assert len(problems) == 7
    assert len({p["problemId"] for p in problems}) == 7
    assert all("evidenceDetails" in p for p in problems)  # fields was repeated on every page
    assert {p["status"] for p in problems if p["endTime"] == -1} == {"OPEN"}
    assert [e["displayName"] for e in entities] == ["svc-0", "svc-1", "svc-2"]
    assert all("properties" in e and "lastSeenTms" in e for e in entities)
    assert [(s["status"], s["errorBudget"]) for s in slos] == [("SUCCESS", 0.4), ("WARNING", 0.1), ("FAILURE", -1.5)]

    by_path: dict[str, list[set[str]]] = {}
    for entry in simulator.faults.requests():
        by_path.setdefault(entry.path, []).append({name for name, _ in entry.params})
    assert by_path["/api/v2/problems"][0] == {"from", "to", "pageSize", "fields"}
    assert by_path["/api/v2/problems"][1:] == [{"nextPageKey", "fields"}] * 3
    assert by_path["/api/v2/entities"] == [{"entitySelector", "from", "fields", "pageSize"}, {"nextPageKey"}]
    assert by_path["/api/v2/slo"] == [{"evaluate", "timeFrame", "pageSize"}, {"nextPageKey"}]


async def test_dynatrace_rejects_a_later_page_that_repeats_the_filters(world: Dataset) -> None:
    simulator = DynatraceSimulator(world.dynatrace, clock=lambda: DT_NOW_MS)
    headers = {"Authorization": f"Api-Token {dynatrace_simulator.DEFAULT_TOKEN}"}
    with serving(simulator.app.asgi) as server:
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v2", headers=headers) as client:
            first = (await client.get("/problems", params={"from": "now-7d", "pageSize": "3"})).json()
            wrong = await client.get("/problems", params={"nextPageKey": first["nextPageKey"], "pageSize": "3"})
            bare = (await client.get("/problems", params={"nextPageKey": first["nextPageKey"]})).json()

    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": {
            "code": 400,
            "message": "Constraints violated.",
            "constraintViolations": [
                {
                    "path": "pageSize",
                    "message": "must not be set together with nextPageKey",
                    "parameterLocation": "QUERY",
                    "location": None,
                }
            ],
        }
    }
    assert len(bare["problems"]) == 3
    assert all("evidenceDetails" not in p for p in bare["problems"])  # fields is not remembered by the key


async def test_dynatrace_bad_token_is_an_auth_error(world: Dataset) -> None:
    simulator = DynatraceSimulator(world.dynatrace, clock=lambda: DT_NOW_MS)
    with serving(simulator.app.asgi) as server:
        client = _dynatrace(server.url, token="dt0c01.WRONG.TOKEN")
        try:
            with pytest.raises(ExternalAuthError, match="refused with HTTP 401: Token Authentication failed"):
                await client.query_metrics("builtin:service.response.time", from_ms=DT_START_MS, to_ms=DT_NOW_MS)
        finally:
            await client.aclose()


async def test_pull_dynatrace_lands_entities_slos_problems_and_daily_metric_series(
    world: Dataset, raw_store: RawStore
) -> None:
    simulator = DynatraceSimulator(world.dynatrace, clock=lambda: DT_NOW_MS)
    since = datetime.fromtimestamp(DT_START_MS / 1000, UTC)
    with serving(simulator.app.asgi) as server:
        client = _dynatrace(server.url)
        try:
            first = await pull_dynatrace(raw_store, client, since=since, now=NOW)
            second = await pull_dynatrace(raw_store, client, now=NOW)
        finally:
            await client.aclose()

    streams = {stream.kind: stream for stream in first.streams}
    assert {kind: (s.read, s.landed) for kind, s in streams.items()} == {
        "entity": (2, 2),  # svc-1 and svc-2 were last seen before --since; svc-0 and the HTTP check since
        "slo": (3, 3),
        "problem": (7, 7),
        "metric_series": (18, 18),  # 2 metrics x 3 services x 3 days
    }
    assert sorted(streams["metric_series"].warnings)[0].endswith("unknown metric, skipped")
    series = [d.payload async for d in raw_store.stream(source="dynatrace", kind="metric_series")]
    requests = [s for s in series if s["metricKey"] == "builtin:service.requestCount.total"]
    day0 = next(
        s for s in requests if s["from"] == DT_START_MS and s["dimensionMap"]["dt.entity.service"].endswith("A1")
    )
    assert day0["timestamps"][0] == DT_START_MS + HOUR_MS  # a timestamp is the END of its slot
    assert day0["values"] == [100.0] * 24
    assert day0["dimensionMap"]["dt.entity.service.name"] == "svc-0"
    today = next(
        s
        for s in requests
        if s["from"] == DT_START_MS + 2 * DAY_MS and s["dimensionMap"]["dt.entity.service"].endswith("A1")
    )
    assert today["values"][:23] == [100.0] * 23
    assert today["values"][23] is None  # the slot ending after now holds no complete point yet
    assert await raw_store.get_watermark("dynatrace", "metric:builtin:service.requestCount.total") == {
        "to": DT_START_MS + 2 * DAY_MS
    }
    assert await raw_store.get_watermark("dynatrace", "problem") == {"to": DT_NOW_MS - HOUR_MS}

    again = {stream.kind: stream for stream in second.streams}
    assert (again["metric_series"].read, again["metric_series"].duplicates) == (6, 6)  # today, re-read
    assert (again["problem"].read, again["problem"].duplicates) == (2, 2)  # the open ones
    kinds = Counter([d.kind async for d in raw_store.stream(source="dynatrace")])
    # Without --since, entities seen in the last year: svc-1 and svc-2 land now, the others are duplicates.
    assert (again["entity"].read, again["entity"].landed, again["entity"].duplicates) == (4, 2, 2)
    assert kinds == {"entity": 4, "slo": 3, "problem": 7, "metric_series": 18}


async def test_argocd_unknown_application_is_403_permission_denied(world: Dataset) -> None:
    simulator = ArgoCdSimulator(world.argocd_applications)
    with serving(simulator.app.asgi) as server:
        client = _argocd(server.url)
        try:
            with pytest.raises(ApplicationNotVisibleError, match="'nope' does not exist or the token may not see it"):
                await client.application("nope")
            known = await client.application("checkout-prod")
        finally:
            await client.aclose()
        async with httpx.AsyncClient(base_url=server.url) as plain:
            raw = await plain.get(
                "/api/v1/applications/nope", headers={"Authorization": f"Bearer {argocd_simulator.DEFAULT_TOKEN}"}
            )

    assert raw.status_code == 403
    assert raw.json() == {"error": "permission denied", "code": 7, "message": "permission denied", "details": []}
    assert known["status"]["operationState"]["phase"] == "Failed"


async def test_argocd_project_scoped_token_sees_only_its_project_and_null_items_are_an_empty_list(
    world: Dataset,
) -> None:
    simulator = ArgoCdSimulator(world.argocd_applications, tokens={"shop-token": ["shop"], "nothing-token": []})
    with serving(simulator.app.asgi) as server:
        shop, nothing = _argocd(server.url, token="shop-token"), _argocd(server.url, token="nothing-token")
        try:
            visible = await shop.applications()
            with pytest.raises(ApplicationNotVisibleError):
                await shop.application("checkout-prod")  # exists, but in another project
            assert await nothing.applications() == []
        finally:
            await shop.aclose()
            await nothing.aclose()
        headers = {"Authorization": "Bearer nothing-token"}
        async with httpx.AsyncClient(base_url=server.url) as plain:
            raw = (await plain.get("/api/v1/applications", headers=headers)).json()
            missing = await plain.get(
                "/api/v1/applications/nope", params={"project": "shop"}, headers={"Authorization": "Bearer shop-token"}
            )

    assert [app["metadata"]["name"] for app in visible] == ["shop-dev"]
    assert raw["items"] is None
    assert missing.status_code == 404
    assert missing.json()["code"] == 5


async def test_pull_argocd_with_a_session_login_lands_applications_with_history(
    world: Dataset, raw_store: RawStore
) -> None:
    simulator = ArgoCdSimulator(world.argocd_applications)
    with serving(simulator.app.asgi) as server:
        client = _argocd(server.url, username="admin", password="rosetta")
        try:
            summary = await pull_argocd(raw_store, client)
        finally:
            await client.aclose()
        rejected = _argocd(server.url, token="forged")
        try:
            with pytest.raises(ExternalAuthError, match=r"invalid session: token signature is invalid \(code 16\)"):
                await rejected.applications()
        finally:
            await rejected.aclose()

    assert [(s.kind, s.read, s.landed) for s in summary.streams] == [("application", 3, 3)]
    paths = [entry.path for entry in simulator.faults.requests()]
    assert paths[:2] == ["/api/v1/session", "/api/v1/applications"]
    apps = [d.payload async for d in raw_store.stream(source="argocd", kind="application")]
    assert sorted(app["metadata"]["name"] for app in apps) == ["billing-prod", "checkout-prod", "shop-dev"]
    assert all(len(app["status"]["history"]) == 3 and "operationState" in app["status"] for app in apps)
    # Argo CD 3.x: resource health is served by the resource tree, not status.resources.
    assert all(app["status"]["resourceHealthSource"] == "appTree" for app in apps)
    assert all("health" not in resource for app in apps for resource in app["status"]["resources"])


def test_since_window_helpers_agree_with_the_world() -> None:
    assert NOW - timedelta(hours=71, minutes=30) == datetime.fromtimestamp(DT_START_MS / 1000, UTC)
