"""The delivery and incident history of the demo world: releases, deployments, failures, incidents, problems.

One pure function per application (:func:`application_operations`) decides, from the world's seed, every
release that flows dev -> preprod -> prod, which production deployments fail (sync failure, or a degraded
service rolled back under an incident), the incidents not caused by a change, and the Dynatrace problems.
ServiceNow, Dynatrace and Argo CD records are then views of these same events, so they agree with each other:
an incident ``caused_by`` a change is the change of the Argo CD deployment that was rolled back, and its
Dynatrace problem shows in the metric series at the same hours.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rosetta.demo.world import Application, World, series_random, stable_id

# Production deployments per week, lead time (hours, min-max) and change failure rate per delivery profile.
DEPLOYS_PER_WEEK: dict[str, float] = {"elite": 6.0, "high": 2.5, "medium": 0.7, "low": 0.2}
LEAD_TIME_HOURS: dict[str, tuple[float, float]] = {
    "elite": (0.5, 12.0),
    "high": (12.0, 120.0),
    "medium": (72.0, 400.0),
    "low": (300.0, 1500.0),
}
FAILURE_RATE: dict[str, float] = {"elite": 0.04, "high": 0.1, "medium": 0.18, "low": 0.32}
# Incidents not caused by a change, per month, for an application of scale 1 and criticality 1..4.
BACKGROUND_INCIDENTS_PER_MONTH: dict[int, float] = {1: 1.6, 2: 1.1, 3: 0.7, 4: 0.4}

PROBLEM_KINDS: tuple[str, ...] = ("ERROR", "PERFORMANCE", "AVAILABILITY", "RESOURCE_CONTENTION")


@dataclass(slots=True)
class Deployment:
    """One sync of an Argo CD application (a history entry when it succeeded)."""

    app: Application
    environment: str
    revision: str
    version: str
    committed_at: datetime
    started_at: datetime
    finished_at: datetime
    succeeded: bool
    rollback: bool = False
    initiated_by: str = "automated"
    history_id: int = 0  # set when the environment's history is numbered
    change_id: str | None = None  # sys_id of the production change request
    change_outcome: str = "successful"  # successful / successful_issues / unsuccessful


@dataclass(slots=True)
class Problem:
    """A Dynatrace problem on the application's production service."""

    app: Application
    key: str
    kind: str
    title: str
    start: datetime
    end: datetime | None  # None while open at the end of the world
    impact: float  # multiplies errors (ERROR/AVAILABILITY) or latency (PERFORMANCE/RESOURCE_CONTENTION)
    display_id: str = ""  # P-<n>, numbered in time order across the world by number_problems()


@dataclass(slots=True)
class Incident:
    """A ServiceNow incident on the application's production service."""

    app: Application
    key: str
    opened_at: datetime
    resolved_at: datetime | None
    impact: int
    urgency: int
    short_description: str
    caused_by: Deployment | None = None
    fixed_by: Deployment | None = None
    problem: Problem | None = None
    category: str = "software"


@dataclass(slots=True)
class Operations:
    """Everything that happened to one application during the operations window."""

    app: Application
    deployments: dict[str, list[Deployment]] = field(default_factory=dict)  # environment -> in time order
    incidents: list[Incident] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def ops_start(world: World) -> datetime:
    """Start of the operations window (incidents, changes, deployments, problems)."""
    return world.window.end_instant - timedelta(days=world.profile.ops_days)


def _hours(value: float) -> timedelta:
    return timedelta(seconds=round(value * 3600))


def _working_time(rng: random.Random, day_start: datetime) -> datetime:
    """A time during working hours (07:00-18:00 UTC) of a day."""
    return day_start + timedelta(minutes=rng.randrange(7 * 60, 18 * 60))


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is exact and fast for the small means used here.
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _release_days(rng: random.Random, app: Application, start: datetime, end: datetime) -> list[datetime]:
    """Days with a production release: weekdays mostly, at the profile's rate."""
    per_day = DEPLOYS_PER_WEEK[app.dora] / 5.5
    first = max(start, datetime.combine(app.first_day, datetime.min.time(), tzinfo=start.tzinfo))
    last = min(end, datetime.combine(app.last_day, datetime.min.time(), tzinfo=start.tzinfo) + timedelta(days=1))
    days = []
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < last:
        weekend = day.weekday() >= 5
        chance = per_day * (0.1 if weekend else 1.0)
        for _ in range(_poisson(rng, chance)):
            moment = _working_time(rng, day)
            if first <= moment < last - timedelta(hours=2):
                days.append(moment)
        day += timedelta(days=1)
    days.sort()
    return days


