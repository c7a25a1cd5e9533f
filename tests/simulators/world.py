"""A small, fully known world for the simulator and connector tests, written in the dataset format.

ServiceNow: 1,234 incidents and 300 changes whose ``sys_updated_on`` values cluster (160 incidents share one
second, more than a page), so keyset paging, the sys_id tie-break and the in-second offset are exercised.
Dynatrace: 3 services and an HTTP check, 7 problems (2 open), 3 SLOs, 3 days of hourly metrics with gaps.
Argo CD: 3 applications in 2 projects, with history and operation state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rosetta.simulators.dataset import Dataset, DynatraceData, MetricData, MetricSeries, load_dataset, write_dataset
from rosetta.simulators.server import BackgroundServer

SN_TIME = "%Y-%m-%d %H:%M:%S"
BASE = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
INCIDENTS = 1234
CHANGES = 300
CLUSTER = range(400, 560)  # these incidents share one sys_updated_on second
DT_START_MS = int(datetime(2026, 3, 10, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
DT_NOW_MS = DT_START_MS + 3 * 24 * HOUR_MS - 30 * 60_000  # 71.5 hours after the first point
SERVICES = ["SERVICE-00000000000000A1", "SERVICE-00000000000000B2", "SERVICE-00000000000000C3"]


def sys_id(kind: str, index: int) -> str:
    """A stable 32-hex sys_id."""
    return hashlib.md5(f"{kind}-{index}".encode()).hexdigest()


def _incident(index: int) -> dict[str, str]:
    second = 500 if index in CLUSTER else index // 3
    updated = (BASE + timedelta(seconds=second)).strftime(SN_TIME)
    change = sys_id("chg", index % CHANGES) if index % 7 == 0 else ""
    return {
        "sys_id": sys_id("inc", index),
        "number": f"INC{10000 + index:07d}",
        "short_description": f"Incident {index}",
        "state": str([1, 2, 3, 6, 7, 8][index % 6]),
        "priority": str(1 + index % 5),
        "impact": str(1 + index % 3),
        "urgency": str(1 + (index // 3) % 3),
        "active": "true" if index % 6 < 3 else "false",
        "cmdb_ci": sys_id("svc", index % 4),
        "business_service": sys_id("svc", index % 4),
        "assignment_group": "",
        "caused_by": change,
        "opened_at": (BASE - timedelta(hours=2)).strftime(SN_TIME),
        "resolved_at": "" if index % 6 < 3 else updated,
        "sys_created_on": (BASE - timedelta(hours=2)).strftime(SN_TIME),
        "sys_updated_on": updated,
    }


def _change(index: int) -> dict[str, str]:
    return {
        "sys_id": sys_id("chg", index),
        "number": f"CHG{30000 + index:07d}",
        "type": ["normal", "standard", "emergency"][index % 3],
        "state": str([-5, -1, 0, 3, 4][index % 5]),
        "close_code": ["successful", "successful_issues", "unsuccessful", "", ""][index % 5],
        "cmdb_ci": sys_id("svc", index % 4),
        "business_service": sys_id("svc", index % 4),
        "start_date": (BASE + timedelta(hours=index)).strftime(SN_TIME),
        "end_date": (BASE + timedelta(hours=index + 1)).strftime(SN_TIME),
        "sys_updated_on": (BASE + timedelta(seconds=2 * index)).strftime(SN_TIME),
    }


def servicenow_tables() -> dict[str, list[dict[str, str]]]:
    """The ServiceNow tables of the test world."""
    services = [
        {
            "sys_id": sys_id("svc", index),
            "name": f"service-{index}",
            "service_classification": "Application Service",
            "busines_criticality": f"{1 + index % 4} - {'most critical' if index == 0 else 'less critical'}",
            "sys_class_name": "cmdb_ci_service_auto",
            "owned_by": "",
            "support_group": "",
            "sys_updated_on": (BASE + timedelta(minutes=index)).strftime(SN_TIME),
        }
        for index in range(4)
    ]
    apps = [
        {
            "sys_id": sys_id("app", index),
            "number": f"APM000{index}",
            "name": f"app-{index}",
            "business_criticality": "1 - most critical",
            "operational_status": "1",
            "sys_class_name": "cmdb_ci_business_app",
            "sys_updated_on": (BASE + timedelta(minutes=index)).strftime(SN_TIME),
        }
        for index in range(2)
    ]
    relations = [
        {
            "sys_id": sys_id("rel", index),
            "parent": sys_id("app", index % 2),
            "child": sys_id("svc", index),
            "type": sys_id("reltype", 0),
            "sys_updated_on": (BASE + timedelta(minutes=index)).strftime(SN_TIME),
        }
        for index in range(4)
    ]
    return {
        "incident": [_incident(index) for index in range(INCIDENTS)],
        "change_request": [_change(index) for index in range(CHANGES)],
        "cmdb_ci_service": services,
        "cmdb_ci_business_app": apps,
        "cmdb_rel_ci": relations,
    }


def _stub(entity_id: str, name: str) -> dict[str, Any]:
    return {"entityId": {"id": entity_id, "type": "SERVICE"}, "name": name}


def dynatrace_data() -> DynatraceData:
    """The Dynatrace objects of the test world (times relative to ``DT_NOW_MS``)."""
    entities: list[dict[str, Any]] = [
        {
            "entityId": entity_id,
            "type": "SERVICE",
            "displayName": f"svc-{index}",
            "firstSeenTms": DT_START_MS - 30 * 24 * HOUR_MS,
            "lastSeenTms": DT_NOW_MS - (index * 5 * 24 * HOUR_MS),  # svc-2 was last seen 10 days ago
            "properties": {"serviceType": "WEB_SERVICE"},
            "tags": [
                {
                    "context": "CONTEXTLESS",
                    "key": "app",
                    "value": f"app-{index}",
                    "stringRepresentation": f"app:app-{index}",
                }
            ],
            "managementZones": [{"id": "1", "name": "Prod" if index < 2 else "Dev"}],
            "fromRelationships": {"calls": [{"id": SERVICES[(index + 1) % 3], "type": "SERVICE"}]},
            "toRelationships": {},
        }
        for index, entity_id in enumerate(SERVICES)
    ]
    entities.append(
        {
            "entityId": "HTTP_CHECK-00000000000000D4",
            "type": "HTTP_CHECK",
            "displayName": "ping",
            "lastSeenTms": DT_NOW_MS,
        }
    )
    problems = []
    for index in range(7):
        start = DT_NOW_MS - (index + 1) * 6 * HOUR_MS
        is_open = index in (0, 3)
        problems.append(
            {
                "problemId": f"-{1000 + index}_{start}V2",
                "displayId": f"P-{24000 + index}",
                "title": f"Problem {index}",
                "impactLevel": "SERVICES",
                "severityLevel": ["ERROR", "PERFORMANCE", "AVAILABILITY"][index % 3],
                "status": "OPEN" if is_open else "CLOSED",
                "startTime": start,
                "endTime": -1 if is_open else start + HOUR_MS,
                "affectedEntities": [_stub(SERVICES[index % 3], f"svc-{index % 3}")],
                "impactedEntities": [_stub(SERVICES[index % 3], f"svc-{index % 3}")],
                "rootCauseEntity": _stub(SERVICES[index % 3], f"svc-{index % 3}") if index % 2 else {},
                "managementZones": [{"id": "1", "name": "Prod"}],
                "entityTags": [],
                "problemFilters": [{"id": "f", "name": "Default"}],
                "evidenceDetails": {"totalCount": 1, "details": [{"evidenceType": "EVENT"}]},
                "impactAnalysis": {"impacts": []},
                "recentComments": {"totalCount": 0, "pageSize": 5, "nextPageKey": None, "comments": []},
            }
        )
    slos = [
        {
            "id": f"00000000-0000-0000-0000-00000000000{index}",
            "name": f"Availability svc-{index}",
            "enabled": True,
            "target": 99.5,
            "warning": 99.7,
            "timeframe": "-1w",
            "evaluationType": "AGGREGATE",
            "metricExpression": "(100)*(builtin:service.errors.server.successCount:splitBy())",
            "filter": f'type("SERVICE"),entityId("{SERVICES[index]}")',
            "status": "SUCCESS",
            "evaluatedPercentage": [99.9, 99.6, 98.0][index],
            "errorBudget": 0.0,
            "errorBudgetBurnRate": {"burnRateType": "NONE", "burnRateValue": 0.5, "fastBurnThreshold": 10.0},
            "error": "NONE",
            "relatedOpenProblems": 0,
            "relatedTotalProblems": 1,
        }
        for index in range(3)
    ]
    hours = 72
    response_time = MetricData(
        unit="MicroSecond",
        series=[
            MetricSeries(
                dimension_map={"dt.entity.service": entity_id, "dt.entity.service.name": f"svc-{index}"},
                start=DT_START_MS,
                interval_ms=HOUR_MS,
                values=[None if hour % 10 == 5 else float(1000 * (index + 1) + hour) for hour in range(hours)],
            )
            for index, entity_id in enumerate(SERVICES)
        ],
    )
    requests = MetricData(
        unit="Count",
        series=[
            MetricSeries(
                dimension_map={"dt.entity.service": entity_id},
                start=DT_START_MS,
                interval_ms=HOUR_MS,
                values=[float(100 * (index + 1)) for _ in range(hours)],
            )
            for index, entity_id in enumerate(SERVICES)
        ],
    )
    return DynatraceData(
        entities=entities,
        problems=problems,
        slos=slos,
        metrics={"builtin:service.response.time": response_time, "builtin:service.requestCount.total": requests},
    )


def argocd_applications() -> list[dict[str, Any]]:
    """Three applications; ``checkout-prod`` failed its last sync and was rolled back."""
    apps = []
    for name, project in (("checkout-prod", "payments"), ("billing-prod", "payments"), ("shop-dev", "shop")):
        history = [
            {
                "id": number,
                "revision": hashlib.sha1(f"{name}{number}".encode()).hexdigest()[:7],
                "deployStartedAt": f"2026-03-0{number}T09:40:02Z",
                "deployedAt": f"2026-03-0{number}T09:41:15Z",
                "source": {"repoURL": f"https://git.example/{project}/deploy.git", "path": name},
                "initiatedBy": {"automated": True},
            }
            for number in range(1, 4)
        ]
        failed = name == "checkout-prod"
        apps.append(
            {
                "metadata": {"name": name, "namespace": "argocd", "labels": {"team": project}},
                "spec": {
                    "project": project,
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
                    "source": {
                        "repoURL": f"https://git.example/{project}/deploy.git",
                        "path": name,
                        "targetRevision": "main",
                    },
                },
                "status": {
                    "sync": {"status": "OutOfSync" if failed else "Synced", "revision": history[-1]["revision"]},
                    "health": {"status": "Degraded" if failed else "Healthy"},
                    "operationState": {
                        "phase": "Failed" if failed else "Succeeded",
                        "startedAt": "2026-03-04T09:40:02Z",
                        "finishedAt": "2026-03-04T09:41:15Z",
                    },
                    "history": history,
                    "resources": [
                        {"kind": "Deployment", "name": name, "namespace": name, "health": {"status": "Healthy"}}
                    ],
                },
            }
        )
    return apps


def fixture_dataset() -> Dataset:
    """The whole test world."""
    return Dataset(
        servicenow=servicenow_tables(), dynatrace=dynatrace_data(), argocd_applications=argocd_applications()
    )


def written_and_loaded(directory: Path) -> Dataset:
    """The test world after a round trip through the dataset files (what ``rosetta simulate --data`` reads)."""
    write_dataset(directory, fixture_dataset())
    return load_dataset(directory)


@contextmanager
def serving(asgi: Any) -> Iterator[BackgroundServer]:
    """An ASGI app served over real HTTP on 127.0.0.1 for the duration of the block."""
    with BackgroundServer(asgi) as server:
        yield server
