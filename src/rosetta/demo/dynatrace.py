"""Dynatrace API v2 objects of the demo world: service entities, hourly service metrics, problems, SLOs.

One SERVICE entity per application's production service. Hourly series follow a daily curve (quiet at night,
peak mid-afternoon UTC) and a weekly one (weekends at ``WEEKEND_TRAFFIC`` of a weekday), grow with the
application's trend, and show every problem of the operations history at its hours: error rate up for
ERROR/AVAILABILITY problems, response time up for PERFORMANCE/RESOURCE_CONTENTION ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rosetta.demo.operations import Operations, Problem
from rosetta.demo.world import WEEKEND_TRAFFIC, Application, World, growth_factor, series_random, stable_id

HOUR_MS = 3_600_000
SLO_WINDOW_HOURS = 168  # the SLOs' "-1w" timeframe

# Relative traffic per UTC hour, normalised to a mean of 1 (so monthly request drivers match the series).
_RAW_SHAPE = [0.18 + max(0.0, math.sin(math.pi * (hour - 5) / 17)) ** 1.4 for hour in range(24)]
DAILY_SHAPE = [value * 24 / sum(_RAW_SHAPE) for value in _RAW_SHAPE]

METRIC_UNITS: dict[str, str] = {
    "builtin:service.response.time": "MicroSecond",
    "builtin:service.requestCount.total": "Count",
    "builtin:service.requestCount.server": "Count",
    "builtin:service.errors.server.rate": "Percent",
    "builtin:service.errors.server.successCount": "Count",
}


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of a UTC datetime."""
    return int(moment.timestamp()) * 1000


def service_id(world: World, app: Application) -> str:
    """The ``SERVICE-`` + 16 hex entity id of an application's production service."""
    return "SERVICE-" + stable_id(world.seed, "dynatrace-service", app.code, length=16).upper()


def metric_start(world: World) -> datetime:
    """First hour of the metric series."""
    return world.window.end_instant - timedelta(days=world.profile.metric_days)


def _entity_tags(app: Application) -> list[dict[str, str]]:
    tags = [("app", app.code), ("environment", "prod"), ("owner", app.current.owner_group)]
    return [
        {"context": "CONTEXTLESS", "key": key, "value": value, "stringRepresentation": f"{key}:{value}"}
        for key, value in tags
    ]


def _zone(world: World, app: Application) -> dict[str, str]:
    domain = app.current.product.domain_code
    return {"id": str(int(stable_id(world.seed, "zone", domain, length=12), 16)), "name": f"{domain.title()} prod"}


def entities(world: World) -> Iterator[dict[str, Any]]:
    """SERVICE entities with tags, management zone, and ``calls`` / ``calledBy`` relationships."""
    by_code = world.by_code()
    called_by: dict[str, list[str]] = {}
    for app in world.applications:
        for dependency in app.dependencies:
            called_by.setdefault(dependency, []).append(app.code)
    for app in world.applications:
        first_seen = datetime.combine(app.first_day, datetime.min.time(), tzinfo=world.window.end_instant.tzinfo)
        last_seen = min(
            world.window.end_instant - timedelta(minutes=5),
            datetime.combine(app.last_day, datetime.min.time(), tzinfo=first_seen.tzinfo) + timedelta(hours=23),
        )
        yield {
            "entityId": service_id(world, app),
            "type": "SERVICE",
            "displayName": app.slug,
            "firstSeenTms": epoch_ms(first_seen),
            "lastSeenTms": epoch_ms(last_seen),
            "properties": {
                "serviceType": "WEB_REQUEST" if "web" in app.components else "WEB_SERVICE",
                "softwareTechnologies": [
                    {"type": "JAVA", "edition": "OpenJDK", "version": "21.0.4"}
                    if app.index % 3
                    else {"type": "PYTHON", "edition": None, "version": "3.12.7"}
                ],
                "agentTechnologyType": "JAVA" if app.index % 3 else "PYTHON",
            },
            "tags": _entity_tags(app),
            "managementZones": [_zone(world, app)],
            "fromRelationships": {
                "calls": [{"id": service_id(world, by_code[code]), "type": "SERVICE"} for code in app.dependencies]
            },
            "toRelationships": {
                "calledBy": [
                    {"id": service_id(world, by_code[code]), "type": "SERVICE"} for code in called_by.get(app.code, [])
                ]
            },
        }