def _promote(
    ops: Operations,
    *,
    environment: str,
    revision: str,
    version: str,
    committed: datetime,
    at: datetime,
    rng: random.Random,
) -> Deployment:
    duration = _hours(rng.uniform(0.02, 0.25))
    deployment = Deployment(ops.app, environment, revision, version, committed, at, at + duration, succeeded=True)
    ops.deployments.setdefault(environment, []).append(deployment)
    return deployment


def _degrade(
    world: World, ops: Operations, rng: random.Random, *, deployment: Deployment, previous: Deployment, end: datetime
) -> None:
    """A deployment that degrades production: problem, incident caused by its change, rollback."""
    detected = deployment.finished_at + _hours(rng.uniform(0.05, 1.0))
    rollback_at = detected + _hours(rng.uniform(0.2, 3.0))
    kind = rng.choice(("ERROR", "AVAILABILITY", "PERFORMANCE"))
    deployment.change_outcome = "unsuccessful"
    rollback = None
    if rollback_at < end - timedelta(minutes=30):
        rollback = Deployment(
            ops.app,
            "prod",
            previous.revision,
            previous.version,
            previous.committed_at,
            rollback_at,
            rollback_at + _hours(rng.uniform(0.02, 0.2)),
            succeeded=True,
            rollback=True,
            initiated_by=f"oncall.{ops.app.current.owner_group.removeprefix('team-')}",
        )
        ops.deployments["prod"].append(rollback)
    recovered = rollback.finished_at + _hours(rng.uniform(0.05, 0.5)) if rollback else None
    problem = Problem(
        ops.app,
        stable_id(world.seed, "problem", ops.app.code, deployment.revision),
        kind,
        _problem_title(kind, ops.app),
        detected,
        recovered,
        rng.uniform(8.0, 60.0) if kind != "PERFORMANCE" else rng.uniform(2.5, 6.0),
    )
    ops.problems.append(problem)
    resolved = recovered + _hours(rng.uniform(0.1, 2.0)) if recovered else None
    ops.incidents.append(
        Incident(
            ops.app,
            stable_id(world.seed, "incident", ops.app.code, "change", deployment.revision),
            detected + _hours(rng.uniform(0.01, 0.3)),
            resolved if resolved and resolved < end else None,
            impact=1 if ops.app.criticality <= 2 else 2,
            urgency=1 if kind == "AVAILABILITY" else 2,
            short_description=f"{ops.app.name}: {problem.title.lower()} after release {deployment.version}",
            caused_by=deployment,
            fixed_by=rollback,
            problem=problem,
        )
    )


def _problem_title(kind: str, app: Application) -> str:
    return {
        "ERROR": "Failure rate increase",
        "AVAILABILITY": "Service unavailable",
        "PERFORMANCE": "Response time degradation",
        "RESOURCE_CONTENTION": "CPU saturation",
    }[kind] + f" on {app.slug}"


def _releases(world: World, ops: Operations, rng: random.Random, start: datetime, end: datetime) -> None:
    app = ops.app
    low, high = LEAD_TIME_HOURS[app.dora]
    minor = rng.randrange(1, 40)
    previous: Deployment | None = None
    for number, prod_at in enumerate(_release_days(rng, app, start, end)):
        revision = stable_id(world.seed, "commit", app.code, number, length=40)
        version = f"{minor // 10 + 1}.{minor % 10 + number // 7}.{number % 7}"
        committed = prod_at - _hours(rng.uniform(low, high))
        # Promotion path: dev, then test, then preprod, each between the commit and production.
        stages = [env for env in ("dev", "test", "preprod") if env in app.environments]
        for position, environment in enumerate(stages, start=1):
            at = committed + (prod_at - committed) * (position / (len(stages) + 1))
            _promote(
                ops, environment=environment, revision=revision, version=version, committed=committed, at=at, rng=rng
            )
        failure = rng.random() < FAILURE_RATE[app.dora]
        if failure and rng.random() < 0.35:  # the sync itself fails: no history entry, change unsuccessful
            failed = Deployment(
                app,
                "prod",
                revision,
                version,
                committed,
                prod_at,
                prod_at + _hours(rng.uniform(0.05, 0.3)),
                succeeded=False,
                change_outcome="unsuccessful",
            )
            ops.deployments.setdefault("prod", []).append(failed)
            continue
        deployment = _promote(
            ops, environment="prod", revision=revision, version=version, committed=committed, at=prod_at, rng=rng
        )
        if failure and previous is not None:
            _degrade(world, ops, rng, deployment=deployment, previous=previous, end=end)
        elif failure:
            deployment.change_outcome = "successful_issues"
        else:
            previous = deployment
        # Extra dev deployments of work in progress.
        if "dev" in app.environments and rng.random() < 0.5:
            wip = committed + _hours(rng.uniform(1.0, 20.0))
            if wip < end - timedelta(hours=1):
                _promote(
                    ops,
                    environment="dev",
                    revision=stable_id(world.seed, "wip", app.code, number, length=40),
                    version=f"{version}-rc",
                    committed=wip - _hours(0.3),
                    at=wip,
                    rng=rng,
                )
        if previous is None:
            previous = deployment


