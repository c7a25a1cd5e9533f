"""The Dynatrace simulator answers like API v2 (external-apis.md, section 1), over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from rosetta.simulators.dynatrace import ALL_SCOPES, DEFAULT_TOKEN, DynatraceSimulator
from simulators.world import DT_NOW_MS, DT_START_MS, HOUR_MS, SERVICES, dynatrace_data, serving

DAY_MS = 86_400_000
SERVICE_A = SERVICES[0]


@pytest.fixture(scope="module")
def simulator() -> DynatraceSimulator:
    return DynatraceSimulator(
        dynatrace_data(),
        tokens={DEFAULT_TOKEN: ALL_SCOPES, "dt0c01.METRICS.ONLY": {"metrics.read"}},
        clock=lambda: DT_NOW_MS,
    )


@pytest.fixture
async def client(simulator: DynatraceSimulator) -> AsyncIterator[httpx.AsyncClient]:
    with serving(simulator.app.asgi) as server:
        headers = {"Authorization": f"Api-Token {DEFAULT_TOKEN}"}
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v2", headers=headers) as http:
            yield http


async def _query(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/metrics/query", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _series(body: dict[str, Any], entity: str = SERVICE_A, result: int = 0) -> dict[str, Any]:
    return next(d for d in body["result"][result]["data"] if d["dimensionMap"].get("dt.entity.service") == entity)


async def test_timestamps_mark_slot_ends_and_the_last_slot_may_be_partial(client: httpx.AsyncClient) -> None:
    body = await _query(
        client,
        metricSelector="builtin:service.requestCount.total",
        resolution="1d",
        **{"from": str(DT_START_MS), "to": str(DT_NOW_MS)},
    )

    assert body["nextPageKey"] is None  # deprecated on this endpoint: always null
    assert body["resolution"] == "1d"
    assert body["totalCount"] == 3
    series = _series(body)
    assert series["timestamps"] == [DT_START_MS + DAY_MS, DT_START_MS + 2 * DAY_MS, DT_START_MS + 3 * DAY_MS]
    assert series["timestamps"][-1] > DT_NOW_MS  # the last slot ends in the future
    assert series["values"] == [2400.0, 2400.0, 2300.0]  # Count sums; today holds 23 complete hours
    assert series["dimensions"] == [SERVICE_A]


async def test_averages_skip_nulls_and_empty_slots_are_null(client: httpx.AsyncClient) -> None:
    body = await _query(
        client,
        metricSelector="builtin:service.response.time",
        resolution="1h",
        **{"from": str(DT_START_MS), "to": str(DT_START_MS + 7 * HOUR_MS)},
    )
    daily = await _query(
        client,
        metricSelector="builtin:service.response.time:max",
        resolution="1d",
        **{"from": str(DT_START_MS), "to": str(DT_START_MS + DAY_MS)},
    )
    hourly = _series(body)["values"]
    assert hourly == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0, None, 1006.0]
    assert _series(daily)["values"] == [1023.0]


async def test_transforms_names_split_filter_and_rate(client: httpx.AsyncClient) -> None:
    window = {"from": str(DT_START_MS), "to": str(DT_START_MS + DAY_MS), "resolution": "1d"}
    names = await _query(client, metricSelector="builtin:service.requestCount.total:names", **window)
    bare = await _query(client, metricSelector="builtin:service.response.time", **window)
    total = await _query(client, metricSelector="builtin:service.requestCount.total:splitBy()", **window)
    one = await _query(
        client,
        metricSelector=f'builtin:service.requestCount.total:filter(eq("dt.entity.service","{SERVICE_A}")):rate(1h)',
        **window,
    )
    both = await _query(
        client,
        metricSelector="builtin:service.(requestCount.total,response.time)",
        entitySelector='tag("app:app-1")',
        **window,
    )

    assert _series(names)["dimensionMap"] == {"dt.entity.service": SERVICE_A, "dt.entity.service.name": "svc-0"}
    assert _series(bare)["dimensionMap"] == {"dt.entity.service": SERVICE_A}  # names only with :names
    assert total["result"][0]["data"] == [
        {"dimensions": [], "dimensionMap": {}, "timestamps": [DT_START_MS + DAY_MS], "values": [24 * 600.0]}
    ]
    assert [d["values"] for d in one["result"][0]["data"]] == [[100.0]]
    assert [r["metricId"] for r in both["result"]] == [
        "builtin:service.requestCount.total",
        "builtin:service.response.time",
    ]
    assert [[d["dimensionMap"]["dt.entity.service"] for d in r["data"]] for r in both["result"]] == [[SERVICES[1]]] * 2


async def test_relative_times_and_resolution_inf(client: httpx.AsyncClient) -> None:
    inf = await _query(
        client, metricSelector="builtin:service.requestCount.total", resolution="Inf", **{"from": "now-1d/d"}
    )
    day_start = DT_NOW_MS - DT_NOW_MS % DAY_MS
    series = _series(inf)
    assert series["timestamps"] == [DT_NOW_MS]
    assert series["values"] == [100.0 * 47]  # from yesterday's midnight (now-1d snapped to the day) to now
    assert inf["resolution"] == "Inf"
    assert day_start == DT_START_MS + 2 * DAY_MS


async def test_metric_errors_and_warnings(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/metrics/query", params={"metricSelector": "builtin:nope.metric"})
    missing = await client.get("/metrics/query")
    too_many = await client.get(
        "/metrics/query",
        params={"metricSelector": "builtin:service.response.time", "resolution": "1h", "from": "now-500d"},
    )
    dimension = await _query(client, metricSelector='builtin:service.response.time:splitBy("dt.entity.host")')
    bad_time = await client.get(
        "/metrics/query", params={"metricSelector": "builtin:service.response.time", "from": "soon"}
    )

    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": 404, "message": "The metric key 'builtin:nope.metric' was not found."}}
    assert missing.status_code == 400
    assert missing.json()["error"]["constraintViolations"][0]["path"] == "metricSelector"
    assert too_many.status_code == 400
    assert dimension["result"][0]["data"] == []
    assert "dt.entity.host" in dimension["warnings"][0]
    assert bad_time.status_code == 400
    assert bad_time.json()["error"]["constraintViolations"][0]["path"] == "from"


async def test_problems_open_end_time_and_selectors(client: httpx.AsyncClient) -> None:
    week = {"from": "now-7d", "pageSize": "500"}
    every = (await client.get("/problems", params=week)).json()
    open_ones = (await client.get("/problems", params={**week, "problemSelector": 'status("open")'})).json()
    recent = (await client.get("/problems", params={"from": "now-2h"})).json()
    for_a = (await client.get("/problems", params={**week, "entitySelector": f'entityId("{SERVICE_A}")'})).json()
    single = (await client.get(f"/problems/{every['problems'][0]['problemId']}")).json()

    assert every["totalCount"] == 7
    assert [p["startTime"] for p in every["problems"]] == sorted(
        (p["startTime"] for p in every["problems"]), reverse=True
    )
    assert {(p["status"], p["endTime"]) for p in open_ones["problems"]} == {("OPEN", -1)}
    assert open_ones["totalCount"] == 2
    # Both open problems started hours ago, but their end (now, while open) is in the window.
    assert {p["displayId"] for p in recent["problems"]} == {"P-24000", "P-24003"}
    assert {p["affectedEntities"][0]["entityId"]["id"] for p in for_a["problems"]} == {SERVICE_A}
    assert "evidenceDetails" not in every["problems"][0]
    assert "evidenceDetails" in single


async def test_entities_need_a_type_and_default_to_three_days_and_three_fields(client: httpx.AsyncClient) -> None:
    no_type = await client.get("/entities", params={"entitySelector": 'tag("app:app-0")'})
    recent = (await client.get("/entities", params={"entitySelector": 'type("SERVICE")'})).json()
    zone = (
        await client.get("/entities", params={"entitySelector": 'type("SERVICE"),mzName("Prod")', "from": "now-30d"})
    ).json()
    negated = (
        await client.get(
            "/entities", params={"entitySelector": 'type("SERVICE"),not(entityName.equals("svc-0"))', "from": "now-30d"}
        )
    ).json()

    assert no_type.status_code == 400
    assert [e["displayName"] for e in recent["entities"]] == ["svc-0"]  # the others were not seen for 3 days
    assert set(recent["entities"][0]) == {"entityId", "type", "displayName"}
    assert [e["displayName"] for e in zone["entities"]] == ["svc-0", "svc-1"]
    assert [e["displayName"] for e in negated["entities"]] == ["svc-1", "svc-2"]


async def test_slos_are_computed_only_with_evaluate_true(client: httpx.AsyncClient) -> None:
    lazy = (await client.get("/slo")).json()
    evaluated = (
        await client.get("/slo", params={"evaluate": "true", "sloSelector": 'name("Availability svc-1")'})
    ).json()

    assert {s["evaluatedPercentage"] for s in lazy["slo"]} == {-1.0}
    assert {s["errorBudget"] for s in lazy["slo"]} == {-1.0}
    assert lazy["pageSize"] == 10
    assert evaluated["totalCount"] == 1
    assert (evaluated["slo"][0]["status"], evaluated["slo"][0]["evaluatedPercentage"]) == ("WARNING", 99.6)


async def test_authentication_and_scopes(client: httpx.AsyncClient) -> None:
    base = str(client.base_url)
    async with httpx.AsyncClient(base_url=base) as anonymous:
        missing = await anonymous.get("/problems")
        wrong = await anonymous.get("/problems", headers={"Authorization": "Api-Token dt0c01.WRONG"})
        bearer = await anonymous.get("/problems", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})
        scope = await anonymous.get("/problems", headers={"Authorization": "Api-Token dt0c01.METRICS.ONLY"})

    assert (missing.status_code, missing.json()) == (
        401,
        {"error": {"code": 401, "message": "Missing authorization parameter."}},
    )
    assert (wrong.status_code, bearer.status_code) == (401, 401)
    assert scope.status_code == 403
    assert scope.json()["error"]["message"] == "Token is missing required scope. Use one of: problems.read"
