"""``rosetta raw pull servicenow|cmdb`` against the ServiceNow simulator over real HTTP, faults injected."""

from __future__ import annotations

import json

from cli_support import cli_env, landed_versions, rosetta

from rosetta.core.settings import Settings
from rosetta.raw.store import RawStore
from rosetta.simulators.dataset import Dataset
from rosetta.simulators.faults import FaultInjector, FaultRule
from rosetta.simulators.servicenow import ServiceNowSimulator
from simulators.world import serving


def _servicenow(url: str, **extra: str) -> dict[str, str]:
    return {"url": url, "username": "rosetta", "password": "rosetta", "page_size": "100", **extra}


def _expected(simulator: ServiceNowSimulator, table: str) -> set[tuple[str, str]]:
    return {(row["sys_id"], row["sys_updated_on"]) for row in simulator.tables[table]}


async def test_pull_with_429_and_5xx_on_some_pages_lands_every_record_exactly_once(
    world: Dataset, raw_settings: Settings, raw_store: RawStore
) -> None:
    faults = FaultInjector(
        [
            FaultRule(action="rate_limit", path=r"/incident$", skip=2, times=2, retry_after=1),
            FaultRule(action="error", status=503, path=r"/change_request$", skip=1, times=1, retry_after=None),
            FaultRule(action="error", status=500, path=r"/incident$", probability=0.2, times=3, retry_after=None),
        ],
        seed=7,
    )
    simulator = ServiceNowSimulator(world.servicenow, faults=faults)
    with serving(simulator.app.asgi) as server:
        result = await rosetta(
            "raw", "pull", "servicenow", "--json", env=cli_env(raw_settings, servicenow=_servicenow(server.url))
        )

    assert result.returncode == 0, result.stderr
    statuses = [entry.status for entry in faults.requests()]
    assert statuses.count(429) == 2
    assert 503 in statuses
    assert 500 in statuses
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed"
    assert summary["streams"] == [
        {"kind": "incident", "status": "completed", "read": 1234, "landed": 1234, "duplicates": 0},
        {"kind": "change_request", "status": "completed", "read": 300, "landed": 300, "duplicates": 0},
    ]
    for table in ("incident", "change_request"):
        counts = await landed_versions(raw_store, table)
        assert set(counts) == _expected(simulator, table)
        assert set(counts.values()) == {1}
    last = max((row["sys_updated_on"], row["sys_id"]) for row in simulator.tables["incident"])
    assert await raw_store.get_watermark("servicenow", "incident") == {"sys_updated_on": last[0], "sys_id": last[1]}
    # The paging was by key: later pages ask from the last sys_updated_on read, ordered, 100 at a time.
    pages = [entry for entry in faults.requests() if entry.path.endswith("/incident") and entry.status == 200]
    assert all(entry.param("sysparm_limit") == "100" for entry in pages)
    assert all(entry.param("sysparm_query", "").endswith("ORDERBYsys_updated_on^ORDERBYsys_id") for entry in pages)
    # 160 incidents share one second: the page inside it moves on by offset.
    assert any(entry.param("sysparm_offset") not in ("0", None) for entry in pages)


