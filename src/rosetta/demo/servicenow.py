"""ServiceNow Table API records of the demo world (``display_value=false``, reference links excluded).

Every value is a string (``""`` when empty), sys_ids are 32 hex characters, dates are ``YYYY-MM-DD HH:MM:SS``
UTC and reference fields hold a bare sys_id, as the Table API returns them with
``sysparm_exclude_reference_link=true``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta

from rosetta.demo.operations import Deployment, Incident, Operations
from rosetta.demo.world import Application, World, stable_id

# Well-known relationship types (sys_ids of cmdb_rel_type records, the same on every instance we simulate).
REL_DEPENDS_ON = "1a9cb166f1571100a92eb60da2bce5c5"  # "Depends on::Used by"
REL_CONSUMES = "41008aa6ef32010098d5925495c0fb94"  # "Consumes::Consumed by"
CHANGE_MODELS = {
    "standard": "e55d0bfec343101035ae3f52c1d3ae49",
    "normal": "007c4001c343101035ae3f52c1d3aeb2",
    "emergency": "62d10fa1c303101035ae3f52c1d3aec1",
}
USED_FOR = {"prod": "Production", "preprod": "Staging", "test": "QA", "dev": "Development"}
CRITICALITY = {1: "1 - most critical", 2: "2 - somewhat critical", 3: "3 - less critical", 4: "4 - not critical"}


def stamp(moment: datetime | date | None) -> str:
    """A ServiceNow date-time string (UTC), or ``""``."""
    if moment is None:
        return ""
    if not isinstance(moment, datetime):
        return f"{moment.isoformat()} 00:00:00"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def group_id(world: World, team: str) -> str:
    """sys_id of a ``sys_user_group``."""
    return stable_id(world.seed, "sys_user_group", team)


def user_id(world: World, team: str, number: int) -> str:
    """sys_id of one of a team's three ``sys_user`` members."""
    return stable_id(world.seed, "sys_user", team, number % 3)


def business_app_id(world: World, app: Application) -> str:
    """sys_id of the application's ``cmdb_ci_business_app``."""
    return stable_id(world.seed, "cmdb_ci_business_app", app.code)


def app_service_id(world: World, app: Application, environment: str) -> str:
    """sys_id of the application service of one environment (``cmdb_ci_service``)."""
    return stable_id(world.seed, "cmdb_ci_service", app.code, environment)


def _first_seen(world: World, app: Application) -> datetime:
    start = datetime.combine(app.first_day, datetime.min.time(), tzinfo=world.window.end_instant.tzinfo)
    return start - timedelta(days=30) if app.first_day == world.window.start else start - timedelta(days=7)


def _last_change(world: World, app: Application) -> datetime:
    """When the CMDB last touched the application (a move or a retirement), else its creation."""
    latest = app.history[-1].valid_from
    moment = datetime.combine(latest, datetime.min.time(), tzinfo=world.window.end_instant.tzinfo)
    return max(moment + timedelta(hours=9), _first_seen(world, app))


def business_apps(world: World) -> Iterator[dict[str, str]]:
    """``cmdb_ci_business_app`` records, one per application."""
    for app in world.applications:
        placement = app.current
        team = placement.owner_group
        retired = placement.status == "retired"
        yield {
            "sys_id": business_app_id(world, app),
            "sys_class_name": "cmdb_ci_business_app",
            "number": f"APM{1_000_001 + app.index:07d}",
            "name": app.code,
            "short_description": f"{app.name} ({placement.product.name})",
            "correlation_id": app.code,
            "operational_status": "6" if retired else "1",
            "life_cycle_stage": "End of Life" if retired else "Operational",
            "life_cycle_stage_status": "Retired" if retired else "In Use",
            "business_criticality": CRITICALITY[app.criticality],
            "application_type": "Web" if "web" in app.components else "Service",
            "install_type": "On-premises" if app.provider == "onprem" else "Cloud",
            "data_classification": ("Confidential", "Internal", "Internal", "Public")[app.criticality - 1],
            "owned_by": user_id(world, team, 0),
            "it_application_owner": user_id(world, team, 1),
            "managed_by_group": group_id(world, team),
            "support_group": group_id(world, team),
            "sys_created_on": stamp(_first_seen(world, app)),
            "sys_updated_on": stamp(_last_change(world, app)),
        }


