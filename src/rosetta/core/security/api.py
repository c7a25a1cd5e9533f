"""Routes every context API carries: ``GET /me`` (who am I, what may I do) and ``GET /audit`` (admins).

Each context lists ``security_controller()`` in its ``route_handlers``; the audit routes read the context's
own database through the router's ``session`` dependency.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from rosetta.core.audit import AuditEntry, AuditFilter, audit_query, audit_sort_key, entry_from_row
from rosetta.core.errors import BadRequestError
from rosetta.core.pagination import DEFAULT_LIMIT, keyset_page, next_link
from rosetta.core.schemas import CamelStruct, Page
from rosetta.core.security.permissions import Permission, Principal, requires


class Me(CamelStruct):
    """The caller as this API sees them: identity, roles and every permission they hold."""

    subject: str
    display_name: str | None
    issuer: str
    groups: list[str]
    roles: list[str]
    permissions: list[str]


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise BadRequestError(
            f"{name}: give a time zone (e.g. 2026-01-31T00:00:00Z)", extra={"errors": [{"field": name}]}
        )
    return value


def security_controller() -> type[Controller]:
    """A controller with ``/me`` and ``/audit``, to list in a context's ``route_handlers``."""

    class SecurityController(Controller):
        """Identity of the caller and the context's audit log."""

        tags = ["security"]

        @get("/me", guards=[requires(Permission.AUTHENTICATED)], sync_to_thread=False, summary="Who am I")
        def me(self, principal: NamedDependency[Principal]) -> Me:
            """The caller's identity, groups, roles and permissions (to show admin actions only to admins)."""
            return Me(
                subject=principal.subject,
                display_name=principal.display_name,
                issuer=principal.issuer,
                groups=list(principal.groups),
                roles=[str(role) for role in principal.roles],
                permissions=sorted(str(permission) for permission in principal.permissions),
            )

        @get("/audit", guards=[requires(Permission.AUDIT_READ)], summary="Audit log (admins)")
        async def audit(
            self,
            *,
            request: Request[Any, Any, Any],
            session: NamedDependency[AsyncSession],
            entity_type: Annotated[str | None, QueryParameter(name="entityType")] = None,
            entity_id: Annotated[str | None, QueryParameter(name="entityId")] = None,
            actor: Annotated[str | None, QueryParameter(description="Actor subject")] = None,
            action: FromQuery[str | None] = None,
            since: Annotated[datetime | None, QueryParameter(name="from", description="Inclusive, ISO 8601")] = None,
            until: Annotated[datetime | None, QueryParameter(name="to", description="Exclusive, ISO 8601")] = None,
            limit: Annotated[int, QueryParameter(ge=1, le=500)] = DEFAULT_LIMIT,
            cursor: FromQuery[str | None] = None,
        ) -> Page[AuditEntry]:
            """Audit rows newest first, filtered by entity, actor, action and time range; cursor-paginated."""
            filters = AuditFilter(
                entity_type=entity_type,
                entity_id=entity_id,
                actor=actor,
                action=action,
                since=_aware(since, "from"),
                until=_aware(until, "to"),
            )
            rows, next_cursor = await keyset_page(
                session,
                audit_query(filters),
                key=audit_sort_key(),
                key_types=[int],
                limit=limit,
                cursor=cursor,
                descending=True,
            )
            return Page(items=[entry_from_row(row) for row in rows], limit=limit, next=next_link(request, next_cursor))

    return SecurityController
