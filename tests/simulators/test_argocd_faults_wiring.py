"""Argo CD simulator details, fault injection (seeded, admin endpoints) and the dev/simulate composition."""

from __future__ import annotations

from pathlib import Path

import httpx
from litestar.testing import AsyncTestClient

from rosetta.core.http import create_app
from rosetta.core.settings import ExternalSystem, Settings
from rosetta.ref.api import context_api as ref_api
from rosetta.simulators import argocd, dynatrace
from rosetta.simulators.argocd import ArgoCdSimulator
from rosetta.simulators.compose import SERVICENOW_TOKEN, build_simulators, composed_app, development_wiring
from rosetta.simulators.dataset import load_dataset, write_dataset
from rosetta.simulators.faults import FaultInjector, FaultRule
from rosetta.simulators.servicenow import ServiceNowSimulator
from simulators.world import argocd_applications, fixture_dataset, servicenow_tables, serving

BEARER = {"Authorization": f"Bearer {argocd.DEFAULT_TOKEN}"}


async def test_argocd_fields_selector_cookie_and_resource_tree() -> None:
    simulator = ArgoCdSimulator(argocd_applications())
    with serving(simulator.app.asgi) as server:
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as client:
            trimmed = (
                await client.get("/applications", params={"fields": "items.metadata.name"}, headers=BEARER)
            ).json()
            excluded = (await client.get("/applications", params={"fields": "-items.status"}, headers=BEARER)).json()
            team = (await client.get("/applications", params={"selector": "team=shop"}, headers=BEARER)).json()
            projects = (await client.get("/applications?projects=payments&projects=shop", headers=BEARER)).json()
            # A Cookie header, not httpx's per-request cookies (deprecated: they may persist on the client, and
            # the anonymous request below must carry none).
            cookie = await client.get("/applications", headers={"Cookie": f"argocd.token={argocd.DEFAULT_TOKEN}"})
            anonymous = await client.get("/applications")
            tree = (await client.get("/applications/checkout-prod/resource-tree", headers=BEARER)).json()

    assert trimmed == {"items": [{"metadata": {"name": n}} for n in ("billing-prod", "checkout-prod", "shop-dev")]}
    assert all("status" not in item and "spec" in item for item in excluded["items"])
    assert [item["metadata"]["name"] for item in team["items"]] == ["shop-dev"]
    assert len(projects["items"]) == 3
    assert cookie.status_code == 200
    assert anonymous.status_code == 401
    assert anonymous.json() == {
        "error": "no session information",
        "code": 16,
        "message": "no session information",
        "details": [],
    }
    assert tree["nodes"][0]["health"] == {"status": "Healthy"}
    assert tree["orphanedNodes"] == []


def test_fault_rules_skip_times_and_a_seed_make_runs_reproducible() -> None:
    def decisions(seed: int) -> list[str | None]:
        injector = FaultInjector(
            [
                FaultRule(action="rate_limit", path="incident", skip=1, times=2),
                FaultRule(action="error", path="incident", probability=0.5),
            ],
            seed=seed,
        )
        chosen = [injector.choose("GET", "/api/now/table/incident", "") for _ in range(12)]
        return [rule.action if rule else None for rule in chosen]

    first = decisions(42)
    assert first[:3] == [None if first[0] is None else "error", "rate_limit", "rate_limit"]
    assert first.count("rate_limit") == 2
    assert decisions(42) == first
    assert {tuple(decisions(seed)) for seed in range(5)} != {tuple(first)}  # the seed matters