def problems(world: World, operations: Iterable[Operations]) -> Iterator[dict[str, Any]]:
    """Problems of every application, oldest first (``endTime`` is -1 and ``status`` OPEN while open)."""
    every = sorted((p for ops in operations for p in ops.problems), key=lambda item: (item.start, item.key))
    for problem in every:
        yield _problem(world, problem)


def _problem(world: World, problem: Problem) -> dict[str, Any]:
    app = problem.app
    stub = {"entityId": {"id": service_id(world, app), "type": "SERVICE"}, "name": app.slug}
    start = epoch_ms(problem.start)
    return {
        "problemId": f"-{int(problem.key[:15], 16)}_{start}V2",
        "displayId": problem.display_id,
        "title": problem.title,
        "impactLevel": "SERVICES",
        "severityLevel": problem.kind,
        "status": "OPEN" if problem.end is None else "CLOSED",
        "startTime": start,
        "endTime": -1 if problem.end is None else epoch_ms(problem.end),
        "affectedEntities": [stub],
        "impactedEntities": [stub],
        "rootCauseEntity": stub if problem.kind != "RESOURCE_CONTENTION" else {},
        "managementZones": [_zone(world, app)],
        "entityTags": _entity_tags(app),
        "problemFilters": [{"id": stable_id(world.seed, "alerting-profile", length=36), "name": "Default"}],
        "evidenceDetails": {"totalCount": 0, "details": []},
        "impactAnalysis": {"impacts": []},
        "recentComments": {"totalCount": 0, "pageSize": 5, "nextPageKey": None, "comments": []},
    }


@dataclass(frozen=True, slots=True)
class ServiceSeries:
    """The hourly values of one service for every metric key, and what its SLO needs."""

    app: Application
    values: dict[str, list[float | int | None]]
    week_requests: int
    week_failures: int


def service_series(world: World, ops: Operations) -> ServiceSeries:
    """The hourly series of one application's production service over the metric window."""
    app = ops.app
    rng = series_random(world.seed, "metrics", app.code)
    start = metric_start(world)
    hours = world.profile.metric_days * 24
    base_latency = rng.lognormvariate(math.log(180_000.0), 0.5)  # microseconds
    base_errors = rng.uniform(0.02, 0.6)  # percent
    windows = [(p.start, p.end or world.window.end_instant, p) for p in ops.problems if (p.end or start) >= start]
    keys = list(METRIC_UNITS)
    values: dict[str, list[float | int | None]] = {key: [] for key in keys}
    week_requests = week_failures = 0
    for slot in range(hours):
        moment = start + timedelta(hours=slot)
        noise_requests, noise_latency, noise_errors = rng.gauss(0, 0.08), rng.gauss(0, 0.1), rng.gauss(0, 0.3)
        gap = rng.random() < 0.003
        if gap or not app.first_day <= moment.date() <= app.last_day:
            for key in keys:
                values[key].append(None)
            continue
        weekly = WEEKEND_TRAFFIC if moment.weekday() >= 5 else 1.0
        load = DAILY_SHAPE[moment.hour] * weekly
        requests = max(
            0,
            round(
                app.requests_per_hour
                * load
                * growth_factor(app, moment.date(), world.window.start)
                * (1 + noise_requests)
            ),
        )
        latency = base_latency * (0.8 + 0.3 * load) * max(0.5, 1 + noise_latency)
        errors = base_errors * max(0.1, 1 + noise_errors)
        for begin, finish, problem in windows:
            if begin < moment + timedelta(hours=1) and finish > moment:
                if problem.kind in ("ERROR", "AVAILABILITY"):
                    errors = min(100.0, errors * problem.impact)
                else:
                    latency *= problem.impact
        failed = round(requests * errors / 100)
        values["builtin:service.response.time"].append(round(latency, 1))
        values["builtin:service.requestCount.total"].append(requests)
        values["builtin:service.requestCount.server"].append(requests)
        values["builtin:service.errors.server.rate"].append(round(100 * failed / requests, 4) if requests else 0.0)
        values["builtin:service.errors.server.successCount"].append(requests - failed)
        if slot >= hours - SLO_WINDOW_HOURS:
            week_requests += requests
            week_failures += failed
    return ServiceSeries(app, values, week_requests, week_failures)


