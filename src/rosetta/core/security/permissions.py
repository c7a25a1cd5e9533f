"""Roles, permissions and the guard every route declares.

Roles come from AD groups (see ``Settings.group_roles``); permissions are what a route needs. A route
declares exactly one permission with ``guards=[requires(Permission.X)]``; the role-matrix test walks every
route and fails on one that declares none, so no route is open by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from rosetta.core.schemas import CamelStruct

logger = logging.getLogger(__name__)


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


def roles_for(names: Iterable[str], group_roles: Mapping[str, str]) -> tuple[Role, ...]:
    """The roles granted by group names, group ids (Entra GUIDs) or app-role values.

    ``group_roles`` maps each of those to a role name. AD group names and GUIDs are case-insensitive, so
    the lookup is too. The result is sorted and free of duplicates.
    """
    mapping = {key.casefold(): Role(value) for key, value in group_roles.items()}
    granted = {mapping[name.casefold()] for name in names if name.casefold() in mapping}
    return tuple(sorted(granted))


@dataclass(frozen=True)
class AuthenticationFailure:
    """Why a request's bearer token was not accepted; the guard turns it into the HTTP answer.

    ``status`` is 401 (bad or missing token), 403 (a valid token whose groups cannot be determined and the
    configuration says deny) or 503 (the issuer's keys or group source cannot be reached).
    """

    reason: str
    status: int = 401


AUTH_FAILURE_SCOPE_KEY = "rosetta.auth_failure"


def bearer_challenge(description: str) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750), quoting ``description`` safely."""
    safe = description.replace("\\", "\\\\").replace('"', "'")
    return {"WWW-Authenticate": f'Bearer realm="rosetta", error="invalid_token", error_description="{safe}"'}


def authentication_error(failure: AuthenticationFailure | None) -> Exception:
    """The exception a guard or dependency raises for a request without an accepted principal."""
    from rosetta.core.errors import ServiceUnavailableError  # noqa: PLC0415 - errors is a leaf, kept lazy

    if failure is None:
        failure = AuthenticationFailure(reason="a bearer token is required")
        # Rejected tokens are logged where they are validated; a missing one is logged here.
        logger.info("request refused: no bearer token")
    if failure.status == 403:
        return PermissionDeniedException(failure.reason)
    if failure.status == 503:
        return ServiceUnavailableError(failure.reason)
    return NotAuthorizedException(failure.reason, headers=bearer_challenge(failure.reason))


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The request's principal, or the 401/403/503 explaining why there is none."""
    principal = connection.scope.get("user")
    if isinstance(principal, Principal):
        return principal
    raise authentication_error(connection.scope.get(AUTH_FAILURE_SCOPE_KEY))  # type: ignore[arg-type]


class Principal(CamelStruct, frozen=True):  # type: ignore[misc]  # msgspec structs are not dataclasses
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
        principal = principal_of(connection)
        if not principal.can(self.permission):
            logger.warning(
                "permission denied: %s (roles %s) needs %s on %s %s",
                principal.subject,
                ",".join(principal.roles) or "none",
                self.permission.value,
                connection.scope.get("method", ""),
                connection.scope.get("path", ""),
            )
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


def is_framework_handler(handler: BaseRouteHandler) -> bool:
    """A handler Litestar generated itself: automatic ``OPTIONS`` answers and the app-wide OpenAPI document."""
    return getattr(handler.fn, "__module__", "").startswith("litestar.")


def route_permission(handler: BaseRouteHandler) -> Permission | None:
    """What a route needs: its declared permission; ``PUBLIC`` for Litestar's own handlers; else ``None``.

    ``None`` means the route declares nothing: the role-matrix test fails on it and
    :func:`enforce_declared_permission` refuses every request to it.
    """
    declared = declared_permission(handler)
    if declared is not None:
        return declared
    return Permission.PUBLIC if is_framework_handler(handler) else None


async def enforce_declared_permission(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App-wide guard: a route that declares no permission is closed, not open (defence in depth)."""
    if route_permission(handler) is None:
        logger.error("route %s declares no permission: refused", connection.scope.get("path", ""))
        raise PermissionDeniedException("this route declares no permission and is closed")