async def test_an_interrupted_pull_resumes_from_the_last_completed_high_water_mark(
    world: Dataset, raw_settings: Settings, raw_store: RawStore
) -> None:
    faults = FaultInjector([FaultRule(action="error", status=503, path=r"/change_request$", skip=2, retry_after=None)])
    simulator = ServiceNowSimulator(world.servicenow, faults=faults)
    with serving(simulator.app.asgi) as server:
        env = cli_env(raw_settings, servicenow=_servicenow(server.url, max_retries="2"))
        failed = await rosetta("raw", "pull", "servicenow", env=env)

        assert failed.returncode == 4
        assert failed.stdout == ""
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1, failed.stderr
        assert lines[0].startswith("rosetta: error: servicenow pull failed at change_request")
        assert "completed and marked: incident" in lines[0]
        assert "HTTP 503" in lines[0]
        incident_mark = await raw_store.get_watermark("servicenow", "incident")
        assert incident_mark is not None
        assert await raw_store.get_watermark("servicenow", "change_request") is None
        partial = await landed_versions(raw_store, "change_request")
        # Two pages landed before the permanent fault (100 + 99: each later page re-reads the last second).
        assert sum(partial.values()) == 199

        # Meanwhile five incidents change and a change request is created; then the fault goes away.
        for row in simulator.tables["incident"][:5]:
            simulator.upsert("incident", {**row, "state": "7", "sys_updated_on": "2026-03-02 09:00:00"})
        new_change = {
            **simulator.tables["change_request"][0],
            "sys_id": "f" * 32,
            "sys_updated_on": "2026-03-02 10:00:00",
        }
        simulator.upsert("change_request", new_change)
        faults.clear()
        faults.clear_requests()
        resumed = await rosetta("raw", "pull", "servicenow", "--json", env=env)

    assert resumed.returncode == 0, resumed.stderr
    first_incident_page = next(entry for entry in faults.requests() if entry.path.endswith("/incident"))
    assert first_incident_page.param("sysparm_query", "").startswith(
        f"sys_updated_on>={incident_mark['sys_updated_on']}^"
    )
    summary = json.loads(resumed.stdout)
    assert summary["streams"] == [
        {"kind": "incident", "status": "completed", "read": 5, "landed": 5, "duplicates": 0},
        {"kind": "change_request", "status": "completed", "read": 301, "landed": 102, "duplicates": 199},
    ]
    incidents = await landed_versions(raw_store, "incident")
    assert set(incidents.values()) == {1}
    assert _expected(simulator, "incident") <= set(incidents)
    assert len(incidents) == 1234 + 5  # the five earlier versions stay, as raw history
    changes = await landed_versions(raw_store, "change_request")
    assert set(changes) == _expected(simulator, "change_request")
    assert set(changes.values()) == {1}
    assert await raw_store.get_watermark("servicenow", "change_request") == {
        "sys_updated_on": "2026-03-02 10:00:00",
        "sys_id": "f" * 32,
    }


async def test_pull_cmdb_lands_the_three_cmdb_tables_and_a_second_pull_reads_nothing_new(
    world: Dataset, raw_settings: Settings, raw_store: RawStore
) -> None:
    simulator = ServiceNowSimulator(world.servicenow)
    with serving(simulator.app.asgi) as server:
        env = cli_env(raw_settings, servicenow=_servicenow(server.url))
        first = await rosetta("raw", "pull", "cmdb", env=env)
        second = await rosetta("raw", "pull", "cmdb", "--json", env=env)

    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "cmdb pull completed: read 10, landed 10, duplicates 0",
        "  cmdb_ci_business_app: completed, read 2, landed 2, duplicates 0",
        "  cmdb_ci_service: completed, read 4, landed 4, duplicates 0",
        "  cmdb_rel_ci: completed, read 4, landed 4, duplicates 0",
    ]
    assert json.loads(second.stdout)["read"] == 0
    relations = [document.payload async for document in raw_store.stream(source="servicenow", kind="cmdb_rel_ci")]
    # Landed as strings: references are bare sys_ids (sysparm_exclude_reference_link=true).
    assert all(isinstance(value, str) for payload in relations for value in payload.values())
    assert {payload["parent"] for payload in relations} == {row["parent"] for row in simulator.tables["cmdb_rel_ci"]}


async def test_pull_with_since_rereads_as_duplicates_and_keeps_the_mark(
    world: Dataset, raw_settings: Settings, raw_store: RawStore
) -> None:
    simulator = ServiceNowSimulator({"change_request": world.servicenow["change_request"]})
    with serving(simulator.app.asgi) as server:
        env = cli_env(raw_settings, servicenow=_servicenow(server.url))
        assert (await rosetta("raw", "pull", "servicenow", env=env)).returncode == 0
        mark = await raw_store.get_watermark("servicenow", "change_request")
        again = await rosetta("raw", "pull", "servicenow", "--since", "2026-03-01 08:05:00", "--json", env=env)

    streams = {stream["kind"]: stream for stream in json.loads(again.stdout)["streams"]}
    # 08:05:00 is 300 s after the first change; changes are 2 s apart: 150 of them from there on.
    assert streams["change_request"] == {
        "kind": "change_request",
        "status": "completed",
        "read": 150,
        "landed": 0,
        "duplicates": 150,
    }
    assert await raw_store.get_watermark("servicenow", "change_request") == mark