def _background(world: World, ops: Operations, rng: random.Random, start: datetime, end: datetime) -> None:
    """Incidents and problems not caused by a change (capacity, dependencies, infrastructure)."""
    app = ops.app
    alive_from = max(start, datetime.combine(app.first_day, datetime.min.time(), tzinfo=start.tzinfo))
    alive_to = min(end, datetime.combine(app.last_day, datetime.min.time(), tzinfo=start.tzinfo) + timedelta(days=1))
    if alive_to <= alive_from:
        return
    months = (alive_to - alive_from).total_seconds() / (30.4 * 86400)
    rate = BACKGROUND_INCIDENTS_PER_MONTH[app.criticality] * min(3.0, math.sqrt(app.scale))
    seconds = int((alive_to - alive_from).total_seconds())
    for number in range(_poisson(rng, rate * months)):
        opened = alive_from + timedelta(seconds=rng.randrange(seconds))
        duration = _hours(rng.lognormvariate(math.log(3.0), 1.0))
        resolved = opened + duration
        impact, urgency = rng.choice(((1, 2), (2, 2), (2, 3), (3, 3), (3, 2)))
        problem = None
        if impact <= 2 and rng.random() < 0.7:
            kind = rng.choice(PROBLEM_KINDS)
            problem = Problem(
                app,
                stable_id(world.seed, "problem", app.code, "background", number),
                kind,
                _problem_title(kind, app),
                opened - _hours(rng.uniform(0.02, 0.3)),
                resolved - _hours(rng.uniform(0.0, 0.5)) if resolved < end else None,
                rng.uniform(4.0, 30.0) if kind in ("ERROR", "AVAILABILITY") else rng.uniform(1.8, 4.0),
            )
            ops.problems.append(problem)
        description = (
            problem.title
            if problem
            else rng.choice(
                (
                    "Users report slow pages",
                    "Batch job did not finish",
                    "Login errors for some users",
                    "Certificate expiring",
                    "Disk space alert",
                    "Wrong figures in a report",
                    "Timeouts calling a partner",
                )
            )
        )
        ops.incidents.append(
            Incident(
                app,
                stable_id(world.seed, "incident", app.code, "background", number),
                opened,
                resolved if resolved < end else None,
                impact,
                urgency,
                f"{app.name}: {description}",
                problem=problem,
                category=rng.choice(("software", "network", "database", "inquiry")),
            )
        )
    # Problems nobody opened an incident for (short blips the alerting caught).
    for number in range(_poisson(rng, 0.8 * months)):
        begin = alive_from + timedelta(seconds=rng.randrange(seconds))
        finish = begin + _hours(rng.uniform(0.1, 1.5))
        kind = rng.choice(PROBLEM_KINDS)
        ops.problems.append(
            Problem(
                app,
                stable_id(world.seed, "problem", app.code, "blip", number),
                kind,
                _problem_title(kind, app),
                begin,
                finish if finish < end else None,
                rng.uniform(2.0, 8.0) if kind in ("ERROR", "AVAILABILITY") else rng.uniform(1.4, 2.5),
            )
        )


def application_operations(world: World, app: Application) -> Operations:
    """Everything that happened to one application in the operations window (pure: same world, same result)."""
    rng = series_random(world.seed, "operations", app.code)
    start, end = ops_start(world), world.window.end_instant
    ops = Operations(app)
    _releases(world, ops, rng, start, end)
    _background(world, ops, rng, start, end)
    for environment, deployments in ops.deployments.items():
        deployments.sort(key=lambda item: (item.started_at, item.revision))
        number = 0
        for deployment in deployments:
            if deployment.succeeded:
                number += 1
                deployment.history_id = number
            if environment == "prod":
                deployment.change_id = stable_id(
                    world.seed, "change_request", app.code, deployment.revision, deployment.started_at.isoformat()
                )
    ops.incidents.sort(key=lambda item: (item.opened_at, item.key))
    ops.problems.sort(key=lambda item: (item.start, item.key))
    return ops


def world_operations(world: World) -> list[Operations]:
    """The operations of every application, problems numbered (``P-...``) in time order across the world."""
    operations = [application_operations(world, app) for app in world.applications]
    merged = heapq.merge(*(ops.problems for ops in operations), key=lambda item: (item.start, item.key))
    for number, problem in enumerate(merged, start=1):
        problem.display_id = f"P-{24_000 + number}"
    return operations