async def test_admin_endpoints_set_faults_and_read_the_request_log() -> None:
    simulator = ServiceNowSimulator(servicenow_tables())
    with serving(simulator.app.asgi) as server:
        async with httpx.AsyncClient(base_url=server.url, auth=("rosetta", "rosetta")) as client:
            configured = await client.put(
                "/_admin/faults",
                json={"seed": 1, "rules": [{"action": "error", "status": 500, "path": "change_request", "times": 1}]},
            )
            failed = await client.get("/api/now/table/change_request", params={"sysparm_limit": "1"})
            passed = await client.get("/api/now/table/change_request", params={"sysparm_limit": "1"})
            log = (await client.get("/_admin/requests")).json()
            invalid = await client.put("/_admin/faults", json={"rules": [{"action": "explode"}]})
            await client.delete("/_admin/requests")
            emptied = (await client.get("/_admin/requests")).json()

    assert configured.json() == {"rules": 1}
    assert failed.status_code == 500
    assert failed.json() == {"error": {"message": "Simulated server error", "detail": "HTTP 500"}, "status": "failure"}
    assert passed.status_code == 200
    assert [(entry["status"], entry["fault"]) for entry in log] == [(500, "error"), (200, None)]
    assert log[0]["params"] == [["sysparm_limit", "1"]]
    assert invalid.status_code == 400
    assert emptied == []


async def test_simulate_all_mounts_every_system_under_sim(tmp_path: Path) -> None:
    write_dataset(tmp_path, fixture_dataset())
    simulators = build_simulators(load_dataset(tmp_path))
    with serving(composed_app(simulators)) as server:
        async with httpx.AsyncClient(base_url=f"{server.url}/_sim") as client:
            dt = await client.get(
                "/dynatrace/api/v2/slo", headers={"Authorization": f"Api-Token {dynatrace.DEFAULT_TOKEN}"}
            )
            sn = await client.get("/servicenow/api/now/table/cmdb_ci_service", auth=("rosetta", "rosetta"))
            oauth = await client.get(
                "/servicenow/api/now/table/cmdb_ci_service", headers={"Authorization": f"Bearer {SERVICENOW_TOKEN}"}
            )
            ar = await client.get("/argocd/api/v1/applications", headers=BEARER)

    assert dt.json()["totalCount"] == 3
    service = sn.json()["result"][0]
    assert service["busines_criticality"].startswith("1 - ")  # the real schema's spelling
    assert len(ar.json()["items"]) == 3
    assert oauth.json() == sn.json()


async def test_dev_wiring_mounts_the_simulators_outside_the_apis_and_points_unconfigured_connectors(
    tmp_path: Path, settings: Settings
) -> None:
    write_dataset(tmp_path, fixture_dataset())
    configured = {
        "dynatrace": ExternalSystem(url="https://abc.live.dynatrace.com/api/v2"),
        "servicenow": ExternalSystem(),
        "argocd": ExternalSystem(),
    }
    mounts, connectors = development_wiring(tmp_path, "http://127.0.0.1:8000", configured)  # type: ignore[arg-type]
    app = create_app([ref_api()], process="test", settings=settings, extra_route_handlers=mounts)
    async with AsyncTestClient(app=app) as client:
        incidents = await client.get(
            "/_sim/servicenow/api/now/table/incident", params={"sysparm_limit": "2"}, auth=("rosetta", "rosetta")
        )
        problems = await client.get(
            "/_sim/dynatrace/api/v2/problems", headers={"Authorization": f"Api-Token {dynatrace.DEFAULT_TOKEN}"}
        )
        document = (await client.get("/api/ref/v1/openapi.json")).json()

    assert set(connectors) == {"servicenow", "argocd"}  # Dynatrace has a URL: left alone
    assert connectors["servicenow"].url == "http://127.0.0.1:8000/_sim/servicenow"
    assert connectors["argocd"].url == "http://127.0.0.1:8000/_sim/argocd"
    assert incidents.status_code == 200
    assert incidents.headers["X-Total-Count"] == "1234"
    assert incidents.json()["result"][0]["cmdb_ci"]["link"].startswith(
        "http://testserver.local/_sim/servicenow/api/now/table/"
    )
    assert problems.status_code == 200
    assert not any(path.startswith("/_sim") for path in document["paths"])