def services(world: World) -> Iterator[dict[str, str]]:
    """``cmdb_ci_service`` records: one business service per product, one application service per app x env."""
    for product in world.products:
        yield {
            "sys_id": stable_id(world.seed, "cmdb_ci_service", product.code),
            "sys_class_name": "cmdb_ci_service_business",
            "name": product.name,
            "service_classification": "Business Service",
            "correlation_id": product.code,
            "busines_criticality": "2 - somewhat critical",
            "operational_status": "1",
            "used_for": "Production",
            "owned_by": user_id(world, product.owner_group, 0),
            "managed_by": user_id(world, product.owner_group, 1),
            "support_group": group_id(world, product.owner_group),
            "version": "",
            "sys_created_on": stamp(datetime.combine(world.window.start, datetime.min.time()) - timedelta(days=60)),
            "sys_updated_on": stamp(datetime.combine(world.window.start, datetime.min.time()) - timedelta(days=60)),
        }
    for app in world.applications:
        team = app.current.owner_group
        retired = app.current.status == "retired"
        for environment in app.environments:
            yield {
                "sys_id": app_service_id(world, app, environment),
                "sys_class_name": "cmdb_ci_service_auto",
                "name": f"{app.slug}-{environment}",
                "service_classification": "Application Service",
                "correlation_id": f"{app.code}:{environment}",
                "busines_criticality": CRITICALITY[app.criticality if environment == "prod" else 4],
                "operational_status": "6" if retired else "1",
                "used_for": USED_FOR[environment],
                "owned_by": user_id(world, team, 0),
                "managed_by": user_id(world, team, 1),
                "support_group": group_id(world, team),
                "version": "",
                "sys_created_on": stamp(_first_seen(world, app)),
                "sys_updated_on": stamp(_last_change(world, app)),
            }


def relationships(world: World) -> Iterator[dict[str, str]]:
    """``cmdb_rel_ci`` records (CSDM): business app consumes its app services; product depends on its apps'
    production services; production services depend on the production services of their dependencies."""
    by_code = world.by_code()

    def relation(parent: str, child: str, rel_type: str, created: datetime) -> dict[str, str]:
        return {
            "sys_id": stable_id(world.seed, "cmdb_rel_ci", parent, child, rel_type),
            "parent": parent,
            "child": child,
            "type": rel_type,
            "connection_strength": "always",
            "sys_created_on": stamp(created),
            "sys_updated_on": stamp(created),
        }

    for app in world.applications:
        created = _first_seen(world, app)
        for environment in app.environments:
            yield relation(business_app_id(world, app), app_service_id(world, app, environment), REL_CONSUMES, created)
        product_service = stable_id(world.seed, "cmdb_ci_service", app.current.product.code)
        yield relation(product_service, app_service_id(world, app, "prod"), REL_DEPENDS_ON, _last_change(world, app))
        for dependency in app.dependencies:
            yield relation(
                app_service_id(world, app, "prod"),
                app_service_id(world, by_code[dependency], "prod"),
                REL_DEPENDS_ON,
                created,
            )


def change_requests(world: World, operations: Iterable[Operations]) -> Iterator[dict[str, str]]:
    """``change_request`` records: one per production deployment, numbered in time order."""
    end = world.window.end_instant
    streams = [ops.deployments.get("prod", []) for ops in operations]
    merged = heapq.merge(*streams, key=lambda item: (item.started_at, item.change_id or ""))
    for number, deployment in enumerate(merged, start=1):
        yield _change(world, deployment, number, end)


