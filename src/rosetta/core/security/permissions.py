"""Roles, permissions and the guard every route declares.

Roles come from AD groups (see ``Settings.group_roles``); permissions are what a route needs. A route
declares exactly one permission with ``guards=[requires(Permission.X)]``; the role-matrix test walks every
route and fails on one that declares none, so no route is open by accident.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from rosetta.core.schemas import CamelStruct


class Role(StrEnum):
    """The four Rosetta roles (mission.md, "Governance and security")."""

    ADMIN = "admin"
    FINOPS_ADMIN = "finops_admin"
    REFERENTIEL_ADMIN = "referentiel_admin"
    USER = "user"


class Permission(StrEnum):
    """What a route needs. ``PUBLIC`` is reserved for health, readiness, metrics and OpenAPI documents."""

    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    REF_READ = "ref:read"
    REF_PROPOSE = "ref:propose"
    REF_WRITE = "ref:write"
    REF_APPROVE = "ref:approve"
    FINOPS_READ = "finops:read"
    FINOPS_ADMIN = "finops:admin"
    MONITORING_READ = "monitoring:read"
    MONITORING_ADMIN = "monitoring:admin"
    AUDIT_READ = "audit:read"


_USER_PERMISSIONS = frozenset(
    {
        Permission.AUTHENTICATED,
        Permission.REF_READ,
        Permission.REF_PROPOSE,
        Permission.FINOPS_READ,
        Permission.MONITORING_READ,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.USER: _USER_PERMISSIONS,
    Role.FINOPS_ADMIN: _USER_PERMISSIONS | {Permission.FINOPS_ADMIN},
    Role.REFERENTIEL_ADMIN: _USER_PERMISSIONS | {Permission.REF_WRITE, Permission.REF_APPROVE},
    # admin implies every other role, plus reading the audit logs.
    Role.ADMIN: frozenset(Permission) - {Permission.PUBLIC},
}


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    """The union of the permissions of ``roles``."""
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS[role]
    return frozenset(granted)


class Principal(CamelStruct, frozen=True):
    """The authenticated caller, as injected into handlers (``principal: Principal``)."""

    subject: str
    display_name: str | None
    issuer: str
    groups: tuple[str, ...]
    roles: tuple[Role, ...]

    @property
    def permissions(self) -> frozenset[Permission]:
        """Everything this principal may do."""
        return permissions_of(self.roles)

    def can(self, permission: Permission) -> bool:
        """True when one of the principal's roles grants ``permission``."""
        return permission in self.permissions


PERMISSION_OPT = "permission"


class _PermissionGuard:
    """A guard that knows its permission, so tests and ``/me`` can read what each route needs."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission
        self.__name__ = f"requires_{permission.value.replace(':', '_')}"

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if self.permission is Permission.PUBLIC:
            return
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal):
            raise NotAuthorizedException("a bearer token is required")
        if not principal.can(self.permission):
            raise PermissionDeniedException(f"this action needs the {self.permission.value} permission")


def requires(permission: Permission) -> _PermissionGuard:
    """The guard of a route that needs ``permission``: ``@get("/x", guards=[requires(Permission.X)])``."""
    return _PermissionGuard(permission)


def declared_permission(handler: BaseRouteHandler) -> Permission | None:
    """The permission a route declares through :func:`requires`, looking at every layer's guards."""
    for guard in handler.resolve_guards():
        if isinstance(guard, _PermissionGuard):
            return guard.permission
    return None