def series_object(world: World, series: ServiceSeries, key: str) -> dict[str, Any]:
    """One ``series`` element of a metric file."""
    return {
        "dimensionMap": {"dt.entity.service": service_id(world, series.app), "dt.entity.service.name": series.app.slug},
        "start": epoch_ms(metric_start(world)),
        "intervalMs": HOUR_MS,
        "values": series.values[key],
    }


def slo(world: World, series: ServiceSeries, ops: Operations) -> dict[str, Any] | None:
    """The availability SLO of a critical (1-2) production service, evaluated over the last week."""
    app = series.app
    if app.criticality > 2:
        return None
    target, warning = (99.9, 99.95) if app.criticality == 1 else (99.5, 99.7)
    entity = service_id(world, app)
    if series.week_requests:
        evaluated = round(100 * (1 - series.week_failures / series.week_requests), 4)
        status = "SUCCESS" if evaluated >= warning else ("WARNING" if evaluated >= target else "FAILURE")
        budget = round(evaluated - target, 4)
        burn = round((100 - evaluated) / (100 - target), 4)
        error = "NONE"
    else:
        evaluated, status, budget, burn, error = -1.0, "FAILURE", -1.0, 0.0, "NO_DATA"
    week_start = world.window.end_instant - timedelta(hours=SLO_WINDOW_HOURS)
    related = [p for p in ops.problems if (p.end or world.window.end_instant) >= week_start]
    remaining_hours = -1.0
    if burn > 0 and budget > 0:
        remaining_hours = round(budget / (100 - target) * SLO_WINDOW_HOURS / burn, 2)
    slo_id = stable_id(world.seed, "slo", app.code)
    key_name = app.slug.replace("-", "_")
    return {
        "id": f"{slo_id[:8]}-{slo_id[8:12]}-{slo_id[12:16]}-{slo_id[16:20]}-{slo_id[20:32]}",
        "name": f"Availability {app.slug}",
        "description": f"Share of successful server-side requests of {app.name}",
        "enabled": True,
        "target": target,
        "warning": warning,
        "timeframe": "-1w",
        "evaluationType": "AGGREGATE",
        "metricExpression": (
            "(100)*(builtin:service.errors.server.successCount:splitBy())"
            "/(builtin:service.requestCount.server:splitBy())"
        ),
        "metricKey": f"func:slo.availability_{key_name}",
        "metricRate": f"func:slo.availability_{key_name}.rate",
        "metricNumerator": f"func:slo.availability_{key_name}.numerator",
        "metricDenominator": f"func:slo.availability_{key_name}.denominator",
        "filter": f'type("SERVICE"),entityId("{entity}")',
        "status": status,
        "evaluatedPercentage": evaluated,
        "errorBudget": budget,
        "errorBudgetBurnRate": {
            "burnRateType": "FAST" if burn > 10 else ("SLOW" if burn > 1 else "NONE"),
            "burnRateValue": burn,
            "estimatedTimeToConsumeErrorBudget": remaining_hours,
            "fastBurnThreshold": 10.0,
            "sloValue": evaluated,
        },
        "error": error,
        "relatedOpenProblems": sum(1 for p in related if p.end is None),
        "relatedTotalProblems": len(related),
    }
