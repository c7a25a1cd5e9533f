"""Routes every context API carries: ``GET /me`` (who am I, what may I do) and ``GET /audit`` (admins).

``/audit`` is a list like the contexts' own: cursor-paginated, exported as CSV with ``Accept: text/csv``;
``/me`` is one document, so a client accepting only CSV gets 406 (``rosetta.core.tabular``).

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
from rosetta.core.openapi import CSV_OPT
from rosetta.core.pagination import DEFAULT_LIMIT, keyset_page
from rosetta.core.schemas import CamelStruct, Page
from rosetta.core.security.permissions import Permission, Principal, requires
from rosetta.core.tabular import list_response, refuse_csv_unless_offered
from rosetta.core.wire import Response


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

        # One document: a client accepting only CSV gets 406, as from every read that is not a list.
        @get(
            "/me",
            guards=[requires(Permission.AUTHENTICATED), refuse_csv_unless_offered],
            sync_to_thread=False,
            summary="Who am I",
        )
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

        @get("/audit", guards=[requires(Permission.AUDIT_READ)], opt={CSV_OPT: True}, summary="Audit log (admins)")
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
        ) -> Response[Page[AuditEntry]]:
            """Audit rows newest first, filtered by entity, actor, action and time range; cursor-paginated.

            With ``Accept: text/csv``, every row from ``cursor`` on as CSV (``before`` and ``after`` as JSON text).
            """
            filters = AuditFilter(
                entity_type=entity_type,
                entity_id=entity_id,
                actor=actor,
                action=action,
                since=_aware(since, "from"),
                until=_aware(until, "to"),
            )

            async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[AuditEntry], str | None]:
                rows, next_cursor = await keyset_page(
                    session,
                    audit_query(filters),
                    key=audit_sort_key(),
                    key_types=[int],
                    limit=page_limit,
                    cursor=page_cursor,
                    descending=True,
                )
                return [entry_from_row(row) for row in rows], next_cursor

            return await list_response(
                request, fetch, item_type=AuditEntry, limit=limit, cursor=cursor, filename="audit"
            )

    return SecurityController
