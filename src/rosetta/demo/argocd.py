"""Argo CD Application objects of the demo world: one per application and environment, with their history.

``status.history`` holds the successful syncs, oldest first, capped at ``spec.revisionHistoryLimit`` like
Argo CD does; a failed last sync shows in ``status.operationState`` (phase ``Failed``) and leaves the app
``OutOfSync``; a rollback is a history entry redeploying an older revision, started by a person.
Retired applications have been deleted from Argo CD. Commit metadata (author, date, message) is what
``GET /api/v1/applications/{name}/revisions/{revision}/metadata`` returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from rosetta.demo.operations import Deployment, Operations, ops_start
from rosetta.demo.world import Application, World, stable_id

CLUSTERS = {
    "prod": "https://k8s-prod.rosetta-demo.internal",
    "preprod": "https://k8s-preprod.rosetta-demo.internal",
    "test": "https://k8s-nonprod.rosetta-demo.internal",
    "dev": "https://k8s-nonprod.rosetta-demo.internal",
}


def rfc3339(moment: datetime) -> str:
    """``2026-03-14T09:40:02Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def application_name(app: Application, environment: str) -> str:
    """The Argo CD application name of an application's environment."""
    return f"{app.slug}-{environment}"


def _source(app: Application, environment: str) -> dict[str, Any]:
    family = app.current.product.family_code.lower()
    return {
        "repoURL": f"https://git.rosetta-demo.io/{family}/{app.slug}-deploy.git",
        "path": f"envs/{environment}",
        "targetRevision": "main",
    }


def _baseline(world: World, app: Application, environment: str) -> Deployment:
    """The sync that was live when the operations window opened (or when the application went live)."""
    first = datetime.combine(app.first_day, datetime.min.time(), tzinfo=world.window.end_instant.tzinfo)
    started = max(ops_start(world) - timedelta(days=3), first) + timedelta(hours=10)
    revision = stable_id(world.seed, "commit", app.code, "baseline", length=40)
    return Deployment(
        app,
        environment,
        revision,
        "1.0.0",
        started - timedelta(days=1),
        started,
        started + timedelta(minutes=4),
        succeeded=True,
        history_id=0,
    )


def _history_entry(app: Application, deployment: Deployment, environment: str) -> dict[str, Any]:
    initiated: dict[str, Any] = (
        {"automated": True} if deployment.initiated_by == "automated" else {"username": deployment.initiated_by}
    )
    return {
        "id": deployment.history_id,
        "revision": deployment.revision,
        "deployStartedAt": rfc3339(deployment.started_at),
        "deployedAt": rfc3339(deployment.finished_at),
        "source": _source(app, environment),
        "initiatedBy": initiated,
    }


def applications(world: World, operations: list[Operations]) -> Iterator[dict[str, Any]]:
    """Application objects sorted by name, as ``GET /api/v1/applications`` lists them."""
    items = [
        (application_name(ops.app, environment), ops, environment)
        for ops in operations
        if ops.app.current.status != "retired"
        for environment in ops.app.environments
    ]
    items.sort(key=lambda item: item[0])
    for name, ops, environment in items:
        yield _application(world, name, ops, environment)


def deployments_of(world: World, ops: Operations, environment: str) -> list[Deployment]:
    """Every sync of one environment, the baseline first."""
    return [_baseline(world, ops.app, environment), *ops.deployments.get(environment, [])]


def _application(world: World, name: str, ops: Operations, environment: str) -> dict[str, Any]:
    app = ops.app
    syncs = deployments_of(world, ops, environment)
    succeeded = [d for d in syncs if d.succeeded]
    last, live = syncs[-1], succeeded[-1]
    end = world.window.end_instant
    open_problem = environment == "prod" and any(p.end is None for p in ops.problems)
    health = "Degraded" if open_problem else "Healthy"
    automated = environment != "prod" or app.dora in ("elite", "high")
    images = [
        f"registry.rosetta-demo.io/{app.slug}/{component}:{live.version}"
        for component in app.components
        if component != "db"
    ]
    operation_state: dict[str, Any] = {
        "operation": {
            "sync": {"revision": last.revision},
            "initiatedBy": {"automated": True} if last.initiated_by == "automated" else {"username": last.initiated_by},
            "retry": {"limit": 2},
        },
        "phase": "Succeeded" if last.succeeded else "Failed",
        "message": "successfully synced (all tasks run)"
        if last.succeeded
        else ("one or more objects failed to apply, reason: admission webhook denied the request"),
        "startedAt": rfc3339(last.started_at),
        "finishedAt": rfc3339(last.finished_at),
        "retryCount": 0 if last.succeeded else 2,
        "syncResult": {"revision": last.revision, "source": _source(app, environment), "resources": []},
    }
    return {
        "metadata": {
            "name": name,
            "namespace": "argocd",
            "uid": _uuid(stable_id(world.seed, "argocd-app", name)),
            "creationTimestamp": rfc3339(syncs[0].started_at - timedelta(minutes=30)),
            "labels": {
                "app.kubernetes.io/part-of": app.code,
                "env": environment,
                "team": app.current.owner_group.removeprefix("team-"),
            },
        },
        "spec": {
            "project": app.current.product.code.lower(),
            "source": _source(app, environment),
            "destination": {"server": CLUSTERS[environment], "namespace": app.slug},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}} if automated else {},
            "revisionHistoryLimit": world.profile.history_limit,
        },
        "status": {
            "sync": {
                "status": "Synced" if last.succeeded else "OutOfSync",
                "revision": live.revision,
                "comparedTo": {
                    "source": _source(app, environment),
                    "destination": {"server": CLUSTERS[environment], "namespace": app.slug},
                },
            },
            "health": {"status": health, "lastTransitionTime": rfc3339(live.finished_at)},
            "operationState": operation_state,
            "history": [
                _history_entry(app, deployment, environment) for deployment in succeeded[-world.profile.history_limit :]
            ],
            "summary": {"images": images},
            "reconciledAt": rfc3339(end - timedelta(minutes=3)),
            "sourceType": "Kustomize",
            "resources": [],
        },
    }


def revisions(world: World, operations: list[Operations]) -> Iterator[dict[str, Any]]:
    """Commit metadata of every deployed revision (``RevisionMetadata`` plus the application it belongs to)."""
    for ops in operations:
        if ops.app.current.status == "retired":
            continue
        seen: set[str] = set()
        for environment in ops.app.environments:
            for deployment in deployments_of(world, ops, environment):
                if deployment.revision in seen:
                    continue
                seen.add(deployment.revision)
                team = ops.app.current.owner_group.removeprefix("team-")
                yield {
                    "application": ops.app.code,
                    "revision": deployment.revision,
                    "author": f"dev{int(deployment.revision[:4], 16) % 7}.{team}@rosetta-demo.io",
                    "date": rfc3339(deployment.committed_at),
                    "message": f"Release {deployment.version} of {ops.app.slug}",
                    "tags": [f"v{deployment.version}"],
                }


def _uuid(hex_id: str) -> str:
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:32]}"