def _change(world: World, deployment: Deployment, number: int, end: datetime) -> dict[str, str]:
    app = deployment.app
    team = app.placement_on(deployment.started_at.date()).owner_group
    kind = "emergency" if deployment.rollback else ("standard" if app.dora in ("elite", "high") else "normal")
    opened = deployment.started_at - (timedelta(minutes=12) if kind != "normal" else timedelta(days=2, hours=3))
    planned_start = deployment.started_at.replace(minute=0, second=0)
    closed = deployment.finished_at + timedelta(hours=1)
    is_closed = closed < end
    notes = {
        "successful": "Deployed by Argo CD, service healthy.",
        "successful_issues": "Deployed with warnings; follow-up opened.",
        "unsuccessful": "Deployment failed or was rolled back.",
    }[deployment.change_outcome]
    argo_app = f"{app.slug}-prod"
    description = (
        f"Argo CD application {argo_app}\nRevision: {deployment.revision}\nVersion: {deployment.version}\n"
        f"Committed: {stamp(deployment.committed_at)}"
    )
    if deployment.rollback:
        description += "\nRollback to the last good revision."
    return {
        "sys_id": deployment.change_id or "",
        "sys_class_name": "change_request",
        "number": f"CHG{30_000 + number:07d}",
        "short_description": (
            f"Rollback {app.slug} to {deployment.version}"
            if deployment.rollback
            else f"Deploy {app.slug} {deployment.version} to production"
        ),
        "description": description,
        "type": kind,
        "chg_model": CHANGE_MODELS[kind],
        "state": "3" if is_closed else "0",
        "phase": "",
        "risk": "2" if kind == "emergency" else ("4" if kind == "standard" else "3"),
        "impact": "2" if app.criticality <= 2 else "3",
        "priority": "2" if kind == "emergency" else "4",
        "approval": "approved",
        "on_hold": "false",
        "start_date": stamp(planned_start),
        "end_date": stamp(planned_start + timedelta(hours=1)),
        "work_start": stamp(deployment.started_at),
        "work_end": stamp(deployment.finished_at),
        "close_code": deployment.change_outcome if is_closed else "",
        "close_notes": notes if is_closed else "",
        "cmdb_ci": app_service_id(world, app, "prod"),
        "business_service": app_service_id(world, app, "prod"),
        "assignment_group": group_id(world, team),
        "assigned_to": user_id(world, team, 2),
        "requested_by": user_id(world, team, 1),
        "correlation_id": f"{argo_app}@{deployment.revision}",
        "active": "false" if is_closed else "true",
        "opened_at": stamp(opened),
        "closed_at": stamp(closed) if is_closed else "",
        "sys_created_on": stamp(opened),
        "sys_updated_on": stamp(closed if is_closed else deployment.finished_at),
    }


def incidents(world: World, operations: Iterable[Operations]) -> Iterator[dict[str, str]]:
    """``incident`` records, numbered in the order they were opened."""
    end = world.window.end_instant
    merged = heapq.merge(*(ops.incidents for ops in operations), key=lambda item: (item.opened_at, item.key))
    for number, incident in enumerate(merged, start=1):
        yield _incident(world, incident, number, end)


def _incident(world: World, incident: Incident, number: int, end: datetime) -> dict[str, str]:
    app = incident.app
    team = app.placement_on(incident.opened_at.date()).owner_group
    resolved = incident.resolved_at
    closed = resolved + timedelta(days=3) if resolved else None
    if resolved is None:
        state = "2"
    elif closed is not None and closed < end:
        state = "7"
    else:
        state = "6"
    # An open incident was last touched shortly after it opened (never after the end of the world).
    updated = closed if state == "7" else (resolved or min(incident.opened_at + timedelta(minutes=20), end))
    priority = min(5, incident.impact + incident.urgency - 1)
    description = incident.short_description
    if incident.problem is not None:
        description += f"\nDynatrace problem {incident.problem.display_id}"
    if incident.caused_by is not None:
        description += f"\nStarted after change of revision {incident.caused_by.revision}"
    return {
        "sys_id": incident.key,
        "sys_class_name": "incident",
        "number": f"INC{10_000 + number:07d}",
        "short_description": incident.short_description,
        "description": description,
        "category": incident.category,
        "subcategory": "",
        "contact_type": "monitoring" if incident.problem is not None else "self-service",
        "state": state,
        "incident_state": state,
        "hold_reason": "",
        "impact": str(incident.impact),
        "urgency": str(incident.urgency),
        "priority": str(priority),
        "opened_at": stamp(incident.opened_at),
        "resolved_at": stamp(resolved),
        "closed_at": stamp(closed) if state == "7" else "",
        "cmdb_ci": app_service_id(world, app, "prod"),
        "business_service": app_service_id(world, app, "prod"),
        "service_offering": "",
        "assignment_group": group_id(world, team),
        "assigned_to": user_id(world, team, 2),
        "caller_id": user_id(world, "team-service-desk", 0),
        "opened_by": user_id(world, "team-service-desk", 1),
        "caused_by": (incident.caused_by.change_id or "") if incident.caused_by else "",
        "rfc": (incident.fixed_by.change_id or "") if incident.fixed_by else "",
        "problem_id": "",
        "correlation_id": incident.problem.display_id if incident.problem else "",
        "close_code": ("Solution provided" if incident.fixed_by is None else "Workaround provided") if resolved else "",
        "close_notes": ("Rolled back by change" if incident.fixed_by else "Fixed") if resolved else "",
        "active": "true" if state in ("1", "2", "3") else "false",
        "reopen_count": "0",
        "calendar_stc": str(int((resolved - incident.opened_at).total_seconds())) if resolved else "",
        "sys_created_on": stamp(incident.opened_at),
        "sys_updated_on": stamp(updated),
    }
